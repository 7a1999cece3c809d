"""One side of tests/test_large_frames.py: publishes or counts 2048x2048 rgb8 images.

Run as ``python large_frame_peer.py pub|sub [options]`` by the test, which talks to it over
stdin/stdout lines so that it can wait for matching instead of sleeping:

* both: print ``PROFILE <path>`` (the Fast DDS profile in effect), then ``MATCHED`` once the
  other side is matched;
* pub: waits for ``GO`` on stdin, publishes ``--frames`` frames at ``--rate`` Hz, prints
  ``DONE <json>``, then waits for ``EXIT`` (or EOF) before tearing down, so that no frame is
  still being read from its shared memory when it exits;
* sub: counts frames until it has all of them or gets ``STOP`` on stdin, then prints
  ``RESULT <json>``.

Every wait has a deadline (``--timeout``), so an orphaned peer cannot hang around.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from pdn_perception.ros.dds import use_large_frame_profile

# Before rclpy is initialised: Fast DDS reads the profile when the participant is created.
PROFILE = use_large_frame_profile()

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

QOS = QoSProfile(
    reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1
)


def say(line: str) -> None:
    print(line, flush=True)


def wait_for(predicate, node, deadline: float, what: str) -> None:
    """Spin ``node`` until ``predicate()`` holds; exit with an error at ``deadline``."""
    while not predicate():
        if time.monotonic() > deadline:
            say(f"ERROR timed out waiting for {what}")
            sys.exit(3)
        rclpy.spin_once(node, timeout_sec=0.05)


def run_pub(args: argparse.Namespace, node) -> None:
    deadline = time.monotonic() + args.timeout
    pub = node.create_publisher(Image, args.topic, QOS)
    wait_for(lambda: pub.get_subscription_count() >= 1, node, deadline, "a subscriber")
    say("MATCHED")
    if sys.stdin.readline().strip() != "GO":
        return
    frame = np.zeros((args.height, args.width, 3), dtype=np.uint8)
    frame[:, :, 1] = 127
    publish_ms = []
    start = time.monotonic()
    for i in range(args.frames):
        # Rate control, not synchronisation: publish frame i at start + i / rate.
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        frame[0, 0, 0] = i  # frame index in the first pixel, checked by the subscriber
        msg = Image()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = str(i)
        msg.height, msg.width = args.height, args.width
        msg.encoding = "rgb8"
        msg.step = args.width * 3
        msg.data = frame.tobytes()  # never assign the ndarray itself: ~0.5 s per 12.6 MB
        pub.publish(msg)
        publish_ms.append((time.perf_counter() - t0) * 1e3)
    elapsed = time.monotonic() - start
    say(
        "DONE "
        + json.dumps(
            {
                "published": args.frames,
                "rate_hz": (args.frames - 1) / elapsed if elapsed > 0 else None,
                "publish_ms_median": statistics.median(publish_ms),
            }
        )
    )
    # Keep the participant alive until the subscriber is done reading.
    sys.stdin.readline()


def run_sub(args: argparse.Namespace, node) -> None:
    deadline = time.monotonic() + args.timeout
    expected_size = args.width * args.height * 3
    received: dict[int, float] = {}
    bad: list[str] = []

    def on_image(msg: Image) -> None:
        latency_ms = (node.get_clock().now().nanoseconds - _stamp_ns(msg)) / 1e6
        index = int(msg.header.frame_id)
        ok = (
            msg.width == args.width
            and msg.height == args.height
            and msg.encoding == "rgb8"
            and len(msg.data) == expected_size
            and msg.data[0] == index % 256
            and msg.data[1] == 127
        )
        if ok:
            received[index] = latency_ms
        else:
            bad.append(msg.header.frame_id)

    sub = node.create_subscription(Image, args.topic, on_image, QOS)
    wait_for(lambda: sub.get_publisher_count() >= 1, node, deadline, "a publisher")
    say("MATCHED")

    stop = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
        stop.set()  # STOP or EOF

    threading.Thread(target=read_stdin, daemon=True).start()
    while len(received) < args.frames and not stop.is_set() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    # Drain: frames already in flight when STOP came (bounded; ends when nothing more arrives).
    drain_end = time.monotonic() + 2.0
    while len(received) < args.frames and time.monotonic() < drain_end:
        before = len(received)
        rclpy.spin_once(node, timeout_sec=0.3)
        if len(received) == before:
            break
    latencies = list(received.values())
    say(
        "RESULT "
        + json.dumps(
            {
                "received": len(received),
                "indices": sorted(received),
                "bad": bad,
                "latency_ms_median": statistics.median(latencies) if latencies else None,
            }
        )
    )


def _stamp_ns(msg: Image) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--topic", default="/pdn_test/large_image")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    say(f"PROFILE {PROFILE}")
    rclpy.init()
    node = rclpy.create_node(f"pdn_large_frame_{args.role}")
    try:
        (run_pub if args.role == "pub" else run_sub)(args, node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
