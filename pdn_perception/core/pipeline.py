"""``Pipeline(config)(frame) -> Result``: the whole PatchDrive method on one frame, no ROS.

Stages: downscale -> global saliency (topk; every mode with ``saliency_all_modes``) -> Patch
Drive selection (top-K / tiles / none) -> shared-weight detector over the crops in memory-aware
batches -> merge into frame coordinates.
Selection runs on a tiny map under no_grad; only the selected crops are processed at full
resolution.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backends import Runtime, build_runtime
from .batching import (
    BatchStats,
    estimate_crop_bytes,
    measure_crop_bytes,
    memory_budget,
    plan_batches,
    run_batched,
)
from .config import PipelineConfig
from .merge import merge_crop_detections
from .models.detector import decode_per_image
from .models.io import load_model
from .models.patchdrive import PatchDriveModel
from .resize import saliency_input
from .selection import new_saliency, saliency_input_hw, select_crops, tile_boxes

MAX_PER_CROP = 100


class FrameError(ValueError):
    """The frame cannot be processed (wrong shape, dtype or size); the message says why."""


@dataclass(frozen=True)
class Result:
    """Detections of one frame, in frame pixels, plus what the pipeline looked at."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64 indices into class_names
    crop_boxes: np.ndarray  # (K, 4) int64 crops (topk) or tiles; (0, 4) in global mode
    # (h, w) float32 in [0, 1]; None where the mode did not need it (tiles, global) unless
    # config.saliency_all_modes asked for it
    saliency: np.ndarray | None
    saliency_scale: tuple[float, float] | None  # frame pixels per saliency cell (sx, sy)
    frame_hw: tuple[int, int]
    mode: str
    backend: str
    class_names: tuple[str, ...]
    batch_sizes: tuple[int, ...] = ()
    oom_retries: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def label_names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels]

    def to_json(self) -> dict[str, Any]:
        """The schema of ``pdn-detect --json`` (without the image path)."""
        return {
            "width": int(self.frame_hw[1]),
            "height": int(self.frame_hw[0]),
            "mode": self.mode,
            "detections": [
                {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "label": n}
                for b, s, n in zip(self.boxes, self.scores, self.label_names())
            ],
            "crops": [[int(v) for v in c] for c in self.crop_boxes],
            "timing_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def check_frame(frame: np.ndarray) -> np.ndarray:
    """Accept (H, W) or (H, W, 1|3) uint8; anything else is a FrameError that says what it got."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame must be uint8, got {frame.dtype} (convert 16-bit images first)")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)):
        raise FrameError(f"frame must be HxW (mono) or HxWx3 (RGB), got shape {frame.shape}")
    if frame.shape[0] < 16 or frame.shape[1] < 16:
        raise FrameError(f"frame too small: {frame.shape[1]}x{frame.shape[0]} (minimum 16x16)")
    return frame


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class Pipeline:
    """PatchDrive on one frame. Immutable config; ``reconfigure`` returns a new Pipeline that
    shares the built runtime when only per-frame settings changed (cheap, atomic to swap)."""

    def __init__(
        self,
        config: PipelineConfig | None = None,
        model: PatchDriveModel | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.model = model if model is not None else load_model(self.config.model_path or None)
        self.runtime = runtime or build_runtime(self.model, self.config)
        self._per_crop_bytes = self._measure_footprint()
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}

    # -- construction helpers -------------------------------------------------------------
    def _measure_footprint(self) -> int:
        rt = self.runtime
        measured = measure_crop_bytes(rt.detector, self.config.crop_size, rt.device, rt.dtype)
        return measured or estimate_crop_bytes(self.config.crop_size)

    def reconfigure(self, config: PipelineConfig) -> Pipeline:
        """A pipeline for ``config``; reuses model and runtime unless a rebuild field changed."""
        changed = self.config.rebuild_changes(config)
        if changed:
            model = self.model if "model_path" not in changed else None
            return Pipeline(config, model=model)
        new = object.__new__(Pipeline)
        new.config, new.model, new.runtime = config, self.model, self.runtime
        new._per_crop_bytes = self._per_crop_bytes
        new._pinned = self._pinned
        return new

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    @property
    def backend(self) -> str:
        return self.runtime.name

    def warmup(self, frame_hw: tuple[int, int] = (2048, 2048)) -> float:
        """Run one blank frame so the first real frame is not slow; returns its time in ms."""
        t0 = time.perf_counter()
        self(np.zeros((*frame_hw, 3), np.uint8))
        return _ms(t0)

    # -- stages -------------------------------------------------------------------------
    def _to_device(self, frame: np.ndarray) -> torch.Tensor:
        """uint8 frame -> tensor on the runtime device: zero-copy on CPU; on CUDA one upload of
        the uint8 frame (not floats) through a pinned host buffer reused while the shape holds."""
        with warnings.catch_warnings():
            # Received images (rclpy, rosbags) are read-only views; the pipeline only reads them,
            # so torch's "not writable" warning is noise and a copy would cost a frame's memcpy.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            t = torch.from_numpy(frame)
        if self.runtime.device.type != "cuda":
            return t
        buf = self._pinned.get(frame.shape)
        if buf is None:
            buf = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
            self._pinned = {frame.shape: buf}
        buf.copy_(t)  # safe: the previous frame's results were synchronised by .cpu()
        return buf.to(self.runtime.device, non_blocking=True)

    def _downscale(self, frame: np.ndarray, frame_t: torch.Tensor) -> torch.Tensor:
        """Frame -> (1, 3, h, w) float (0..255) at saliency resolution."""
        rt = self.runtime
        if rt.device.type == "cpu":
            t = torch.from_numpy(saliency_input(frame, self.config.saliency_input_size))
        else:
            h, w = saliency_input_hw(frame.shape[:2], self.config.saliency_input_size)
            x = frame_t if frame_t.ndim == 3 else frame_t[:, :, None]
            x = x.permute(2, 0, 1)[None].float()
            t = F.interpolate(x, size=(h, w), mode="area")[0].permute(1, 2, 0)
        return _hwc_to_nchw(t, rt.dtype)

    def _extract(self, frame_t: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
        """Crops (K, 3, S, S) in the runtime dtype, values 0..255; crops smaller than S (small
        frames) are zero-padded. Each crop is converted as it is copied, and the buffer is only
        zero-filled where a crop does not fill it: four 512² bf16 crops in 1.26 instead of
        1.61 ms (2-core AMX Xeon, identical output)."""
        s = self.config.crop_size
        c = 1 if frame_t.ndim == 2 else frame_t.shape[2]
        boxes_l = boxes.tolist()
        full = all(x2 - x1 == s and y2 - y1 == s for x1, y1, x2, y2 in boxes_l)
        alloc = torch.empty if full else torch.zeros
        out = alloc((len(boxes_l), s, s, c), dtype=self.runtime.dtype, device=frame_t.device)
        for i, (x1, y1, x2, y2) in enumerate(boxes_l):
            src = frame_t[y1:y2, x1:x2]
            out[i, : y2 - y1, : x2 - x1] = src if src.ndim == 3 else src[:, :, None]
        return _hwc_to_nchw(out, self.runtime.dtype)

    def decode(
        self,
        heat: torch.Tensor,
        size: torch.Tensor,
        offset: torch.Tensor,
        min_score: float | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The detector's outputs for a batch -> per image (boxes (n, 4), scores (n,), labels
        (n,)) in input pixels, decoded as this pipeline's config says (vote IoU, score threshold
        unless ``min_score`` is given); one place for it, also used by pdn-bench's SAHI model."""
        cfg = self.config
        return decode_per_image(
            heat,
            size,
            offset,
            self.model.detector.stride,
            MAX_PER_CROP,
            vote_iou=cfg.box_vote_iou,
            min_score=cfg.score_threshold if min_score is None else min_score,
        )

    def _detect(self, crops: torch.Tensor, stats: BatchStats):
        """Detector + decoding in memory-aware batches; per crop (boxes, scores, labels) numpy."""
        cfg = self.config
        budget = memory_budget(self.runtime.device, cfg.memory_budget_mb, cfg.memory_reserve_mb)
        plan = plan_batches(len(crops), self._per_crop_bytes, budget, cfg.max_batch_size)
        rt = self.runtime

        def run(batch: torch.Tensor):
            with rt.threads_for(batch[:, 0].numel()):  # input pixels, B * H * W
                heat, size, off = rt.detector(batch)
            with rt.threads_for(heat.numel()):  # the scan over the heat maps
                return self.decode(heat, size, off)  # per crop: (n, 4), (n,), (n,)

        per_crop = []
        for batch in run_batched(run, crops, plan, stats):
            per_crop.extend(batch)
        return per_crop

    # -- the whole thing --------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> Result:
        cfg = self.config
        timings: dict[str, float] = {}
        t_all = time.perf_counter()
        frame = check_frame(frame)
        fh, fw = frame.shape[:2]

        needs_saliency = cfg.mode == "topk" or cfg.saliency_all_modes
        t0 = time.perf_counter()
        frame_t = self._to_device(frame)
        # Tiles alone never look at the downscaled frame, so they do not pay for making it.
        small = (
            self._downscale(frame, frame_t) if needs_saliency or cfg.mode == "global" else None
        )  # (1, 3, h, w)
        timings["preprocess"] = _ms(t0)

        saliency: np.ndarray | None = None
        scale: tuple[float, float] | None = None
        if needs_saliency:
            assert small is not None
            t0 = time.perf_counter()
            with self.runtime.threads_for(small[:, 0].numel()):
                logits = self.runtime.saliency(small)  # (1, 1, h/4, w/4)
                saliency = torch.sigmoid(logits.float())[0, 0].cpu().numpy()  # (h/4, w/4)
            sal_h, sal_w = saliency.shape
            scale = (fw / sal_w, fh / sal_h)
            timings["saliency"] = _ms(t0)

        t0 = time.perf_counter()
        stats = BatchStats()
        if cfg.mode == "global":
            assert small is not None
            crop_boxes = np.zeros((0, 4), np.int64)
            timings["select"] = _ms(t0)
            t0 = time.perf_counter()
            per = self._detect(small, stats)
            sx, sy = fw / small.shape[3], fh / small.shape[2]
            factor = np.array([sx, sy, sx, sy], np.float32)
            per = [(b * factor, s, lab) for b, s, lab in per]
            regions = np.array([[0, 0, fw, fh]], np.int64)
            timings["detect"] = _ms(t0)
        else:
            if cfg.mode == "topk":
                crop_boxes, _ = select_crops(
                    saliency,
                    (fh, fw),
                    cfg.top_k,
                    cfg.crop_size,
                    cfg.crop_min_separation,
                    cfg.crop_selection,
                )
                if cfg.min_crop_saliency > 0.0 and len(crop_boxes) > 1:
                    keep = new_saliency(saliency, (fh, fw), crop_boxes) > cfg.min_crop_saliency
                    keep[0] = True  # the best crop always runs: a quiet frame still gets a look
                    crop_boxes = crop_boxes[keep]
            else:
                crop_boxes = tile_boxes((fh, fw), cfg.crop_size, cfg.tile_overlap)
            timings["select"] = _ms(t0)
            t0 = time.perf_counter()
            crops = self._extract(frame_t, crop_boxes)  # (K, 3, S, S)
            per = self._detect(crops, stats)
            regions = crop_boxes
            timings["detect"] = _ms(t0)

        t0 = time.perf_counter()
        # Global-mode boxes are already in frame pixels: its one region starts at the origin.
        boxes, scores, labels = merge_crop_detections(
            per, regions, (fh, fw), cfg.nms_iou_threshold, cfg.nms_metric, cfg.max_detections
        )
        timings["merge"] = _ms(t0)
        timings["total"] = _ms(t_all)
        return Result(
            boxes=boxes,
            scores=scores,
            labels=labels,
            crop_boxes=crop_boxes,
            saliency=None if saliency is None else saliency.astype(np.float32, copy=False),
            saliency_scale=scale,
            frame_hw=(fh, fw),
            mode=cfg.mode,
            backend=self.runtime.name,
            class_names=self.classes,
            batch_sizes=tuple(stats.batch_sizes),
            oom_retries=stats.oom_retries,
            timings_ms=timings,
        )


def _hwc_to_nchw(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (H, W[, C]) or (B, H, W, C) -> float (B, 3, H, W), values 0..255, channels_last
    memory (the permute of NHWC is exactly that layout); mono is repeated."""
    if t.ndim == 2:
        t = t[:, :, None]
    if t.ndim == 3:
        t = t[None]
    x = t.permute(0, 3, 1, 2)  # (B, C, H, W) view
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.to(dtype)


__all__ = ["FrameError", "Pipeline", "Result", "check_frame"]
