"""Overlay pictures of a Result: saliency heat map, crops and boxes (ROS-free, used by the node's
debug image, ``pdn-detect --overlay`` and the demo)."""

from __future__ import annotations

import cv2
import numpy as np

from .core.pipeline import Result
from .core.resize import area_resize

CROP_COLOUR = (255, 200, 0)  # RGB
BOX_COLOURS = ((255, 60, 60), (60, 255, 60), (80, 160, 255), (255, 60, 255), (255, 255, 60))


def saliency_to_mono8(saliency: np.ndarray) -> np.ndarray:
    """(h, w) float in [0, 1] -> (h, w) uint8, what ~/saliency publishes."""
    return np.clip(saliency * 255.0 + 0.5, 0, 255).astype(np.uint8)


def heatmap_rgb(saliency: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Saliency as an RGB colour map resized to size_hw (h, w)."""
    mono = cv2.resize(saliency_to_mono8(saliency), (size_hw[1], size_hw[0]), cv2.INTER_LINEAR)
    return cv2.applyColorMap(mono, cv2.COLORMAP_INFERNO)[:, :, ::-1]  # BGR -> RGB


def render_overlay(
    frame: np.ndarray,
    result: Result,
    long_side: int = 1024,
    heat_alpha: float = 0.35,
    show_labels: bool = True,
) -> np.ndarray:
    """Downscaled RGB overlay: frame blended with the saliency heat map, crops, boxes.

    frame (H, W, 3) or (H, W) uint8 RGB/mono; returns (h, w, 3) uint8 RGB, long side ``long_side``.
    """
    h, w = frame.shape[:2]
    s = min(1.0, long_side / max(h, w))
    oh, ow = max(1, round(h * s)), max(1, round(w * s))
    small = area_resize(frame, (oh, ow))  # the pipeline's downscale: fast at 4x too
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
    out = small if small is not frame else small.copy()  # boxes are drawn into ``out``
    if result.saliency is not None:  # tiles and global results hold none by default
        heat = heatmap_rgb(result.saliency, (oh, ow))
        out = cv2.addWeighted(small, 1.0 - heat_alpha, heat, heat_alpha, 0)
    thick = max(1, round(2 * s * 2))
    for x1, y1, x2, y2 in result.crop_boxes:
        p1 = (int(x1 * s), int(y1 * s))
        p2 = (int(x2 * s) - 1, int(y2 * s) - 1)
        cv2.rectangle(out, p1, p2, CROP_COLOUR, thick)
    for box, score, label in zip(result.boxes, result.scores, result.labels):
        colour = BOX_COLOURS[int(label) % len(BOX_COLOURS)]
        x1, y1, x2, y2 = (box * s).tolist()
        pad = 2  # tiny objects: draw the box a little outside so it stays visible
        cv2.rectangle(
            out, (int(x1) - pad, int(y1) - pad), (int(x2) + pad, int(y2) + pad), colour, 1
        )
        if show_labels:
            text = f"{result.class_names[int(label)]} {score:.2f}"
            cv2.putText(
                out, text, (int(x1), max(8, int(y1) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1
            )
    return np.ascontiguousarray(out)
