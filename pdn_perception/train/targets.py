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

#: Total regression weight of one object with the default 3x3 area (1 + 4 e^-0.5 + 4 e^-1).
_REG_TOTAL = 1.0 + 4 * math.exp(-0.5) + 4 * math.exp(-1.0)


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


def draw_gaussian(
    heat: np.ndarray, cx: int, cy: int, radius: int, radius_y: int | None = None
) -> None:
    """Max-splat a gaussian (sigma = diameter / 6 per axis) into heat (h, w), in place.

    ``radius_y`` None gives the round CenterNet gaussian; otherwise ``radius`` is along x.
    """
    h, w = heat.shape
    rx, ry = radius, radius if radius_y is None else radius_y
    sx, sy = (2 * rx + 1) / 6.0, (2 * ry + 1) / 6.0
    xs = np.arange(-rx, rx + 1, dtype=np.float32)
    ys = np.arange(-ry, ry + 1, dtype=np.float32)
    g = np.exp(-(ys[:, None] ** 2) / (2 * sy * sy) - xs[None, :] ** 2 / (2 * sx * sx))
    left, right = min(cx, rx), min(w - cx, rx + 1)
    top, bottom = min(cy, ry), min(h - cy, ry + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heat[cy - top : cy + bottom, cx - left : cx + right]
    patch = g[ry - top : ry + bottom, rx - left : rx + right]  # (2ry+1, 2rx+1) window
    np.maximum(region, patch, out=region)


def centernet_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    out_hw: tuple[int, int],
    num_classes: int,
    stride: int = 4,
    min_radius: int = 1,
    reg_radius: int = 1,
    box_fraction: float = 0.0,
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

    ``box_fraction`` > 0 (TTFNet's alpha/beta) stretches both areas with the box: the heat
    gaussian and the regression area reach ``box_fraction`` of the half-width and half-height
    (never less than the radii above). A 40x10 px boat then has soft negatives along its length
    instead of hard ones, and a peak two cells from its centre still decodes the whole hull, not
    the part it sees. Each object's regression weights are rescaled to the 3x3 total, so large
    objects do not outweigh small ones.
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
        rx = ry = radius
        gx = gy = reg_radius
        if box_fraction > 0:
            rx = max(radius, int(box_fraction * bw / 2))
            ry = max(radius, int(box_fraction * bh / 2))
            gx = max(reg_radius, int(box_fraction * bw / 2))
            gy = max(reg_radius, int(box_fraction * bh / 2))
        draw_gaussian(heat[int(lab)], ix, iy, rx, ry)
        log_wh = (math.log(bw), math.log(bh))
        # sigma 1 cell for the 3x3 default, growing with the area for large boxes
        sx, sy = max(1.0, gx / 2), max(1.0, gy / 2)
        ys = np.arange(max(0, iy - gy), min(h, iy + gy + 1))
        xs = np.arange(max(0, ix - gx), min(w, ix + gx + 1))
        wgt = np.exp(
            -((xs[None, :] - ix) ** 2) / (2 * sx * sx) - ((ys[:, None] - iy) ** 2) / (2 * sy * sy)
        )  # (len(ys), len(xs))
        wgt *= _REG_TOTAL / max(float(wgt.sum()), _REG_TOTAL)  # no object outweighs a 3x3 one
        wgt[iy - ys[0], ix - xs[0]] = 1.0  # the centre cell always has full weight
        win = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        own = wgt > reg_mask[win]  # cells where no nearer (or smaller) object has more weight
        for c in range(2):
            size[c][win][own] = log_wh[c]
        offset[0][win][own] = np.broadcast_to(cx - xs[None, :], own.shape)[own]
        offset[1][win][own] = np.broadcast_to(cy - ys[:, None], own.shape)[own]
        reg_mask[win][own] = wgt[own]
    return CropTargets(heat, size, offset, reg_mask)
