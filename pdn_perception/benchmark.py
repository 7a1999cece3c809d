"""Side-by-side speed/recall benchmark: top-K crops vs exhaustive tiling vs global vs SAHI.

One run, the same frames, the same weights. Speed claims are ratios measured here, never
absolute numbers asserted in tests (the machines are noisy).
"""

from __future__ import annotations

import itertools
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .core.config import PipelineConfig
from .core.pipeline import Pipeline
from .metrics import MatchCounts, match


@dataclass(frozen=True)
class Case:
    """One benchmark row: a mode with its K or overlap."""

    mode: str  # topk | tiles | global | sahi
    k: int | None = None
    overlap: float | None = None

    @property
    def name(self) -> str:
        if self.mode == "topk":
            return f"topk K={self.k}"
        if self.overlap is not None:
            return f"{self.mode} overlap={self.overlap:g}"
        return self.mode


DEFAULT_CASES: tuple[Case, ...] = (
    Case("topk", k=1),
    Case("topk", k=2),
    Case("topk", k=4),
    Case("topk", k=8),
    Case("tiles", overlap=0.0),
    Case("tiles", overlap=0.2),
    Case("global"),
    Case("sahi", overlap=0.2),
)


@dataclass
class Row:
    case: Case
    totals_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    counts: MatchCounts = field(default_factory=MatchCounts)

    def to_json(self) -> dict[str, Any]:
        t = np.asarray(self.totals_ms)
        return {
            "mode": self.case.mode,
            "k": self.case.k,
            "overlap": self.case.overlap,
            "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p99_ms": round(float(np.percentile(t, 99)), 2),
            "fps": round(1000.0 / float(t.mean()), 2),
            "recall": round(self.counts.recall, 4),
            "precision": round(self.counts.precision, 4),
            "stages_p50_ms": {
                k: round(float(np.percentile(v, 50)), 2) for k, v in self.stages_ms.items()
            },
            "frames": len(t),
        }


def sahi_predictor(pipeline: Pipeline, overlap: float) -> Callable[[np.ndarray], tuple]:
    """SAHI's get_sliced_prediction around the project's detector (same weights, same backend).

    512 slices with the given overlap, SAHI's default GREEDYNMM/IOS merge; the extra full-image
    pass (perform_standard_pred) is off: it costs ~16 crops on a 2048² frame and only helps
    objects larger than a slice, which these scenes do not have.
    """
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction

    rt = pipeline.runtime
    cfg = pipeline.config
    names = pipeline.classes

    class PatchDriveSahiModel(DetectionModel):
        def load_model(self) -> None:
            self.model = rt

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model

        def perform_inference(self, image: np.ndarray) -> None:
            x = torch.from_numpy(np.ascontiguousarray(image)).to(rt.device)
            x = x.permute(2, 0, 1)[None].to(rt.dtype)  # (1, 3, H, W)
            heat, size, off = rt.detector(x)
            (self._original_predictions,) = pipeline.decode(
                heat, size, off, min_score=self.confidence_threshold
            )  # one image: boxes (n, 4), scores (n,), labels (n,)

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list=None, full_shape_list=None
        ) -> None:
            shift = (shift_amount_list or [[0, 0]])[0]
            full = full_shape_list[0] if full_shape_list else None
            boxes, scores, labels = self._original_predictions
            preds = []
            for bx, sc, lb in zip(boxes, scores, labels):
                x1, y1, x2, y2 = (float(v) for v in bx)
                x1, y1 = max(0.0, x1), max(0.0, y1)
                if x2 - x1 < 1 or y2 - y1 < 1:
                    continue
                preds.append(
                    ObjectPrediction(
                        bbox=[x1, y1, x2, y2],
                        category_id=int(lb),
                        category_name=names[int(lb)],
                        score=float(sc),
                        shift_amount=list(shift),
                        full_shape=full,
                    )
                )
            self._object_prediction_list_per_image = [preds]

    model = PatchDriveSahiModel(
        confidence_threshold=cfg.score_threshold,
        category_mapping={str(i): n for i, n in enumerate(names)},
        load_at_init=True,
    )
    s = cfg.crop_size

    def predict(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        res = get_sliced_prediction(
            frame,
            model,
            slice_height=s,
            slice_width=s,
            overlap_height_ratio=overlap,
            overlap_width_ratio=overlap,
            perform_standard_pred=False,
            verbose=0,
        )
        preds = res.object_prediction_list
        boxes = np.array([p.bbox.to_xyxy() for p in preds], np.float32).reshape(-1, 4)
        scores = np.array([p.score.value for p in preds], np.float32)
        labels = np.array([p.category.id for p in preds], np.int64)
        return boxes, scores, labels

    return predict


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def run_benchmark(
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    base: PipelineConfig,
    cases: Iterable[Case] = DEFAULT_CASES,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Row], str, str]:
    """Time every case over the same frames (image, gt_boxes, gt_labels), interleaved per frame so
    machine noise hits every case alike. Returns rows, the device description and backend note."""
    pipeline = Pipeline(base)
    cases = list(cases)
    runners: dict[Case, Callable[[np.ndarray], tuple]] = {}
    skipped: list[str] = []
    for case in cases:
        if case.mode == "sahi":
            try:
                runners[case] = _sahi_runner(sahi_predictor(pipeline, case.overlap or 0.0))
            except ImportError as exc:
                skipped.append(f"sahi: not installed ({exc})")
            continue
        over = {"mode": case.mode}
        if case.k is not None:
            over["top_k"] = case.k
        if case.overlap is not None:
            over["tile_overlap"] = case.overlap
        p = pipeline.reconfigure(base.replace(**over))
        runners[case] = _pipeline_runner(p)
    rows = {c: Row(c) for c in runners}
    for i in range(warmup):
        for fn in runners.values():
            fn(frames[i % len(frames)][0])
    for i, (img, gt_b, gt_l) in enumerate(frames):
        if progress:
            progress(f"frame {i + 1}/{len(frames)}")
        for case, fn in runners.items():
            t0 = time.perf_counter()
            boxes, scores, labels, stages = fn(img)
            total = (time.perf_counter() - t0) * 1000.0
            row = rows[case]
            row.totals_ms.append(total)
            for k, v in stages.items():
                row.stages_ms.setdefault(k, []).append(v)
            row.counts = row.counts + match(gt_b, gt_l, boxes, scores, labels)
    note = pipeline.runtime.reason + ("; skipped " + "; ".join(skipped) if skipped else "")
    return list(rows.values()), device_description(pipeline.runtime.device), note


def _pipeline_runner(p: Pipeline) -> Callable[[np.ndarray], tuple]:
    def run(img: np.ndarray) -> tuple:
        r = p(img)
        stages = {k: v for k, v in r.timings_ms.items() if k != "total"}
        return r.boxes, r.scores, r.labels, stages

    return run


def _sahi_runner(predict: Callable[[np.ndarray], tuple]) -> Callable[[np.ndarray], tuple]:
    def run(img: np.ndarray) -> tuple:
        b, s, lab = predict(img)
        return b, s, lab, {}

    return run


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The headline ratios: topk K=4 against tiles (overlap 0) and SAHI, time and recall."""
    by = {(r["mode"], r["k"], r["overlap"]): r for r in rows}
    top = by.get(("topk", 4, None))
    out: dict[str, float] = {}
    for key, ref in (("tiles", ("tiles", None, 0.0)), ("sahi", ("sahi", None, 0.2))):
        other = by.get(ref)
        if top and other:
            out[f"time_topk4_over_{key}"] = round(top["p50_ms"] / other["p50_ms"], 3)
            out[f"recall_topk4_over_{key}"] = round(top["recall"] / max(other["recall"], 1e-9), 3)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mode':<20}{'p50 ms':>9}{'p99 ms':>9}{'fps':>8}{'recall':>8}{'prec':>7}  stages p50 ms"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = Case(r["mode"], r["k"], r["overlap"]).name
        stages = " ".join(f"{k}={v:g}" for k, v in r["stages_p50_ms"].items())
        lines.append(
            f"{name:<20}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['fps']:>8.2f}"
            f"{r['recall']:>8.3f}{r['precision']:>7.3f}  {stages}"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Recall vs p50 time (log scale), one labelled point per row; drawn with OpenCV."""
    import cv2

    w, h, m = 900, 560, 70
    img = np.full((h, w, 3), 255, np.uint8)
    times = np.array([r["p50_ms"] for r in rows])
    lo, hi = np.log10(times.min() * 0.7), np.log10(times.max() * 1.4)
    rec = np.array([r["recall"] for r in rows])
    r_lo = max(0.0, float(rec.min()) - 0.1)

    def xy(t: float, r: float) -> tuple[int, int]:
        x = m + (np.log10(t) - lo) / (hi - lo) * (w - 2 * m)
        y = h - m - (r - r_lo) / (1.0 - r_lo + 1e-9) * (h - 2 * m)
        return int(x), int(y)

    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (m, 40), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "p50 latency per frame (ms, log)", (w // 2 - 130, h - 20), font, 0.5, 0, 1)
    cv2.putText(img, "recall@0.5", (5, m - 10), font, 0.5, (0, 0, 0), 1)
    for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000):
        if lo <= np.log10(t) <= hi:
            x, _ = xy(t, r_lo)
            cv2.line(img, (x, h - m), (x, h - m + 5), (0, 0, 0), 1)
            cv2.putText(img, str(t), (x - 12, h - m + 20), font, 0.4, (0, 0, 0), 1)
    for v in np.linspace(r_lo, 1.0, 5):
        _, y = xy(10**lo, v)
        cv2.putText(img, f"{v:.2f}", (m - 45, y + 4), font, 0.4, (0, 0, 0), 1)
    colours = {
        "topk": (200, 60, 0),
        "tiles": (0, 0, 200),
        "global": (0, 140, 0),
        "sahi": (150, 0, 150),
    }
    topk = [r for r in rows if r["mode"] == "topk"]
    pts = [xy(r["p50_ms"], r["recall"]) for r in topk]
    for a, b in itertools.pairwise(pts):
        cv2.line(img, a, b, colours["topk"], 1, cv2.LINE_AA)
    for i, r in enumerate(rows):
        p = xy(r["p50_ms"], r["recall"])
        cv2.circle(img, p, 5, colours[r["mode"]], -1, cv2.LINE_AA)
        label = Case(r["mode"], r["k"], r["overlap"]).name
        dy = -8 if i % 2 == 0 else 18  # alternate above/below so neighbours stay readable
        org = (p[0] + 7, p[1] + dy)
        cv2.putText(img, label, org, font, 0.42, colours[r["mode"]], 1, cv2.LINE_AA)
    cv2.imwrite(path, img)
