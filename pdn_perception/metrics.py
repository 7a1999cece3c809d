"""Simple detection matching (recall/precision at one IoU): for benchmarks, demo summaries and
bag scoring. COCO AP lives in ``pdn-eval`` (faster-coco-eval), not here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core.merge import pairwise_overlap


@dataclass(frozen=True)
class MatchCounts:
    """True positives, ground-truth count and detection count; add them up over frames."""

    tp: int = 0
    n_gt: int = 0
    n_det: int = 0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.n_gt + other.n_gt, self.n_det + other.n_det)

    @property
    def recall(self) -> float:
        return self.tp / self.n_gt if self.n_gt else 1.0

    @property
    def precision(self) -> float:
        return self.tp / self.n_det if self.n_det else 1.0


def match(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    iou: float = 0.5,
) -> MatchCounts:
    """Greedy class-aware matching by descending score; each GT matches at most one detection."""
    n_gt, n_det = len(gt_boxes), len(det_boxes)
    if n_gt == 0 or n_det == 0:
        return MatchCounts(0, n_gt, n_det)
    overlap = pairwise_overlap(det_boxes.astype(np.float64), gt_boxes.astype(np.float64))
    overlap[det_labels[:, None] != gt_labels[None, :]] = 0.0  # (D, G)
    taken = np.zeros(n_gt, dtype=bool)
    tp = 0
    for d in np.argsort(-det_scores, kind="stable"):
        cand = np.where(taken, -1.0, overlap[d])
        g = int(np.argmax(cand))
        if cand[g] >= iou:
            taken[g] = True
            tp += 1
    return MatchCounts(tp, n_gt, n_det)
