"""``pdn-demo`` (what ``make demo`` runs): the whole system live, end to end, in about a minute.

1. makes a sample camera bag of held-out synthetic 2048x2048 frames with ground truth
   (``demo_out/sample_bag``; reused when its parameters match, bags are not committed);
2. starts the real node (``pdn_perception_node``) as a subprocess with the Fast DDS large-frame
   profile, on a ROS domain of its own (unless ``ROS_DOMAIN_ID`` is set), localhost discovery;
3. waits until the node is active (its ``image`` subscription and ``~/detections`` publisher
   matched), replays the bag into ``/image`` at recorded timing (stored CDR bytes, as
   ``pdn-replay`` does), and records ``~/detections``, ``~/crops``, ``~/saliency`` and
   ``/diagnostics`` as they arrive;
4. stops the node and writes ``demo_out/``: ``results_bag`` (mcap, recorded from the live
   topics - not recomputed offline - each message logged at its frame's stamp, so it lines up
   with ``sample_bag`` in Foxglove), ``overlay_*.png`` (saliency heat map, crops, detections
   and, in white, ground truth) and ``summary.json``; prints the summary (frames in/answered,
   detections, latency p50/p99 from publishing a frame to receiving its detections, K,
   backend, precision/recall at IoU 0.5 against the ground truth).

The node keeps only the newest frame (no backlog): on a CPU it answers about one frame per
second, so most of a 10 Hz stream is skipped by design; ``--speed 0.1`` plays slower.
Every process it starts is stopped on exit, also on errors and Ctrl-C. Exit codes: 0 done;
1 no frame was answered; 2 setup error (no model, node did not start); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_NAME = "pdn_perception"
INPUT_TOPIC = "/image"
OUTPUT_TOPICS = {
    f"/{NODE_NAME}/detections": "vision_msgs/msg/Detection2DArray",
    f"/{NODE_NAME}/crops": "vision_msgs/msg/BoundingBox2DArray",
    f"/{NODE_NAME}/saliency": "sensor_msgs/msg/Image",
}
DIAGNOSTICS_TOPIC = "/diagnostics"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdn-demo",
        description="Sample bag -> live pdn_perception node -> results, overlays and summary.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output dir (demo_out)")
    p.add_argument("--frames", type=int, default=20, help="frames in the sample bag (20)")
    p.add_argument(
        "--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"), help="frame size"
    )
    p.add_argument("--rate", type=float, default=10.0, help="frame rate of the bag in Hz (10)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1.0)")
    p.add_argument("--seed", type=int, default=1_000_000, help="first scene seed (held out)")
    p.add_argument("--model", type=Path, help="model .safetensors (default: the shipped model)")
    p.add_argument("--top-k", type=int, help="crops per frame (node parameter top_k)")
    p.add_argument("--overlays", type=int, default=4, help="overlay PNGs to write (4)")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="max seconds for the node to become active"
    )
    p.add_argument("--fresh", action="store_true", help="regenerate the sample bag")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return p


# --------------------------------------------------------------------------------------------
# Environment and the node process
# --------------------------------------------------------------------------------------------


def demo_environment(out: Path) -> dict[str, str]:
    """Set (in os.environ, for this process and the node) what a private demo graph needs."""
    from ..ros.dds import use_large_frame_profile

    env = os.environ
    if not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)  # 100..199: apart from tests
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_LOG_DIR", str((out / "ros_log").resolve()))
    use_large_frame_profile(env)
    return {
        k: env[k]
        for k in (
            "ROS_DOMAIN_ID",
            "ROS_AUTOMATIC_DISCOVERY_RANGE",
            "ROS_LOG_DIR",
            "FASTDDS_DEFAULT_PROFILES_FILE",
        )
        if k in env
    }


def node_command(model: Path, top_k: int | None) -> list[str]:
    """The installed console script next to this Python, else ``python -m``."""
    script = Path(sys.executable).parent / "pdn_perception_node"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "pdn_perception.ros.node"]
    cmd += ["--ros-args", "-p", f"model_path:={model.resolve()}"]
    if top_k is not None:
        cmd += ["-p", f"top_k:={top_k}"]
    return cmd


def _default_sigint() -> None:
    # A shell that started us in the background ignores SIGINT, and children inherit that;
    # the node must see SIGINT to shut down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_node(cmd: list[str], log: Path) -> subprocess.Popen:
    """Own process group (so everything it spawns is stopped with it)."""
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def stop_process_group(proc: subprocess.Popen) -> int | None:
    """SIGINT (clean shutdown), then SIGTERM, then SIGKILL to the group; always reaps."""
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.poll()


def _log_tail(log: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --------------------------------------------------------------------------------------------
# Live collection
# --------------------------------------------------------------------------------------------


@dataclass
class Collected:
    """Raw messages as they arrived, per topic: (monotonic receipt time, header stamp, CDR)."""

    messages: dict[str, list[tuple[float, int, bytes]]] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)  # latest values of our node
    diagnostics_raw: list[tuple[float, bytes]] = field(default_factory=list)
    diag_time: float = 0.0
    published: dict[int, float] = field(default_factory=dict)  # frame stamp -> publish time


class Collector:
    """Subscribes (raw) to the node's outputs and /diagnostics on ``node``."""

    def __init__(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.serialization import deserialize_message

        from ..bags.io import header_stamp_ns
        from ..bags.replay import message_class

        self.lock = threading.Lock()
        self.data = Collected()
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = {}
        for topic, msgtype in OUTPUT_TOPICS.items():

            def on_msg(raw: bytes, topic: str = topic) -> None:
                t = time.monotonic()
                with self.lock:
                    item = (t, header_stamp_ns(raw), bytes(raw))
                    self.data.messages.setdefault(topic, []).append(item)

            self.subs[topic] = node.create_subscription(
                message_class(msgtype), topic, on_msg, qos, raw=True
            )

        def on_diag(raw: bytes) -> None:
            msg = deserialize_message(raw, DiagnosticArray)
            for status in msg.status:
                if status.name.startswith(f"{NODE_NAME}:"):
                    with self.lock:
                        self.data.diagnostics = {kv.key: kv.value for kv in status.values}
                        self.data.diagnostics["message"] = status.message
                        self.data.diag_time = time.monotonic()
                        self.data.diagnostics_raw.append((time.monotonic(), bytes(raw)))

        self.subs[DIAGNOSTICS_TOPIC] = node.create_subscription(
            DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, 10, raw=True
        )

    def on_publish(self, topic: str, bag_ns: int, data: bytes, t_pub: float) -> None:
        from ..bags.io import header_stamp_ns

        with self.lock:
            self.data.published.setdefault(header_stamp_ns(data), t_pub)

    def answered(self) -> set[int]:
        with self.lock:
            dets = self.data.messages.get(f"/{NODE_NAME}/detections", [])
            return {stamp for _, stamp, _ in dets} & set(self.data.published)

    def diag(self) -> tuple[dict[str, str], float]:
        with self.lock:
            return dict(self.data.diagnostics), self.data.diag_time


def wait_until_active(
    proc: subprocess.Popen, image_pub: Any, collector: Collector, timeout: float, log: Path
) -> float:
    """Until the node subscribes to the input and publishes detections; returns seconds."""
    t0 = time.monotonic()
    det_sub = collector.subs[f"/{NODE_NAME}/detections"]
    while True:
        if proc.poll() is not None:
            raise DemoError(f"the node exited with code {proc.returncode}:\n{_log_tail(log)}")
        if image_pub.get_subscription_count() >= 1 and det_sub.get_publisher_count() >= 1:
            return time.monotonic() - t0
        diag, _ = collector.diag()
        if diag.get("state") == "unconfigured" and diag.get("last_error"):
            raise DemoError(f"the node failed to configure: {diag['last_error']}")
        if time.monotonic() - t0 > timeout:
            raise DemoError(f"the node was not active after {timeout:g} s:\n{_log_tail(log)}")
        time.sleep(0.05)


def wait_for_answers(collector: Collector, published: int, t_end: float, timeout: float) -> None:
    """Until every frame is answered, or the node is idle (its /diagnostics counters balance:
    every received frame processed, dropped or rejected, as many detections as processed).
    Either way at least one /diagnostics message must have arrived: the summary reports the
    backend from it (a short run can otherwise finish inside the first diagnostics period)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        diag, diag_t = collector.diag()
        if len(collector.answered()) >= published and diag:
            return
        with contextlib.suppress(KeyError, ValueError):
            c = {k: int(diag[f"frames_{k}"]) for k in ("received", "processed", "dropped")}
            c["other"] = int(diag["frames_rejected"]) + int(diag["frames_failed"])
            with collector.lock:
                n_det = len(collector.data.messages.get(f"/{NODE_NAME}/detections", []))
            idle = c["received"] == c["processed"] + c["dropped"] + c["other"]
            if diag_t > t_end + 1.0 and idle and n_det >= c["processed"]:
                return
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def write_results_bag(path: Path, data: Collected) -> None:
    """Recorded raw messages -> mcap; each logged at its frame's stamp (aligns with the
    sample bag); /diagnostics at the bag time matching its receipt."""
    from ..bags.io import BagWriter, staged_output

    if data.published:
        t_pub0 = min(data.published.values())
        stamp0 = min(data.published, key=lambda k: data.published[k])
    else:
        t_pub0, stamp0 = 0.0, 0
    with staged_output(path, force=True) as staging, BagWriter.create(staging) as bag:
        for topic, msgtype in OUTPUT_TOPICS.items():
            bag.add(topic, msgtype)
            for _, stamp, raw in data.messages.get(topic, []):
                bag.write_raw(topic, stamp, raw)
        if data.diagnostics_raw:
            bag.add(DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray")
            for t, raw in data.diagnostics_raw:
                bag.write_raw(DIAGNOSTICS_TOPIC, max(0, stamp0 + round((t - t_pub0) * 1e9)), raw)


def write_overlays(out: Path, sample_bag: Path, results: dict, truth: Any, count: int) -> list[str]:
    """``overlay_NN.png`` for ``count`` answered frames spread over the run."""
    import cv2
    import numpy as np

    from ..bags.io import header_stamp_ns, image_to_frame, iter_raw, open_bag
    from ..viz import render_overlay

    stamps = sorted(results)
    if not stamps or count <= 0:
        return []
    picks = sorted(
        {stamps[round(i)] for i in np.linspace(0, len(stamps) - 1, min(count, len(stamps)))}
    )
    by_stamp = truth.by_stamp()
    written = []
    with open_bag(sample_bag) as reader:
        for conn, _, raw in iter_raw(reader, reader.connections):
            stamp = header_stamp_ns(raw)
            if stamp not in picks:
                continue
            frame = image_to_frame(reader.deserialize(raw, conn.msgtype))
            result = results[stamp].to_result(truth.classes, frame.shape[:2])
            overlay = render_overlay(frame, result, long_side=1024)
            s = overlay.shape[1] / frame.shape[1]
            gt = by_stamp.get(stamp)
            for x1, y1, x2, y2 in gt.boxes if gt is not None else []:
                p1 = (int(x1 * s) - 3, int(y1 * s) - 3)
                p2 = (int(x2 * s) + 3, int(y2 * s) + 3)
                cv2.rectangle(overlay, p1, p2, (255, 255, 255), 1)
            index = gt.index if gt is not None else len(written)
            name = f"overlay_{index:02d}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            written.append(name)
    return written


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(values, q)), 1)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from ..bags.io import BagError
    from ..bags.sample import (
        Detections,
        SampleBagParams,
        load_ground_truth,
        make_sample_bag,
        sample_bag_matches,
        score_detections,
    )
    from ..core.models.io import default_model_path

    t_start = time.monotonic()
    out: Path = args.out
    model = args.model or default_model_path()
    if not model.is_file():
        raise DemoError(
            f"model not found: {model} (train one with `make train`, or pass --model PATH)"
        )
    out.mkdir(parents=True, exist_ok=True)
    env = demo_environment(out)
    for stale in out.glob("overlay_*.png"):  # from an earlier run with other frames
        stale.unlink()

    # 1. Sample bag (reused when it matches).
    params = SampleBagParams(
        frames=args.frames, seed=args.seed, rate=args.rate, size=tuple(args.size)
    )
    sample_bag = out / "sample_bag"
    t0 = time.monotonic()
    if not args.fresh and sample_bag_matches(sample_bag, params):
        print(f"pdn-demo: reusing {sample_bag} ({params.frames} frames)")
    else:
        print(
            f"pdn-demo: writing {sample_bag}: {params.frames} frames {params.size[1]}x"
            f"{params.size[0]} rgb8 at {params.rate:g} Hz ...",
            flush=True,
        )
        try:
            make_sample_bag(sample_bag, params, force=True, progress=False if args.quiet else None)
        except BagError as exc:
            raise DemoError(str(exc)) from None
    bag_s = time.monotonic() - t0
    truth = load_ground_truth(sample_bag)

    # 2. Node + 3. replay and collection.
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ..bags.replay import Replayer, ReplayOptions

    node_log = out / "node.log"
    cmd = node_command(model, args.top_k)
    ros_node = executor = spin_thread = None
    stop_spin = threading.Event()
    proc = start_node(cmd, node_log)
    try:  # from here on, whatever happens (Ctrl-C included), the node is stopped
        print(
            f"pdn-demo: started the node (pid {proc.pid}, "
            f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, log {node_log}): {' '.join(cmd)}",
            flush=True,
        )
        rclpy.init(args=["pdn-demo"], signal_handler_options=SignalHandlerOptions.NO)
        ros_node = rclpy.create_node("pdn_demo")
        collector = Collector(ros_node)
        executor = SingleThreadedExecutor()
        executor.add_node(ros_node)

        def spin() -> None:
            while not stop_spin.is_set():
                executor.spin_once(timeout_sec=0.05)

        spin_thread = threading.Thread(target=spin, name="pdn_demo_spin", daemon=True)
        spin_thread.start()
        options = ReplayOptions(
            topics=[truth.topic],
            rate=args.speed,
            remap={truth.topic: INPUT_TOPIC},
            wait_subscribers=0,
            progress=False if args.quiet else None,
        )
        replayer = Replayer(
            ros_node,
            sample_bag,
            options,
            on_publish=collector.on_publish,
            log=lambda s: print(f"pdn-demo: {s}"),
        )
        startup_s = wait_until_active(
            proc, replayer.publishers[truth.topic], collector, args.timeout, node_log
        )
        print(
            f"pdn-demo: node active after {startup_s:.1f} s; replaying {truth.topic} -> "
            f"{INPUT_TOPIC} at x{args.speed:g} ...",
            flush=True,
        )
        replay = replayer.run()
        t_end = time.monotonic()
        wait_for_answers(collector, replay.published, t_end, timeout=60.0)
        diag, _ = collector.diag()
    finally:
        node_exit = stop_process_group(proc)
        stop_spin.set()
        if spin_thread is not None:
            spin_thread.join(timeout=5)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if ros_node is not None:
            ros_node.destroy_node()
        rclpy.try_shutdown()

    # 4. Outputs.
    from ..bags.results import read_results

    data = collector.data
    results_bag = out / "results_bag"
    write_results_bag(results_bag, data)
    results = read_results(results_bag)
    published = set(data.published)
    answered = {k: r for k, r in results.items() if k in published}
    first_det: dict[int, float] = {}
    for t, stamp, _ in data.messages.get(f"/{NODE_NAME}/detections", []):
        first_det.setdefault(stamp, t)
    latencies = [(first_det[k] - data.published[k]) * 1e3 for k in first_det if k in published]
    score = score_detections(
        truth, {k: Detections(r.boxes, r.scores, r.labels) for k, r in answered.items()}
    )
    overlays = write_overlays(out, sample_bag, answered, truth, args.overlays)
    crops = [len(r.crops) for r in answered.values() if r.crops is not None]
    summary = {
        "frames_published": replay.published,
        "frames_answered": len(answered),
        "detections": int(sum(len(r.boxes) for r in answered.values())),
        "latency_ms": {"p50": _percentile(latencies, 50), "p99": _percentile(latencies, 99)},
        "K": round(statistics.fmean(crops), 2) if crops else None,
        "backend": diag.get("backend", "unknown"),
        "score_iou_0.5": score,
        "replay": {
            "speed": args.speed,
            "rate_hz": round((replay.published - 1) / replay.wall_s, 2)
            if replay.wall_s > 0 and replay.published > 1
            else None,
            "late_ms_p50": _percentile(list(replay.late_ms), 50),
        },
        "node": {
            "command": cmd,
            "pid": proc.pid,
            "exit_code": node_exit,
            "startup_s": round(startup_s, 1),
            "diagnostics": diag,
            "log": str(node_log),
        },
        "ros_domain_id": int(env["ROS_DOMAIN_ID"]),
        "sample_bag": str(sample_bag),
        "sample_bag_s": round(bag_s, 1),
        "results_bag": str(results_bag),
        "results_bag_source": "recorded from the live node topics",
        "overlays": overlays,
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def print_summary(s: dict[str, Any], out: Path) -> None:
    sc = s["score_iou_0.5"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.0f}%"

    lat = s["latency_ms"]
    print(
        "\npdn-demo summary\n"
        f"  frames in / answered : {s['frames_published']} / {s['frames_answered']} "
        "(the node keeps only the newest frame; the rest are skipped by design)\n"
        f"  detections           : {s['detections']}\n"
        f"  latency p50 / p99    : {lat['p50']} / {lat['p99']} ms (publish -> detections)\n"
        f"  K (crops per frame)  : {s['K']}\n"
        f"  backend              : {s['backend']}\n"
        f"  vs ground truth      : recall {pct(sc['recall'])}, precision "
        f"{pct(sc['precision'])} at IoU 0.5 over {sc['frames_scored']} answered frames "
        f"(tp {sc['tp']}, fp {sc['fp']}, fn {sc['fn']})\n"
        f"  outputs              : {out}/summary.json, {out}/results_bag (mcap), "
        f"{len(s['overlays'])} overlay PNGs\n"
        f"  wall time            : {s['wall_s']} s"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.speed <= 0 or args.rate <= 0:
        print("pdn-demo: error: --frames, --rate and --speed must be positive", file=sys.stderr)
        return 2

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_demo(args)
    except DemoError as exc:
        print(f"pdn-demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdn-demo: interrupted; the node was stopped", file=sys.stderr)
        return 130
    print_summary(summary, args.out)
    if summary["frames_answered"] == 0:
        print("pdn-demo: error: the node answered no frame (see node.log)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
