"""pdn-bench smoke: two small frames, every row, the documented JSON schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pdn_perception.metrics import MatchCounts, match


def test_bench_json_schema(tiny_model_path: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pdn_perception.cli.bench",
        "--frames",
        "2",
        "--size",
        "1024",
        "1024",
        "--json",
        "--model",
        str(tiny_model_path),
        "--out-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["device"].startswith("CPU")
    modes = [(r["mode"], r["k"], r["overlap"]) for r in data["rows"]]
    assert modes == [
        ("topk", 1, None),
        ("topk", 2, None),
        ("topk", 4, None),
        ("topk", 8, None),
        ("tiles", None, 0.0),
        ("tiles", None, 0.2),
        ("global", None, None),
        ("sahi", None, 0.2),
    ]
    for r in data["rows"]:
        assert {"mode", "k", "overlap", "p50_ms", "p99_ms", "fps", "recall"} <= set(r)
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["fps"] > 0 and 0.0 <= r["recall"] <= 1.0
    assert set(data["ratios"]) >= {"time_topk4_over_tiles", "time_topk4_over_sahi"}
    assert (tmp_path / "pdn_bench_cpu.png").stat().st_size > 1000
    assert json.loads((tmp_path / "pdn_bench_cpu.json").read_text())["rows"] == data["rows"]


def test_bench_rejects_bad_arguments(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pdn_perception.cli.bench", "--frames", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--frames must be >= 1" in proc.stderr


def test_match_counts_are_class_aware_and_one_to_one() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    gl = np.array([0, 1])
    det = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    c = match(gt, gl, det, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]))
    assert (c.tp, c.n_gt, c.n_det) == (1, 2, 3)  # duplicate and wrong class do not count
    total = c + MatchCounts(1, 1, 1)
    assert total.recall == 2 / 3 and total.precision == 2 / 4
    assert match(gt, gl, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)).recall == 0.0
