"""``pdn-detect``: the JSON schema, per-image errors and overlays, through a real subprocess once
and in-process for the cheaper cases (a tiny random-weight model: only shapes matter here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pdn_perception.cli.detect import main, read_image, to_uint8
from pdn_perception.core.models import ModelConfig, PatchDriveModel, save_model

TINY = ModelConfig(
    saliency_width=4, saliency_head_width=8, detector_widths=(8, 8, 16, 16), detector_neck_width=8
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("detect")
    torch.manual_seed(0)
    model = save_model(PatchDriveModel(TINY).eval(), d / "tiny.safetensors")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (700, 1600, 3), dtype=np.uint8)  # room for >= 3 crops of 512
    cv2.imwrite(str(d / "colour.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / "grey.png"), rgb[:, :, 0])
    cv2.imwrite(str(d / "deep.png"), (rgb[:, :, 0].astype(np.uint16) * 257))
    (d / "broken.png").write_bytes(b"this is not a png")
    cv2.imwrite(str(d / "tiny.png"), rgb[:8, :8])  # readable but below the 16x16 minimum
    return {
        "model": model,
        "colour": d / "colour.png",
        "grey": d / "grey.png",
        "deep": d / "deep.png",
        "broken": d / "broken.png",
        "tiny": d / "tiny.png",
        "dir": d,
    }


def _check_schema(rec: dict, path: Path, width: int, height: int, mode: str) -> None:
    assert rec["image"] == str(path)
    assert (rec["width"], rec["height"], rec["mode"]) == (width, height, mode)
    assert isinstance(rec["detections"], list)
    for det in rec["detections"]:
        assert set(det) == {"box", "score", "label"}
        assert len(det["box"]) == 4 and 0.0 <= det["score"] <= 1.0
        assert det["label"] in TINY.classes
    assert all(len(c) == 4 and all(isinstance(v, int) for v in c) for c in rec["crops"])
    assert rec["timing_ms"]["total"] > 0


def test_json_lines_and_errors_via_subprocess(files) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pdn_perception.cli.detect",
        str(files["colour"]),
        str(files["broken"]),
        str(files["grey"]),
        "--json",
        "--model",
        str(files["model"]),
        "--mode",
        "topk",
        "--top-k",
        "2",
        "--score-threshold",
        "0.0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [rec["image"] for rec in lines] == [
        str(files["colour"]),
        str(files["broken"]),
        str(files["grey"]),
    ]
    _check_schema(lines[0], files["colour"], 1600, 700, "topk")
    assert len(lines[0]["crops"]) == 2 and len(lines[0]["detections"]) > 0
    assert set(lines[1]) == {"image", "error"} and "not a readable image" in lines[1]["error"]
    _check_schema(lines[2], files["grey"], 1600, 700, "topk")
    assert f"{files['broken']}: not a readable image" in proc.stderr


def test_summary_overlay_modes_and_bad_inputs_in_process(files, tmp_path, capsys) -> None:
    out = tmp_path / "overlays"
    paths = [str(files[k]) for k in ("colour", "deep", "tiny")] + [str(tmp_path / "missing.png")]
    rc = main([*paths, "--model", str(files["model"]), "--mode", "tiles", "--overlay", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "colour.png: 1600x700, mode tiles" in captured.out
    assert "deep.png: 1600x700, mode tiles" in captured.out
    assert "tiny.png: frame too small" in captured.err
    assert "missing.png: file not found" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["colour_overlay.png", "deep_overlay.png"]
    assert cv2.imread(str(out / "colour_overlay.png")).shape[2] == 3

    rc = main([str(files["colour"]), "--model", str(files["model"]), "--mode", "global", "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["crops"] == [] and rec["mode"] == "global"


def test_config_file_and_model_errors_exit_2(files, tmp_path, capsys) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("top_k: 3\nscore_threshold: 0.0\n")
    rc = main(
        [str(files["colour"]), "--config", str(cfg), "--model", str(files["model"]), "--json"]
    )
    assert rc == 0 and len(json.loads(capsys.readouterr().out)["crops"]) == 3
    cfg.write_text("top_kk: 3\n")
    assert main([str(files["colour"]), "--config", str(cfg)]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main([str(files["colour"]), "--model", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and "pdn_light.safetensors" in err  # what exists


def test_image_reading_conversions(files) -> None:
    rgb = read_image(files["colour"])
    bgr = cv2.imread(str(files["colour"]))
    assert np.array_equal(rgb, bgr[:, :, ::-1])
    assert read_image(files["grey"]).shape == (700, 1600)
    deep = read_image(files["deep"])
    assert deep.dtype == np.uint8 and np.array_equal(deep, read_image(files["grey"]))
    twelve_bit = np.array([[0, 4095]], np.uint16)
    assert to_uint8(twelve_bit).tolist() == [[0, 255]]
