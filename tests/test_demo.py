"""``pdn-demo`` end to end, small: real bag, real node process, real replay, real results.

3 frames of 1024x1024 and the random tiny model keep it to ~10-15 s on two shared cores; the
second test interrupts a demo mid-replay and checks that the node it started is gone.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pdn_perception.bags.io import iter_raw, open_bag
from pdn_perception.bags.results import DETECTIONS_TOPIC, read_results
from pdn_perception.bags.sample import load_ground_truth

pytestmark = [pytest.mark.ros]

DOMAIN_ID = "48"
REPO_ROOT = Path(__file__).resolve().parents[1]


def demo_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=DOMAIN_ID,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp / "ros_log"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)  # the demo must set the profile itself
    return env


def run_demo(args: list[str], tmp: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pdn_perception.cli.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env(tmp),
        cwd=tmp,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (the demo reaps its children, so this is rare).
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_demo_smoke(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "demo_out"
    args = ["--out", str(out), "--frames", "3", "--size", "1024", "1024", "--overlays", "2"]
    args += ["--model", str(tiny_model_path), "--quiet", "--timeout", "90"]
    proc = run_demo(args, tmp_path)
    try:
        text, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    truth = load_ground_truth(out / "sample_bag")
    assert summary["frames_published"] == 3
    assert 1 <= summary["frames_answered"] <= 3
    assert summary["backend"] == "cpu" and summary["K"] == 4
    assert summary["latency_ms"]["p50"] > 0
    assert summary["score_iou_0.5"]["frames_scored"] == summary["frames_answered"]
    assert summary["results_bag_source"] == "recorded from the live node topics"
    assert f"frames in / answered : 3 / {summary['frames_answered']}" in text
    # Results bag: one detections message per answered frame, with that frame's stamp.
    results = read_results(out / "results_bag")
    stamps = {f.stamp_ns for f in truth.frames}
    assert len(results) == summary["frames_answered"] and set(results) <= stamps
    assert all(r.frame_id == "camera" and r.crops is not None for r in results.values())
    with open_bag(out / "results_bag") as reader:
        topics = {c.topic for c in reader.connections}
        n_det = sum(
            1
            for _ in iter_raw(
                reader, [c for c in reader.connections if c.topic == DETECTIONS_TOPIC]
            )
        )
    assert n_det == summary["frames_answered"]
    assert {"/pdn_perception/saliency", "/pdn_perception/crops", "/diagnostics"} <= topics
    assert 1 <= len(summary["overlays"]) <= 2
    assert all((out / name).stat().st_size > 10_000 for name in summary["overlays"])
    # The node it started is stopped (cleanly: SIGINT first).
    assert summary["node"]["exit_code"] is not None
    assert not pid_alive(summary["node"]["pid"])
    assert "reusing" not in text


def test_demo_ctrl_c_stops_the_node(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "demo_out"
    args = ["--out", str(out), "--frames", "3", "--size", "512", "512", "--speed", "0.05"]
    args += ["--model", str(tiny_model_path), "--quiet", "--timeout", "90"]
    proc = run_demo(args, tmp_path)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    log: list[str] = []
    node_pid = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "".join(log)
            log.append(line)
            if m := re.search(r"started the node \(pid (\d+)", line):
                node_pid = int(m.group(1))
            if "replaying" in line:  # active and mid-replay (3 frames over 4 s)
                break
        assert node_pid is not None and pid_alive(node_pid), "".join(log)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = []
    while (line := lines.get(timeout=5)) is not None:
        rest.append(line)
    text = "".join(log + rest)
    assert code == 130, text
    assert "interrupted" in text and "Traceback" not in text, text
    assert not pid_alive(node_pid), text
