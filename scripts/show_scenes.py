"""Render one synthetic scene per domain with its boxes into a PNG grid, to eyeball the data.

Usage: python scripts/show_scenes.py OUT.png [--seed 0] [--size 2048 2048] [--scale 0.5]
       [--crop]  (--crop adds a full-resolution 512x512 window around the densest objects)

Looking at the scenes matters: they are the only training data, so what a model learns is
what these images show.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pdn_perception.train.scenes import DOMAINS, Scene, make_scene


def _draw(scene: Scene, scale: float) -> np.ndarray:
    img = cv2.resize(scene.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    for x1, y1, x2, y2 in scene.boxes * scale:
        p, q = (int(x1) - 2, int(y1) - 2), (int(np.ceil(x2)) + 1, int(np.ceil(y2)) + 1)
        cv2.rectangle(img, p, q, (255, 40, 40), 1)
    label = f"{scene.domain} seed={scene.seed} n={len(scene.boxes)}"
    cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1)
    return img


def _dense_crop(scene: Scene, size: int = 512) -> np.ndarray:
    """Full-resolution window holding the most box centres, boxes drawn."""
    h, w = scene.image.shape[:2]
    size = min(size, h, w)
    cx = (scene.boxes[:, 0] + scene.boxes[:, 2]) / 2
    cy = (scene.boxes[:, 1] + scene.boxes[:, 3]) / 2
    best, best_xy = -1, (0, 0)
    for y in range(0, h - size + 1, 64):
        for x in range(0, w - size + 1, 64):
            n = int(np.sum((cx >= x) & (cx < x + size) & (cy >= y) & (cy < y + size)))
            if n > best:
                best, best_xy = n, (x, y)
    x, y = best_xy
    crop = np.ascontiguousarray(scene.image[y : y + size, x : x + size])
    for x1, y1, x2, y2 in scene.boxes - (x, y, x, y):
        cv2.rectangle(crop, (int(x1) - 1, int(y1) - 1), (int(x2), int(y2)), (255, 40, 40), 1)
    return crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"))
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--crop", action="store_true", help="add a full-res crop row")
    args = ap.parse_args()
    scenes = [make_scene(args.seed + i, d, tuple(args.size)) for i, d in enumerate(DOMAINS)]
    row = np.concatenate([_draw(s, args.scale) for s in scenes], axis=1)
    rows = [row]
    if args.crop:
        crops = [_dense_crop(s) for s in scenes]
        ch = max(c.shape[0] for c in crops)
        crops = [np.pad(c, ((0, ch - c.shape[0]), (0, 0), (0, 0))) for c in crops]
        crow = np.concatenate(crops, axis=1)
        pad = row.shape[1] - crow.shape[1]
        if pad > 0:
            crow = np.pad(crow, ((0, 0), (0, pad), (0, 0)))
        rows.append(crow[:, : row.shape[1]])
    grid = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
