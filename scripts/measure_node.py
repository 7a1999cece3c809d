#!/usr/bin/env python3
"""Measure the pdn_perception node end to end: 2048x2048 rgb8 in at 10 Hz, detections out.

Starts the node as a subprocess (default config), publishes synthetic frames best-effort at
``--rate`` for ``--seconds`` from this process (like a camera driver on the same machine), and
reports the answered rate and the latency from the image stamp to the detections' arrival here,
plus the node's own /diagnostics figures (stamp -> detections published, dropped frames).

    .venv/bin/python scripts/measure_node.py [--seconds 20] [--rate 10] [--model-path P]
        [--runs N] [--json docs/bench/node_cpu.json] [name:=value ...]

Without the shipped model (models/pdn_default.safetensors) a random-weight model of the default
architecture is used: same compute, so the same timing. Not a test: figures depend on the machine
and on what else runs on it (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pdn_perception.ros.dds import use_large_frame_profile  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads) from /proc: contention-proof CPU accounting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--model-path", default="")
    parser.add_argument("--domain-id", default="41")
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the pipeline-only run"
    )
    parser.add_argument("--runs", type=int, default=1, help="fresh node per run, back to back")
    parser.add_argument("--json", type=Path, help="write every run and a summary here")
    parser.add_argument("node_args", nargs="*", help="extra -p name:=value style node args")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pdn_measure_"))
    os.environ.update(
        ROS_DOMAIN_ID=args.domain_id,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp / "ros_log"),
    )
    profile = use_large_frame_profile()  # this process and the node (inherits the env)

    from pdn_perception.core.models import ModelConfig, PatchDriveModel, save_model
    from pdn_perception.core.models.io import default_model_path

    model_path, model_note = args.model_path, "given"
    if not model_path:
        if default_model_path().is_file():
            model_path, model_note = str(default_model_path()), "shipped"
        else:
            model_path = str(save_model(PatchDriveModel(ModelConfig()), tmp / "random.safetensors"))
            model_note = "random weights, default architecture (shipped model missing)"

    reports = []
    for run in range(args.runs):
        report = measure_once(args, model_path, tmp / f"run{run}")
        report.update(model=model_note, fastdds_profile=profile)
        print(json.dumps(report, indent=2), flush=True)
        reports.append(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join(["scripts/measure_node.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "summary": summarize(reports),
            "runs": reports,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def summarize(reports: list[dict]) -> dict:
    """Range over runs of the figures the target is about (rate answered, latency p50/p99)."""

    def span(values: list[float]) -> list[float]:
        return [min(values), max(values)]

    lat = [r["latency_ms_stamp_to_detections_received"] for r in reports]
    return {
        "runs": len(reports),
        "answered_rate_hz": span([r["answered_rate_hz"] for r in reports]),
        "latency_p50_ms": span([x["p50"] for x in lat]),
        "latency_p99_ms": span([x["p99"] for x in lat]),
        "pipeline_alone_ms_median": span([r["pipeline_alone_ms_median"] or -1.0 for r in reports]),
        "runs_meeting_target": sum(
            r["answered_rate_hz"] >= 9.0 and x["p99"] <= 150.0 for r, x in zip(reports, lat)
        ),
    }


def measure_once(args: argparse.Namespace, model_path: str, tmp: Path) -> dict:
    """One run: pipeline-alone baseline, then a fresh node process fed at ``args.rate``."""
    import numpy as np

    tmp.mkdir(parents=True, exist_ok=True)
    baseline_ms = baseline_cpu_ms = None
    if args.baseline:  # the pipeline alone, in this process, right before: what the CPU gives now
        from pdn_perception.core import Pipeline, PipelineConfig

        pipe = Pipeline(PipelineConfig(model_path=model_path))
        pipe.warmup((args.size, args.size))
        still = np.full((args.size, args.size, 3), 60, np.uint8)
        cpu0 = time.process_time()
        baseline_ms = percentile([pipe(still).timings_ms["total"] for _ in range(10)], 50)
        baseline_cpu_ms = (time.process_time() - cpu0) * 100  # per frame, ms
        del pipe

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    node_cmd = [sys.executable, "-m", "pdn_perception.ros.node", "--ros-args"]
    node_cmd += ["-p", f"model_path:={model_path}", "-r", "image:=/pdn_measure/image"]
    for extra in args.node_args:
        node_cmd += ["-p", extra]
    log = (tmp / "node.log").open("w")
    proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    rclpy.init()
    node = rclpy.create_node("pdn_measure")
    sensor = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, "/pdn_measure/image", sensor)
    latencies: dict[int, float] = {}
    diag: dict[str, str] = {}

    def on_detections(msg: Detection2DArray) -> None:
        now = node.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies[stamp] = (now - stamp) / 1e6

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("pdn_perception"):
                diag.clear()
                diag.update({kv.key: kv.value for kv in status.values})

    sub = node.create_subscription(
        Detection2DArray, "/pdn_perception/detections", on_detections, 10
    )
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        with contextlib.suppress(ExternalShutdownException):
            executor.spin()

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() < 1 or sub.get_publisher_count() < 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                print((tmp / "node.log").read_text(), file=sys.stderr)
                raise SystemExit("node did not come up")
            time.sleep(0.05)  # polling for matching, not synchronisation by sleep

        frame = np.full((args.size, args.size, 3), 60, np.uint8)
        frame[400:460, 700:760] = (250, 200, 40)
        msg = Image(height=args.size, width=args.size, encoding="rgb8", step=args.size * 3)
        msg.header.frame_id = "camera"
        msg.data = frame.tobytes()  # once; never assign the ndarray itself
        published: list[int] = []
        publish_ms: list[float] = []
        start = time.monotonic()
        cpu_start = None
        n_total = int((args.seconds + args.warmup) * args.rate)
        for i in range(n_total):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # rate control of the camera, not synchronisation
            msg.header.stamp = node.get_clock().now().to_msg()
            t0 = time.perf_counter()
            pub.publish(msg)
            publish_ms.append((time.perf_counter() - t0) * 1e3)
            if i >= args.warmup * args.rate:
                if cpu_start is None:
                    cpu_start = (cpu_seconds(proc.pid), diag.get("frames_processed", "0"))
                published.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        elapsed = time.monotonic() - start - args.warmup
        drain = time.monotonic() + 2.0
        while published[-1] not in latencies and time.monotonic() < drain:
            time.sleep(0.05)
        node_diag = dict(diag)
        cpu_used = cpu_seconds(proc.pid) - cpu_start[0]
        processed = int(node_diag.get("frames_processed", 0)) - int(cpu_start[1])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown()

    answered = [latencies[s] for s in published if s in latencies]
    report = {
        "frames_published": len(published),
        "publish_rate_hz": round((len(published) - 1) / elapsed, 2),
        "publish_ms_median": round(percentile(publish_ms, 50) or 0, 1),
        "frames_answered": len(answered),
        "answered_rate_hz": round(len(answered) / elapsed, 2),
        "latency_ms_stamp_to_detections_received": {
            q: round(percentile(answered, p) or -1, 1)
            for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        "node_diagnostics": {
            k: node_diag.get(k)
            for k in (
                "processed_rate_hz",
                "latency_stamp_p50_ms",
                "latency_stamp_p99_ms",
                "latency_receipt_p50_ms",
                "latency_receipt_p99_ms",
                "pipeline_p50_ms",
                "pipeline_p99_ms",
                "frames_received",
                "frames_processed",
                "frames_dropped",
                "frames_rejected",
                "backend",
                "batch_sizes",
            )
        },
        "node_cpu_cores_used": round(cpu_used / elapsed, 2),
        "node_cpu_ms_per_processed_frame": round(1e3 * cpu_used / max(processed, 1), 1),
        "pipeline_alone_ms_median": None if baseline_ms is None else round(baseline_ms, 1),
        "pipeline_alone_cpu_ms_per_frame": None
        if baseline_cpu_ms is None
        else round(baseline_cpu_ms, 1),
        "node_args": list(args.node_args),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return report


if __name__ == "__main__":
    raise SystemExit(main())
