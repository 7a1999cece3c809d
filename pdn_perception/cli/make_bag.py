"""``pdn-make-bag OUT``: a sample camera bag of synthetic large frames, with ground truth.

Frames come from the scene generator with seeds ``--seed``, ``--seed + 1``, ... (default: the
held-out evaluation seeds, >= 1_000_000); ``OUT/ground_truth.json`` holds the boxes, labels and
stamps of every frame (format: ``pdn_perception.bags.sample``). Exit codes: 0 done, 2 error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from ..bags.sample import DEFAULT_FRAME_ID, DEFAULT_TOPIC

    p = argparse.ArgumentParser(
        prog="pdn-make-bag",
        description="Write a rosbag2 of synthetic camera frames (rgb8 Image or JPEG "
        "CompressedImage) with ground truth in OUT/ground_truth.json.",
    )
    p.add_argument("out", type=Path, help="output bag directory")
    p.add_argument("--frames", type=int, default=20, help="number of frames (default 20)")
    p.add_argument("--seed", type=int, default=1_000_000, help="first scene seed (held out)")
    p.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    p.add_argument(
        "--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"), help="frame size"
    )
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument(
        "--compressed",
        action="store_true",
        help="JPEG sensor_msgs/CompressedImage on TOPIC/compressed instead of rgb8 Image",
    )
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"image topic (default {DEFAULT_TOPIC})")
    p.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help="header frame_id")
    p.add_argument(
        "--start-time", type=float, help="stamp of the first frame, seconds since epoch (now)"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..bags.io import BagError
    from ..bags.sample import SampleBagParams, make_sample_bag

    try:
        params = SampleBagParams(
            frames=args.frames,
            seed=args.seed,
            rate=args.rate,
            size=tuple(args.size),
            storage=args.storage,
            compressed=args.compressed,
            topic=args.topic,
            frame_id=args.frame_id,
        )
    except ValueError as exc:
        print(f"pdn-make-bag: error: {exc}", file=sys.stderr)
        return 2
    start_ns = None if args.start_time is None else round(args.start_time * 1e9)
    t0 = time.perf_counter()
    try:
        truth = make_sample_bag(
            args.out, params, start_ns, force=args.force, progress=False if args.quiet else None
        )
    except BagError as exc:
        print(f"pdn-make-bag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdn-make-bag: interrupted; no output written", file=sys.stderr)
        return 130
    objects = sum(len(f.boxes) for f in truth.frames)
    print(
        f"pdn-make-bag: {len(truth.frames)} frames {truth.width}x{truth.height} "
        f"({'jpeg' if params.compressed else 'rgb8'}, {params.storage}) on {truth.topic}, "
        f"{objects} objects, seeds {params.seed}..{params.seed + params.frames - 1}, "
        f"{time.perf_counter() - t0:.1f} s -> {args.out} (ground truth: "
        f"{args.out / 'ground_truth.json'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
