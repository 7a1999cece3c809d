"""``pdn-detect``: run PatchDrive on image files.

    pdn-detect frame.png                          # readable summary
    pdn-detect *.png --json > dets.jsonl          # one JSON line per image
    pdn-detect big.tif --mode tiles --overlay out/

Images are read with OpenCV (BGR -> RGB; grayscale is fine; 16-bit and other high-bit-depth
images are scaled to 8 bits by their bit depth). A file that cannot be read or processed gets
a clear message on stderr (and a JSON line with "error" in --json mode); the other files are
still processed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.config import MODES, ConfigError, load_pipeline_config


class ImageReadError(ValueError):
    """An input image is missing, unreadable or of an unsupported kind; the message says which."""


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth integer image to 8 bits by its bit depth (12-bit data stays bright:
    a 12-bit max of 4095 maps to 255, a 16-bit image is divided by 257)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype in (np.uint16, np.uint32):
        peak = int(img.max()) if img.size else 0
        bits = max(8, peak.bit_length())
        scale = 255.0 / float((1 << bits) - 1)
        return np.clip(img.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    raise ImageReadError(f"unsupported pixel type {img.dtype} (expected 8- or 16-bit integers)")


def read_image(path: str | Path) -> np.ndarray:
    """File -> (H, W) mono or (H, W, 3) RGB uint8; ImageReadError says why not."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("file not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageReadError("not a readable image (OpenCV could not decode it)")
    img = to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageReadError(f"unsupported channel count {img.shape[2]}")
    return np.ascontiguousarray(img)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdn-detect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--mode", choices=MODES, default=None, help="topk | tiles | global")
    p.add_argument("--top-k", type=int, default=None, help="crops per frame in topk mode")
    p.add_argument("--config", default=None, help="pipeline YAML (ROS params files work too)")
    p.add_argument("--model", default=None, help="model .safetensors (default: shipped model)")
    p.add_argument("--score-threshold", type=float, default=None)
    p.add_argument("--json", action="store_true", help="one JSON line per image on stdout")
    p.add_argument("--overlay", default=None, metavar="DIR", help="write PNG overlays here")
    return p


def summary(path: str, result: Any, max_lines: int = 20) -> str:
    """Readable multi-line summary of one Result."""
    names = result.label_names()
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    per_class = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    h, w = result.frame_hw
    lines = [
        f"{path}: {w}x{h}, mode {result.mode}, {len(result.crop_boxes)} crops, "
        f"{len(names)} detections ({per_class}) in {result.timings_ms.get('total', 0):.1f} ms"
    ]
    for box, score, name in list(zip(result.boxes, result.scores, names))[:max_lines]:
        x1, y1, x2, y2 = (float(v) for v in box)
        lines.append(f"  {name:<8} {score:.2f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    if len(names) > max_lines:
        lines.append(f"  ... {len(names) - max_lines} more")
    return "\n".join(lines)


def _overlay_path(out_dir: Path, image: Path, used: set[Path]) -> Path:
    base = out_dir / f"{image.stem}_overlay.png"
    path, i = base, 1
    while path in used:
        path = out_dir / f"{image.stem}_overlay_{i}.png"
        i += 1
    used.add(path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..core.models.io import ModelLoadError
    from ..core.pipeline import FrameError, Pipeline

    try:
        config = load_pipeline_config(
            args.config,
            mode=args.mode,
            top_k=args.top_k,
            score_threshold=args.score_threshold,
            model_path=args.model,
        )
        pipeline = Pipeline(config)
    except (ConfigError, ModelLoadError) as exc:
        print(f"pdn-detect: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.overlay) if args.overlay else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[Path] = set()
    failed = 0
    for path in args.images:
        try:
            frame = read_image(path)
            result = pipeline(frame)
        except (ImageReadError, FrameError, cv2.error) as exc:
            failed += 1
            print(f"pdn-detect: {path}: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": path, "error": str(exc)}), flush=True)
            continue
        if args.json:
            print(json.dumps({"image": path, **result.to_json()}), flush=True)
        else:
            print(summary(path, result), flush=True)
        if out_dir is not None:
            from ..viz import render_overlay

            rgb = render_overlay(frame, result)
            target = _overlay_path(out_dir, Path(path), used)
            if not cv2.imwrite(str(target), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                failed += 1
                print(f"pdn-detect: {path}: could not write overlay {target}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
