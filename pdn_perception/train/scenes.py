"""Seeded synthetic large frames with ground truth: the training and test data of the project.

There are no real data sets or pretrained weights here, so these scenes are what the saliency
net and the crop detector learn from and are scored on. They mimic the three uses of the method:

* ``maritime``  (label ``boat``): ocean texture (swell, ripples), small boats with wakes; white-
  caps, sun glint and an optional sky band are unlabelled distractors.
* ``aerial``    (label ``vehicle``): farmland or town blocks, forest, roads, parking lots;
  trees, rocks, buildings (with rooftop units) and shadows are distractors.
* ``microscopy`` (label ``nucleus``): H&E-like tissue; cytoplasm blobs, debris and red blood
  cells are distractors.

Objects are small (OBJECT_LENGTH_PX, BOX_SIDE_PX) and sparse but clustered: 1-3 clusters of
radius ~100-350 px plus a few singletons, 3-40 objects per 2048x2048 frame (log-uniform),
~5% empty frames. That is the premise of the method: a few 512x512 full-resolution crops hold
most of a frame's objects. Counts scale with frame area; object pixel sizes never scale.

Boxes are measured from the pixels that drawing the object actually changed, so they are tight
around the visible object and consistent with the image. Everything derives from
``np.random.default_rng(seed)`` (no global RNG): the same seed and arguments give a
bit-identical scene.

Seed convention: seeds ``>= EVAL_SEED_START`` (1_000_000) are reserved for held-out evaluation;
training code should draw its seeds below that (not enforced here).

Speed: textures are rendered at 1/4 resolution and upsampled, fine grain comes from small
seamless tiles, objects and distractors are drawn with cv2 primitives on small patches or
sparse masks; a 2048x2048 scene costs roughly 60-150 ms of one core. cv2 runs single-threaded
while a scene renders (process-wide setting, restored afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("boat", "vehicle", "nucleus")
DOMAINS: tuple[str, ...] = ("maritime", "aerial", "microscopy")
DOMAIN_LABEL: dict[str, int] = {"maritime": 0, "aerial": 1, "microscopy": 2}
EVAL_SEED_START = 1_000_000
#: Object length (longest side before rotation) in frame pixels, per class, independent of size.
OBJECT_LENGTH_PX: dict[str, tuple[float, float]] = {
    "boat": (6.0, 48.0),
    "vehicle": (6.0, 40.0),
    "nucleus": (8.0, 40.0),
}
#: Range of a box's longest side in frame pixels, per class. Wider than OBJECT_LENGTH_PX
#: because a rotated object's box spans up to sqrt(length^2 + width^2), plus outlines/AA.
BOX_SIDE_PX: dict[str, tuple[float, float]] = {
    "boat": (4.0, 54.0),
    "vehicle": (4.0, 47.0),
    "nucleus": (6.0, 46.0),
}
#: Objects per 2048x2048 frame in non-empty frames; scaled by area for other sizes.
OBJECTS_PER_FRAME: tuple[int, int] = (3, 40)
EMPTY_FRAME_PROB = 0.05
MAX_IOU = 0.3

_REF_AREA = 2048.0 * 2048.0
_LR = 4  # backgrounds are rendered at 1/_LR resolution and upsampled
_VIS_THR = 36  # summed |RGB change| that makes a pixel part of an object's visible extent
_EDGE = 2.0  # objects keep this many pixels from the frame border

Colour = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Scene:
    """One synthetic frame and its ground truth.

    image: (H, W, 3) uint8 RGB, C-contiguous. boxes: (N, 4) float32 x1, y1, x2, y2 in frame
    pixels (x2/y2 exclusive), tight around the visible object. labels: (N,) int64 into CLASSES.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    domain: str
    seed: int


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def make_scene(seed: int, domain: str | None = None, size: tuple[int, int] = (2048, 2048)) -> Scene:
    """Render one scene. size is (height, width); domain None -> DOMAINS[seed % 3].

    Same seed and arguments give a bit-identical result; the domain rule makes consecutive
    seeds cycle through the domains, so a stream of seeds is balanced.
    """
    if domain is None:
        domain = DOMAINS[int(seed) % len(DOMAINS)]
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"size {size} too small; need at least 32x32")
    rng = np.random.default_rng(int(seed))
    with _single_threaded_cv2():
        return _make(rng, int(seed), domain, h, w)


@contextmanager
def _single_threaded_cv2() -> Iterator[None]:
    """Run cv2 single-threaded for one scene.

    Each cv2 call here is small; fanning it out costs more than it saves (measured ~2-4x
    slower for the low-res cubic resizes on a busy 2-core machine), and data loaders already
    generate scenes in parallel processes. The previous setting is restored.
    """
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(prev)


def _make(rng: np.random.Generator, seed: int, domain: str, h: int, w: int) -> Scene:
    render: Callable[[np.random.Generator, int, int], tuple[np.ndarray, list[np.ndarray]]]
    render = {"maritime": _render_maritime, "aerial": _render_aerial}.get(
        domain, _render_microscopy
    )
    img, boxes = render(rng, h, w)
    img = _photometric(rng, img, domain)
    box_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.full(len(box_arr), DOMAIN_LABEL[domain], dtype=np.int64)
    return Scene(np.ascontiguousarray(img), box_arr, labels, domain, seed)


def oracle_mask(
    boxes: np.ndarray,
    frame_hw: tuple[int, int],
    out_hw: tuple[int, int],
    min_radius: float = 1.0,
) -> np.ndarray:
    """Binary object mask at saliency-map resolution: the ideal saliency output.

    Every cell a box touches is 1, plus a disc of min_radius cells around each box centre so
    that objects smaller than a cell still light up a neighbourhood (a target a net can hit).
    """
    fh, fw = frame_hw
    oh, ow = out_hw
    mask = np.zeros((oh, ow), dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return mask
    sx, sy = ow / fw, oh / fh
    eps = 1e-6
    rr = max(float(min_radius), 0.0)
    for x1, y1, x2, y2 in b:
        c0 = int(np.clip(math.floor(x1 * sx + eps), 0, ow - 1))
        r0 = int(np.clip(math.floor(y1 * sy + eps), 0, oh - 1))
        c1 = int(np.clip(math.ceil(x2 * sx - eps), c0 + 1, ow))
        r1 = int(np.clip(math.ceil(y2 * sy - eps), r0 + 1, oh))
        mask[r0:r1, c0:c1] = 1.0
        if rr > 0:
            cx, cy = 0.5 * (x1 + x2) * sx, 0.5 * (y1 + y2) * sy
            ca, cb = max(0, int(cx - rr) - 1), min(ow, int(cx + rr) + 2)
            ra, rb = max(0, int(cy - rr) - 1), min(oh, int(cy + rr) + 2)
            yy, xx = np.ogrid[ra:rb, ca:cb]
            disc = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= rr * rr
            mask[ra:rb, ca:cb][disc] = 1.0
    return mask


def scene_stream(
    first_seed: int,
    count: int,
    domain: str | None = None,
    size: tuple[int, int] = (2048, 2048),
) -> Iterator[Scene]:
    """Scenes for seeds first_seed .. first_seed + count - 1 (lazily, one at a time)."""
    for i in range(int(count)):
        yield make_scene(int(first_seed) + i, domain, size)


# --------------------------------------------------------------------------------------------
# Noise, tiles and compositing helpers
# --------------------------------------------------------------------------------------------


def _fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Multi-octave smooth noise (h, w) float32 with unit std; cell is the coarsest feature size.

    Built coarse-to-fine on small grids (upsample x2, add finer noise at half amplitude), so
    only one resize touches the full (h, w) array whatever the number of octaves.
    """
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    for o in range(1, octaves):
        if cell / 2**o < 1.5:
            break
        gh, gw = 2 * gh, 2 * gw
        g = cv2.resize(g, (gw, gh), interpolation=cv2.INTER_CUBIC)
        g += np.float32(0.5**o) * rng.standard_normal((gh, gw), dtype=np.float32)
    out = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    mean, std = cv2.meanStdDev(out)
    out -= np.float32(mean[0, 0])
    out *= np.float32(1.0 / (std[0, 0] + 1e-6))
    return out


def _periodic_noise(rng: np.random.Generator, t: int, cell: int) -> np.ndarray:
    """Seamlessly tileable smooth noise (t, t) float32, unit std; t must be a multiple of cell."""
    n = t // cell
    g = np.pad(rng.standard_normal((n, n), dtype=np.float32), 2, mode="wrap")
    up = cv2.resize(g, ((n + 4) * cell, (n + 4) * cell), interpolation=cv2.INTER_CUBIC)
    out = up[2 * cell : 2 * cell + t, 2 * cell : 2 * cell + t]
    return (out - out.mean()) / (float(out.std()) + 1e-6)


def _streak_noise(
    rng: np.random.Generator, t: int, length: int, angle: float, soft: float = 0.7
) -> np.ndarray:
    """Tileable anisotropic noise (t, t): white noise smeared along `angle` (ripples, fibres)."""
    k = length | 1
    ker = np.zeros((k, k), np.float32)
    c, r = k // 2, k / 2.0
    dx, dy = math.cos(angle) * r, math.sin(angle) * r
    cv2.line(ker, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
    ker = cv2.GaussianBlur(ker, (0, 0), soft)
    ker /= ker.sum()
    pad = k // 2 + 2
    noise = np.pad(rng.random((t, t), dtype=np.float32) - 0.5, pad, mode="wrap")
    out = cv2.filter2D(noise, -1, ker)[pad : pad + t, pad : pad + t]
    return (out - out.mean()) / (float(out.std()) + 1e-6)


def _add_tile(
    img: np.ndarray,
    tile: np.ndarray,
    rng: np.random.Generator,
    y_start: int = 0,
) -> None:
    """Add a signed tile (t, t) or (t, t, 3) over the frame in place, with a random phase.

    Using a small seamless tile instead of full-frame noise keeps fine grain at full
    resolution for a few milliseconds per frame.
    """
    if tile.ndim == 2:
        tile = np.repeat(tile[:, :, None], 3, axis=2)
    ti = np.rint(tile)
    pos = np.clip(ti, 0, 255).astype(np.uint8)
    neg = np.clip(-ti, 0, 255).astype(np.uint8)
    th, tw = tile.shape[:2]
    h, w = img.shape[:2]
    oy, ox = int(rng.integers(th)), int(rng.integers(tw))
    for ty in range(y_start - oy, h, th):
        ya, yb = max(ty, y_start), min(ty + th, h)
        if yb <= ya:
            continue
        for tx in range(-ox, w, tw):
            xa, xb = max(tx, 0), min(tx + tw, w)
            if xb <= xa:
                continue
            v = img[ya:yb, xa:xb]
            cv2.add(v, pos[ya - ty : yb - ty, xa - tx : xb - tx], dst=v)
            cv2.subtract(v, neg[ya - ty : yb - ty, xa - tx : xb - tx], dst=v)


def _overlay(img: np.ndarray, mask: np.ndarray, colour: Colour, strength: float = 1.0) -> None:
    """Blend `colour` into img where the uint8 mask is non-zero (alpha = mask/255*strength).

    Only touched pixels are processed, so sparse layers (foam, shadows) cost little.
    """
    flat_m = mask.reshape(-1)
    if flat_m.size % 8 == 0:  # scan 8 pixels at a time: ~3x faster on sparse masks
        blk = np.flatnonzero(flat_m.view(np.uint64))
        idx = (blk[:, None] * 8 + np.arange(8)).ravel()
        idx = idx[flat_m[idx] != 0]
    else:
        idx = np.flatnonzero(flat_m)
    if idx.size == 0:
        return
    a = flat_m[idx].astype(np.float32)[:, None] * np.float32(strength / 255.0)
    flat = img.reshape(-1, 3)
    px = flat[idx].astype(np.float32)
    px += (np.asarray(colour, np.float32) - px) * a
    flat[idx] = np.clip(px + 0.5, 0, 255).astype(np.uint8)


def _cv(pts: np.ndarray, ox: float = 0.0, oy: float = 0.0) -> np.ndarray:
    """Continuous frame coords (pixel i spans [i, i+1)) -> cv2 fixed point (shift=4)."""
    q = (np.asarray(pts, np.float64) - (ox + 0.5, oy + 0.5)) * 16.0
    return np.rint(q).astype(np.int32).reshape(-1, 2)


def _pt(p: np.ndarray | tuple[float, float], ox: float = 0.0, oy: float = 0.0) -> tuple[int, int]:
    q = _cv(np.asarray(p, np.float64).reshape(1, 2), ox, oy)[0]
    return int(q[0]), int(q[1])


def _rot(uv: np.ndarray, cx: float, cy: float, ang: float) -> np.ndarray:
    """Object-local (u along heading, v across) points -> frame coords."""
    c, s = math.cos(ang), math.sin(ang)
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    return np.stack([cx + uv[:, 0] * c - uv[:, 1] * s, cy + uv[:, 0] * s + uv[:, 1] * c], 1)


def _rect_uv(u0: float, u1: float, hv: float) -> np.ndarray:
    return np.array([[u0, -hv], [u1, -hv], [u1, hv], [u0, hv]], np.float64)


def _aabb(cx: float, cy: float, length: float, width: float, ang: float) -> np.ndarray:
    c, s = abs(math.cos(ang)), abs(math.sin(ang))
    hx, hy = 0.5 * (length * c + width * s), 0.5 * (length * s + width * c)
    return np.array([cx - hx, cy - hy, cx + hx, cy + hy], np.float64)


def _jitter(rng: np.random.Generator, col: Colour | np.ndarray, amount: float) -> np.ndarray:
    """Colour (float32, so low-res float32 images are not promoted to float64) +- amount."""
    return np.clip(np.asarray(col, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(
        np.float32
    )


def _cast(rng: np.random.Generator, amount: float) -> np.ndarray:
    """Per-channel gain along a warm/cool axis plus a weaker green/magenta one.

    Independent per-channel gains tint greys pink or lilac, which no camera does.
    """
    warm, green = rng.uniform(-1, 1), rng.uniform(-0.4, 0.4)
    return (1 + amount * np.array([warm, green, -warm])).astype(np.float32)


def _blob(n: int, m: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    """Separable Gaussian bump on the low-res grid (cx, cy, sigma in frame pixels)."""
    gx = np.exp(-(((np.arange(m, dtype=np.float32) + 0.5) * _LR - cx) ** 2) / (2 * sigma**2))
    gy = np.exp(-(((np.arange(n, dtype=np.float32) + 0.5) * _LR - cy) ** 2) / (2 * sigma**2))
    return np.outer(gy, gx).astype(np.float32)


def _tup(col: np.ndarray | Colour) -> tuple[int, int, int]:
    c = np.clip(np.rint(np.asarray(col, np.float64)), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _pick_contrasting(
    rng: np.random.Generator,
    palette: list[tuple[Colour, float]],
    bg: np.ndarray,
    min_dist: float,
    jitter: float,
) -> np.ndarray:
    """Random palette colour at least min_dist (RGB) from the local background.

    Keeps every labelled object visible (ground truth must match pixels) while still letting
    dark boats sit on bright glint, white cars on dark roads, and so on.
    """
    cols = np.array([c for c, _ in palette], np.float64)
    wts = np.array([p for _, p in palette], np.float64)
    ok = np.linalg.norm(cols - bg[None], axis=1) >= min_dist + jitter
    if ok.any():
        wts = np.where(ok, wts, 0.0)
    else:
        wts = np.linalg.norm(cols - bg[None], axis=1) ** 4
    col = cols[int(rng.choice(len(cols), p=wts / wts.sum()))]
    return _jitter(rng, col, jitter)


def _under(img: np.ndarray, cx: float, cy: float, width: float) -> np.ndarray:
    """Mean colour right under an object's centre (what its body will be seen against)."""
    h, w = img.shape[:2]
    r = max(1.5, 0.5 * width)
    x0, y0 = int(np.clip(cx - r, 0, w - 1)), int(np.clip(cy - r, 0, h - 1))
    x1, y1 = max(x0 + 1, min(w, int(cx + r) + 1)), max(y0 + 1, min(h, int(cy + r) + 1))
    return img[y0:y1, x0:x1].reshape(-1, 3).mean(0)


# A drawing layer: ("poly", pts (k,2) frame coords, colour) | ("circle", (cx, cy, r), colour)
# | ("line", pts (k,2), colour, thickness) | ("outline", pts, colour, thickness)
Layer = tuple


def _layer_extent(layer: Layer) -> np.ndarray:
    kind, geom = layer[0], layer[1]
    if kind == "circle":
        cx, cy, r = geom
        return np.array([[cx - r, cy - r], [cx + r, cy + r]], np.float64)
    pad = (layer[3] / 2.0 + 1.0) if kind in ("line", "outline") else 0.0
    g = np.asarray(geom, np.float64)
    return np.array([g.min(0) - pad, g.max(0) + pad])


def _draw_layers(img: np.ndarray, layers: list[Layer], alpha: float = 1.0) -> np.ndarray | None:
    """Draw an object's layers onto its patch; return the box of the pixels that changed.

    Measuring the box from the rendered change makes it tight around what is visible.
    """
    h, w = img.shape[:2]
    ext = np.concatenate([_layer_extent(ly) for ly in layers])
    x0, y0 = (
        max(0, math.floor(ext[:, 0].min()) - 2),
        max(0, math.floor(ext[:, 1].min()) - 2),
    )
    x1, y1 = (
        min(w, math.ceil(ext[:, 0].max()) + 3),
        min(h, math.ceil(ext[:, 1].max()) + 3),
    )
    if x1 <= x0 or y1 <= y0:
        return None
    patch = img[y0:y1, x0:x1]
    orig = patch.copy()
    for ly in layers:
        kind, geom, col = ly[0], ly[1], _tup(ly[2])
        if kind == "poly":
            cv2.fillPoly(patch, [_cv(geom, x0, y0)], col, cv2.LINE_AA, 4)
        elif kind == "circle":
            cx, cy, r = geom
            cv2.circle(patch, _pt((cx, cy), x0, y0), max(1, round(r * 16)), col, -1, cv2.LINE_AA, 4)
        elif kind == "line":
            cv2.polylines(patch, [_cv(geom, x0, y0)], False, col, int(ly[3]), cv2.LINE_AA, 4)
        elif kind == "outline":
            cv2.polylines(patch, [_cv(geom, x0, y0)], True, col, int(ly[3]), cv2.LINE_AA, 4)
    if alpha < 1.0:
        cv2.addWeighted(orig, 1.0 - alpha, patch, alpha, 0.0, dst=patch)
    diff = cv2.absdiff(patch, orig).sum(axis=2, dtype=np.int32)
    ys, xs = np.nonzero(diff >= _VIS_THR)
    if len(xs) == 0:
        return None
    return np.array(
        [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float64
    )


def _iou_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    a = (box[2] - box[0]) * (box[3] - box[1])
    b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(a + b - inter, 1e-9)


def _obb_overlap(a: tuple, b: tuple, gap: float) -> bool:
    """Separating-axis test for two rotated rectangles (cx, cy, length, width, angle)."""
    d = np.array([b[0] - a[0], b[1] - a[1]])
    axes = []
    for o in (a, b):
        c, s = math.cos(o[4]), math.sin(o[4])
        axes += [np.array([c, s]), np.array([-s, c])]
    ua, va, ub, vb = axes
    for ax in axes:
        ra = 0.5 * (a[2] * abs(ua @ ax) + a[3] * abs(va @ ax))
        rb = 0.5 * (b[2] * abs(ub @ ax) + b[3] * abs(vb @ ax))
        if abs(d @ ax) > ra + rb + gap:
            return False
    return True


class _Placer:
    """Accepts candidate objects inside the frame that overlap placed ones little.

    Boxes may not exceed MAX_IOU against placed boxes; rigid objects (boats, vehicles) also
    pass their oriented rectangle so that they never physically intersect.
    """

    def __init__(self, h: int, w: int, y_min: float = 0.0, max_iou: float = MAX_IOU) -> None:
        self.h, self.w, self.y_min, self.max_iou = h, w, y_min, max_iou
        self.boxes = np.zeros((0, 4), np.float64)
        self.obbs: list[tuple | None] = []

    def inside(self, box: np.ndarray) -> bool:
        return bool(
            box[0] >= _EDGE
            and box[1] >= max(_EDGE, self.y_min)
            and box[2] <= self.w - _EDGE
            and box[3] <= self.h - _EDGE
        )

    def fits(self, box: np.ndarray, obb: tuple | None = None, gap: float = 1.0) -> bool:
        if not self.inside(box):
            return False
        if len(self.boxes) == 0:
            return True
        if float(_iou_many(box, self.boxes).max()) > self.max_iou:
            return False
        if obb is not None:
            near = np.flatnonzero(self._hits(box, gap))
            for i in near.tolist():
                other = self.obbs[i]
                if other is not None and _obb_overlap(obb, other, gap):
                    return False
        return True

    def _hits(self, box: np.ndarray, pad: float) -> np.ndarray:
        b = self.boxes
        return (
            (box[0] - pad < b[:, 2])
            & (box[2] + pad > b[:, 0])
            & (box[1] - pad < b[:, 3])
            & (box[3] + pad > b[:, 1])
        )

    def touches(self, box: np.ndarray, pad: float = 0.0) -> bool:
        return bool(len(self.boxes) and self._hits(box, pad).any())

    def add(self, box: np.ndarray, obb: tuple | None = None) -> None:
        self.boxes = np.vstack([self.boxes, box[None]])
        self.obbs.append(obb)


@dataclass
class _Cluster:
    cx: float
    cy: float
    r: float
    n: int


def _plan_counts(
    rng: np.random.Generator, h: int, w: int, y_min: float = 0.0, r_range: tuple = (100, 350)
) -> tuple[list[_Cluster], int]:
    """Clusters (centre, radius, count) and the number of singletons for one frame.

    Counts scale with frame area (3-40 objects at 2048x2048); object sizes do not.
    """
    if rng.random() < EMPTY_FRAME_PROB:
        return [], 0
    area = h * w / _REF_AREA
    lo, hi = OBJECTS_PER_FRAME
    n_ref = math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))
    n_total = max(1, round(min(n_ref, hi) * area))
    n_clusters = min(int(rng.integers(1, 4)), max(1, round(3 * math.sqrt(area))), n_total)
    n_single = min(rng.binomial(n_total, rng.uniform(0.0, 0.3)), max(1, round(6 * area)))
    n_single = min(n_single, n_total - n_clusters)
    n_cl = n_total - n_single
    share = rng.dirichlet(np.full(n_clusters, 2.0))
    counts = np.maximum(1, np.floor(share * n_cl).astype(int))
    counts[int(np.argmax(share))] += max(0, n_cl - int(counts.sum()))
    span_y = h - y_min
    clusters = []
    for k in range(n_clusters):
        r = math.exp(rng.uniform(math.log(r_range[0]), math.log(r_range[1])))
        r = min(r, 0.45 * min(w, span_y))
        mx, my = min(0.6 * r, 0.5 * w - 1), min(0.6 * r, 0.5 * span_y - 1)
        cx = rng.uniform(mx, w - mx)
        cy = rng.uniform(y_min + my, h - my)
        clusters.append(_Cluster(cx, cy, r, int(counts[k])))
    return clusters, n_single


def _cluster_point(
    rng: np.random.Generator, cl: _Cluster, spread: float = 2.0
) -> tuple[float, float]:
    """Gaussian offset from the cluster centre, truncated at its radius (dense core)."""
    for _ in range(8):
        d = rng.normal(0.0, cl.r / spread, 2)
        if d @ d <= cl.r * cl.r:
            break
    else:
        d = d * (cl.r / math.sqrt(float(d @ d)))
    return cl.cx + float(d[0]), cl.cy + float(d[1])


def _lowres(h: int, w: int) -> tuple[int, int]:
    return max(2, -(-h // _LR)), max(2, -(-w // _LR))


def _upsample(bg: np.ndarray, h: int, w: int) -> np.ndarray:
    small = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# Maritime
# --------------------------------------------------------------------------------------------

_SEA = [
    (18, 52, 92),
    (12, 38, 70),
    (20, 68, 84),
    (28, 78, 74),
    (52, 72, 80),
    (68, 84, 96),
    (24, 58, 60),
    (38, 60, 102),
    (30, 45, 55),
]
_HULLS: list[tuple[Colour, float]] = [
    ((236, 236, 232), 0.30),
    ((200, 202, 205), 0.10),
    ((38, 38, 44), 0.12),
    ((172, 42, 36), 0.09),
    ((224, 112, 32), 0.06),
    ((42, 72, 140), 0.08),
    ((222, 192, 52), 0.06),
    ((40, 112, 62), 0.05),
    ((122, 86, 56), 0.07),
    ((150, 150, 140), 0.07),
]
_CABINS: list[tuple[Colour, float]] = [
    ((245, 245, 242), 0.4),
    ((190, 195, 200), 0.2),
    ((70, 90, 110), 0.15),
    ((120, 120, 118), 0.15),
    ((210, 190, 150), 0.1),
]


def _render_maritime(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list]:
    lh, lw = _lowres(h, w)
    area = h * w / _REF_AREA
    base = _jitter(rng, _SEA[int(rng.integers(len(_SEA)))], 14)
    alt = np.clip(base * rng.uniform(0.7, 1.35) + rng.uniform(-8, 8, 3), 0, 255).astype(np.float32)
    n1 = _fbm(rng, lh, lw, rng.uniform(30, 160), 4)
    n2 = _fbm(rng, lh, lw, rng.uniform(80, 300), 2)
    t = np.clip(0.5 + 0.35 * n2, 0, 1)[..., None]
    bg = base + (alt - base) * t
    bg *= (1 + np.float32(rng.uniform(0.03, 0.1)) * n1)[..., None]
    xx = np.arange(lw, dtype=np.float32)[None, :]
    yy = np.arange(lh, dtype=np.float32)[:, None]
    wind = rng.uniform(0, 2 * math.pi)
    for j in range(2):  # two warped swell trains, the second weaker and skewed
        ang = wind + (0.0 if j == 0 else rng.normal(0, 0.6))
        k = np.float32(2 * math.pi / rng.uniform(6, 30))
        swell = np.sin(
            (xx * np.float32(math.cos(ang) * k) + yy * np.float32(math.sin(ang) * k))
            + np.float32(rng.uniform(1.5, 4)) * (n1 if j == 0 else n2)
        )
        bg += (np.float32(rng.uniform(0.5, 5) * (1 if j == 0 else 0.6)) * swell)[..., None]
    sun = rng.uniform(0, 2 * math.pi)
    glint = None
    if rng.random() < 0.35:
        gx, gy = rng.uniform(0, w), rng.uniform(0, h)
        gr = rng.uniform(120, 500)
        glow = _blob(lh, lw, gx, gy, 1.3 * gr) * np.float32(rng.uniform(15, 60))
        bg += glow[..., None] * np.array([1.0, 1.0, 0.95], np.float32)
        glint = (gx, gy, gr)
    y_hor = 0
    if h >= 400 and rng.random() < 0.2:
        y_hor = int(h * rng.uniform(0.05, 0.2))
        lyh = y_hor / _LR
        sky_top = _jitter(rng, (120, 160, 205), 25)
        haze = _jitter(rng, (200, 210, 220), 20)
        col_y = np.arange(lh, dtype=np.float32)[:, None, None]
        ty = np.clip(col_y / max(lyh, 1), 0, 1)
        sky = sky_top + (haze - sky_top) * ty + 4 * n2[..., None]
        fade = 0.7 * np.exp(-np.clip(col_y - lyh, 0, None) / (lh * rng.uniform(0.05, 0.2)))
        sea = bg + (haze - bg) * fade.astype(np.float32)
        bg = np.where(col_y < lyh, sky, sea)
    bg *= _cast(rng, 0.04)
    img = _upsample(bg, h, w)

    ripple = _streak_noise(rng, 256, int(rng.integers(5, 20)), wind + math.pi / 2, 0.8)
    ripple += 0.5 * _periodic_noise(rng, 256, 8)
    _add_tile(img, ripple * rng.uniform(2, 8), rng, y_start=y_hor + 2 if y_hor else 0)

    foam = np.zeros((h, w), np.uint8)
    # Whitecaps: small bright irregular blobs (distractors that look like tiny white boats),
    # each 1-3 overlapping ellipses elongated across the wind. Parameters are drawn as arrays so
    # the loop is only cv2 calls.
    sea_state = rng.choice([rng.uniform(0, 30), rng.uniform(30, 200), rng.uniform(200, 600)])
    n_caps = int(area * sea_state)
    m = n_caps * 3
    parts = (
        np.repeat(rng.uniform(2, w - 2, (n_caps, 1)), 3, 1).ravel(),
        np.repeat(rng.uniform(y_hor + 2, h - 2, (n_caps, 1)), 3, 1).ravel(),
    )
    keep = (rng.random((n_caps, 3)) < [1.0, 0.6, 0.35]).ravel()
    ex = _cv(np.stack([parts[0] + rng.normal(0, 2, m), parts[1] + rng.normal(0, 1.5, m)], 1))
    ax = np.maximum(1, np.rint(rng.uniform((0.6, 0.5), (4.5, 2.0), (m, 2)) * 16)).astype(int)
    eang = math.degrees(wind + math.pi / 2) + rng.normal(0, 20, m)
    val = rng.integers(110, 256, m)
    for i in np.flatnonzero(keep).tolist():
        cv2.ellipse(
            foam, (int(ex[i, 0]), int(ex[i, 1])), (int(ax[i, 0]), int(ax[i, 1])),
            float(eang[i]), 0, 360, int(val[i]), -1, cv2.LINE_AA, 4,
        )  # fmt: skip
    if glint is not None:  # sun glint: dense bright speckle in a patch
        gx, gy, gr = glint
        x0, x1 = max(0, int(gx - 2 * gr)), min(w, int(gx + 2 * gr))
        y0, y1 = max(y_hor, int(gy - 2 * gr)), min(h, int(gy + 2 * gr))
        if x1 > x0 and y1 > y0:
            gxs = np.exp(-((np.arange(x0, x1, dtype=np.float32) - gx) ** 2) / (2 * gr * gr))
            gys = np.exp(-((np.arange(y0, y1, dtype=np.float32) - gy) ** 2) / (2 * gr * gr))
            p = np.outer(gys * np.float32(rng.uniform(0.02, 0.12)), gxs)
            spk = (rng.random(p.shape, dtype=np.float32) < p).astype(np.uint8) * 255
            spk = cv2.GaussianBlur(spk, (3, 3), 0.6)
            np.maximum(foam[y0:y1, x0:x1], spk, out=foam[y0:y1, x0:x1])

    clusters, n_single = _plan_counts(rng, h, w, y_min=y_hor + 12)
    placer = _Placer(h, w, y_min=y_hor + 12)
    boats: list[tuple] = []
    singles = _Cluster(w / 2, (h + y_hor) / 2, 1e9, n_single)
    for cl in [*clusters, singles]:
        fleet = cl.r < 1e8 and rng.random() < 0.5
        head0 = rng.uniform(0, 2 * math.pi)
        l0 = math.exp(rng.uniform(math.log(8), math.log(36)))
        moving_p = 0.85 if fleet else (0.75 if cl.r > 1e8 else 0.2)
        for _ in range(cl.n):
            for _attempt in range(25):
                if cl.r > 1e8:
                    cx, cy = rng.uniform(0, w), rng.uniform(y_hor, h)
                    length = math.exp(rng.uniform(*np.log(OBJECT_LENGTH_PX["boat"])))
                else:
                    cx, cy = _cluster_point(rng, cl)
                    length = l0 * rng.uniform(0.75, 1.3)
                length = float(np.clip(length, *OBJECT_LENGTH_PX["boat"]))
                width = max(3.0, length * rng.uniform(0.25, 0.42))
                ang = head0 + rng.normal(0, 0.2) if fleet else rng.uniform(0, 2 * math.pi)
                box = _aabb(cx, cy, length, width, ang)
                obb = (cx, cy, length, width, ang)
                if placer.fits(box, obb, gap=2.0):
                    placer.add(box, obb)
                    boats.append((cx, cy, length, width, ang, rng.random() < moving_p))
                    break

    for cx, cy, length, width, ang, moving in boats:
        if moving:
            _draw_wake(rng, foam, cx, cy, length, width, ang)
    _overlay(img, foam, _tup(_jitter(rng, (236, 242, 244), 8)))

    sx, sy = math.cos(sun), math.sin(sun)
    boxes = []
    for cx, cy, length, width, ang, _moving in boats:
        if length >= 10:  # a faint shadow on the water (not part of the box)
            off = max(1.0, 0.2 * width)
            hull = _rot(_hull_uv(length, width, 0.28), cx + off * sx, cy + off * sy, ang)
            _draw_layers(img, [("poly", hull, (5, 15, 25))], alpha=0.3)
        box = _draw_layers(img, _boat_layers(rng, img, cx, cy, length, width, ang))
        if box is not None:
            boxes.append(box)
    return img, boxes


def _hull_uv(length: float, width: float, bow: float) -> np.ndarray:
    hl, hw = length / 2, width / 2
    ub = hl - bow * length
    sw = hw * 0.85
    um = ub + 0.6 * (hl - ub)
    return np.array(
        [[-hl, -sw], [ub, -hw], [um, -0.62 * hw], [hl, 0], [um, 0.62 * hw], [ub, hw], [-hl, sw]]
    )


def _boat_layers(
    rng: np.random.Generator,
    img: np.ndarray,
    cx: float,
    cy: float,
    length: float,
    width: float,
    ang: float,
) -> list[Layer]:
    bow = rng.uniform(0.2, 0.38)
    hull_uv = _hull_uv(length, width, bow)
    bg = _under(img, cx, cy, width)
    hull_col = _pick_contrasting(rng, _HULLS, bg, 70, 10)
    layers: list[Layer] = [("poly", _rot(hull_uv, cx, cy, ang), hull_col)]
    hl, hw = length / 2, width / 2
    if length >= 14 and rng.random() < 0.6:
        deck = _jitter(
            rng,
            [(205, 195, 170), (150, 150, 150), (120, 90, 60), (230, 230, 225)][
                int(rng.integers(4))
            ],
            10,
        )
        inset = _hull_uv(length * 0.84, width * 0.7, bow)
        layers.append(("poly", _rot(inset, cx - 0.0, cy, ang), deck))
    if length >= 8 and rng.random() < 0.85:
        cab_col = _pick_contrasting(rng, _CABINS, hull_col, 40, 8)
        u0 = rng.uniform(-0.42, -0.05) * length
        u1 = min(u0 + rng.uniform(0.18, 0.38) * length, hl - bow * length)
        chw = hw * rng.uniform(0.5, 0.8)
        layers.append(("poly", _rot(_rect_uv(u0, u1, chw), cx, cy, ang), cab_col))
        if length >= 20:
            win = _rect_uv(u1 - 0.25 * (u1 - u0), u1, chw * 0.9)
            layers.append(("poly", _rot(win, cx, cy, ang), _jitter(rng, (35, 45, 55), 10)))
    if length >= 30 and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            u = rng.uniform(-0.45, 0.15) * length
            s = rng.uniform(1.5, 3.5)
            v = rng.uniform(-0.4, 0.4) * width
            item = _rect_uv(u - s, u + s, s * 0.8) + np.array([0.0, v])
            layers.append(("poly", _rot(item, cx, cy, ang), _jitter(rng, hull_col * 0.6, 20)))
    return layers


def _draw_wake(
    rng: np.random.Generator,
    foam: np.ndarray,
    cx: float,
    cy: float,
    length: float,
    width: float,
    ang: float,
) -> None:
    """Faint Kelvin V and a turbulent trail behind a moving boat, fading with distance."""
    h, w = foam.shape
    speed = rng.uniform(0.3, 1.0)
    lw = length * rng.uniform(2, 8) * speed + 4
    back = ang + math.pi
    stern = np.array([cx - 0.5 * length * math.cos(ang), cy - 0.5 * length * math.sin(ang)])
    half = math.radians(rng.uniform(14, 22))
    lines = []  # (start, direction angle, length, thickness, intensity)
    peak = rng.uniform(90, 220) * (0.5 + 0.5 * speed)
    for sgn in (-1, 1):
        start = stern + 0.5 * width * sgn * np.array([-math.sin(ang), math.cos(ang)])
        lines.append((start, back + sgn * half, lw, max(1, round(width * 0.25)), peak * 0.7))
    lines.append((stern, back, lw * rng.uniform(0.5, 1.1), max(1, round(width * 0.7)), peak))
    bow = np.array([cx + 0.5 * length * math.cos(ang), cy + 0.5 * length * math.sin(ang)])
    for sgn in (-1, 1):
        lines.append((bow, back + sgn * 0.35, 0.45 * length, 1, peak * 0.8 * speed))
    pts = [stern, bow] + [s + ln * np.array([math.cos(a), math.sin(a)]) for s, a, ln, _, _ in lines]
    p = np.array(pts)
    x0, y0 = max(0, int(p[:, 0].min()) - 8), max(0, int(p[:, 1].min()) - 8)
    x1, y1 = min(w, int(p[:, 0].max()) + 9), min(h, int(p[:, 1].max()) + 9)
    if x1 <= x0 or y1 <= y0:
        return
    patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
    n_seg = 6
    for start, a, ln, th, val in lines:
        d = np.array([math.cos(a), math.sin(a)])
        for k in reversed(range(n_seg)):  # far (faint) first so near segments win
            s0, s1 = start + d * ln * k / n_seg, start + d * ln * (k + 1) / n_seg
            v = int(val * (1 - k / n_seg) ** 1.5)
            if v > 0:
                cv2.line(patch, _pt(s0, x0, y0), _pt(s1, x0, y0), v, th, cv2.LINE_AA, 4)
    patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.8, 2.2))
    np.maximum(foam[y0:y1, x0:x1], patch, out=foam[y0:y1, x0:x1])


# --------------------------------------------------------------------------------------------
# Aerial
# --------------------------------------------------------------------------------------------

_FIELDS = [
    (88, 112, 58),
    (64, 92, 48),
    (118, 138, 70),
    (160, 150, 96),
    (182, 166, 116),
    (130, 102, 72),
    (150, 122, 90),
    (104, 86, 62),
    (96, 122, 82),
    (192, 182, 142),
    (140, 140, 88),
]
_URBAN = [  # paved yards, lawns, bare lots, concrete
    (120, 120, 116),
    (142, 140, 134),
    (100, 102, 100),
    (92, 118, 70),
    (110, 130, 82),
    (150, 138, 112),
    (170, 166, 156),
]
_CARS: list[tuple[Colour, float]] = [
    ((228, 228, 226), 0.22),
    ((28, 28, 32), 0.16),
    ((172, 174, 178), 0.15),
    ((108, 110, 116), 0.11),
    ((168, 30, 32), 0.08),
    ((40, 62, 136), 0.08),
    ((30, 40, 76), 0.05),
    ((40, 84, 52), 0.03),
    ((214, 184, 44), 0.03),
    ((194, 172, 134), 0.05),
    ((222, 112, 36), 0.02),
    ((120, 30, 60), 0.02),
]
_ROOFS = [
    (130, 130, 134),
    (92, 94, 98),
    (156, 86, 64),
    (120, 72, 56),
    (196, 196, 192),
    (90, 110, 130),
]


@dataclass
class _Road:
    pts: np.ndarray  # (k, 2) frame coords, dense polyline
    tan: np.ndarray  # (k,) tangent angle
    width: float
    lanes: int
    paved: bool


def _bezier_road(
    rng: np.random.Generator,
    c: np.ndarray,
    h: int,
    w: int,
    width: float,
    lanes: int,
    paved: bool,
    ang: float | None = None,
) -> _Road | None:
    """A straight or gently curved road passing through c and across the whole frame."""
    if ang is None:
        ang = rng.uniform(0, math.pi)
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    span = math.hypot(h, w)
    bend = rng.uniform(-0.35, 0.35) * span if rng.random() < 0.5 else 0.0
    p0, p2 = c - d * span, c + d * span + n * bend
    p1 = 2 * c - 0.5 * (p0 + p2)
    t = np.linspace(0, 1, int(span / 2))[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    keep = (pts[:, 0] > -60) & (pts[:, 0] < w + 60) & (pts[:, 1] > -60) & (pts[:, 1] < h + 60)
    idx = np.flatnonzero(keep)
    if len(idx) < 3:
        return None
    pts = pts[idx[0] : idx[-1] + 1]
    g = np.gradient(pts, axis=0)
    return _Road(pts, np.arctan2(g[:, 1], g[:, 0]), width, lanes, paved)


def _split_convex(poly: np.ndarray, p: np.ndarray, nrm: np.ndarray) -> list[np.ndarray]:
    """Split a convex polygon by the line through p with normal nrm."""
    d = (poly - p) @ nrm
    parts: list[list[np.ndarray]] = [[], []]
    k = len(poly)
    for i in range(k):
        a, b, da, db = poly[i], poly[(i + 1) % k], d[i], d[(i + 1) % k]
        parts[0 if da >= 0 else 1].append(a)
        if (da >= 0) != (db >= 0):
            q = a + (b - a) * (da / (da - db))
            parts[0].append(q)
            parts[1].append(q)
    return [np.array(pp) for pp in parts if len(pp) >= 3]


def _fields(rng: np.random.Generator, lh: int, lw: int) -> tuple[list[np.ndarray], float]:
    """Farm-like parcels (low-res coords) by recursive straight cuts near a main orientation.

    Parcel size is set in frame pixels, so it does not depend on the frame size.
    """
    main = rng.uniform(0, math.pi)
    target = (2048 / _LR) ** 2 / rng.uniform(6, 40)
    todo = [np.array([[0, 0], [lw, 0], [lw, lh], [0, lh]], np.float64)]
    out = []
    while todo:
        poly = todo.pop()
        x, y = poly[:, 0], poly[:, 1]
        a = 0.5 * abs(x @ np.roll(y, 1) - y @ np.roll(x, 1))
        if a < target * rng.uniform(0.5, 1.5) or len(out) + len(todo) > 150:
            out.append(poly)
            continue
        ang = main + rng.normal(0, 0.08)
        cand = [np.array([math.cos(ang), math.sin(ang)]), np.array([-math.sin(ang), math.cos(ang)])]
        # cut across the polygon's longer direction so parcels stay compact
        spread = [float(np.ptp(poly @ c)) for c in cand]
        nrm = cand[int(np.argmax(spread))]
        p = poly.mean(0) + nrm * max(spread) * rng.uniform(-0.15, 0.15)
        todo.extend(_split_convex(poly, p, nrm))
    return out, main


def _road_poly(road: _Road, half: float) -> np.ndarray:
    """Outline of a road band: filling it is much faster than a thick anti-aliased polyline."""
    nrm = np.stack([-np.sin(road.tan), np.cos(road.tan)], 1)
    return np.concatenate([road.pts + nrm * half, (road.pts - nrm * half)[::-1]])


def _render_aerial(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list]:
    lh, lw = _lowres(h, w)
    area = h * w / _REF_AREA
    # --- terrain at low resolution -------------------------------------------------------
    tint = (_cast(rng, 1.0) - 1) * 8
    urban = rng.random() < 0.3  # town blocks: paved/lawn parcels, many buildings, more roads
    src = _URBAN if urban else _FIELDS
    pal = np.array([src[i] for i in rng.choice(len(src), int(rng.integers(3, 7)), False)])
    polys, grid_ang = _fields(rng, lh, lw)
    n_f = len(polys) + 1
    tones = pal[rng.integers(len(pal), size=n_f)] * rng.uniform(0.85, 1.15, (n_f, 1))
    tones += rng.uniform(-6, 6, (n_f, 3)) + tint
    grey = tones.mean(1, keepdims=True)
    tones = np.clip(grey + (tones - grey) * rng.uniform(0.45, 0.9), 0, 255)  # desaturate
    lab = np.zeros((lh, lw), np.uint8)
    bg8 = np.empty((lh, lw, 3), np.uint8)
    bg8[:] = np.rint(tones[0]).astype(np.uint8)
    for i, poly in enumerate(polys):  # fill colours directly: no per-pixel table lookups
        cv2.fillPoly(lab, [np.rint(poly).astype(np.int32)], (i + 1) % 256)
        cv2.fillPoly(bg8, [_cv(poly)], _tup(tones[i + 1]), cv2.LINE_AA, 4)
    bg = bg8.astype(np.float32)
    row_ang = rng.uniform(0, math.pi, n_f)
    row_frq = 2 * math.pi / rng.uniform(2.2, 6.0, n_f)
    p_rows = 0.1 if urban else 0.5  # crop rows
    row_amp = np.where(rng.random(n_f) < p_rows, rng.uniform(2, 9, n_f), 0.0).astype(np.float32)
    ca = (np.cos(row_ang) * row_frq).astype(np.float32)[: min(n_f, 256)]
    sa = (np.sin(row_ang) * row_frq).astype(np.float32)[: min(n_f, 256)]
    xx = np.arange(lw, dtype=np.float32)[None, :]
    yy = np.arange(lh, dtype=np.float32)[:, None]
    ph = xx * np.take(ca, lab) + yy * np.take(sa, lab)
    bg += (np.take(row_amp[: min(n_f, 256)], lab) * np.sin(ph))[..., None]
    bg *= (1 + 0.07 * _fbm(rng, lh, lw, rng.uniform(20, 80), 3))[..., None]
    if rng.random() < 0.6:  # hedgerows / field margins: anti-aliased parcel outlines
        edge = np.zeros((lh, lw), np.uint8)
        cv2.polylines(edge, [_cv(p) for p in polys], True, 255, 1, cv2.LINE_AA, 4)
        bg *= (1 - np.float32(rng.uniform(0.15, 0.4) / 255) * edge)[..., None]
    fn = _fbm(rng, lh, lw, rng.uniform(40, 120), 4)
    thr = rng.uniform(1.5 if urban else 0.6, 3.0)  # fn has unit std: ~27% .. ~0% canopy
    forest = fn > thr
    if forest.any():  # soft-edged canopy with blotchy crowns
        fcol = _jitter(rng, (52, 72, 42), 10)
        crowns = _fbm(rng, lh, lw, 3.0, 2)
        fa = np.clip((fn - thr) * 6 + 0.5 + 0.3 * crowns, 0, 1)
        sel = np.nonzero(fa)  # blend only canopy pixels (usually a minority)
        fo = fcol * (1 + 0.2 * crowns[sel])[:, None]
        bg[sel] += (fo - bg[sel]) * fa[sel][:, None]
    bg *= _cast(rng, 0.05)
    img = _upsample(bg, h, w)
    grain = _periodic_noise(rng, 256, 4) * 0.6 + _periodic_noise(rng, 256, 16) * 0.8
    _add_tile(img, grain * rng.uniform(2, 6), rng)

    # --- layout: roads through clusters, lots, vehicles ----------------------------------
    clusters, n_single = _plan_counts(rng, h, w, r_range=(90, 300))
    l0 = math.exp(rng.uniform(math.log(7), math.log(24)))  # car length: the frame's "GSD"
    lane_w = 0.8 * l0
    roads: list[_Road] = []
    cl_road: list[int] = []
    centres = [np.array([cl.cx, cl.cy]) for cl in clusters]
    n_extra = int(rng.integers(0, 3)) if clusters else int(rng.integers(1, 4))
    if urban:
        n_extra += int(rng.integers(1, 4) * max(area, 0.25) + 0.5)
    for k in range(len(centres) + n_extra):
        c = centres[k] if k < len(centres) else rng.uniform((0, 0), (w, h))
        paved = rng.random() < 0.85
        lanes = int(rng.choice([2, 2, 2, 4])) if paved and not urban else 2
        width = lanes * lane_w + (0.4 * l0 if paved else 0.0) * rng.uniform(0.5, 1.5)
        if not paved:
            width *= 0.8
        street = urban and k >= len(centres)  # town streets follow the block grid
        ang = grid_ang + (math.pi / 2 if rng.random() < 0.5 else 0.0) if street else None
        road = _bezier_road(rng, c, h, w, width, lanes, paved, ang)
        if road is not None:
            roads.append(road)
        if k < len(centres):
            cl_road.append(len(roads) - 1 if road is not None else -1)
    road_mask = np.zeros((lh, lw), np.uint8)
    asphalt = _jitter(rng, (82, 84, 88), 5) * np.float32(rng.uniform(0.75, 1.3))
    verge = _jitter(rng, bg.reshape(-1, 3).mean(0) * 1.1, 12)
    for road in roads:
        col = asphalt if road.paved else _jitter(rng, (168, 146, 112), 15)
        if road.paved:
            cv2.fillPoly(
                img, [_cv(_road_poly(road, road.width / 2 + 2.5))], _tup(verge), cv2.LINE_AA, 4
            )
        cv2.fillPoly(img, [_cv(_road_poly(road, road.width / 2))], _tup(col), cv2.LINE_AA, 4)
        cv2.polylines(
            road_mask, [_cv(road.pts / _LR)], False, 255, int(road.width / _LR + 4), cv2.LINE_8, 4
        )
        if road.paved:
            _road_markings(rng, img, road, l0)

    shade = np.zeros((h, w), np.uint8)
    sun = rng.uniform(0, 2 * math.pi)
    sun_v = np.array([math.cos(sun), math.sin(sun)])
    sun_len = rng.uniform(0.3, 1.2)
    placer = _Placer(h, w)
    vehicles: list[tuple] = []

    def try_vehicle(cx: float, cy: float, ang: float, kind: str) -> bool:
        if kind == "truck":
            length = min(40.0, l0 * rng.uniform(1.8, 2.6))
            width = length * rng.uniform(0.34, 0.42)
        elif kind == "van":
            length = l0 * rng.uniform(1.2, 1.45)
            width = length * rng.uniform(0.4, 0.48)
        else:
            length = l0 * rng.uniform(0.85, 1.15)
            width = length * rng.uniform(0.42, 0.5)
        length = float(np.clip(length, *OBJECT_LENGTH_PX["vehicle"]))
        width = max(3.0, width)
        box = _aabb(cx, cy, length, width, ang)
        obb = (cx, cy, length, width, ang)
        if not placer.fits(box, obb, gap=0.8):
            return False
        placer.add(box, obb)
        vehicles.append((cx, cy, length, width, ang, kind))
        return True

    def kind_draw() -> str:
        u = rng.random()
        return "truck" if u < 0.1 else ("van" if u < 0.25 else "car")

    def on_road(road: _Road, centre: np.ndarray | None, r: float) -> bool:
        if centre is None:
            i = int(rng.integers(len(road.pts)))
        else:
            i0 = int(np.argmin(((road.pts - centre) ** 2).sum(1)))
            step = float(np.linalg.norm(road.pts[1] - road.pts[0])) + 1e-9
            off = float(np.clip(rng.normal(0, r / 2.0), -r, r))
            i = int(np.clip(i0 + round(off / step), 0, len(road.pts) - 1))
        p, a = road.pts[i], float(road.tan[i])
        lane = int(rng.integers(road.lanes))
        lat = (lane + 0.5 - road.lanes / 2) * (road.width / road.lanes) + rng.normal(0, 0.5)
        heading = a + (math.pi if lane < road.lanes // 2 else 0.0) + rng.normal(0, 0.03)
        q = p + lat * np.array([-math.sin(a), math.cos(a)])
        return try_vehicle(float(q[0]), float(q[1]), heading, kind_draw())

    lots = []
    for cl, ri in zip(clusters, cl_road, strict=True):
        road = roads[ri] if ri >= 0 else None
        mode = rng.choice(["traffic", "lot", "street"], p=[0.45, 0.4, 0.15])
        if road is None:
            mode = "lot"
        if mode == "lot":
            lot = _plan_lot(rng, cl, road, l0)
            lots.append(lot)
            order = rng.permutation(len(lot["stalls"]))
            placed = 0
            for j in order:
                if placed >= cl.n:
                    break
                sx, sy, sa = lot["stalls"][j]
                placed += try_vehicle(sx, sy, sa, "van" if rng.random() < 0.15 else "car")
            continue
        placed, tries = 0, 0
        while placed < cl.n and tries < cl.n * 15:
            tries += 1
            if mode == "traffic":
                placed += on_road(road, np.array([cl.cx, cl.cy]), cl.r)
            else:  # parked along the kerb
                i0 = int(np.argmin(((road.pts - (cl.cx, cl.cy)) ** 2).sum(1)))
                step = float(np.linalg.norm(road.pts[1] - road.pts[0])) + 1e-9
                off = float(np.clip(rng.normal(0, cl.r / 2.0), -cl.r, cl.r))
                i = int(np.clip(i0 + round(off / step), 0, len(road.pts) - 1))
                a = float(road.tan[i])
                side = 1 if rng.random() < 0.5 else -1
                lat = side * (road.width / 2 + 0.3 * l0)
                q = road.pts[i] + lat * np.array([-math.sin(a), math.cos(a)])
                placed += try_vehicle(float(q[0]), float(q[1]), a + rng.normal(0, 0.05), "car")
    for _ in range(n_single):
        for _attempt in range(20):
            if roads and rng.random() < 0.7:
                if on_road(roads[int(rng.integers(len(roads)))], None, 0.0):
                    break
            elif try_vehicle(
                rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * math.pi), kind_draw()
            ):
                break

    pave = _jitter(rng, asphalt * rng.uniform(0.9, 1.35), 10)
    for lot in lots:
        cv2.fillPoly(img, [_cv(lot["poly"])], _tup(pave), cv2.LINE_AA, 4)
        line_col = _tup(_jitter(rng, (215, 215, 205), 15))
        for a, b in lot["lines"]:
            cv2.line(img, _pt(a), _pt(b), line_col, 1, cv2.LINE_AA, 4)
        cv2.fillPoly(road_mask, [_cv(lot["poly"] / _LR)], 255)

    # --- distractors: trees, bushes, rocks, buildings, shadows ---------------------------
    free = _Placer(h, w, max_iou=0.0)
    free.boxes = placer.boxes.copy()
    free.obbs = list(placer.obbs)
    edge_pts = np.argwhere(cv2.morphologyEx(forest.astype(np.uint8), cv2.MORPH_GRADIENT, None) > 0)
    n_trees = int(area * rng.uniform(20, 500))
    tc = rng.uniform((0, 0), (w, h), (n_trees, 2))
    if len(edge_pts):  # half of the trees line forest edges
        at_edge = rng.random(n_trees) < 0.5
        pick = edge_pts[rng.integers(len(edge_pts), size=n_trees)][:, ::-1]
        tc = np.where(at_edge[:, None], (pick + 0.5) * _LR + rng.normal(0, 6, (n_trees, 2)), tc)
    tr = np.where(
        rng.random(n_trees) < 0.7, rng.uniform(1.5, 12, n_trees), rng.uniform(1, 3, n_trees)
    )
    rock = rng.random(n_trees) < 0.15
    lx = np.clip((tc[:, 0] / _LR).astype(int), 0, lw - 1)
    ly = np.clip((tc[:, 1] / _LR).astype(int), 0, lh - 1)
    ok = (
        (road_mask[ly, lx] == 0)
        & (tc[:, 0] >= 0)
        & (tc[:, 1] >= 0)
        & (tc[:, 0] < w)
        & (tc[:, 1] < h)
    )
    if len(free.boxes):  # keep clear of vehicles (vectorised: hundreds of trees)
        fb = free.boxes
        hit = (
            (tc[:, None, 0] - tr[:, None] - 1 < fb[None, :, 2])
            & (tc[:, None, 0] + tr[:, None] + 1 > fb[None, :, 0])
            & (tc[:, None, 1] - tr[:, None] - 1 < fb[None, :, 3])
            & (tc[:, None, 1] + tr[:, None] + 1 > fb[None, :, 1])
        ).any(1)
        ok &= ~hit
    tc, tr, rock = tc[ok], tr[ok], rock[ok]
    scs = _cv(tc + sun_v * (tr * sun_len * np.where(rock, 0.6, 1.6))[:, None]).tolist()
    for (x, y), r in zip(scs, np.rint(tr * 16).astype(int).tolist(), strict=True):
        cv2.circle(shade, (x, y), r, 255, -1, cv2.LINE_AA, 4)
    buildings = []
    dens = rng.uniform(60, 220) if urban else rng.choice([rng.uniform(0, 8), rng.uniform(8, 60)])
    n_build = int(area * dens)
    dom = rng.uniform(0, math.pi)
    for _ in range(n_build * 3):
        if len(buildings) >= n_build:
            break
        bl = rng.uniform(16, 70)
        bw = max(12.0, bl / rng.uniform(1.0, 2.2))
        if roads and rng.random() < 0.7:
            road = roads[int(rng.integers(len(roads)))]
            i = int(rng.integers(len(road.pts)))
            a = float(road.tan[i])
            side = 1 if rng.random() < 0.5 else -1
            lat = side * (road.width / 2 + bw / 2 + rng.uniform(6, 40))
            c = road.pts[i] + lat * np.array([-math.sin(a), math.cos(a)])
        else:
            c, a = rng.uniform((0, 0), (w, h)), dom + rng.normal(0, 0.05)
        box = _aabb(c[0], c[1], bl, bw, a)
        if not free.inside(box) or free.touches(box, 3.0):
            continue
        fp = _rot(_rect_uv(-bl / 2, bl / 2, bw / 2), c[0], c[1], a)
        probe = (np.vstack([fp, c[None]]) / _LR).astype(int)  # corners and centre off-road
        if road_mask[np.clip(probe[:, 1], 0, lh - 1), np.clip(probe[:, 0], 0, lw - 1)].any():
            continue
        free.add(box)
        hgt = rng.uniform(3, 14) * sun_len
        for k in np.linspace(0, 1, 4):
            cv2.fillPoly(shade, [_cv(fp + sun_v * hgt * k)], 255, cv2.LINE_AA, 4)
        buildings.append((c, bl, bw, a))
    for cx, cy, length, width, ang, _kind in vehicles:
        body = _rot(_body_uv(length, width), cx, cy, ang) + sun_v * max(1.0, 0.35 * width * sun_len)
        cv2.fillPoly(shade, [_cv(body)], 255, cv2.LINE_AA, 4)
    _overlay(img, shade, (10, 14, 24), rng.uniform(0.35, 0.6))

    green = _jitter(rng, (50, 78, 38), 12)
    cols = np.where(rock[:, None], _jitter(rng, (140, 136, 128), 25), green)
    cols = np.clip(cols + rng.uniform(-14, 14, (len(tc), 3)), 0, 255)
    hi_cols = np.clip(cols * 1.18, 0, 255)
    pc = _cv(tc).tolist()
    ph_ = _cv(tc - sun_v * (tr * 0.3)[:, None]).tolist()
    r16 = np.rint(tr * 16).astype(int).tolist()
    for i in range(len(tc)):
        cv2.circle(img, pc[i], r16[i], cols[i].tolist(), -1, cv2.LINE_AA, 4)
        if r16[i] >= 48:  # crowns from 3 px get a sunlit side
            cv2.circle(img, ph_[i], r16[i] * 55 // 100, hi_cols[i].tolist(), -1, cv2.LINE_AA, 4)
    for c, bl, bw, a in buildings:
        _draw_building(rng, img, c, bl, bw, a, sun_v)

    boxes = []
    for cx, cy, length, width, ang, kind in vehicles:
        box = _draw_layers(img, _vehicle_layers(rng, img, cx, cy, length, width, ang, kind))
        if box is not None:
            boxes.append(box)
    return img, boxes


def _road_markings(rng: np.random.Generator, img: np.ndarray, road: _Road, l0: float) -> None:
    col = _tup(_jitter(rng, (225, 225, 215) if rng.random() < 0.8 else (220, 190, 60), 10))
    seg = np.linalg.norm(np.diff(road.pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    nrm = np.stack([-np.sin(road.tan), np.cos(road.tan)], 1)
    if road.width >= 12 and rng.random() < 0.8:  # dashed centre line
        period = l0 * rng.uniform(1.5, 3)
        on = (s % period) < period * 0.5
        starts = np.flatnonzero(on[1:] & ~on[:-1]) + 1
        ends = np.flatnonzero(~on[1:] & on[:-1]) + 1
        for a in starts:
            b = ends[ends > a]
            if len(b):
                cv2.line(img, _pt(road.pts[a]), _pt(road.pts[b[0]]), col, 1, cv2.LINE_AA, 4)
    if road.width >= 16 and rng.random() < 0.6:  # edge lines
        for sgn in (-1, 1):
            edge = road.pts + nrm * sgn * (road.width / 2 - 2)
            cv2.polylines(img, [_cv(edge)], False, col, 1, cv2.LINE_AA, 4)


def _plan_lot(rng: np.random.Generator, cl: _Cluster, road: _Road | None, l0: float) -> dict:
    """A paved rectangle with stall rows next to the road near the cluster centre."""
    sw, sd, aisle = 0.62 * l0, 1.3 * l0, 1.25 * l0
    n_rows = int(rng.integers(1, 5))
    capacity = cl.n / rng.uniform(0.5, 0.95)  # a lot sized for its cars, mostly occupied
    n_cols = int(np.clip(math.ceil(capacity / n_rows), 3, min(20, 2.2 * cl.r / sw)))
    centre = np.array([cl.cx, cl.cy])
    if road is not None:
        i = int(np.argmin(((road.pts - centre) ** 2).sum(1)))
        ang = float(road.tan[i])
        side = 1 if rng.random() < 0.5 else -1
        nrm = side * np.array([-math.sin(ang), math.cos(ang)])
        origin = road.pts[i] + nrm * (road.width / 2 + 2)
    else:
        ang = rng.uniform(0, math.pi)
        nrm = np.array([-math.sin(ang), math.cos(ang)])
        origin = centre
    tan = np.array([math.cos(ang), math.sin(ang)])
    rows_b, b = [], aisle * 0.6
    for k in range(n_rows):
        if k % 2 == 0 and k > 0:
            b += aisle
        rows_b.append(b + sd / 2)
        b += sd
    depth = b + aisle * 0.6
    half = n_cols * sw / 2
    a_off = rng.uniform(-0.3, 0.3) * half

    def at(a: float, bb: float) -> np.ndarray:
        return origin + tan * (a + a_off) + nrm * bb

    poly = np.array([at(-half - 3, 0), at(half + 3, 0), at(half + 3, depth), at(-half - 3, depth)])
    stalls, lines = [], []
    face = math.atan2(nrm[1], nrm[0])
    for bb in rows_b:
        for j in range(n_cols):
            a = -half + (j + 0.5) * sw
            p = at(a + rng.normal(0, 0.04 * sw), bb + rng.normal(0, 0.05 * sd))
            flip = math.pi if rng.random() < 0.5 else 0.0
            stalls.append((float(p[0]), float(p[1]), face + flip + rng.normal(0, 0.04)))
        for j in range(n_cols + 1):
            a = -half + j * sw
            lines.append((at(a, bb - sd / 2), at(a, bb + sd / 2)))
    return {"poly": poly, "stalls": stalls, "lines": lines}


def _body_uv(length: float, width: float) -> np.ndarray:
    hl, hw = length / 2, width / 2
    c = min(length, width) * 0.22
    return np.array(
        [[-hl + c, -hw], [hl - c, -hw], [hl, -hw + c], [hl, hw - c], [hl - c, hw], [-hl + c, hw],
         [-hl, hw - c], [-hl, -hw + c]]
    )  # fmt: skip


def _vehicle_layers(
    rng: np.random.Generator,
    img: np.ndarray,
    cx: float,
    cy: float,
    length: float,
    width: float,
    ang: float,
    kind: str,
) -> list[Layer]:
    bg = _under(img, cx, cy, width)
    col = _pick_contrasting(rng, _CARS, bg, 75, 8)
    hl, hw = length / 2, width / 2
    glass = _jitter(rng, (34, 40, 52), 8)
    layers: list[Layer] = []
    if kind == "truck":
        cab_l = 0.24 * length
        trailer = _pick_contrasting(rng, _CARS[:4], bg, 75, 6) if rng.random() < 0.6 else col
        cab = _body_uv(cab_l, width * 0.92) + np.array([hl - cab_l / 2, 0.0])
        layers.append(("poly", _rot(cab, cx, cy, ang), col))
        layers.append(("poly", _rot(_rect_uv(-hl, hl - cab_l - 1.0, hw), cx, cy, ang), trailer))
        ws = _rect_uv(hl - 0.35 * cab_l, hl - 0.1 * cab_l, hw * 0.78)
        layers.append(("poly", _rot(ws, cx, cy, ang), glass))
        return layers
    layers.append(("poly", _rot(_body_uv(length, width), cx, cy, ang), col))
    if length >= 8:
        ws = _rect_uv(hl - 0.4 * length, hl - 0.22 * length, hw * 0.8)
        layers.append(("poly", _rot(ws, cx, cy, ang), glass))
    if length >= 12:
        rw = _rect_uv(-hl + 0.08 * length, -hl + 0.18 * length, hw * 0.76)
        layers.append(("poly", _rot(rw, cx, cy, ang), glass))
        if kind == "car" and rng.random() < 0.5:
            roof = _rect_uv(-hl + 0.2 * length, hl - 0.42 * length, hw * 0.7)
            layers.append(("poly", _rot(roof, cx, cy, ang), np.clip(col * 1.08 + 6, 0, 255)))
    return layers


def _draw_building(
    rng: np.random.Generator,
    img: np.ndarray,
    c: np.ndarray,
    bl: float,
    bw: float,
    a: float,
    sun_v: np.ndarray,
) -> None:
    col = _jitter(rng, _ROOFS[int(rng.integers(len(_ROOFS)))], 14)
    fp = _rot(_rect_uv(-bl / 2, bl / 2, bw / 2), c[0], c[1], a)
    cv2.fillPoly(img, [_cv(fp)], _tup(col), cv2.LINE_AA, 4)
    if rng.random() < 0.6:  # pitched roof: two halves, one lit one shaded
        half = _rot(
            np.array([[-bl / 2, 0], [bl / 2, 0], [bl / 2, bw / 2], [-bl / 2, bw / 2]]),
            c[0],
            c[1],
            a,
        )
        side_n = np.array([-math.sin(a), math.cos(a)])
        k = 0.78 if side_n @ sun_v > 0 else 1.15
        cv2.fillPoly(img, [_cv(half)], _tup(col * k), cv2.LINE_AA, 4)
    else:  # flat roof with a border and rooftop units
        cv2.polylines(img, [_cv(fp)], True, _tup(col * 0.8), 1, cv2.LINE_AA, 4)
        for _ in range(int(rng.integers(0, 4))):
            u, v = rng.uniform(-0.35, 0.35) * bl, rng.uniform(-0.3, 0.3) * bw
            s = rng.uniform(1.5, 3.5)
            unit = _rot(_rect_uv(u - s, u + s, s) + np.array([0.0, v]), c[0], c[1], a)
            cv2.fillPoly(img, [_cv(unit)], _tup(_jitter(rng, (200, 200, 200), 20)), cv2.LINE_AA, 4)


# --------------------------------------------------------------------------------------------
# Microscopy
# --------------------------------------------------------------------------------------------


def _render_microscopy(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list]:
    lh, lw = _lowres(h, w)
    area = h * w / _REF_AREA
    white = _jitter(rng, (244, 238, 244), 6)
    eosin = _jitter(rng, (226, 150, 190), 18)
    hema = _jitter(rng, (82, 44, 128), 14)
    sat = np.float32(rng.uniform(0.35, 0.8))
    fib_dir = rng.uniform(0, math.pi)
    fibres = _streak_noise(rng, 256, int(rng.integers(9, 25)), fib_dir, 1.0)
    fib = np.tile(fibres, (-(-lh // 256), -(-lw // 256)))[:lh, :lw]
    dens = np.clip(0.6 + 0.35 * _fbm(rng, lh, lw, rng.uniform(40, 160), 3), 0, 1)
    s = np.clip(sat * (0.6 + 0.5 * dens) + np.float32(rng.uniform(0.03, 0.1)) * fib, 0, 1)[
        ..., None
    ]
    bg = white + (eosin - white) * s
    # lumens / fat: near-white holes with soft edges
    holes = _fbm(rng, lh, lw, rng.uniform(30, 110), 3)
    hthr = rng.uniform(1.2, 3.5)  # unit-std noise: ~12% .. ~0% white space
    hole = np.clip((holes - hthr) * 5, 0, 1)[..., None]
    bg += (white - bg) * hole

    clusters, n_single = _plan_counts(rng, h, w, r_range=(90, 260))
    # cellular areas: a purple tint under clusters and at some empty places (so tint alone is
    # not a giveaway)
    tint_c = [(cl.cx, cl.cy, cl.r * 1.1) for cl in clusters]
    for _ in range(int(rng.integers(0, 4 * max(area, 0.25)) + 1)):
        tint_c.append((rng.uniform(0, w), rng.uniform(0, h), rng.uniform(80, 300)))
    purple = _jitter(rng, (188, 130, 190), 12)
    tint = np.zeros((lh, lw), np.float32)
    for cx, cy, r in tint_c:
        np.maximum(tint, _blob(lh, lw, cx, cy, r / 1.6), out=tint)
    tint = (tint * np.float32(rng.uniform(0.15, 0.45)))[..., None]
    bg += (purple - bg) * tint
    # Cytoplasm blobs (distractors): soft, low-contrast, mostly paler than the stroma, some
    # faintly mauve. Soft shapes need no full resolution: drawn into the low-res background.
    pale_col = np.clip(white * 0.6 + eosin * 0.25 + purple * 0.15, 0, 255)
    for col, n, size, alpha in (
        (pale_col, rng.uniform(15, 120), (20, 70), (90, 200)),
        (purple * 0.9, rng.uniform(5, 60), (14, 45), (35, 80)),
    ):
        blob = np.zeros((lh, lw), np.uint8)
        for _ in range(int(area * n)):
            c = rng.uniform((0, 0), (w, h)) / _LR
            ln = rng.uniform(*size)
            uv = _blob_uv(rng, ln / _LR, ln * rng.uniform(0.5, 1.0) / _LR, 0.12)
            poly = _rot(uv, c[0], c[1], rng.uniform(0, math.pi))
            cv2.fillPoly(blob, [_cv(poly)], int(rng.integers(*alpha)), cv2.LINE_AA, 4)
        bg += (col - bg) * (blob.astype(np.float32) / 255)[..., None]
    bg *= _cast(rng, 0.03)  # white-balance variation
    bg_lr = bg
    img = _upsample(bg, h, w)
    fine = _streak_noise(rng, 256, int(rng.integers(5, 15)), fib_dir + rng.normal(0, 0.3), 0.7)
    fine += 0.8 * _periodic_noise(rng, 256, 4)
    _add_tile(img, fine * rng.uniform(3, 8), rng)

    def bg_at(x: float, y: float) -> np.ndarray:
        return bg_lr[min(int(y / _LR), lh - 1), min(int(x / _LR), lw - 1)]

    # Faint debris specks: tiny, flat colour pre-blended with the local background.
    n_deb = int(area * rng.uniform(30, 300))
    dc = rng.uniform((0, 0), (w, h), (n_deb, 2))
    dcol = np.where(rng.random((n_deb, 1)) < 0.6, (120, 90, 140), (90, 90, 100))
    da = rng.uniform(0.25, 0.55, (n_deb, 1))
    dcol = (
        bg_lr[
            np.minimum((dc[:, 1] / _LR).astype(int), lh - 1),
            np.minimum((dc[:, 0] / _LR).astype(int), lw - 1),
        ]
        * (1 - da)
        + (dcol + rng.uniform(-20, 20, (n_deb, 3))) * da
    )
    dp = _cv(dc)
    dax = np.maximum(1, np.rint(rng.uniform((0.8, 0.5), (3.0, 1.5), (n_deb, 2)) * 16)).astype(int)
    dang = rng.uniform(0, 180, n_deb)
    for i in range(n_deb):
        cv2.ellipse(
            img, (int(dp[i, 0]), int(dp[i, 1])), (int(dax[i, 0]), int(dax[i, 1])), float(dang[i]),
            0, 360, _tup(dcol[i]), -1, cv2.LINE_AA, 4,
        )  # fmt: skip
    # Red blood cells: small red discs, mostly in groups (vessels).
    if rng.random() < 0.5:
        rc = rng.uniform((0, 0), (w, h))
        for _ in range(int(area * rng.uniform(5, 80))):
            c = rc + rng.normal(0, 60, 2) if rng.random() < 0.7 else rng.uniform((0, 0), (w, h))
            r = rng.uniform(3, 4.5)
            a = np.float32(rng.uniform(0.6, 0.85))
            red = bg_at(c[0], c[1]) * (1 - a) + _jitter(rng, (214, 70, 92), 14) * a
            cv2.circle(img, _pt(c), round(r * 16), _tup(red), -1, cv2.LINE_AA, 4)
            cv2.circle(img, _pt(c), round(r * 7), _tup(red * 1.1 + 8), -1, cv2.LINE_AA, 4)

    placer = _Placer(h, w)
    nuclei: list[tuple] = []
    singles = _Cluster(w / 2, h / 2, 1e9, n_single)
    for cl in [*clusters, singles]:
        kind = rng.choice(["tumour", "lymph", "mixed"], p=[0.55, 0.2, 0.25])
        l0 = rng.uniform(16, 34)
        for _ in range(cl.n):
            for _attempt in range(30):
                if cl.r > 1e8:
                    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                    k = "stroma" if rng.random() < 0.6 else "lymph"
                else:
                    cx, cy = _cluster_point(rng, cl, 2.5)
                    k = kind if kind != "mixed" else ("lymph" if rng.random() < 0.4 else "tumour")
                if k == "tumour":
                    length, ratio = l0 * rng.uniform(0.8, 1.2), rng.uniform(0.6, 0.95)
                elif k == "lymph":
                    length, ratio = rng.uniform(8, 13), rng.uniform(0.8, 1.0)
                else:
                    length, ratio = rng.uniform(14, 34), rng.uniform(0.28, 0.5)
                length = float(np.clip(length, *OBJECT_LENGTH_PX["nucleus"]))
                width = max(5.0, length * ratio)
                ang = fib_dir + rng.normal(0, 0.2) if k == "stroma" else rng.uniform(0, math.pi)
                ex = (
                    math.hypot(0.5 * length * math.cos(ang), 0.5 * width * math.sin(ang)) * 1.06 + 1
                )
                ey = (
                    math.hypot(0.5 * length * math.sin(ang), 0.5 * width * math.cos(ang)) * 1.06 + 1
                )
                box = np.array([cx - ex, cy - ey, cx + ex, cy + ey])  # the ellipse's own box
                if placer.fits(box):
                    placer.add(box)
                    nuclei.append((cx, cy, length, width, ang, k))
                    break

    boxes = []
    for cx, cy, length, width, ang, k in nuclei:
        box = _draw_layers(
            img,
            _nucleus_layers(rng, cx, cy, length, width, ang, k, hema),
            alpha=rng.uniform(0.82, 0.95),
        )
        if box is not None:
            boxes.append(box)
    return img, boxes


def _blob_uv(rng: np.random.Generator, length: float, width: float, wobble: float) -> np.ndarray:
    """Irregular ellipse outline (object-local) with low-order radial perturbation."""
    t = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0, wobble) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    return np.stack([0.5 * length * r * np.cos(t), 0.5 * width * r * np.sin(t)], 1)


def _nucleus_layers(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    length: float,
    width: float,
    ang: float,
    kind: str,
    hema: np.ndarray,
) -> list[Layer]:
    outline = _rot(_blob_uv(rng, length, width, 0.06), cx, cy, ang)
    dark = _jitter(rng, hema * (0.8 if kind == "lymph" else 1.0), 12)
    vesicular = kind == "tumour" and rng.random() < 0.45
    body = np.clip(dark * 1.45 + 20, 0, 255) if vesicular else dark
    layers: list[Layer] = [("poly", outline, body)]
    if vesicular:
        layers.append(("outline", outline, dark * 0.85, 1 if length < 24 else 2))
    n_dots = min(14, int(length * width / 25))
    for _ in range(n_dots):
        u, v = rng.uniform(-0.35, 0.35) * length, rng.uniform(-0.35, 0.35) * width
        p = _rot(np.array([[u, v]]), cx, cy, ang)[0]
        layers.append(
            ("circle", (p[0], p[1], rng.uniform(0.6, 1.6)), dark * rng.uniform(0.55, 0.85))
        )
    if kind == "tumour" and length >= 16:
        for _ in range(int(rng.integers(1, 3))):
            u, v = rng.uniform(-0.2, 0.2) * length, rng.uniform(-0.2, 0.2) * width
            p = _rot(np.array([[u, v]]), cx, cy, ang)[0]
            layers.append(("circle", (p[0], p[1], rng.uniform(1.2, 2.4)), dark * 0.5))
    return layers


# --------------------------------------------------------------------------------------------
# Camera / stain variation
# --------------------------------------------------------------------------------------------


def _photometric(rng: np.random.Generator, img: np.ndarray, domain: str) -> np.ndarray:
    """Global brightness/contrast/gamma/colour cast, occasional blur, sensor noise.

    Applied after the boxes are measured; none of it moves an object, so boxes stay valid.
    """
    if rng.random() < (0.35 if domain == "microscopy" else 0.2):
        img = cv2.GaussianBlur(img, (5, 5), rng.uniform(0.5, 1.2))  # fixed 5x5: fast
    x = np.arange(256, dtype=np.float64) / 255.0
    contrast = rng.uniform(0.75, 1.25)
    bright = rng.uniform(-0.08, 0.08)
    gamma = rng.uniform(0.8, 1.2)
    y = np.clip((x - 0.5) * contrast + 0.5 + bright, 0, 1) ** gamma
    # one table for all channels: ~2x faster than a per-channel LUT (colour casts are applied
    # to the low-res background instead)
    img = cv2.LUT(img, np.clip(y * 255 + 0.5, 0, 255).astype(np.uint8))
    sigma = rng.uniform(0.5, 6.0)
    t = 256
    noise = rng.random((t, t, 3), dtype=np.float32) + rng.random((t, t, 3), dtype=np.float32) - 1
    noise *= np.float32(sigma * math.sqrt(6.0))
    _add_tile(img, noise, rng)
    return img
