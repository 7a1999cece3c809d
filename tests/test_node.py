"""The pdn_perception node as a real process, driven by a real ROS peer process over DDS.

One node (``python -m pdn_perception.ros.node --ros-args -p model_path:=<tiny model>``) serves the
whole module; a peer (tests/ros_helpers/node_peer.py) publishes 2048x2048 rgb8 / JPEG frames,
watches the outputs and calls the node's services. Every wait is for an observable event
(matching, a message with the frame's stamp, a diagnostics counter) with a deadline; tests that
change parameters put them back.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pdn_perception.core.models import ModelConfig, PatchDriveModel, save_model
from pdn_perception.ros.dds import PROFILE_ENV_VAR

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().parent / "ros_helpers" / "node_peer.py"
DOMAIN_ID = "21"
TRANSITION_ACTIVATE, TRANSITION_DEACTIVATE = 3, 4


def make_tiny_model(seed: int = 0) -> PatchDriveModel:
    """Random weights, default architecture: real shapes, no quality, instant to build."""
    torch.manual_seed(seed)
    return PatchDriveModel(ModelConfig()).eval()


def ros_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(PROFILE_ENV_VAR, None)  # node and peer must pick the shipped profile themselves
    env.update(
        ROS_DOMAIN_ID=DOMAIN_ID,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp / "ros_log"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return env


def stop_process(proc: subprocess.Popen) -> int:
    """SIGINT (clean shutdown), then SIGTERM, then SIGKILL; always reaps the process."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    return proc.wait(timeout=5)


class PeerProcess:
    """JSON-lines client of node_peer.py; each request has a deadline."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._get(60.0)  # hello

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _get(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"peer gave no answer within {timeout} s")
        if line is None:
            pytest.fail(f"peer exited (rc {self.proc.poll()})")
        return json.loads(line)

    def request(self, cmd: str, *, expect_ok: bool = True, **spec) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **spec}) + "\n")
        self.proc.stdin.flush()
        answer = self._get(spec.get("timeout", 30.0) + 15.0)
        if expect_ok:
            assert answer["ok"], answer
        return answer

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        stop_process(self.proc)


class NodeUnderTest:
    def __init__(self, proc: subprocess.Popen, log: Path, peer: PeerProcess, tmp: Path) -> None:
        self.proc, self.log, self.peer, self.tmp = proc, log, peer, tmp

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def set(self, **values) -> list[dict]:
        return self.peer.request("set", params=values, timeout=60.0)["results"]

    def frame(self, **spec) -> dict:
        answer = self.peer.request("frame", expect_ok=False, **spec)
        assert answer["ok"], f"{answer}\nnode output:\n{self.output()[-3000:]}"
        return answer


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeUnderTest]:
    tmp = tmp_path_factory.mktemp("node")
    model = save_model(make_tiny_model(), tmp / "tiny.safetensors")
    env = ros_env(tmp)
    log = tmp / "node.log"
    cmd = [
        sys.executable,
        "-m",
        "pdn_perception.ros.node",
        "--ros-args",
        "--params-file",
        str(REPO_ROOT / "config" / "params.yaml"),
        "-p",
        f"model_path:={model}",
        "-p",
        "diagnostics_period:=0.2",
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    peer = None
    try:
        peer = PeerProcess(env, tmp / "peer.log")
        under_test = NodeUnderTest(proc, log, peer, tmp)
        answer = peer.request("ready", expect_ok=False, timeout=60.0)
        assert answer["ok"], f"{answer}\nnode output:\n{under_test.output()}"
        yield under_test
    finally:
        if peer is not None:
            peer.close()
        rc = stop_process(proc)
    assert rc == 0, f"node did not shut down cleanly on SIGINT (rc {rc}):\n{log.read_text()}"


def test_autostart_makes_the_node_active(node: NodeUnderTest) -> None:
    assert node.peer.request("state")["state"] == "active"
    # the log says which backend runs and in what precision (bf16 or fp32 on a CPU)
    assert re.search(r"configured: backend cpu \(.*(bf16|fp32)", node.output())


def test_detections_crops_saliency_carry_the_input_header(node: NodeUnderTest) -> None:
    answer = node.frame(width=2048, height=2048, frame_id="cam_front")
    assert answer["det_stamp"] == answer["stamp"]
    assert answer["det_frame_id"] == "cam_front"
    assert answer["crops_frame_id"] == "cam_front"
    assert set(answer["det_frame_ids"]) <= {"cam_front"}
    assert set(answer["class_ids"]) <= {"boat", "vehicle", "nucleus"}
    assert len(answer["crops"]) == 4  # top_k default
    for cx, cy, sx, sy in answer["crops"]:  # full-resolution crops in frame pixels
        assert (sx, sy) == (512, 512)
        assert 256 <= cx <= 2048 - 256 and 256 <= cy <= 2048 - 256
    for cx, cy, sx, sy in answer["boxes"]:
        assert 0 <= cx <= 2048 and 0 <= cy <= 2048 and sx >= 0 and sy >= 0
    h, w, encoding, frame_id, size = answer["saliency"]
    assert encoding == "mono8" and frame_id == "cam_front"
    assert 0 < h <= 512 and 0 < w <= 512 and size == h * w


def test_min_crop_saliency_is_tuned_live(node: NodeUnderTest) -> None:
    try:
        assert node.set(min_crop_saliency=1.0) == [{"ok": True, "reason": ""}]
        assert len(node.frame()["crops"]) == 1  # nothing is above 1: only the best crop runs
        bad = node.set(min_crop_saliency=1.5)[0]
        assert not bad["ok"] and "min_crop_saliency" in bad["reason"]
        assert len(node.frame()["crops"]) == 1  # the rejected value changed nothing
    finally:
        assert node.set(min_crop_saliency=0.0)[0]["ok"]
    assert len(node.frame()["crops"]) == 4


def test_top_k_change_applies_from_the_next_frame(node: NodeUnderTest) -> None:
    try:
        assert node.set(top_k=2) == [{"ok": True, "reason": ""}]
        assert len(node.frame()["crops"]) == 2
        assert node.set(top_k=7)[0]["ok"]
        assert len(node.frame()["crops"]) == 7
    finally:
        node.set(top_k=4)


@pytest.mark.parametrize(
    ("values", "reason_has"),
    [
        ({"top_k": 100}, "out of range"),
        ({"top_k": "four"}, "Wrong parameter type"),
        ({"score_threshold": 1.5}, "out of range"),
        ({"mode": "everything"}, "not one of topk, tiles, global"),
        ({"crop_size": 100}, "not a valid step"),
        ({"input_reliability": "sometimes"}, "not one of best_effort, reliable"),
        ({"autostart": False}, "read-only"),
    ],
)
def test_invalid_parameters_are_rejected_with_a_reason(
    node: NodeUnderTest, values: dict, reason_has: str
) -> None:
    (result,) = node.set(**values)
    assert not result["ok"]
    assert reason_has in result["reason"], result["reason"]
    assert node.alive()


def test_rebuild_parameters_build_off_the_hot_path_or_are_rejected(node: NodeUnderTest) -> None:
    (missing,) = node.set(model_path=str(node.tmp / "no_such_model.safetensors"))
    assert not missing["ok"] and "not found" in missing["reason"], missing
    assert len(node.frame()["crops"]) == 4  # still serving with the old model

    other = save_model(make_tiny_model(seed=1), node.tmp / "other.safetensors")
    assert node.set(model_path=str(other))[0]["ok"]
    try:
        assert node.set(crop_size=256)[0]["ok"]
        sizes = {(sx, sy) for _, _, sx, sy in node.frame()["crops"]}
        assert sizes == {(256, 256)}
    finally:
        assert node.set(crop_size=512)[0]["ok"]


def test_malformed_frames_are_skipped_and_counted(node: NodeUnderTest) -> None:
    base = int(node.peer.request("diag")["values"]["frames_rejected"])
    for n, corrupt in enumerate(("encoding", "length"), start=1):
        node.peer.request("frame", corrupt=corrupt)
        # Wait for the counter before the next frame, so the latest-frame slot cannot
        # replace the bad frame before the worker has seen it.
        values = node.peer.request("diag", at_least={"frames_rejected": base + n})["values"]
    assert "data length" in values["last_error"] or "encoding" in values["last_error"]
    answer = node.frame(frame_id="after_bad")
    assert answer["det_frame_id"] == "after_bad"
    assert node.alive()
    assert node.peer.request("state")["state"] == "active"


def test_compressed_jpeg_input(node: NodeUnderTest) -> None:
    answer = node.frame(compressed=True, width=1024, height=768, frame_id="jpeg_cam")
    assert answer["det_stamp"] == answer["stamp"]
    assert answer["det_frame_id"] == "jpeg_cam"
    assert 1 <= len(answer["crops"]) <= 4  # a 1024x768 frame may not hold 4 separated crops
    for cx, cy, sx, sy in answer["crops"]:
        assert cx + sx / 2 <= 1024 and cy + sy / 2 <= 768
    base = int(node.peer.request("diag")["values"]["frames_rejected"])
    node.peer.request("frame", compressed=True, corrupt="jpeg")
    values = node.peer.request("diag", at_least={"frames_rejected": base + 1})["values"]
    assert "decode" in values["last_error"]
    assert node.frame(compressed=True, width=640, height=480)["det_frame_id"] == "camera"


def test_diagnostics_report_rates_latency_and_backend(node: NodeUnderTest) -> None:
    node.frame()
    values = node.peer.request("diag", at_least={"frames_processed": 1})["values"]
    assert values["state"] == "active"
    assert values["backend"] == "cpu"
    assert int(values["K"]) == 4 and int(values["top_k"]) == 4
    for key in ("input_rate_hz", "processed_rate_hz", "latency_stamp_p99_ms", "pipeline_p50_ms"):
        assert float(values[key]) >= 0.0, (key, values)
    assert float(values["latency_receipt_p50_ms"]) > 0.0
    for key in ("frames_received", "frames_dropped", "frames_failed", "batch_sizes"):
        assert key in values


def test_live_switch_to_the_compile_backend(node: NodeUnderTest) -> None:
    """The node's best CPU setting (README, Speed): set live, compiled off the hot path."""
    import torch

    from pdn_perception.core.backends import cxx_compiler

    if not torch.cuda.is_available() and cxx_compiler() is None:
        pytest.skip("no C++ compiler: inductor cannot build CPU kernels here")
    done = int(node.peer.request("diag")["values"]["frames_processed"])
    try:
        assert node.set(backend="compile") == [{"ok": True, "reason": ""}]
        assert len(node.frame()["crops"]) == 4
        values = node.peer.request("diag", at_least={"frames_processed": done + 1})["values"]
        assert values["backend"] == "compile", values
    finally:
        assert node.set(backend="auto")[0]["ok"]


def test_debug_image_is_published_to_subscribers(node: NodeUnderTest) -> None:
    node.peer.request("watch_debug")
    answer = node.frame(width=2048, height=1536, frame_id="dbg", debug=True)
    h, w, encoding, frame_id, size = answer["debug"]
    assert (h, w, encoding, frame_id) == (768, 1024, "rgb8", "dbg")  # long side 1024
    assert size == h * w * 3


def test_deactivate_and_activate_again(node: NodeUnderTest) -> None:
    assert node.peer.request("transition", id=TRANSITION_DEACTIVATE)["success"]
    assert node.peer.request("state")["state"] == "inactive"
    assert node.peer.request("transition", id=TRANSITION_ACTIVATE)["success"]
    node.peer.request("ready", timeout=30.0)
    assert node.frame(frame_id="again")["det_frame_id"] == "again"
    assert node.alive()
    # Each new inference thread warms up before its first frame (its first call is slow).
    assert node.output().count("inference thread warmed up in") >= 2
