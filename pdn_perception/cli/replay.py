"""``pdn-replay BAG``: play rosbag2 camera topics into ROS at recorded timing.

Like ``ros2 bag play`` (which a pip-installed ROS 2 does not have), publishing the stored CDR
bytes as they are. Sets the Fast DDS large-frame profile for its own participant; subscribers
(the node, RViz) need it too for best-effort 2048x2048 frames. Exit codes: 0 done or
interrupted (Ctrl-C); 2 usage or bag error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdn-replay",
        description="Play sensor_msgs/Image and CompressedImage topics of a rosbag2 (mcap or "
        "sqlite3) into ROS 2 at recorded timing.",
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    p.add_argument(
        "--topic",
        action="append",
        dest="topics",
        metavar="T",
        help="topic to play (repeatable); default: every Image/CompressedImage topic",
    )
    p.add_argument("--rate", "-r", type=float, default=1.0, help="speed factor (default 1.0)")
    p.add_argument("--loop", "-l", action="store_true", help="play again and again until Ctrl-C")
    p.add_argument(
        "--remap",
        action="append",
        default=[],
        metavar="FROM:=TO",
        help="publish topic FROM as TO (repeatable), e.g. /camera/image_raw:=/image",
    )
    p.add_argument("--clock", action="store_true", help="publish /clock (for use_sim_time)")
    p.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate (default 40)")
    p.add_argument(
        "--wait-subscribers",
        type=int,
        default=1,
        metavar="N",
        help="wait for N subscribers per topic before playing (default 1; 0: do not wait)",
    )
    p.add_argument(
        "--wait-timeout", type=float, default=10.0, help="max seconds to wait (default 10)"
    )
    p.add_argument(
        "--qos",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="publisher reliability (reliable also serves best-effort subscribers)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, ros_args = parser.parse_known_args(argv)
    if ros_args and ros_args[0] != "--ros-args":
        parser.error(f"unrecognized arguments: {' '.join(ros_args)}")
    from ..bags.io import BagError
    from ..bags.replay import ReplayOptions, parse_remaps, replay_main

    try:
        if args.rate <= 0:
            raise ValueError(f"--rate must be > 0, got {args.rate}")
        options = ReplayOptions(
            topics=args.topics,
            rate=args.rate,
            loop=args.loop,
            remap=parse_remaps(args.remap),
            clock=args.clock,
            clock_hz=args.clock_hz,
            wait_subscribers=args.wait_subscribers,
            wait_timeout=args.wait_timeout,
            reliability=args.qos,
            progress=False if args.quiet else None,
        )
        return replay_main(args.bag, options, ros_args=ros_args)
    except (BagError, ValueError) as exc:
        print(f"pdn-replay: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
