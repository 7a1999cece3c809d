"""Training losses: binary mask loss for the saliency head, CenterNet losses for the detector."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0
) -> torch.Tensor:
    """Focal BCE summed and divided by the number of positive cells (at least 1).

    Objects cover well under 1 % of saliency cells; plain BCE would be won by predicting all
    background. ``alpha`` > 0.5 leans towards the positives: a missed object is a missed crop.
    """
    logits = logits.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    loss = a_t * (1 - p_t) ** gamma * ce
    return loss.sum() / target.sum().clamp(min=1.0)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice over the whole batch: scale-free overlap, insensitive to the class imbalance."""
    prob = logits.float().sigmoid()
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def saliency_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal + dice between saliency logits (B, 1, h, w) and the oracle mask (B, 1, h, w)."""
    focal = sigmoid_focal_loss(logits, target)
    dice = dice_loss(logits, target)
    total = focal + dice_weight * dice
    return total, {"sal_focal": float(focal.detach()), "sal_dice": float(dice.detach())}


def centernet_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on heat logits (B, C, h, w) vs gaussians.

    Cells near a centre (target close to 1) are barely penalised for firing, so the network is
    not punished for being one cell off on a 6 px object.
    """
    logits = logits.float()
    pos = target.eq(1).float()
    neg = 1.0 - pos
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    prob = logits.sigmoid()
    pos_loss = -(log_p * (1 - prob) ** alpha * pos).sum()
    neg_loss = -(log_1mp * prob**alpha * (1 - target) ** beta * neg).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between pred (B, 2, h, w) and target (B, 2, h, w), weighted by mask (B, h, w)."""
    m = mask.unsqueeze(1)  # (B, 1, h, w)
    return ((pred.float() - target).abs() * m).sum() / (2 * m.sum()).clamp(min=1.0)


def _cell_boxes(size: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Log-size (N, 2) and centre offset (N, 2), both in cells -> boxes (N, 4) x1y1x2y2 relative
    to their cell (the decode of ``core.models.detector.decode`` without the cell origin)."""
    half = size.float().clamp(-6.0, 6.0).exp() / 2
    centre = offset.float()
    return torch.cat([centre - half, centre + half], dim=1)


def masked_giou(
    size_pred: torch.Tensor,
    off_pred: torch.Tensor,
    size_t: torch.Tensor,
    off_t: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Weighted mean of 1 - GIoU between the decoded and target boxes at the regression cells.

    L1 on offset and log-size treats a one-pixel slip the same on a 6 px and a 48 px box; the
    IoU that AP@0.5 counts does not — for 6-10 px objects a pixel decides the match. GIoU scores
    the box as the evaluation does (TTFNet regresses boxes this way). Inputs (B, 2, h, w) and
    mask (B, h, w); only cells with mask > 0 are decoded.
    """
    sel = mask > 0  # (B, h, w)
    if not bool(sel.any()):
        return size_pred.sum() * 0.0

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1)[sel]  # (N, 2)

    p = _cell_boxes(pick(size_pred), pick(off_pred))  # (N, 4)
    t = _cell_boxes(pick(size_t), pick(off_t))  # (N, 4)
    w = mask[sel].float()  # (N,)
    lt = torch.maximum(p[:, :2], t[:, :2])
    rb = torch.minimum(p[:, 2:], t[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (p[:, 2:] - p[:, :2]).prod(dim=1)
    area_t = (t[:, 2:] - t[:, :2]).prod(dim=1)
    union = area_p + area_t - inter
    hull = (torch.maximum(p[:, 2:], t[:, 2:]) - torch.minimum(p[:, :2], t[:, :2])).prod(dim=1)
    giou = inter / union - (hull - union) / hull  # (N,)
    return ((1 - giou) * w).sum() / w.sum().clamp(min=1e-6)


def detector_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    reg_mask: torch.Tensor,
    size_weight: float = 1.0,
    offset_weight: float = 1.0,
    giou_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Heat focal + L1 on log-size and offset around object centres (weights as in CenterNet,
    with size in log space so one weight suits 6 px and 48 px boxes alike), plus optionally
    GIoU on the decoded boxes (``giou_weight`` > 0)."""
    heat_logits, size_pred, off_pred = outputs
    l_heat = centernet_focal_loss(heat_logits, heat)
    l_size = masked_l1(size_pred, size, reg_mask)
    l_off = masked_l1(off_pred, offset, reg_mask)
    total = l_heat + size_weight * l_size + offset_weight * l_off
    parts = {
        "det_heat": float(l_heat.detach()),
        "det_size": float(l_size.detach()),
        "det_off": float(l_off.detach()),
    }
    if giou_weight > 0:
        l_giou = masked_giou(size_pred, off_pred, size, offset, reg_mask)
        total = total + giou_weight * l_giou
        parts["det_giou"] = float(l_giou.detach())
    return total, parts
