"""The Patch Drive controller: pure geometry deciding which full-resolution windows to look at.

No torch, no state: saliency map in, crop boxes out. Boxes are ``(x1, y1, x2, y2)`` in frame
pixels, integer-valued, x2/y2 exclusive.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import cv2
import numpy as np

SELECTION_STRATEGIES: tuple[str, ...] = ("peak", "coverage")
#: Saliency below this is background to the ``coverage`` strategy (it would otherwise add up:
#: a 512² crop spans 1024 cells of a 2048² frame's 128² map).
COVERAGE_FLOOR = 0.35


def crop_extent(frame_hw: tuple[int, int], crop_size: int) -> tuple[int, int]:
    """Crop (height, width): crop_size, or the whole frame side when the frame is smaller."""
    h, w = frame_hw
    return min(crop_size, h), min(crop_size, w)


def _clamped_centres(n_cells: int, scale: float, frame_len: int, crop_len: int) -> np.ndarray:
    """Frame-pixel centre of the clamped crop for each saliency cell along one axis."""
    centres = (np.arange(n_cells, dtype=np.float64) + 0.5) * scale
    half = crop_len / 2.0
    return np.clip(centres, half, frame_len - half)


def _crop_start(centre: np.ndarray, crop_len: int, frame_len: int) -> np.ndarray:
    """First pixel of the crop centred (as near as the frame allows) at ``centre``, per axis."""
    return np.clip(np.round(np.asarray(centre) - crop_len / 2.0), 0, frame_len - crop_len)


def _cells_between(start: np.ndarray, end: np.ndarray, cells_per_px: float, n: int) -> np.ndarray:
    """First and end (exclusive) saliency cell whose centre lies in frame pixels [start, end),
    per axis: (2, len)."""
    lo = np.ceil(np.asarray(start) * cells_per_px - 0.5).astype(np.int64)
    hi = np.ceil(np.asarray(end) * cells_per_px - 0.5).astype(np.int64)
    return np.stack([np.clip(lo, 0, n), np.clip(hi, 0, n)])


def _window_cells(
    centres: np.ndarray, crop_len: int, frame_len: int, cells_per_px: float, n: int
) -> np.ndarray:
    """First and end (exclusive) saliency cell whose centre lies in the crop that starts at
    ``_crop_start`` for each centre: (2, len)."""
    start = _crop_start(centres, crop_len, frame_len)
    return _cells_between(start, start + crop_len, cells_per_px, n)


class _Axis(NamedTuple):
    """Per saliency cell along one axis: the clamped crop centre, that crop's first pixel, and
    the first and end (exclusive) cell inside it. Read-only; depends on sizes alone."""

    centres: np.ndarray  # (n,) float64 frame pixels
    starts: np.ndarray  # (n,) int64 frame pixels
    cells: np.ndarray  # (2, n) int64


@functools.lru_cache(maxsize=32)
def _axis(n_cells: int, frame_len: int, crop_len: int) -> _Axis:
    """The geometry of one axis, computed once per map size, frame size and crop (a node sees
    the same three every frame; computing them took ~0.1 ms of a 1.2 ms selection)."""
    centres = _clamped_centres(n_cells, frame_len / n_cells, frame_len, crop_len)
    starts = _crop_start(centres, crop_len, frame_len).astype(np.int64)
    cells = _window_cells(centres, crop_len, frame_len, n_cells / frame_len, n_cells)
    for a in (centres, starts, cells):
        a.setflags(write=False)
    return _Axis(centres, starts, cells)


def _near(centres: np.ndarray, centre: float, sep: float) -> slice:
    """Cells whose clamped centre lies within ``sep`` of ``centre``: one run, since the clamped
    centres never decrease along an axis."""
    idx = np.flatnonzero(np.abs(centres - centre) < sep)
    return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)


def select_crops(
    saliency: np.ndarray,
    frame_hw: tuple[int, int],
    k: int,
    crop_size: int,
    min_separation: float = 0.5,
    strategy: str = "peak",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K peak selection with suppression -> K distinct full-resolution crop boxes.

    saliency (h, w) float, any scale, covering the whole frame. Crops are picked greedily; after
    each pick every cell whose *clamped* crop centre lies within ``min_separation * crop_size``
    (per axis) of the chosen crop's centre is suppressed, so crops never duplicate each other even
    at the borders. Returns boxes (K', 4) int64 and the saliency at their centre cells (K',),
    K' = K unless the frame cannot hold K crops that far apart. Ties break on the lowest flat
    index (deterministic).

    ``strategy`` ``peak`` centres each crop on the hottest remaining cell. ``coverage`` places it
    where the most saliency mass (cells >= ``COVERAGE_FLOOR``) not yet inside a chosen crop lies:
    a cluster of ten objects outranks one isolated hot cell (greedy maximum coverage). Where no
    mass is left it falls back to the peak order.
    """
    if strategy not in SELECTION_STRATEGIES:
        raise ValueError(f"strategy must be one of {SELECTION_STRATEGIES}, got {strategy!r}")
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"saliency must be a non-empty 2-D map, got shape {saliency.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    fh, fw = frame_hw
    if fh < 1 or fw < 1:
        raise ValueError(f"frame size must be positive, got {frame_hw}")
    sh, sw = saliency.shape
    crop_hw = crop_extent(frame_hw, crop_size)
    ax, ay = _axis(sw, fw, crop_hw[1]), _axis(sh, fh, crop_hw[0])
    cx, cy = ax.centres, ay.centres  # (sw,), (sh,)
    sep = min_separation * crop_size
    work = np.asarray(saliency, dtype=np.float64).copy()
    work[~np.isfinite(work)] = -np.inf
    alive = np.ones_like(work, dtype=bool)
    if strategy == "coverage":
        mass = np.where(work >= COVERAGE_FLOOR, work, 0.0)  # (h, w); -inf and NaN count as 0
        xs, ys = ax.cells, ay.cells  # (2, w), (2, h) first and end cell per centre
        # Tie-break on the cell's own saliency; non-finite cells rank last, as in ``peak``.
        rank_base = np.where(np.isfinite(work), 1e-9 * np.clip(work, 0, 1), -np.inf)  # (h, w)
    else:
        rank_base = work.copy()  # (h, w)
    # Suppressed cells are set to -inf in rank_base, so a pick is an argmax of rank_base (plus
    # the uncovered mass), not of a masked copy; ``alive`` only serves the all -inf fallback.
    boxes: list[np.ndarray] = []
    scores: list[float] = []
    for _ in range(k):
        if not alive.any():
            break
        masked = rank_base
        if strategy == "coverage":
            integral = cv2.integral(mass, sdepth=cv2.CV_64F)  # (h + 1, w + 1); 8x np.cumsum's speed
            rows = integral[ys[1]] - integral[ys[0]]  # (h, w + 1) mass of each row window
            inside = rows[:, xs[1]] - rows[:, xs[0]]  # (h, w) uncovered mass in each crop
            masked = inside + rank_base  # a new array: measured 2x faster here than in place
        flat = int(np.argmax(masked))
        if not np.isfinite(masked.flat[flat]):  # only -inf/NaN left: take the first alive cell
            flat = int(np.flatnonzero(alive)[0])
        iy, ix = divmod(flat, sw)
        x1, y1 = int(ax.starts[ix]), int(ay.starts[iy])
        box = np.array([x1, y1, x1 + crop_hw[1], y1 + crop_hw[0]], dtype=np.int64)
        boxes.append(box)
        scores.append(float(work[iy, ix]))
        if strategy == "coverage":
            mass[ys[0, iy] : ys[1, iy], xs[0, ix] : xs[1, ix]] = 0.0
        near = (_near(cy, (box[1] + box[3]) / 2.0, sep), _near(cx, (box[0] + box[2]) / 2.0, sep))
        alive[near] = False
        rank_base[near] = -np.inf
    return np.stack(boxes), np.asarray(scores, dtype=np.float32)


def new_saliency(saliency: np.ndarray, frame_hw: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """Per crop (in order), the hottest saliency cell inside it that no earlier crop holds.

    What a crop adds that the crops before it did not: a crop whose value is low looks only at
    background or at objects already seen (``min_crop_saliency`` drops it). A cell is inside a
    crop when its centre is. saliency (h, w); boxes (K, 4) frame pixels -> (K,) float32, -inf
    where a crop holds no new cell (NaN cells count as -inf).
    """
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"saliency must be a non-empty 2-D map, got shape {saliency.shape}")
    sh, sw = saliency.shape
    fh, fw = frame_hw
    boxes = np.asarray(boxes).reshape(-1, 4)
    xs = _cells_between(boxes[:, 0], boxes[:, 2], sw / fw, sw)  # (2, K)
    ys = _cells_between(boxes[:, 1], boxes[:, 3], sh / fh, sh)  # (2, K)
    sal = np.asarray(saliency, dtype=np.float32)
    work = np.where(np.isnan(sal), -np.inf, sal)  # (h, w) a new array: written below
    out = np.full(len(boxes), -np.inf, dtype=np.float32)
    for i in range(len(boxes)):
        window = work[ys[0, i] : ys[1, i], xs[0, i] : xs[1, i]]
        if window.size:
            out[i] = window.max()
            window[...] = -np.inf  # seen: later crops get no credit for it
    return out


def tile_boxes(frame_hw: tuple[int, int], crop_size: int, overlap: float = 0.0) -> np.ndarray:
    """Exhaustive grid of crop windows (SAHI-style slicing) covering the whole frame.

    Tiles step by ``crop_size * (1 - overlap)``; the last tile per axis is shifted inside the frame
    so nothing is missed and no tile leaves it. Returns (T, 4) int64, row-major.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    ch, cw = crop_extent(frame_hw, crop_size)
    ys = _axis_starts(frame_hw[0], ch, overlap)
    xs = _axis_starts(frame_hw[1], cw, overlap)
    return np.array([[x, y, x + cw, y + ch] for y in ys for x in xs], dtype=np.int64)


def _axis_starts(length: int, crop: int, overlap: float) -> list[int]:
    if length <= crop:
        return [0]
    step = crop * (1.0 - overlap)
    n = math.ceil((length - crop) / step - 1e-9) + 1
    starts = [min(round(i * step), length - crop) for i in range(n)]
    return sorted(set(starts))


def crop_to_frame(boxes: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) in crop pixels -> frame pixels (a pure translation)."""
    offset = np.array([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], dtype=boxes.dtype)
    return boxes + offset


def frame_to_crop(boxes: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) in frame pixels -> crop pixels (inverse of crop_to_frame)."""
    offset = np.array([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], dtype=boxes.dtype)
    return boxes - offset


def saliency_input_hw(
    frame_hw: tuple[int, int], long_side: int, multiple: int = 32
) -> tuple[int, int]:
    """Size of the downscaled frame: long side = ``long_side``, aspect kept, sides rounded to a
    multiple of ``multiple`` (what the networks' strides need)."""
    h, w = frame_hw
    s = long_side / max(h, w)
    out_h = max(multiple, round(h * s / multiple) * multiple)
    out_w = max(multiple, round(w * s / multiple) * multiple)
    return out_h, out_w
