"""CenterNet training targets for one crop: per-class gaussian heat maps, log-size and offset.

Pure numpy so targets are built in the data path without touching torch's thread pool, and are
easy to check by hand. Everything is at the detector's output stride (4): a box centred at crop
pixel (cx, cy) peaks at cell (floor(cx / 4), floor(cy / 4)); its size target is log(w / 4),
log(h / 4) and its offset target the fractional part of cx / 4, cy / 4 — exactly what
``core.models.detector.decode`` inverts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropTargets:
    """Targets of one crop at output resolution (h, w) = crop size / stride."""

    heat: np.ndarray  # (C, h, w) float32 in [0, 1], exactly 1 at object centres
    size: np.ndarray  # (2, h, w) float32 log(w / stride), log(h / stride) at centres
    offset: np.ndarray  # (2, h, w) float32 sub-cell centre offset in [0, 1) at centres
    reg_mask: np.ndarray  # (h, w) float32 regression weight: 1 at centres, <1 around, else 0


def gaussian_radius(box_h: float, box_w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: how far a corner may move and still give IoU >= min_overlap."""
    a1 = 1.0
    b1 = box_h + box_w
    c1 = box_w * box_h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2 = 4.0
    b2 = 2 * (box_h + box_w)
    c2 = (1 - min_overlap) * box_w * box_h
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (box_h + box_w)
    c3 = (min_overlap - 1) * box_w * box_h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heat: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Max-splat a gaussian (sigma = diameter / 6) into heat (h, w), in place."""
    h, w = heat.shape
    sigma = (2 * radius + 1) / 6.0
    ys = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-(ys[:, None] ** 2 + ys[None, :] ** 2) / (2 * sigma * sigma))  # (2r+1, 2r+1)
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heat[cy - top : cy + bottom, cx - left : cx + right]
    patch = g[radius - top : radius + bottom, radius - left : radius + right]
    np.maximum(region, patch, out=region)


def centernet_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    out_hw: tuple[int, int],
    num_classes: int,
    stride: int = 4,
    min_radius: int = 1,
    reg_radius: int = 1,
) -> CropTargets:
    """Targets for boxes (N, 4) x1y1x2y2 in crop pixels, labels (N,) class indices.

    Boxes whose centre falls outside the crop are skipped (the crop that holds their centre
    detects them). Radius is floored at ``min_radius`` cells so 6 px objects (1.5 cells) still get
    a 3x3 bump rather than a single hot pixel that is hard to hit.

    Size and offset are supervised on the (2 * reg_radius + 1)² cells around the centre, not only
    on the centre cell (as in TTFNet): each cell's offset points at the true centre, so a heat
    peak that lands one cell off — common for 6-10 px objects — still decodes the right box, and
    every object gives 9 regression samples instead of 1 (faster to train). ``reg_mask`` holds
    the per-cell weight (1 at the centre, gaussian-decaying around it; the nearer object wins).
    """
    h, w = out_hw
    heat = np.zeros((num_classes, h, w), np.float32)
    size = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    reg_mask = np.zeros((h, w), np.float32)
    for (x1, y1, x2, y2), lab in zip(np.asarray(boxes, np.float64), np.asarray(labels)):
        bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (x1 + x2) / (2 * stride), (y1 + y2) / (2 * stride)
        ix, iy = math.floor(cx), math.floor(cy)
        if not (0 <= ix < w and 0 <= iy < h):
            continue
        radius = max(min_radius, int(gaussian_radius(bh, bw)))
        draw_gaussian(heat[int(lab)], ix, iy, radius)
        log_wh = (math.log(bw), math.log(bh))
        for jy in range(max(0, iy - reg_radius), min(h, iy + reg_radius + 1)):
            for jx in range(max(0, ix - reg_radius), min(w, ix + reg_radius + 1)):
                weight = math.exp(-((jx - ix) ** 2 + (jy - iy) ** 2) / 2.0)
                if weight <= reg_mask[jy, jx]:
                    continue  # a nearer object owns this cell
                size[:, jy, jx] = log_wh
                offset[:, jy, jx] = (cx - jx, cy - jy)
                reg_mask[jy, jx] = weight
    return CropTargets(heat, size, offset, reg_mask)
