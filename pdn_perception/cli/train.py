"""``pdn-train``: train the default PatchDrive model (saliency -> detector -> joint) on synthetic
scenes, save it as safetensors with its training record, and score it on held-out scenes.

    pdn-train                      # the shipped model's recipe: ~27 min on 2 bf16 CPU cores;
                                   # time caps end it within 30 min on slower CPUs
    pdn-train --no-time-cap        # the full recipe however long it takes
    pdn-train --minutes 3 --scenes 30 --eval-frames 5 --out /tmp/quick.safetensors
    pdn-train --resume             # continue a killed run from runs/train/checkpoint.safetensors
    pdn-train --model-config light --out models/pdn_light.safetensors   # for fp32-only CPUs
    pdn-train --model-config large # the ResNet-18-class detector (for GPU-sized budgets)
    pdn-train --model-config '{"detector_depths": [2, 1, 1]}'   # any ModelConfig field
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import ConfigError, load_pipeline_config
from ..core.models.io import default_model_path, save_model

if TYPE_CHECKING:
    from ..core.models.patchdrive import ModelConfig

STAGE_SHARE = {"saliency": 0.15, "detector": 0.75, "joint": 0.10}  # of --minutes
STAGE_FLAGS = (("saliency", "sal"), ("detector", "det"), ("joint", "joint"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdn-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default=None, help="model file (default models/pdn_default.safetensors)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of scenes, init and sampling")
    p.add_argument(
        "--scenes", type=int, default=480, help="2048² training scenes rendered once (6 GB at 480)"
    )
    p.add_argument("--scene-size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"))
    p.add_argument(
        "--domains",
        nargs="+",
        default=["all"],
        help="scene domains to train on (maritime aerial microscopy), or 'all' (the default)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes rendering scenes")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help=f"time budget: total minutes split over the stages {STAGE_SHARE}; replaces the "
        "default step budgets (TrainConfig's) unless steps are also given",
    )
    p.add_argument("--steps", type=int, default=None, help="step budget of every stage")
    p.add_argument(
        "--no-time-cap",
        action="store_true",
        help="run the default step budgets in full even where they take longer than their time "
        "caps (TrainConfig: about 27 minutes of stages in all); steps or minutes given for a "
        "stage replace its budget, cap included",
    )
    for stage, short in STAGE_FLAGS:
        p.add_argument(
            f"--{short}-minutes", type=float, default=None, help=f"{stage} stage minutes"
        )
        p.add_argument(f"--{short}-steps", type=int, default=None, help=f"{stage} stage steps")
    p.add_argument(
        "--model-config",
        default="default",
        help="architecture: 'default' (ModelConfig()), 'light' (ModelConfig.light(): the small "
        "detector for CPUs without bf16 units), 'large' (ModelConfig.large()), or a JSON "
        "object of ModelConfig fields overriding the default, e.g. "
        "'{\"detector_depths\": [2, 1, 1]}'",
    )
    # Defaults of these live in TrainConfig (train/trainer.py) only; None = keep it.
    p.add_argument("--freeze-backbone-epochs", type=int, default=None)
    p.add_argument("--sal-batch", type=int, default=None, help="saliency frames per step")
    p.add_argument("--det-batch", type=int, default=None, help="detector crops per step")
    p.add_argument("--det-crop", type=int, default=None, help="detector training crop side")
    p.add_argument(
        "--det-giou",
        type=float,
        default=None,
        help="weight of the GIoU box loss in the detector and joint stages (default 1.0)",
    )
    p.add_argument(
        "--det-box-fraction",
        type=float,
        default=None,
        help="heat and box-regression area as a fraction of each box (TTFNet; default 0.5); "
        "0 = 3x3 cells",
    )
    p.add_argument(
        "--det-domain-weights",
        nargs="+",
        default=None,
        metavar="DOMAIN=W",
        help="share of detector crops per domain, e.g. aerial=2 (others 1; default uniform); "
        "BatchNorm statistics are re-estimated on a uniform mix afterwards",
    )
    p.add_argument(
        "--det-scale-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="zoom augmentation of detector crops, log-uniform (default 0.8 1.25; 1 1 = off)",
    )
    p.add_argument(
        "--joint-crop-selection",
        choices=("peak", "coverage"),
        default=None,
        help="Patch Drive controller that picks the joint stage's crops (default peak)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="each stage ends on the moving average of its weights with this decay "
        "(e.g. 0.999; default 0 = off, the last step's weights)",
    )
    p.add_argument(
        "--config", default=None, help="pipeline YAML (saliency_input_size, crop_size, top_k)"
    )
    p.add_argument("--work-dir", default="runs/train", help="checkpoints go here (not in git)")
    p.add_argument("--resume", action="store_true", help="continue from the work dir checkpoint")
    p.add_argument("--eval-frames", type=int, default=20, help="held-out frames scored at the end")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0 = all cores; with fewer, a free core makes the next batch)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a CUDA GPU when present, else the CPU) | cpu | cuda | cuda:N",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def domain_weights_from_args(specs: list[str] | None) -> tuple[tuple[str, float], ...]:
    """``--det-domain-weights aerial=2 maritime=1`` -> (("aerial", 2.0), ("maritime", 1.0))."""
    from ..train.scenes import DOMAINS

    out = []
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if name not in DOMAINS or not weight >= 0:
            raise ValueError(
                f"--det-domain-weights takes DOMAIN=W with DOMAIN in {', '.join(DOMAINS)} and "
                f"W >= 0, got {spec!r}"
            )
        out.append((name, weight))
    return tuple(out)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields the command line sets; the rest keep TrainConfig's defaults."""
    given = {
        "sal_batch": args.sal_batch,
        "det_batch": args.det_batch,
        "det_crop": args.det_crop,
        "freeze_backbone_epochs": args.freeze_backbone_epochs,
        "det_giou_weight": args.det_giou,
        "det_box_fraction": args.det_box_fraction,
        "det_scale_range": None if args.det_scale_range is None else tuple(args.det_scale_range),
        "joint_crop_selection": args.joint_crop_selection,
        "ema_decay": args.ema_decay,
    }
    out = {k: v for k, v in given.items() if v is not None}
    if args.det_domain_weights is not None:
        out["det_domain_weights"] = domain_weights_from_args(args.det_domain_weights)
    return out


def _stage_budgets(args: argparse.Namespace) -> dict[str, Any]:
    from ..train.trainer import StageBudget, TrainConfig

    out = {}
    for stage, short in STAGE_FLAGS:
        minutes = getattr(args, f"{short}_minutes")
        steps = getattr(args, f"{short}_steps")
        if minutes is None:
            minutes = STAGE_SHARE[stage] * args.minutes if args.minutes is not None else 0.0
        if steps is None:
            steps = args.steps
        if steps is None and not minutes:
            # Default: TrainConfig's step budget with its time cap. Steps, so the same command
            # gives the same model on any machine fast enough; the cap binds only on slower ones.
            default = getattr(TrainConfig(), stage)
            out[stage] = replace(default, max_minutes=0.0) if args.no_time_cap else default
            continue
        out[stage] = StageBudget(steps=steps or 0, minutes=minutes)
    return out


def model_config_from_arg(spec: str, classes: tuple[str, ...]) -> ModelConfig:
    """``--model-config`` -> ModelConfig for ``classes``; ValueError says what is wrong."""
    from ..core.models.patchdrive import ModelConfig  # here: it imports torch

    if spec == "default":
        return ModelConfig(classes=classes)
    if spec == "light":
        return ModelConfig.light(classes=classes)
    if spec == "large":
        return ModelConfig.large(classes=classes)
    try:
        fields = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise ValueError(
            "--model-config must be 'default', 'light', 'large' or a JSON object, "
            f"got {spec!r} ({exc})"
        ) from None
    if not isinstance(fields, dict):
        raise ValueError(f"--model-config JSON must be an object of ModelConfig fields: {spec!r}")
    if "classes" in fields:
        raise ValueError("--model-config cannot set classes: they are the scene classes")
    return ModelConfig.from_dict({**ModelConfig(classes=classes).to_dict(), **fields})


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.system()}"


def _save(model: Any, out: Path, extra: dict[str, Any]) -> None:
    """save_model, then the usual 0644 permissions: safetensors writes 0600 files, which a
    package install would copy unreadable for other users."""
    save_model(model, out, extra)
    umask = os.umask(0)
    os.umask(umask)
    out.chmod(0o666 & ~umask)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv
    import torch

    from ..train.data import SceneBank, generate_scenes
    from ..train.evaluate import evaluate_model, format_table, held_out_scenes
    from ..train.trainer import TrainConfig, Trainer, resolve_device

    try:
        pipe_cfg = load_pipeline_config(args.config)
    except ConfigError as exc:
        print(f"pdn-train: {exc}", file=sys.stderr)
        return 2
    work = Path(args.work_dir)
    ckpt = work / "checkpoint.safetensors"
    budgets = _stage_budgets(args)
    try:
        cfg = TrainConfig(
            seed=args.seed,
            saliency_input_size=pipe_cfg.saliency_input_size,
            crop_size=pipe_cfg.crop_size,
            top_k=pipe_cfg.top_k,
            saliency=budgets["saliency"],
            detector=budgets["detector"],
            joint=budgets["joint"],
            **_train_overrides(args),
            threads=args.threads,
            device=args.device,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"pdn-train: {exc}", file=sys.stderr)
        return 2
    run_args = {
        "argv": argv_used,
        "train_config": cfg.to_dict(),
        "scenes": args.scenes,
        "scene_size": list(args.scene_size),
        "domains": args.domains,
    }
    if args.resume:
        from ..train.checkpoint import load_checkpoint

        if not ckpt.is_file():
            print(f"pdn-train: --resume: no checkpoint at {ckpt}", file=sys.stderr)
            return 2
        # The original run's settings win (output path, eval frames, budgets...); only how this
        # process runs (threads, device, progress bars) comes from the new command line.
        run_args = load_checkpoint(ckpt).run_args
        orig = build_parser().parse_args(run_args["argv"])
        orig.threads = args.threads or orig.threads
        orig.no_progress, orig.workers, orig.device = args.no_progress, args.workers, args.device
        args = orig
        cfg = TrainConfig.from_dict(
            {
                **TrainConfig.from_dict(run_args["train_config"]).to_dict(),
                "progress": not args.no_progress,
                "threads": args.threads,
                "device": args.device,
            }
        )
        print(f"resuming {ckpt} (settings of the original run: {shlex.join(run_args['argv'])})")

    t0 = time.monotonic()
    from ..train.scenes import CLASSES, DOMAINS

    try:
        model_config = model_config_from_arg(args.model_config, CLASSES)
        device = resolve_device(cfg.device)
    except (ValueError, TypeError) as exc:
        print(f"pdn-train: {exc}", file=sys.stderr)
        return 2
    print(f"training on {device}")

    domains = list(DOMAINS) if run_args["domains"] in (None, ["all"]) else run_args["domains"]
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown:
        print(
            f"pdn-train: unknown domain(s) {unknown}; known: {', '.join(DOMAINS)}", file=sys.stderr
        )
        return 2
    scenes = generate_scenes(
        cfg.seed * 10_000,
        run_args["scenes"],
        domains,
        tuple(run_args["scene_size"]),
        workers=args.workers,
        progress=cfg.progress,
    )
    bank = SceneBank(scenes, cfg.saliency_input_size)
    del scenes
    print(f"{len(bank)} scenes, {bank.num_objects} objects ({time.monotonic() - t0:.0f} s)")
    trainer = Trainer(
        cfg, bank, model_config=model_config, checkpoint_path=ckpt,
        run_args=run_args,
    )  # fmt: skip
    if args.resume:
        trainer.resume_from(ckpt)
    history = trainer.run()
    train_s = time.monotonic() - t0
    del bank, trainer.bank
    model = trainer.model.cpu().eval()  # saved and scored like any loaded model
    extra: dict[str, Any] = {
        "command": shlex.join(["pdn-train", *run_args["argv"]]),
        "seed": cfg.seed,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_description(),
        "bf16": trainer.bf16,
        "train_minutes": round(train_s / 60, 2),  # this process (a resumed run: since resume)
        "stage_minutes": round(sum(h["seconds"] for h in history.values()) / 60, 2),
        "training_scenes": {
            "seeds": [cfg.seed * 10_000, cfg.seed * 10_000 + run_args["scenes"] - 1],
            "size": run_args["scene_size"],
            "domains": domains,
        },
        "train_config": cfg.to_dict(),
        "stages": history,
    }
    out = Path(args.out) if args.out else default_model_path()
    _save(model, out, extra)
    print(f"saved {out} after {train_s / 60:.1f} min; stages: {json.dumps(history)}")
    if args.eval_frames > 0:
        torch.manual_seed(0)
        report = evaluate_model(
            model,
            held_out_scenes(args.eval_frames, size=tuple(run_args["scene_size"])),
            progress=cfg.progress,
            total=args.eval_frames,
            threads=cfg.threads,
        )
        extra["metrics"] = report
        _save(model, out, extra)
        print(format_table(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
