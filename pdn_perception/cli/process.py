"""``pdn-process BAG --out OUT_BAG``: the pipeline over every image of a bag, offline, no DDS.

Writes an mcap bag with the node's result topics (``/pdn_perception/detections``,
``/pdn_perception/crops``, ``/pdn_perception/saliency``), one message each per input image,
stamped with the input header. Exit codes: 0 done; 1 no image could be processed;
2 usage/config/model/bag error (nothing is written); 130 interrupted (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdn-process",
        description="Run the PatchDrive pipeline on every sensor_msgs/Image or CompressedImage "
        "of a rosbag2 (mcap or sqlite3) and write the results as an mcap bag.",
    )
    p.add_argument("bag", type=Path, help="input rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--out", "-o", type=Path, required=True, help="output bag directory (mcap)")
    p.add_argument("--config", type=Path, help="pipeline YAML (flat or a ROS params file)")
    p.add_argument(
        "--topic",
        action="append",
        dest="topics",
        metavar="T",
        help="image topic to process (repeatable); default: every image topic",
    )
    p.add_argument("--model", type=Path, help="model .safetensors (default: the shipped model)")
    p.add_argument("--top-k", type=int, help="crops per frame (overrides the config)")
    p.add_argument("--force", action="store_true", help="overwrite OUT_BAG if it exists")
    p.add_argument(
        "--copy-images",
        action="store_true",
        help="also copy the input image messages into the output (one file for Foxglove)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports after argument parsing: `--help` stays instant.
    from ..bags.io import BagError
    from ..bags.process import process_bag
    from ..core import ConfigError, load_pipeline_config
    from ..core.models import ModelLoadError

    def fail(text: str) -> int:
        print(f"pdn-process: error: {text}", file=sys.stderr)
        return 2

    if args.out.exists() and not args.force:
        return fail(f"output {args.out} exists; use --force to overwrite it")
    try:
        config = load_pipeline_config(
            args.config,
            model_path=str(args.model) if args.model else None,
            top_k=args.top_k,
        )
        summary = process_bag(
            args.bag,
            args.out,
            config,
            topics=args.topics,
            force=args.force,
            copy_images=args.copy_images,
            progress=False if args.quiet else None,
        )
    except (BagError, ConfigError, ModelLoadError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("pdn-process: interrupted; no output written", file=sys.stderr)
        return 130
    print(
        json.dumps(summary.to_json(), indent=1) if args.json else f"pdn-process: {summary.text()}"
    )
    if summary.processed == 0:
        print("pdn-process: error: no image could be processed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
