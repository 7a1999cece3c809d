"""Bags without DDS: sample bags (both storages), offline processing, errors, scoring.

Real bags are written and read back with rosbags; ``pdn-make-bag`` and ``pdn-process`` are run
through their ``main()`` (in-process: one torch import for the whole file). Frames are small
(<= 512 px) so the file runs in a few seconds on two shared CPU cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pdn_perception.bags.io import (
    BagError,
    BagWriter,
    header_stamp_ns,
    image_to_frame,
    iter_raw,
    open_bag,
    select_connections,
    staged_output,
    typestore,
)
from pdn_perception.bags.results import (
    CROPS_TOPIC,
    DETECTIONS_TOPIC,
    SALIENCY_TOPIC,
    read_results,
)
from pdn_perception.bags.sample import (
    Detections,
    SampleBagParams,
    load_ground_truth,
    make_sample_bag,
    sample_bag_matches,
    score_detections,
    score_results_bag,
)
from pdn_perception.cli import make_bag as make_bag_cli
from pdn_perception.cli import process as process_cli
from pdn_perception.train.scenes import CLASSES, make_scene

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SIZE = (256, 320)  # (H, W): not square, so a swapped axis shows


def _read_frames(bag: Path) -> list[tuple[str, int, int, str, np.ndarray]]:
    """(topic, log time, header stamp, frame_id, frame) of every image message."""
    out = []
    with open_bag(bag) as reader:
        for conn, t, raw in iter_raw(reader, select_connections(reader)):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert header_stamp_ns(raw) == stamp
            out.append((conn.topic, t, stamp, msg.header.frame_id, image_to_frame(msg)))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sample_bag_round_trip(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "bag"
    args = [str(bag), "--frames", "3", "--seed", "1000010", "--rate", "5", "--quiet"]
    args += ["--size", str(SIZE[0]), str(SIZE[1]), "--storage", storage]
    args += ["--start-time", str(START_NS / 1e9)]
    assert make_bag_cli.main(args) == 0
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert [p.suffix for p in bag.iterdir() if p.name != "ground_truth.json"].count(suffix) == 1
    frames = _read_frames(bag)
    truth = load_ground_truth(bag)
    assert truth.classes == CLASSES and (truth.height, truth.width) == SIZE
    assert len(frames) == len(truth.frames) == 3
    for i, ((topic, t, stamp, frame_id, frame), gt) in enumerate(zip(frames, truth.frames)):
        scene = make_scene(1_000_010 + i, size=SIZE)
        assert topic == "/camera/image_raw" and frame_id == "camera"
        assert t == stamp == gt.stamp_ns
        assert np.array_equal(frame, scene.image)  # rgb8, bit-exact
        assert gt.seed == scene.seed and gt.domain == scene.domain
        np.testing.assert_allclose(gt.boxes, scene.boxes, atol=0.01)
        assert gt.labels == tuple(CLASSES[k] for k in scene.labels)
    assert frames[0][2] == START_NS
    assert np.diff([f[2] for f in frames]).tolist() == [200_000_000, 200_000_000]  # 5 Hz


def test_compressed_sample_bag(tmp_path: Path) -> None:
    params = SampleBagParams(frames=2, size=SIZE, compressed=True, storage="sqlite3")
    truth = make_sample_bag(tmp_path / "bag", params, START_NS, progress=False)
    assert truth.topic == "/camera/image_raw/compressed"
    frames = _read_frames(tmp_path / "bag")
    assert [f[0] for f in frames] == ["/camera/image_raw/compressed"] * 2
    for (_, _, _, _, frame), gt in zip(frames, truth.frames):
        exact = make_scene(gt.seed, size=SIZE).image
        assert frame.shape == exact.shape
        assert np.abs(frame.astype(int) - exact).mean() < 6  # JPEG quality 90
    assert sample_bag_matches(tmp_path / "bag", params)
    assert not sample_bag_matches(tmp_path / "bag", SampleBagParams(frames=3, size=SIZE))


def test_make_bag_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bag").mkdir()
    assert make_bag_cli.main([str(tmp_path / "bag"), "--frames", "1", "--size", "64", "64"]) == 2
    assert "--force" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# pdn-process
# --------------------------------------------------------------------------------------------

PROCESS_SIZE = (512, 512)


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bag = tmp_path_factory.mktemp("camera") / "bag"
    params = SampleBagParams(frames=3, size=PROCESS_SIZE, frame_id="cam_front")
    make_sample_bag(bag, params, START_NS, progress=False)
    return bag


@pytest.fixture(scope="module")
def pipeline_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Low threshold: the random tiny model then yields many boxes (a real message load)."""
    path = tmp_path_factory.mktemp("cfg") / "pipe.yaml"
    path.write_text("top_k: 2\ncrop_size: 256\nscore_threshold: 0.0\nmax_detections: 50\n")
    return path


@pytest.fixture(scope="module")
def results_bag(
    camera_bag: Path, pipeline_yaml: Path, tiny_model_path: Path, tmp_path_factory
) -> Path:
    out = tmp_path_factory.mktemp("results") / "out"
    args = [str(camera_bag), "--out", str(out), "--config", str(pipeline_yaml)]
    assert process_cli.main([*args, "--model", str(tiny_model_path), "--quiet"]) == 0
    return out


def _messages(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list[tuple[int, bytes]]] = {}
    with open_bag(bag) as reader:
        for conn, t, raw in iter_raw(reader, reader.connections):
            out.setdefault(conn.topic, []).append((t, bytes(raw)))
    return out


def test_process_one_message_per_image_with_input_headers(
    camera_bag: Path, results_bag: Path
) -> None:
    truth = load_ground_truth(camera_bag)
    msgs = _messages(results_bag)
    assert set(msgs) == {DETECTIONS_TOPIC, CROPS_TOPIC, SALIENCY_TOPIC}
    store = typestore()
    for topic, msgtype in [
        (DETECTIONS_TOPIC, "vision_msgs/msg/Detection2DArray"),
        (CROPS_TOPIC, "vision_msgs/msg/BoundingBox2DArray"),
        (SALIENCY_TOPIC, "sensor_msgs/msg/Image"),
    ]:
        assert len(msgs[topic]) == 3
        for (t, raw), gt in zip(msgs[topic], truth.frames):
            msg = store.deserialize_cdr(raw, msgtype)
            assert t == gt.stamp_ns  # logged at the input's log time
            assert header_stamp_ns(raw) == gt.stamp_ns
            assert msg.header.frame_id == "cam_front"
    crops = store.deserialize_cdr(msgs[CROPS_TOPIC][0][1], "vision_msgs/msg/BoundingBox2DArray")
    assert len(crops.boxes) == 2  # top_k from the YAML


def test_process_results_equal_the_pipeline(
    camera_bag: Path, results_bag: Path, pipeline_yaml: Path, tiny_model_path: Path
) -> None:
    """What the bag holds is what Pipeline returns for the same frame (via ros.convert)."""
    from pdn_perception.core import Pipeline, load_pipeline_config

    pipe = Pipeline(load_pipeline_config(pipeline_yaml, model_path=str(tiny_model_path)))
    results = read_results(results_bag)
    frames = _read_frames(camera_bag)
    assert sorted(results) == [f[2] for f in frames]
    for _, _, stamp, _, frame in frames[:1]:  # one frame: the pipeline is slow on 2 cores
        expected = pipe(frame.copy())
        got = results[stamp]
        assert len(expected.boxes) > 0
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-6)
        assert got.labels == tuple(expected.label_names())
        assert np.array_equal(got.crops, expected.crop_boxes)
        assert got.saliency.shape == expected.saliency.shape
        assert np.abs(got.saliency - expected.saliency).max() <= 0.5 / 255 + 1e-6


def test_process_types_match_the_vision_msgs_build(results_bag: Path) -> None:
    """Connection hashes equal the built vision_msgs package's; its type support reads the CDR."""
    vision_msgs = pytest.importorskip("vision_msgs.msg")
    from rclpy.serialization import deserialize_message

    share = Path(vision_msgs.__file__).resolve()
    msg_share = next(
        (
            p / "share" / "vision_msgs" / "msg"
            for p in share.parents
            if (p / "share" / "vision_msgs" / "msg" / "Detection2DArray.json").is_file()
        ),
        None,
    )
    if msg_share is None:
        pytest.skip("no installed vision_msgs/msg/*.json next to the imported package")
    with open_bag(results_bag) as reader:
        conns = {c.topic: c for c in reader.connections}
    for topic, name in [
        (DETECTIONS_TOPIC, "Detection2DArray"),
        (CROPS_TOPIC, "BoundingBox2DArray"),
    ]:
        desc = json.loads((msg_share / f"{name}.json").read_text())
        built = next(
            h["hash_string"]
            for h in desc["type_hashes"]
            if h["type_name"] == f"vision_msgs/msg/{name}"
        )
        assert conns[topic].msgtype == f"vision_msgs/msg/{name}"
        assert conns[topic].digest == built
    _, raw = _messages(results_bag)[DETECTIONS_TOPIC][0]
    msg = deserialize_message(raw, vision_msgs.Detection2DArray)
    assert msg.header.frame_id == "cam_front" and len(msg.detections) > 0
    assert msg.detections[0].results[0].hypothesis.class_id in CLASSES


def test_process_refuses_to_overwrite_without_force(
    pipeline_yaml: Path, tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bag = tmp_path / "in"
    make_sample_bag(bag, SampleBagParams(frames=1, size=(256, 256)), START_NS, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = [str(bag), "--out", str(out), "--model", str(tiny_model_path), "-q"]
    args += ["--config", str(pipeline_yaml)]
    assert process_cli.main(args) == 2
    assert "exists" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert process_cli.main([*args, "--force", "--topic", "/camera/image_raw"]) == 0
    assert not (out / "keep.txt").exists()
    assert len(read_results(out)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging leftovers


def _corrupt_bags(src: Path, root: Path) -> dict[str, Path]:
    """Broken copies of a 3-frame mcap bag and of a sqlite3 one."""
    bags = {}
    trunc = root / "truncated_mcap"
    shutil.copytree(src, trunc)
    (mcap,) = trunc.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    bags["truncated mcap"] = trunc
    garbage = root / "garbage_mcap"
    shutil.copytree(src, garbage)
    (mcap,) = garbage.glob("*.mcap")
    mcap.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 64)
    bags["garbage mcap"] = garbage
    damaged = root / "damaged_record"  # the reader skips a message silently: must be caught
    shutil.copytree(src, damaged)
    (mcap,) = damaged.glob("*.mcap")
    data = bytearray(mcap.read_bytes())
    data[100:140] = b"\x07" * 40
    mcap.write_bytes(bytes(data))
    bags["damaged record"] = damaged
    meta = root / "bad_metadata"
    shutil.copytree(src, meta)
    (meta / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping\n")
    bags["bad metadata"] = meta
    sq = root / "sqlite"
    make_sample_bag(sq, SampleBagParams(frames=2, size=(64, 64), storage="sqlite3"), START_NS)
    (db,) = sq.glob("*.db3")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    bags["truncated sqlite3"] = sq
    empty = root / "not_a_bag"
    empty.mkdir()
    bags["empty dir"] = empty
    bags["missing"] = root / "missing"
    return bags


def test_process_corrupt_bag_is_a_clear_error_and_leaves_nothing(
    camera_bag: Path, tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bags = _corrupt_bags(camera_bag, tmp_path / "in")
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    for what, bag in bags.items():
        out = outdir / what.replace(" ", "_")
        code = process_cli.main([str(bag), "--out", str(out), "--model", str(tiny_model_path)])
        err = capsys.readouterr().err
        assert code == 2, (what, err)
        assert err.startswith("pdn-process: error:"), (what, err)
        assert "Traceback" not in err and str(bag) in err, (what, err)
        assert list(outdir.iterdir()) == [], what  # no output, no staging dir


def test_process_skips_bad_images_and_counts_them(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A bad JPEG and an Image whose data is too short are skipped; the good frame is kept."""
    from pdn_perception.bags.process import process_bag
    from pdn_perception.core import PipelineConfig

    store = typestore()
    Image = store.types["sensor_msgs/msg/Image"]
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]

    def header(i: int):
        return Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="camera")

    good = np.zeros((64, 64, 3), np.uint8)
    bag = tmp_path / "bag"
    with BagWriter.create(bag) as w:
        w.add("/cam/image", "sensor_msgs/msg/Image")
        w.add("/cam/image/compressed", "sensor_msgs/msg/CompressedImage")
        w.write("/cam/image", 1, Image(header(0), 64, 64, "rgb8", 0, 192, good.reshape(-1)))
        w.write("/cam/image", 2, Image(header(1), 64, 64, "rgb8", 0, 192, good.reshape(-1)[:99]))
        w.write(
            "/cam/image/compressed",
            3,
            Compressed(header(2), "jpeg", np.frombuffer(b"not a jpeg", np.uint8)),
        )
    summary = process_bag(
        bag,
        tmp_path / "out",
        PipelineConfig(model_path=str(tiny_model_path), crop_size=64),
        progress=False,
    )
    assert (summary.frames, summary.processed, summary.skipped) == (3, 1, 2)
    err = capsys.readouterr().err
    assert err.count("warning: skipped frame") == 2 and "data length" in err
    assert list(read_results(tmp_path / "out")) == [100 * 1_000_000_000]


def test_staged_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_output(tmp_path / "out") as staging:
        staging.mkdir()
        (staging / "half.mcap").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BagError, match="exists"):
        (tmp_path / "out").mkdir()
        with staged_output(tmp_path / "out"):
            pass


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def test_score_detections_precision_recall(tmp_path: Path) -> None:
    truth = make_sample_bag(
        tmp_path / "bag", SampleBagParams(frames=3, size=(512, 512)), START_NS, progress=False
    )
    assert sum(len(f.boxes) for f in truth.frames) > 0
    perfect = {
        f.stamp_ns: Detections(f.boxes, np.ones(len(f.boxes)), f.labels) for f in truth.frames
    }
    s = score_detections(truth, perfect)
    assert (s["recall"], s["precision"], s["fp"], s["frames_unanswered"]) == (1.0, 1.0, 0, 0)

    # One frame unanswered, one spurious box per answered frame, one wrong class.
    f0, f1, _ = truth.frames
    extra = np.array([[0, 0, 5, 5]], np.float32)
    dets = {
        f0.stamp_ns: Detections(
            np.concatenate([f0.boxes, extra]), np.ones(len(f0.boxes) + 1), (*f0.labels, "boat")
        ),
        f1.stamp_ns: Detections(f1.boxes, np.ones(len(f1.boxes)), ("wrong",) * len(f1.boxes)),
    }
    s = score_detections(truth, dets)
    n0, n1 = len(f0.boxes), len(f1.boxes)
    assert s["frames_scored"] == 2 and s["frames_unanswered"] == 1
    assert (s["tp"], s["fp"], s["fn"]) == (n0, 1 + n1, n1)
    # Shifted boxes (IoU < 0.5) are misses.
    shifted = {
        k: Detections(d.boxes + 100, d.scores, d.labels) for k, d in perfect.items() if len(d.boxes)
    }
    assert score_detections(truth, shifted)["tp"] == 0


def test_score_results_bag(camera_bag: Path, results_bag: Path) -> None:
    s = score_results_bag(results_bag, camera_bag)
    assert s["frames"] == s["frames_scored"] == 3
    assert s["tp"] + s["fn"] == sum(len(f.boxes) for f in load_ground_truth(camera_bag).frames)


def test_bags_layer_does_not_import_rclpy() -> None:
    """Only bags.replay may talk DDS: offline tools must run where rclpy cannot start."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import pdn_perception.bags, pdn_perception.bags.io, pdn_perception.bags.sample\n"
        "import pdn_perception.bags.process, pdn_perception.bags.results\n"
        "import pdn_perception.cli.process, pdn_perception.cli.make_bag\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
