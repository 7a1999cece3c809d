"""pdn-bench: top-K vs tiles vs global vs SAHI, side by side, same frames and weights."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..benchmark import DEFAULT_CASES, format_table, plot, ratios, run_benchmark
from ..core.config import ConfigError, load_pipeline_config
from ..core.models.io import ModelLoadError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdn-bench",
        description="Benchmark topk (K=1,2,4,8), tiles (overlap 0, 0.2), global and SAHI on the "
        "same held-out synthetic frames with the same weights: latency p50/p99 per stage, "
        "frames/s and recall@0.5.",
    )
    p.add_argument("--frames", type=int, default=10, help="timed frames (default 10)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", default=None, help="override backend (cuda: cuda|compile|tensorrt)")
    p.add_argument("--json", action="store_true", help="print the JSON result to stdout")
    p.add_argument("--out-dir", default="bench_out", help="where JSON and PNG plot are written")
    p.add_argument("--config", default=None, help="pipeline YAML (defaults otherwise)")
    p.add_argument("--model", default=None, help="model .safetensors (default: shipped model)")
    p.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"))
    p.add_argument("--first-seed", type=int, default=1_000_000, help="held-out scene seeds")
    p.add_argument("--no-sahi", action="store_true", help="skip the SAHI row")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("pdn-bench: --frames must be >= 1", file=sys.stderr)
        return 2
    from ..train.scenes import make_scene

    backend = args.backend or ("cuda" if args.device == "cuda" else "cpu")
    try:
        cfg = load_pipeline_config(args.config, backend=backend, model_path=args.model)
    except ConfigError as exc:
        print(f"pdn-bench: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda m: print(m, file=sys.stderr)) if not args.json else None
    frames = []
    for i in range(args.frames):
        sc = make_scene(args.first_seed + i, size=tuple(args.size))
        frames.append((sc.image, sc.boxes, sc.labels))
    cases = [c for c in DEFAULT_CASES if not (args.no_sahi and c.mode == "sahi")]
    try:
        rows, device, note = run_benchmark(frames, cfg, cases, progress=log)
    except (ModelLoadError, RuntimeError) as exc:
        print(f"pdn-bench: {exc}", file=sys.stderr)
        return 1
    out_rows = [r.to_json() for r in rows]
    result = {
        "device": device,
        "backend": note,
        "frames": args.frames,
        "frame_size": list(args.size),
        "crop_size": cfg.crop_size,
        "rows": out_rows,
        "ratios": ratios(out_rows),
        "torch": torch.__version__,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if args.device == "cuda" else "cpu"
    (out / f"pdn_bench_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(out_rows, str(out / f"pdn_bench_{tag}.png"), f"pdn-bench on {device}")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"device: {device}\nbackend: {note}\n")
        print(format_table(out_rows))
        print("\nratios:", json.dumps(result["ratios"]))
        print(f"\nwrote {out / f'pdn_bench_{tag}.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
