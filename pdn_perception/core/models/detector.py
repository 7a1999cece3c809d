"""Shared-weight crop detector: CenterNet-style heads (class heat map, size, offset) at stride 4.

The same weights run on every crop (and on the whole downscaled frame in ``global`` mode).
"""

from __future__ import annotations

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


def local_max_3x3(prob: torch.Tensor) -> torch.Tensor:
    """Max over each cell's 3x3 neighbourhood of prob (B, C, h, w) >= 0 (zero padding).

    Same values as ``F.max_pool2d(prob, 3, 1, 1)``, computed as a 3-wide max along rows, then
    along columns, of shifted views: four elementwise maxima. On CPU the pooling kernel was the
    largest cost of decoding for these few-channel maps (5.5 ms for 4 crops); eight maxima of
    the whole 3x3 window took 1.43 ms and the separable four take 0.66 (one thread, AMX Xeon,
    2026-12-03; 16 crops 6.6 -> 3.4 ms).
    """
    h, w = prob.shape[-2:]
    p = F.pad(prob, (1, 1, 1, 1))  # (B, C, h + 2, w + 2)
    rows = torch.maximum(torch.maximum(p[..., :w], p[..., 1 : w + 1]), p[..., 2:])  # (.., h + 2, w)
    return torch.maximum(torch.maximum(rows[..., :h, :], rows[..., 1 : h + 1, :]), rows[..., 2:, :])


@torch.no_grad()
def decode(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    stride: int,
    max_per_image: int = 100,
    centred_cells: bool = True,
    vote_iou: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet decoding: local maxima of the heat map -> boxes in input pixels.

    heat (B, C, h, w) logits; size (B, 2, h, w) log of box (w, h) in stride units; offset
    (B, 2, h, w) sub-cell centre offset. Returns boxes (B, M, 4) x1y1x2y2, scores (B, M),
    labels (B, M), M = min(max_per_image, C*h*w), sorted by score.

    ``centred_cells`` also keeps every cell whose own offset puts its object's centre inside that
    cell (offset in [0, 1)², which training asks of the centre cell alone; its neighbours point
    one cell away). Two cars parked side by side have centres in adjacent cells, where the 3x3
    peak search keeps only the stronger; this keeps both. Duplicates it adds are removed by the
    pipeline's NMS, since each one decodes the same box.

    ``vote_iou`` > 0 refines each kept box into the mean of the boxes its 3x3 neighbours decode
    for the same class, weighted by their heat and counting only those with IoU >= ``vote_iou``
    with it. Training asks every cell near a centre to regress that object's box (TTFNet), so
    the neighbours are nine noisy estimates of one box, while the IoU gate keeps out the box of
    a car parked next to it.
    """
    b, c, h, w = heat.shape
    prob = heat.float().sigmoid().contiguous()
    keep = local_max_3x3(prob) == prob  # (B, C, h, w)
    if centred_cells:
        off = offset.float()
        keep = keep | ((off >= 0) & (off < 1)).all(dim=1, keepdim=True)  # (B, C, h, w)
    peaks = prob * keep  # (B, C, h, w)
    m = min(max_per_image, c * h * w)
    scores, idx = peaks.reshape(b, -1).topk(m, dim=1)  # (B, M)
    labels = idx // (h * w)
    cell = idx % (h * w)
    ys = (cell // w).float()
    xs = (cell % w).float()
    off = offset.float().reshape(b, 2, -1)  # (B, 2, h*w)
    wh = size.float().clamp(-6.0, 6.0).exp().reshape(b, 2, -1)  # (B, 2, h*w)
    boxes = _cell_boxes(off, wh, cell, xs, ys)  # (B, M, 4) in cells
    if vote_iou > 0:
        boxes = _vote(boxes, scores, labels, xs, ys, prob, off, wh, vote_iou)
    return boxes * stride, scores, labels


def _vote(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    prob: torch.Tensor,
    off: torch.Tensor,
    wh: torch.Tensor,
    min_iou: float,
) -> torch.Tensor:
    """Heat-weighted mean of each kept box (B, M, 4) and its agreeing 3x3 neighbours' boxes (all
    eight neighbours gathered at once: one gather instead of eight)."""
    b, _, h, w = prob.shape
    m = boxes.shape[1]
    k = torch.arange(8, device=xs.device)
    k = k + (k >= 4)  # the 3x3 cells 0..8 without the centre 4; made on the device, no copy
    dy, dx = (k // 3 - 1).to(xs.dtype), (k % 3 - 1).to(xs.dtype)  # (8,) each
    ny = (ys[:, None, :] + dy[None, :, None]).reshape(b, -1)  # (B, 8M)
    nx = (xs[:, None, :] + dx[None, :, None]).reshape(b, -1)  # (B, 8M)
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    ncell = (ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)).long()  # (B, 8M)
    nbox = _cell_boxes(off, wh, ncell, nx, ny).reshape(b, 8, m, 4)
    lab = labels.repeat(1, 8)  # (B, 8M), the same order as ncell
    p = prob.reshape(b, -1).gather(1, lab * (h * w) + ncell)  # (B, 8M) same-class heat
    agree = _pair_iou(boxes[:, None], nbox) >= min_iou  # (B, 8, M)
    wgt = (p * inside).reshape(b, 8, m) * agree  # (B, 8, M)
    num = boxes * scores[..., None] + (nbox * wgt[..., None]).sum(1)  # the kept cell: IoU 1
    return num / (scores + wgt.sum(1)).clamp(min=1e-12)[..., None]


def _cell_boxes(
    off: torch.Tensor, wh: torch.Tensor, cell: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
) -> torch.Tensor:
    """Boxes (B, M, 4) x1y1x2y2 in cells decoded at flat cells (B, M) at (xs, ys), from offset
    and size maps (B, 2, h*w)."""
    idx = cell.unsqueeze(1).expand(-1, 2, -1)  # (B, 2, M)
    o, s = off.gather(2, idx), wh.gather(2, idx)  # (B, 2, M)
    cx, cy = xs + o[:, 0], ys + o[:, 1]
    return torch.stack([cx - s[:, 0] / 2, cy - s[:, 1] / 2, cx + s[:, 0] / 2, cy + s[:, 1] / 2], 2)


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching boxes (..., 4) and (..., 4) -> (...)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area - inter).clamp(min=1e-12)
