"""Staged PatchDrive training (CPU, or a CUDA GPU for the larger detector), as the method
prescribes.

(a) ``saliency``: the global net learns the oracle object mask on downscaled frames (focal + dice);
    its backbone is frozen for the first epoch(s) so the fresh head settles before the features
    move.
(b) ``detector``: the shared crop detector learns CenterNet targets on small crops (it is fully
    convolutional, so 192² crops teach the same weights ~7x cheaper than 512²) cut around objects,
    at the saliency net's peaks (hard negatives) and at random.
(c) ``joint``: IPS-style fine-tuning — the model's own top-K selection runs under no_grad on the
    predicted saliency, gradients flow through the detector on exactly the crops it picked (at the
    inference crop size), plus the saliency loss. An optional perturbation of the saliency before
    selection explores crops the net does not yet rank first. BatchNorm statistics stay frozen
    here: one frame's crops are too few and too alike to estimate them.

Each stage has a step and/or minute budget; a checkpoint is written every minute and at each
stage end, and ``resume=True`` continues from it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core.backends import cpu_supports_bf16, tune_cpu_allocator
from ..core.models.patchdrive import ModelConfig, PatchDriveModel
from ..core.selection import SELECTION_STRATEGIES, select_crops
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .data import (
    DetectorBatch,
    Dihedral,
    Photometric,
    SaliencyBatch,
    SceneBank,
    apply_photometric,
    collate_detector,
    detector_sample,
    photometric,
    photometric_params,
    sample_detector_batch,
    sample_saliency_batch,
    to_nchw,
)
from .ema import WeightEMA
from .losses import detector_loss, saliency_loss
from .prefetch import Prefetcher

STAGES: tuple[str, ...] = ("saliency", "detector", "joint")
_EMA_KEYS = "ema."  # prefix of the weight average among a checkpoint's extra tensors
# Time caps of the default step budgets (minutes): with ~1.5 min of scene rendering and stage
# set-up they keep a plain ``pdn-train`` within 30 minutes on any 2-core machine. On the
# AVX512-BF16 EPYC the stages took 3.5, 16.2 and 2.1 minutes, so the caps do not bind there.
SAL_CAP, DET_CAP, JOINT_CAP = 4.0, 19.5, 3.0


@dataclass(frozen=True)
class StageBudget:
    """Stop a stage at ``steps`` (0 = no step cap) or ``minutes`` (0 = no time cap), whichever
    comes first; the learning-rate schedule follows the larger fraction used.

    ``max_minutes`` caps a step budget without touching it where the steps fit: the schedule
    follows ``step / steps`` alone unless ``2 * elapsed / max_minutes - 1`` overtakes it, which
    happens only on a machine too slow to finish the steps within the cap. There the second half
    of the schedule is compressed so the stage still decays and ends at the cap. So one command
    gives the same model on every machine fast enough, and ends in time on the others.
    """

    steps: int = 0
    minutes: float = 0.0
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.minutes < 0 or self.max_minutes < 0:
            raise ValueError(f"budgets must be >= 0, got {self}")
        if self.max_minutes and not self.steps:
            raise ValueError(
                f"max_minutes caps a step budget, but steps is 0 in {self}; "
                "use minutes for a time budget"
            )

    @property
    def enabled(self) -> bool:
        return self.steps > 0 or self.minutes > 0

    def progress(self, step: int, elapsed_s: float) -> float:
        """Fraction of the budget used, in [0, 1] (drives the learning-rate schedule)."""
        parts = []
        if self.steps:
            parts.append(step / self.steps)
        if self.minutes:
            parts.append(elapsed_s / (60.0 * self.minutes))
        if self.max_minutes:
            # 0 at half the cap, 1 at the cap: below the pace steps / max_minutes it never
            # overtakes step / steps (both are linear in time and meet at most at the end).
            parts.append(2.0 * elapsed_s / (60.0 * self.max_minutes) - 1.0)
        return min(1.0, max(parts)) if parts else 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored in checkpoints and the model's metadata)."""

    seed: int = 0
    saliency_input_size: int = 512  # as PipelineConfig.saliency_input_size
    crop_size: int = 512  # inference crop size, used by the joint stage
    top_k: int = 4  # crops per frame in the joint stage
    # (a) saliency
    saliency: StageBudget = field(
        default_factory=lambda: StageBudget(steps=2500, max_minutes=SAL_CAP)
    )
    sal_batch: int = 8
    sal_window: int = 256
    sal_lr: float = 4e-3
    freeze_backbone_epochs: int = 1
    # (b) detector
    detector: StageBudget = field(
        default_factory=lambda: StageBudget(steps=16000, max_minutes=DET_CAP)
    )
    det_batch: int = 16
    det_crop: int = 128
    det_lr: float = 4e-3
    det_mix: tuple[float, float, float] = (0.6, 0.25, 0.15)  # objects, peaks, random
    det_peaks: int = 8  # saliency peaks per scene used as hard-negative centres
    det_scale_range: tuple[float, float] = (0.8, 1.25)  # zoom augmentation of detector crops
    det_giou_weight: float = 1.0  # GIoU on decoded boxes beside the L1 terms (0 = off)
    det_box_fraction: float = 0.5  # heat/regression area as a fraction of the box (0 = 3x3)
    # share of detector crops per scene domain, e.g. (("aerial", 2.0),); () = uniform over scenes
    det_domain_weights: tuple[tuple[str, float], ...] = ()
    # batches (no gradient) that re-estimate BatchNorm statistics on uniformly drawn scenes after
    # a domain-weighted detector stage, so inference statistics match the evaluation mix
    det_bn_batches: int = 100
    # (c) joint
    joint: StageBudget = field(
        default_factory=lambda: StageBudget(steps=600, max_minutes=JOINT_CAP)
    )
    joint_frames: int = 1
    joint_lr: float = 1e-3
    joint_sal_weight: float = 0.5
    perturb_sigma: float = 0.05  # noise on saliency probabilities before top-K (0 = off)
    joint_crop_selection: str = "peak"  # Patch Drive controller of the joint stage (peak|coverage)
    # common
    # each stage ends on the moving average of its weights (0 = off: the last step's weights)
    ema_decay: float = 0.0
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    checkpoint_every_s: float = 60.0
    # torch threads; 0 = all cores
    threads: int = 0
    # make the next batch in a background thread during each step where a core is free for it
    # (``uses_prefetch``); results are bit-identical either way; off to rule it out in debugging
    prefetch: bool = True
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda | cuda:N
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.det_box_fraction <= 1.0:
            raise ValueError(f"det_box_fraction must be in [0, 1], got {self.det_box_fraction}")
        lo, hi = self.det_scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"det_scale_range must be 0 < lo <= hi, got {self.det_scale_range}")
        if self.joint_crop_selection not in SELECTION_STRATEGIES:
            raise ValueError(
                f"joint_crop_selection must be one of {', '.join(SELECTION_STRATEGIES)}, "
                f"got {self.joint_crop_selection!r}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.det_giou_weight < 0:
            raise ValueError(f"det_giou_weight must be >= 0, got {self.det_giou_weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        d = dict(data)
        for name in STAGES:
            if isinstance(d.get(name), dict):
                d[name] = StageBudget(**d[name])
        for key in ("det_mix", "det_scale_range"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        if isinstance(d.get("det_domain_weights"), list):
            d["det_domain_weights"] = tuple((str(k), float(v)) for k, v in d["det_domain_weights"])
        return cls(**d)


def resolve_device(name: str) -> torch.device:
    """``TrainConfig.device`` -> torch.device; ValueError with the reason if it cannot be used.

    Data (scenes, crops, targets) is always made on the CPU; only the model, its batches and the
    losses live on the device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA device here (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def uses_prefetch(requested: bool, device_type: str, torch_threads: int, cores: int) -> bool:
    """Whether batches are made in a background thread: only where a core is free for it.

    On CUDA the CPU makes batch k+1 while the GPU trains on batch k. On a CPU whose cores all
    run torch threads, a third busy thread only makes them wait for each other. On the 2-core
    AVX2 EPYC (2026-12-02, interleaved, medians) a 128² detector step took 101 ms with two
    torch threads and no background thread, 112 ms with one, and 125 ms with one torch thread
    and one; in whole ``pdn-train`` runs 0.111 s against 0.139 s (0.140 s on a slow spell).
    """
    return requested and (device_type == "cuda" or torch_threads < cores)


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode: running statistics stay as they are, the
    affine weights still learn.

    The joint stage's batch is the K crops of one frame, so a single scene of a single domain.
    Statistics updated from such batches drift towards whichever domain came last: measured
    here, the joint stage with live statistics cut aerial AP@0.5 from 0.65 to 0.43.
    """
    for m in _batchnorms(module):
        m.eval()


def _batchnorms(module: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@dataclass
class StageResult:
    steps: int
    seconds: float
    first_loss: float  # mean of the first few steps
    last_loss: float  # mean of the last few steps

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class Trainer:
    """Runs the stages on a SceneBank; owns model, RNG, optimizer and checkpoints.

    ``checkpoint_path`` None disables checkpoints (unit tests).
    """

    def __init__(
        self,
        config: TrainConfig,
        bank: SceneBank,
        model: PatchDriveModel | None = None,
        model_config: ModelConfig | None = None,
        checkpoint_path: str | Path | None = None,
        run_args: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.bank = bank
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.device = resolve_device(config.device)
        self.model = model if model is not None else PatchDriveModel(model_config or ModelConfig())
        self.model.to(self.device, memory_format=torch.channels_last)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.run_args = run_args or {}
        self.state = TrainState()
        on_cuda = self.device.type == "cuda"
        self.bf16 = torch.cuda.is_bf16_supported() if on_cuda else cpu_supports_bf16()
        self._resume_opt: dict[str, Any] | None = None
        self._resume_extra: dict[str, torch.Tensor] = {}
        tune_cpu_allocator()
        cores = os.cpu_count() or 1
        torch.set_num_threads(config.threads or cores)
        self.prefetch = uses_prefetch(
            config.prefetch, self.device.type, torch.get_num_threads(), cores
        )

    # -- checkpoints ----------------------------------------------------------------------
    def resume_from(self, path: str | Path) -> None:
        """Load weights, progress, optimizer moments and RNG state from a checkpoint."""
        ck = load_checkpoint(path)
        if ck.model.config != self.model.config:
            raise ValueError(
                f"checkpoint {path} holds a different architecture: {ck.model.config} "
                f"vs {self.model.config}"
            )
        self.model.load_state_dict(ck.model.state_dict())
        self.state = ck.state
        self.rng.bit_generator.state = ck.numpy_rng_state
        torch.set_rng_state(ck.torch_rng_state)
        self._resume_opt = ck.optimizer_state
        self._resume_extra = ck.extra

    def _save(
        self,
        opt: torch.optim.Optimizer | None,
        ema: WeightEMA | None = None,
        rng_state: dict[str, Any] | None = None,
    ) -> None:
        """``rng_state`` overrides the live RNG's state (which a batch thread has moved ahead)."""
        if self.checkpoint_path is not None:
            extra = ema.tensors(_EMA_KEYS) if ema is not None else None
            rng = rng_state if rng_state is not None else self.rng.bit_generator.state
            save_checkpoint(
                self.checkpoint_path, self.model, self.state, opt, rng, self.run_args, extra
            )

    # -- common loop ----------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16) if self.bf16 else nullcontext()

    def _dev(self, t: torch.Tensor) -> torch.Tensor:
        """A CPU-made batch tensor on the training device (no-op on CPU)."""
        return t.to(self.device, non_blocking=True)

    def _loop(
        self,
        name: str,
        budget: StageBudget,
        module: torch.nn.Module,
        lr: float,
        step_fn: Callable[[int, Any], tuple[torch.Tensor, dict[str, float]]],
        make_batch: Callable[[np.random.Generator], Any] | None = None,
    ) -> StageResult:
        """Shared optimisation loop over ``module``'s parameters: AdamW, warm-up + cosine by
        budget fraction, checkpoints; the stage ends on the weight average when EMA is on.

        ``step_fn(step, batch)`` returns the loss. With ``make_batch(rng)`` batches are made
        one step ahead in a background thread (``Prefetcher``; bit-identical results) and
        ``step_fn`` must not draw from ``self.rng``; without it ``batch`` is None."""
        cfg = self.config
        params = list(module.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        ema = WeightEMA(module, cfg.ema_decay) if cfg.ema_decay > 0 else None
        st = self.state
        if st.stage == name and self._resume_opt is not None:
            opt.load_state_dict(self._resume_opt)
            if ema is not None:  # a checkpoint written without EMA has none: it starts here
                ema.load_tensors(self._resume_extra, _EMA_KEYS)
        else:
            st.stage, st.step, st.elapsed_s = name, 0, 0.0
        self._resume_opt = None
        self._resume_extra = {}
        losses: list[float] = list(st.history.get(f"{name}_losses", []))
        bar = tqdm(
            total=budget.steps or None,
            initial=st.step,
            desc=name,
            unit="step",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )
        last_ckpt = time.monotonic()
        t_start = time.monotonic() - st.elapsed_s
        feed = Prefetcher(make_batch, self.rng) if make_batch and self.prefetch else None
        try:
            while budget.progress(st.step, st.elapsed_s) < 1.0:
                frac = budget.progress(st.step, st.elapsed_s)
                warm = min(1.0, (st.step + 1) / max(1, cfg.warmup_steps))
                for g in opt.param_groups:
                    g["lr"] = lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
                if feed is not None:
                    batch = next(feed)
                else:
                    batch = make_batch(self.rng) if make_batch is not None else None
                loss, parts = step_fn(st.step, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                opt.step()
                if ema is not None:
                    ema.update()
                st.step += 1
                st.elapsed_s = time.monotonic() - t_start
                losses.append(float(loss.detach()))
                bar.update()
                if st.step % 5 == 0:
                    bar.set_postfix(
                        loss=f"{np.mean(losses[-20:]):.3f}",
                        min=f"{st.elapsed_s / 60:.1f}",
                        **{k: f"{v:.3f}" for k, v in parts.items()},
                    )
                if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                    st.history[f"{name}_losses"] = losses[-200:]
                    self._save(opt, ema, feed.rng_state if feed is not None else None)
                    last_ckpt = time.monotonic()
        finally:
            if feed is not None:
                feed.close()  # stops the thread; rewinds self.rng to just after the last batch
        bar.close()
        if budget.max_minutes and st.step < budget.steps:
            print(
                f"{name}: time cap of {budget.max_minutes:g} min reached after {st.step} of "
                f"{budget.steps} steps (this machine is slower than the recipe's pace; the "
                "schedule was compressed to end here; pdn-train --no-time-cap runs them all)"
            )
        if ema is not None:
            ema.copy_to_module()
        n = max(1, min(20, len(losses) // 4))
        res = StageResult(
            st.step,
            round(st.elapsed_s, 1),
            float(np.mean(losses[:n])) if losses else float("nan"),
            float(np.mean(losses[-n:])) if losses else float("nan"),
        )
        st.history.pop(f"{name}_losses", None)
        st.history[name] = res.to_dict()
        st.done.append(name)
        st.stage, st.step, st.elapsed_s = "", 0, 0.0
        self._save(None)
        return res

    # -- (a) saliency ---------------------------------------------------------------------
    def train_saliency(self) -> StageResult:
        cfg = self.config
        sal = self.model.saliency
        sal.train()
        steps_per_epoch = max(1, math.ceil(len(self.bank) / cfg.sal_batch))
        frozen_steps = cfg.freeze_backbone_epochs * steps_per_epoch

        def make(rng: np.random.Generator) -> tuple[SaliencyBatch, Photometric]:
            b = sample_saliency_batch(self.bank, rng, cfg.sal_batch, cfg.sal_window)
            return b, photometric_params(cfg.sal_batch, rng)

        def step(
            i: int, batch: tuple[SaliencyBatch, Photometric]
        ) -> tuple[torch.Tensor, dict[str, float]]:
            sal.backbone.requires_grad_(i >= frozen_steps)
            b, photo = batch
            x = apply_photometric(self._dev(b.images), *photo)  # (B, 3, S, S)
            with self._autocast():
                logits = sal(x.contiguous(memory_format=torch.channels_last))  # (B, 1, S/4, S/4)
            loss, parts = saliency_loss(logits, self._dev(b.masks))
            parts["frozen"] = float(i < frozen_steps)
            return loss, parts

        res = self._loop("saliency", cfg.saliency, sal, cfg.sal_lr, step, make)
        sal.backbone.requires_grad_(True)
        return res

    # -- (b) detector ---------------------------------------------------------------------
    def refresh_peaks(self) -> None:
        """Hard negatives come from where the *current* saliency net fires."""
        sal = self.model.saliency.eval()
        self.bank.update_peaks(
            lambda x: sal(self._dev(x)), self.config.det_peaks, self.config.det_crop
        )

    def _detector_forward(
        self, b: DetectorBatch, photo: Photometric
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Photometric augmentation, then the detector, on a detector batch's crops."""
        x = apply_photometric(self._dev(b.images), *photo)  # (B, 3, S, S)
        with self._autocast():
            return self.model.detector(x.contiguous(memory_format=torch.channels_last))

    def _detector_batch(
        self, rng: np.random.Generator, item_p: np.ndarray | None
    ) -> tuple[DetectorBatch, Photometric]:
        """A batch of crops and its photometric jitter (drawn after it, from the same RNG)."""
        cfg = self.config
        b = sample_detector_batch(
            self.bank,
            rng,
            cfg.det_batch,
            cfg.det_crop,
            len(self.model.classes),
            cfg.det_mix,
            cfg.det_scale_range,
            cfg.det_box_fraction,
            self.model.detector.stride,
            item_p,
        )
        return b, photometric_params(cfg.det_batch, rng)

    def train_detector(self) -> StageResult:
        cfg = self.config
        self.refresh_peaks()
        det = self.model.detector
        det.train()
        item_p = self.bank.item_weights(dict(cfg.det_domain_weights))

        def step(
            i: int, batch: tuple[DetectorBatch, Photometric]
        ) -> tuple[torch.Tensor, dict[str, float]]:
            b, photo = batch
            out = self._detector_forward(b, photo)
            targets = (self._dev(t) for t in (b.heat, b.size, b.offset, b.reg_mask))
            return detector_loss(out, *targets, giou_weight=cfg.det_giou_weight)

        def make(rng: np.random.Generator) -> tuple[DetectorBatch, Photometric]:
            return self._detector_batch(rng, item_p)

        res = self._loop("detector", cfg.detector, det, cfg.det_lr, step, make)
        if item_p is not None and cfg.det_bn_batches > 0:
            self.recalibrate_detector_bn(cfg.det_bn_batches)
            self._save(None)
        return res

    def recalibrate_detector_bn(self, batches: int) -> None:
        """Re-estimate the detector's BatchNorm statistics as a plain average over ``batches``
        uniformly drawn training batches (no gradient): a domain-weighted stage leaves them
        tilted towards the favoured domain, while inference sees every domain."""
        det = self.model.detector
        bns = _batchnorms(det)
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        det.train()
        with torch.no_grad():
            for _ in range(batches):
                self._detector_forward(*self._detector_batch(self.rng, None))
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom

    # -- (c) joint ------------------------------------------------------------------------
    def train_joint(self) -> StageResult:
        cfg = self.config
        model = self.model
        model.train()
        freeze_batchnorm(model)
        n_cls = len(model.classes)
        identity = Dihedral()

        def step(i: int, _batch: None) -> tuple[torch.Tensor, dict[str, float]]:
            smalls, masks, frames = [], [], []
            for _ in range(cfg.joint_frames):
                it = self.bank.items[int(self.rng.integers(len(self.bank)))]
                aug = Dihedral.random(self.rng)
                hw = it.image.shape[:2]
                smalls.append(np.ascontiguousarray(aug.image(it.small)))
                masks.append(np.ascontiguousarray(aug.image(it.mask)))
                frames.append((aug.image(it.image), aug.boxes(it.boxes, hw), it.labels))
            x = photometric(self._dev(to_nchw(np.stack(smalls))), self.rng)  # (F, 3, h, w)
            target = self._dev(torch.from_numpy(np.stack(masks))[:, None])  # (F, 1, h/4, w/4)
            with self._autocast():
                logits = model.saliency(x.contiguous(memory_format=torch.channels_last))
            l_sal, parts = saliency_loss(logits, target)
            # Top-K selection is not differentiable: choose under no_grad, learn on the choice.
            with torch.no_grad():
                prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()  # (F, h/4, w/4)
            samples = []
            for f, (image, boxes, labels) in enumerate(frames):
                sal_map = prob[f]
                if cfg.perturb_sigma > 0:
                    sal_map = sal_map + self.rng.normal(0, cfg.perturb_sigma, sal_map.shape)
                crops, _ = select_crops(
                    sal_map,
                    image.shape[:2],
                    cfg.top_k,
                    cfg.crop_size,
                    strategy=cfg.joint_crop_selection,
                )
                for win in crops:
                    samples.append(
                        detector_sample(
                            image,
                            boxes,
                            labels,
                            win,
                            cfg.crop_size,
                            n_cls,
                            identity,
                            stride=model.detector.stride,
                            box_fraction=cfg.det_box_fraction,
                        )
                    )
            b = collate_detector(samples)
            xc = photometric(self._dev(b.images), self.rng)  # (F*K, 3, S, S)
            with self._autocast():
                out = model.detector(xc.contiguous(memory_format=torch.channels_last))
            targets = (self._dev(t) for t in (b.heat, b.size, b.offset, b.reg_mask))
            l_det, dparts = detector_loss(out, *targets, giou_weight=cfg.det_giou_weight)
            parts.update(dparts)
            return l_det + cfg.joint_sal_weight * l_sal, parts

        return self._loop("joint", cfg.joint, model, cfg.joint_lr, step)

    # -- everything -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every enabled stage not already done; returns per-stage summaries."""
        runners = {
            "saliency": (self.train_saliency, self.config.saliency),
            "detector": (self.train_detector, self.config.detector),
            "joint": (self.train_joint, self.config.joint),
        }
        for name in STAGES:
            fn, budget = runners[name]
            if name in self.state.done or not budget.enabled:
                continue
            fn()
        self.model.eval()
        return {k: v for k, v in self.state.history.items() if k in STAGES}
