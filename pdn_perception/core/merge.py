"""Merging crop detections into one frame-level set: translate, clip, class-aware NMS.

Pure numpy so it is identical on every backend and easy to test on edge cases.
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) -> (N,) areas; degenerate boxes have area 0."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def pairwise_overlap(a: np.ndarray, b: np.ndarray, metric: str = "iou") -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU, or IoS (intersection over the smaller box's area)."""
    if metric not in ("iou", "ios"):
        raise ValueError(f"metric must be 'iou' or 'ios', got {metric!r}")
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    area_a = box_area(a)[:, None]
    area_b = box_area(b)[None, :]
    denom = area_a + area_b - inter if metric == "iou" else np.minimum(area_a, area_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, inter / np.where(denom > 0, denom, 1), 0.0)
    return out


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    threshold: float = 0.5,
    metric: str = "iou",
    max_keep: int | None = None,
) -> np.ndarray:
    """Greedy NMS; returns kept indices sorted by descending score.

    Class-aware when ``labels`` is given (boxes of different classes never suppress each other).
    Ties in score keep the lower index first (stable sort), so results are deterministic.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if boxes.shape != (n, 4) or scores.shape != (n,):
        raise ValueError(f"boxes must be (N, 4) and scores (N,), got {boxes.shape}, {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    if labels is not None:
        # Offsetting each class far apart makes one pass class-aware (boxes never meet).
        span = float(np.abs(boxes).max()) + 1.0
        boxes = boxes + (labels.astype(np.float64) * 2.0 * span)[:, None]
    overlap = pairwise_overlap(boxes[order], boxes[order], metric)  # (N, N)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        suppressed |= overlap[i] > threshold
    return order[np.asarray(keep, dtype=np.int64)]


def merge_crop_detections(
    per_crop: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    crop_boxes: np.ndarray,
    frame_hw: tuple[int, int],
    threshold: float = 0.5,
    metric: str = "iou",
    max_keep: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-crop (boxes in crop pixels, scores, labels) -> frame boxes (N, 4), scores, labels.

    Boxes are translated by their crop's origin, clipped to both the crop's valid region and the
    frame, empty ones dropped, then class-aware NMS resolves duplicates from overlapping crops.
    """
    if len(per_crop) != len(crop_boxes):
        raise ValueError(f"{len(per_crop)} crop results for {len(crop_boxes)} crop boxes")
    all_b, all_s, all_l = [], [], []
    h, w = frame_hw
    for (b, s, lab), cb in zip(per_crop, crop_boxes):
        if len(b) == 0:
            continue
        fb = b.astype(np.float32) + np.array([cb[0], cb[1], cb[0], cb[1]], dtype=np.float32)
        np.clip(fb[:, 0::2], max(cb[0], 0), min(cb[2], w), out=fb[:, 0::2])
        np.clip(fb[:, 1::2], max(cb[1], 0), min(cb[3], h), out=fb[:, 1::2])
        ok = (fb[:, 2] - fb[:, 0] >= 1) & (fb[:, 3] - fb[:, 1] >= 1)
        all_b.append(fb[ok])
        all_s.append(s[ok].astype(np.float32))
        all_l.append(lab[ok].astype(np.int64))
    if not all_b:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    boxes = np.concatenate(all_b)
    scores = np.concatenate(all_s)
    labels = np.concatenate(all_l)
    keep = nms(boxes, scores, labels, threshold, metric, max_keep)
    return boxes[keep], scores[keep], labels[keep]
