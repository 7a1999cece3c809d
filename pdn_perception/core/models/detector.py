"""Shared-weight crop detector: CenterNet-style heads (class heat map, size, offset) at stride 4.

The same weights run on every crop (and on the whole downscaled frame in ``global`` mode).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, Normalize, stage


class CropDetector(nn.Module):
    """Crops (B, 3, S, S), values 0..255 -> heat logits (B, C, S/s, S/s), size, offset (B, 2, ..)
    at output stride s (4, or 2 with the fine level).

    ``kind='light'`` is the real-time CPU default: a two-conv stem and plain 3x3 convs at stride 4
    (where every FLOP costs 4x what it costs at stride 8), basic blocks at strides 8 and 16.
    ``kind='resnet18'`` is the ResNet-18-class GPU configuration (7x7 stem + max-pool, basic
    blocks at every stride, 64-256 wide).

    ``stride=2`` adds an FPN P2 level: the stride-4 head's features, upsampled, plus a lateral
    from the stem's first (stride-2) conv, one 3x3 conv ``fine_width`` wide, and the heads there.
    Dense 8-12 px objects (cars in a parking lot) sit two stride-4 cells apart; at stride 2 their
    peaks no longer share a 3x3 neighbourhood and a one-cell slip is 2 px, not 4.
    """

    def __init__(
        self,
        num_classes: int,
        kind: str = "light",
        widths: tuple[int, int, int, int] = (24, 24, 48, 96),
        depths: tuple[int, int, int] = (1, 1, 1),
        neck_width: int = 24,
        stride: int = 4,
        fine_width: int = 16,
    ) -> None:
        super().__init__()
        if stride not in (2, 4):
            raise ValueError(f"detector stride must be 2 or 4, got {stride}")
        self.stride = stride
        w0, w1, w2, w3 = widths
        self.norm = Normalize()
        # Dense 3x3 convs throughout: on CPU (oneDNN) they run 3-4x faster per FLOP than depthwise.
        if kind == "light":  # two cheap strided 3x3 convs to stride 4, then plain 3x3 convs
            self.stem = nn.Sequential(ConvBNAct(3, 16, 3, 2), ConvBNAct(16, w0, 3, 2))
            convs = [ConvBNAct(w0 if i == 0 else w1, w1, 3) for i in range(depths[0])]
            self.s4 = nn.Sequential(*convs)  # stride 4
        else:  # ResNet-18 stem and basic blocks
            self.stem = nn.Sequential(ConvBNAct(3, w0, 7, 2), nn.MaxPool2d(3, 2, 1))
            self.s4 = stage(w0, w1, depths[0], 1, "resnet")  # stride 4
        self.s8 = stage(w1, w2, depths[1], 2, "resnet")  # stride 8
        self.s16 = stage(w2, w3, depths[2], 2, "resnet")  # stride 16
        self.lat4 = ConvBNAct(w1, neck_width, 1)
        self.lat8 = ConvBNAct(w2, neck_width, 1)
        self.lat16 = ConvBNAct(w3, neck_width, 1)
        self.head = nn.Sequential(ConvBNAct(neck_width, neck_width, 3))
        out_width = neck_width
        if stride == 2:
            stem_width = 16 if kind == "light" else w0  # channels of the stem's first conv
            self.lat2 = ConvBNAct(stem_width, fine_width, 1)
            self.top2 = ConvBNAct(neck_width, fine_width, 1)
            self.head2 = ConvBNAct(fine_width, fine_width, 3)
            out_width = fine_width
        self.heat = nn.Conv2d(out_width, num_classes, 1)
        self.size = nn.Conv2d(out_width, 2, 1)
        self.offset = nn.Conv2d(out_width, 2, 1)
        nn.init.constant_(self.heat.bias, -4.6)  # CenterNet prior: p=0.01 at start

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f2 = self.stem[0](self.norm(x))  # (B, 16 or w0, S/2, S/2)
        f4 = self.s4(self.stem[1](f2))  # (B, w1, S/4, S/4)
        f8 = self.s8(f4)  # (B, w2, S/8, S/8)
        f16 = self.s16(f8)  # (B, w3, S/16, S/16)
        p8 = self.lat8(f8) + F.interpolate(self.lat16(f16), size=f8.shape[-2:], mode="nearest")
        p4 = self.lat4(f4) + F.interpolate(p8, size=f4.shape[-2:], mode="nearest")
        h = self.head(p4)  # (B, N, S/4, S/4)
        if self.stride == 2:
            up = F.interpolate(self.top2(h), size=f2.shape[-2:], mode="nearest")
            h = self.head2(self.lat2(f2) + up)  # (B, fine_width, S/2, S/2)
        return self.heat(h), self.size(h), self.offset(h)


#: The 3x3 neighbourhood as (dy, dx), row by row; index 4 is the cell itself.
_NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.int64)
_RING = [k for k in range(9) if k != 4]  # the eight neighbours without the cell


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p)) if 0.0 < p < 1.0 else (-math.inf if p <= 0.0 else math.inf)


@torch.no_grad()
def decode(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    stride: int,
    max_per_image: int = 100,
    centred_cells: bool = True,
    vote_iou: float = 0.0,
    min_score: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet decoding: local maxima of the heat map -> boxes in input pixels.

    heat (B, C, h, w) logits; size (B, 2, h, w) log of box (w, h) in stride units; offset
    (B, 2, h, w) sub-cell centre offset. Returns boxes (B, M, 4) x1y1x2y2, scores (B, M),
    labels (B, M), M = min(max_per_image, C*h*w), on the input's device, sorted by score (ties
    in map order); slots past an image's last detection hold score 0 and a zero box.

    A cell is kept where its probability is the maximum of its 3x3 neighbourhood of the same
    class (outside the map counts as 0). ``centred_cells`` also keeps every cell whose own
    offset puts its object's centre inside that cell (offset in [0, 1)², which training asks of
    the centre cell alone; its neighbours point one cell away). Two cars parked side by side
    have centres in adjacent cells, where the peak search keeps only the stronger; this keeps
    both. Duplicates it adds are removed by the pipeline's NMS, since each decodes the same box.

    ``min_score`` drops cells below it first: only that scan passes over the whole maps. The
    peak test, boxes and votes then run in numpy on the 3x3 neighbourhoods of the few cells
    left, gathered once. Map-wide torch decoding (sigmoid, 3x3 max, masks, top-k, exp of the
    size map) cost 4.7 ms for 4 crops and 13.8 ms for 16 on the 2-core AMX Xeon (2026-12-03),
    mostly per-op overhead; the pipeline passes its score threshold. With ``min_score`` 0 every
    cell is gathered: correct, but slow on large maps.

    ``vote_iou`` > 0 refines each kept box into the mean of the boxes its 3x3 neighbours decode
    for the same class, weighted by their heat and counting only those with IoU >= ``vote_iou``
    with it. Training asks every cell near a centre to regress that object's box (TTFNet), so
    the neighbours are nine noisy estimates of one box, while the IoU gate keeps out the box of
    a car parked next to it.
    """
    out = _decode_np(heat, size, offset, stride, max_per_image, centred_cells, vote_iou, min_score)
    return tuple(torch.from_numpy(a).to(heat.device) for a in out)


@torch.no_grad()
def decode_per_image(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    stride: int,
    max_per_image: int = 100,
    vote_iou: float = 0.0,
    min_score: float = 0.0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``decode``'s detections of each image alone, as numpy (boxes (n, 4), scores (n,), labels
    (n,)), empty slots dropped: what callers keep, without a trip back to the device."""
    boxes, scores, labels = _decode_np(
        heat, size, offset, stride, max_per_image, True, vote_iou, min_score
    )
    keep = scores > 0  # (B, M); every filled slot is >= min_score already
    return [(boxes[i][k], scores[i][k], labels[i][k]) for i, k in enumerate(keep)]


def _decode_np(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    stride: int,
    max_per_image: int,
    centred_cells: bool,
    vote_iou: float,
    min_score: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``decode`` in numpy: boxes (B, M, 4), scores (B, M), labels (B, M) on the host."""
    b, c, h, w = heat.shape
    m = min(max_per_image, c * h * w)
    # A margin below the threshold's logit, so rounding in the sigmoid cannot lose a cell that
    # scores exactly min_score; the exact test is on the probabilities below.
    cells = _cells_at_least(heat, _logit(min_score) - 1e-3)  # (N, 4) b, c, y, x
    bi, ci = cells[:, :1], cells[:, 1:2]  # (N, 1) each
    ny = cells[:, 2:3] + _NEIGHBOURS[:, 0]  # (N, 9)
    nx = cells[:, 3:4] + _NEIGHBOURS[:, 1]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    ny, nx = ny.clip(0, h - 1), nx.clip(0, w - 1)
    nprob = _sigmoid(_take(heat, (bi, ci, ny, nx))) * inside  # (N, 9) same-class heat
    noff = _take(offset, (bi, slice(None), ny, nx))  # (N, 9, 2)
    nsize = _take(size, (bi, slice(None), ny, nx))  # (N, 9, 2)
    prob = nprob[:, 4]  # (N,) the cells themselves
    keep = nprob.max(1) == prob  # a 3x3 peak (the map's edge counts as 0)
    if centred_cells:
        keep |= ((noff[:, 4] >= 0) & (noff[:, 4] < 1)).all(1)
    keep &= prob >= min_score
    sel = np.flatnonzero(keep)
    # Each image's best m: by image, then by score; lexsort is stable, so ties keep map order.
    sel = sel[np.lexsort((-prob[sel], cells[sel, 0]))]
    img = cells[sel, 0]
    counts = np.bincount(img, minlength=b)  # (B,)
    rank = np.arange(len(sel)) - (counts.cumsum() - counts)[img]
    sel, img, rank = sel[rank < m], img[rank < m], rank[rank < m]
    xs, ys = nx[sel].astype(np.float32), ny[sel].astype(np.float32)  # (n, 9) cell coordinates
    boxes = _cell_boxes(noff[sel, 4], _box_wh(nsize[sel, 4]), xs[:, 4], ys[:, 4])  # (n, 4)
    if vote_iou > 0:
        ring = _cell_boxes(
            noff[sel][:, _RING], _box_wh(nsize[sel][:, _RING]), xs[:, _RING], ys[:, _RING]
        )
        boxes = _vote(boxes, prob[sel], ring, nprob[sel][:, _RING], vote_iou)
    out_boxes = np.zeros((b, m, 4), np.float32)
    out_scores = np.zeros((b, m), np.float32)
    out_labels = np.zeros((b, m), np.int64)
    out_boxes[img, rank] = boxes * stride
    out_scores[img, rank] = prob[sel]
    out_labels[img, rank] = cells[sel, 1]
    return out_boxes, out_scores, out_labels


def _cells_at_least(logits: torch.Tensor, threshold: float, host: bool | None = None) -> np.ndarray:
    """Indices (N, 4) (b, c, y, x), in map order, of the cells of logits (B, C, h, w) that are
    >= threshold. On the host (CPU tensors, ``host`` None) numpy scans the tensor's memory in its
    own order (one contiguous pass for any dense layout, e.g. channels_last): torch's comparison
    and nonzero took 0.6 ms for four crops' maps on the AMX Xeon, numpy 0.07 ms. Elsewhere the
    scan runs on the tensor's device and only the indices move."""
    if not (logits.device.type == "cpu" if host is None else host):
        return (logits >= threshold).nonzero().cpu().numpy()
    order = sorted(range(4), key=lambda d: (-logits.stride(d), d))  # memory order of the dims
    mem = logits.detach().permute(order)  # a contiguous view where the tensor is dense
    flat = np.flatnonzero(mem.float().numpy() >= threshold)  # (N,) in memory order
    idx = np.zeros((len(flat), 4), np.int64)
    idx[:, order] = np.stack(np.unravel_index(flat, mem.shape), 1)  # back to (b, c, y, x)
    _, c, h, w = logits.shape
    return idx[np.argsort(((idx[:, 0] * c + idx[:, 1]) * h + idx[:, 2]) * w + idx[:, 3])]


def _take(t: torch.Tensor, index: tuple, host: bool | None = None) -> np.ndarray:
    """t[index] as float32 numpy. On the host numpy indexes the tensor's memory; elsewhere
    the gather runs on the tensor's device and only the gathered values move."""
    if t.device.type == "cpu" if host is None else host:
        return t.detach().float().numpy()[index]
    dev = [torch.from_numpy(i).to(t.device) if isinstance(i, np.ndarray) else i for i in index]
    return t.detach()[tuple(dev)].float().cpu().numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """torch's sigmoid, so scores match a map-wide torch decode to the bit (numpy's formula
    differs in the last place, enough to flip NMS between near-equal duplicates)."""
    return torch.from_numpy(x).sigmoid().numpy()


def _box_wh(log_wh: np.ndarray) -> np.ndarray:
    """Box (w, h) in cells from the size map's logs (..., 2), clamped to e^±6."""
    return np.exp(log_wh.clip(-6.0, 6.0))


def _cell_boxes(off: np.ndarray, wh: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boxes (..., 4) x1y1x2y2 in cells from offsets and sizes (..., 2) at cells (xs, ys) (...)."""
    cx, cy = xs + off[..., 0], ys + off[..., 1]
    half_w, half_h = wh[..., 0] / 2, wh[..., 1] / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)


def _vote(
    boxes: np.ndarray, scores: np.ndarray, ring: np.ndarray, ring_prob: np.ndarray, min_iou: float
) -> np.ndarray:
    """Heat-weighted mean of each kept box (n, 4) and its agreeing neighbours' boxes (n, 8, 4),
    whose same-class heat is ``ring_prob`` (n, 8) (0 outside the map)."""
    wgt = ring_prob * (_pair_iou(boxes[:, None], ring) >= min_iou)  # (n, 8)
    num = boxes * scores[:, None] + (ring * wgt[..., None]).sum(1)  # the kept cell: IoU 1
    return num / np.maximum(scores + wgt.sum(1), 1e-12)[:, None]


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching boxes (..., 4) and (..., 4) -> (...)."""
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clip(min=0).prod(-1)
    area = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / np.maximum(area - inter, 1e-12)
