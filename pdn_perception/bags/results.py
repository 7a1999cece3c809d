"""Results bags (``pdn-process`` output, demo recordings) back into arrays, per frame.

Works on rosbags' own message objects (no rclpy): what scoring against ground truth and the
demo's overlay pictures need. The inverse mapping of ``ros.convert.result_to_*``: a box is
``center -/+ size / 2``, the label is ``results[0].hypothesis.class_id`` (a class name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.pipeline import Result
from .io import image_to_frame, iter_raw, open_bag, select_connections, stamp_ns

NAMESPACE = "/pdn_perception"
DETECTIONS_TOPIC = f"{NAMESPACE}/detections"
CROPS_TOPIC = f"{NAMESPACE}/crops"
SALIENCY_TOPIC = f"{NAMESPACE}/saliency"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
CROPS_TYPE = "vision_msgs/msg/BoundingBox2DArray"
SALIENCY_TYPE = "sensor_msgs/msg/Image"


@dataclass
class FrameResult:
    """What the node/pipeline published for one input frame (matched by header stamp)."""

    stamp_ns: int
    frame_id: str
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    labels: tuple[str, ...]
    crops: np.ndarray | None = None  # (K, 4) int64, from the crops topic
    saliency: np.ndarray | None = None  # (h, w) float32 in [0, 1], from the saliency topic

    def to_result(self, class_names: tuple[str, ...], frame_hw: tuple[int, int]) -> Result:
        """A core Result (for ``viz.render_overlay``); unknown class names are appended."""
        names = list(class_names)
        for lab in self.labels:
            if lab not in names:
                names.append(lab)
        crops = self.crops if self.crops is not None else np.zeros((0, 4), np.int64)
        return Result(
            boxes=self.boxes,
            scores=self.scores,
            labels=np.array([names.index(lab) for lab in self.labels], np.int64),
            crop_boxes=crops,
            saliency=self.saliency,
            saliency_scale=None
            if self.saliency is None
            else (frame_hw[1] / self.saliency.shape[1], frame_hw[0] / self.saliency.shape[0]),
            frame_hw=frame_hw,
            mode="topk",
            backend="",
            class_names=tuple(names),
        )


def _boxes(bboxes: list) -> np.ndarray:
    out = np.zeros((len(bboxes), 4), np.float32)
    for i, b in enumerate(bboxes):
        cx, cy = b.center.position.x, b.center.position.y
        out[i] = (cx - b.size_x / 2, cy - b.size_y / 2, cx + b.size_x / 2, cy + b.size_y / 2)
    return out


def read_results(path: str | Path, namespace: str = NAMESPACE) -> dict[int, FrameResult]:
    """Per input-frame stamp: detections, plus crops and saliency where the bag has them."""
    topics = {f"{namespace}/detections", f"{namespace}/crops", f"{namespace}/saliency"}
    out: dict[int, FrameResult] = {}
    extras: dict[int, dict[str, np.ndarray]] = {}
    with open_bag(path) as reader:
        present = [t for t in topics if t in {c.topic for c in reader.connections}]
        conns = select_connections(reader, present) if present else []
        for conn, _, raw in iter_raw(reader, conns):
            msg = reader.deserialize(raw, conn.msgtype)
            key = stamp_ns(msg.header.stamp)
            if conn.topic.endswith("/detections"):
                dets = msg.detections
                out[key] = FrameResult(
                    stamp_ns=key,
                    frame_id=msg.header.frame_id,
                    boxes=_boxes([d.bbox for d in dets]),
                    scores=np.array(
                        [d.results[0].hypothesis.score if d.results else 0.0 for d in dets],
                        np.float32,
                    ),
                    labels=tuple(
                        d.results[0].hypothesis.class_id if d.results else "" for d in dets
                    ),
                )
            elif conn.topic.endswith("/crops"):
                extras.setdefault(key, {})["crops"] = np.rint(_boxes(msg.boxes)).astype(np.int64)
            else:
                sal = image_to_frame(msg).astype(np.float32) / 255.0
                extras.setdefault(key, {})["saliency"] = sal
    for key, ex in extras.items():
        if key in out:
            out[key].crops = ex.get("crops")
            out[key].saliency = ex.get("saliency")
    return out


__all__ = [
    "CROPS_TOPIC",
    "CROPS_TYPE",
    "DETECTIONS_TOPIC",
    "DETECTIONS_TYPE",
    "NAMESPACE",
    "SALIENCY_TOPIC",
    "SALIENCY_TYPE",
    "FrameResult",
    "read_results",
]
