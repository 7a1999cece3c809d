"""Sample camera bags from the scene generator, with ground truth, and scoring against it.

There are no real recordings in this project, so a bag of synthetic large frames is what the
replay, the offline processing and the demo run on. Frames come from
``pdn_perception.train.scenes.make_scene`` with seeds ``seed, seed + 1, ...``; the default
first seed is the held-out range (>= 1_000_000), so a sample bag never shows training scenes.

Ground truth lies beside the data as ``<bag>/ground_truth.json`` (ignored by rosbag2 readers)::

    {
      "format": "pdn_perception/ground_truth/1",
      "classes": ["boat", "vehicle", "nucleus"],
      "topic": "/camera/image_raw", "frame_id": "camera", "width": 2048, "height": 2048,
      "params": {... the make-bag arguments, used to decide whether a bag can be reused ...},
      "frames": [
        {"index": 0, "stamp_ns": 1767225600000000000,
         "stamp": {"sec": 1767225600, "nanosec": 0}, "seed": 1000000, "domain": "aerial",
         "boxes": [[x1, y1, x2, y2], ...], "labels": ["vehicle", ...]},
        ...
      ]
    }

Boxes are in frame pixels (x2/y2 exclusive, tight around the visible object); a frame is
matched to detections by its header stamp (the one the detections carry).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import BagError, BagWriter, open_bag, progress_bar, select_connections, staged_output

GROUND_TRUTH_FILE = "ground_truth.json"
GROUND_TRUTH_FORMAT = "pdn_perception/ground_truth/1"
DEFAULT_TOPIC = "/camera/image_raw"
DEFAULT_FRAME_ID = "camera"


@dataclass(frozen=True)
class SampleBagParams:
    """Everything that determines a sample bag's content (except its start time)."""

    frames: int = 20
    seed: int = 1_000_000
    rate: float = 10.0
    size: tuple[int, int] = (2048, 2048)  # (height, width)
    storage: str = "mcap"
    compressed: bool = False
    topic: str = DEFAULT_TOPIC
    frame_id: str = DEFAULT_FRAME_ID
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate}")
        if min(self.size) < 32:
            raise ValueError(f"size must be at least 32x32, got {self.size}")
        if not self.topic.startswith("/"):
            object.__setattr__(self, "topic", "/" + self.topic)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @property
    def image_topic(self) -> str:
        """The topic written: ``<topic>/compressed`` for JPEG, as image_transport names it."""
        if self.compressed and not self.topic.endswith("/compressed"):
            return self.topic + "/compressed"
        return self.topic

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}


@dataclass(frozen=True)
class GroundTruthFrame:
    index: int
    stamp_ns: int
    seed: int
    domain: str
    boxes: np.ndarray  # (N, 4) float32
    labels: tuple[str, ...]


@dataclass(frozen=True)
class GroundTruth:
    classes: tuple[str, ...]
    topic: str
    frame_id: str
    width: int
    height: int
    params: dict[str, Any]
    frames: tuple[GroundTruthFrame, ...] = field(default_factory=tuple)

    def by_stamp(self) -> dict[int, GroundTruthFrame]:
        return {f.stamp_ns: f for f in self.frames}


def make_sample_bag(
    out: str | Path,
    params: SampleBagParams | None = None,
    start_ns: int | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> GroundTruth:
    """Write a camera bag of synthetic scenes plus ``ground_truth.json``; returns the truth.

    Frames are stamped ``start_ns + i / rate`` (default start: now, like a fresh recording); the
    log time of each message equals its header stamp. Written atomically (see staged_output).
    """
    from ..ros.convert import numpy_to_compressed, numpy_to_image
    from ..train.scenes import CLASSES, make_scene

    p = params or SampleBagParams()
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    period_ns = round(1e9 / p.rate)
    msgtype = "sensor_msgs/msg/CompressedImage" if p.compressed else "sensor_msgs/msg/Image"
    frames: list[GroundTruthFrame] = []
    custom = {"pdn_perception.sample_params": json.dumps(p.to_json())}
    with staged_output(out, force=force) as staging:
        with BagWriter.create(staging, p.storage, custom_data=custom) as bag:
            bag.add(p.image_topic, msgtype)
            bar = progress_bar(p.frames, "make-bag", progress)
            for i in range(p.frames):
                scene = make_scene(p.seed + i, size=p.size)
                t = start_ns + i * period_ns
                header = _header(t, p.frame_id)
                if p.compressed:
                    msg = numpy_to_compressed(scene.image, "jpeg", header, p.jpeg_quality)
                else:
                    msg = numpy_to_image(scene.image, "rgb8", header)
                bag.write(p.image_topic, t, msg)
                labels = tuple(CLASSES[int(k)] for k in scene.labels)
                frames.append(GroundTruthFrame(i, t, scene.seed, scene.domain, scene.boxes, labels))
                bar.update(1)
            bar.close()
        truth = GroundTruth(
            classes=tuple(CLASSES),
            topic=p.image_topic,
            frame_id=p.frame_id,
            width=p.size[1],
            height=p.size[0],
            params=p.to_json(),
            frames=tuple(frames),
        )
        save_ground_truth(truth, staging / GROUND_TRUTH_FILE)
    return truth


def _header(t_ns: int, frame_id: str) -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(
        stamp=Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000), frame_id=frame_id
    )


def save_ground_truth(truth: GroundTruth, path: str | Path) -> None:
    data = {
        "format": GROUND_TRUTH_FORMAT,
        "classes": list(truth.classes),
        "topic": truth.topic,
        "frame_id": truth.frame_id,
        "width": truth.width,
        "height": truth.height,
        "params": truth.params,
        "frames": [
            {
                "index": f.index,
                "stamp_ns": f.stamp_ns,
                "stamp": {
                    "sec": f.stamp_ns // 1_000_000_000,
                    "nanosec": f.stamp_ns % 1_000_000_000,
                },
                "seed": f.seed,
                "domain": f.domain,
                "boxes": [[round(float(v), 2) for v in b] for b in f.boxes],
                "labels": list(f.labels),
            }
            for f in truth.frames
        ],
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read ``ground_truth.json`` (a bag directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BagError(f"no ground truth at {path} (bags from pdn-make-bag have one)") from None
    except json.JSONDecodeError as exc:
        raise BagError(f"ground truth {path} is not valid JSON: {exc}") from None
    if data.get("format") != GROUND_TRUTH_FORMAT:
        raise BagError(f"{path}: unknown ground truth format {data.get('format')!r}")
    frames = tuple(
        GroundTruthFrame(
            index=int(f["index"]),
            stamp_ns=int(f["stamp_ns"]),
            seed=int(f["seed"]),
            domain=str(f["domain"]),
            boxes=np.asarray(f["boxes"], np.float32).reshape(-1, 4),
            labels=tuple(f["labels"]),
        )
        for f in data["frames"]
    )
    return GroundTruth(
        classes=tuple(data["classes"]),
        topic=data["topic"],
        frame_id=data["frame_id"],
        width=int(data["width"]),
        height=int(data["height"]),
        params=dict(data.get("params", {})),
        frames=frames,
    )


def sample_bag_matches(path: str | Path, params: SampleBagParams) -> bool:
    """True if ``path`` is a readable sample bag made with ``params`` (so it can be reused)."""
    path = Path(path)
    try:
        truth = load_ground_truth(path)
        if truth.params != params.to_json():
            return False
        with open_bag(path) as reader:
            (conn,) = select_connections(reader, [params.image_topic])
            return conn.msgcount == params.frames
    except (BagError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detections:
    """Detections of one frame as plain arrays (what scoring needs)."""

    boxes: np.ndarray  # (N, 4) float x1, y1, x2, y2
    scores: np.ndarray  # (N,)
    labels: tuple[str, ...]


def score_detections(
    truth: GroundTruth,
    detections: Mapping[int, Detections],
    iou_threshold: float = 0.5,
    min_score: float = 0.0,
) -> dict[str, Any]:
    """Precision and recall at IoU >= ``iou_threshold``, per class and overall.

    Frames are matched by header stamp; only frames that have detections (were answered) are
    scored, and ``frames_unanswered`` says how many were not (a live node may skip frames).
    Within a frame and class, detections are matched greedily by descending score to the
    unmatched ground-truth box of highest IoU.
    """
    from ..metrics import match  # lazily: core imports torch

    def zeros(n: int) -> np.ndarray:  # one class at a time: all labels equal
        return np.zeros(n, np.int64)

    tp: dict[str, int] = dict.fromkeys(truth.classes, 0)
    fp = dict(tp)
    fn = dict(tp)
    answered = 0
    for frame in truth.frames:
        det = detections.get(frame.stamp_ns)
        if det is None:
            continue
        answered += 1
        keep = np.asarray(det.scores) >= min_score
        d_boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)[keep]
        d_scores = np.asarray(det.scores, np.float32)[keep]
        d_labels = [lab for lab, k in zip(det.labels, keep) if k]
        for cls in sorted(set(truth.classes) | set(d_labels) | set(frame.labels)):
            g = frame.boxes[np.array([lab == cls for lab in frame.labels], bool).reshape(-1)]
            sel = np.array([lab == cls for lab in d_labels], bool).reshape(-1)
            d, s = d_boxes[sel], d_scores[sel]
            t = match(g, zeros(len(g)), d, s, zeros(len(d)), iou_threshold).tp
            for table in (tp, fp, fn):
                table.setdefault(cls, 0)
            tp[cls] += t
            fp[cls] += len(d) - t
            fn[cls] += len(g) - t

    def pr(t: int, f_p: int, f_n: int) -> dict[str, Any]:
        return {
            "tp": t,
            "fp": f_p,
            "fn": f_n,
            "precision": t / (t + f_p) if t + f_p else None,
            "recall": t / (t + f_n) if t + f_n else None,
        }

    total = pr(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return {
        "iou_threshold": iou_threshold,
        "frames": len(truth.frames),
        "frames_scored": answered,
        "frames_unanswered": len(truth.frames) - answered,
        **total,
        "per_class": {c: pr(tp[c], fp[c], fn[c]) for c in tp},
    }


def score_results_bag(
    results_bag: str | Path,
    ground_truth: str | Path | GroundTruth,
    iou_threshold: float = 0.5,
    min_score: float = 0.0,
) -> dict[str, Any]:
    """Score a results bag (``pdn-process`` output or a demo recording) against ground truth."""
    from .results import read_results

    truth = (
        ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    )
    results = read_results(results_bag)
    dets = {k: Detections(r.boxes, r.scores, r.labels) for k, r in results.items()}
    return score_detections(truth, dets, iou_threshold, min_score)


__all__ = [
    "DEFAULT_FRAME_ID",
    "DEFAULT_TOPIC",
    "GROUND_TRUTH_FILE",
    "Detections",
    "GroundTruth",
    "GroundTruthFrame",
    "SampleBagParams",
    "load_ground_truth",
    "make_sample_bag",
    "sample_bag_matches",
    "save_ground_truth",
    "score_detections",
    "score_results_bag",
]
