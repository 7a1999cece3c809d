"""Training checkpoints as safetensors (no pickle anywhere): weights, optimizer moments, RNG state
and progress, so ``pdn-train --resume`` continues a killed run where it stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.models.io import ModelLoadError
from ..core.models.patchdrive import ModelConfig, PatchDriveModel

CKPT_FORMAT = "pdn_perception/train-ckpt/1"


@dataclass
class TrainState:
    """Where a run stands: finished stages, the stage in progress and its step/elapsed time."""

    stage: str = ""
    step: int = 0
    elapsed_s: float = 0.0  # time spent in ``stage`` so far (minute budgets survive a resume)
    done: list[str] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)  # per-stage summaries

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        return cls(**json.loads(text))


def _optimizer_tensors(opt: torch.optim.Optimizer | None) -> tuple[dict[str, torch.Tensor], str]:
    if opt is None:
        return {}, "null"
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            t = val if isinstance(val, torch.Tensor) else torch.tensor(val)
            tensors[f"opt.{idx}.{key}"] = t.detach().contiguous().cpu()
    return tensors, json.dumps(sd["param_groups"])


def save_checkpoint(
    path: str | Path,
    model: PatchDriveModel,
    state: TrainState,
    optimizer: torch.optim.Optimizer | None,
    rng_state: dict[str, Any],
    run_args: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write everything needed to resume (tmp file + rename: a kill never leaves a
    half-written checkpoint). ``rng_state`` is the numpy generator's ``bit_generator.state``
    as of the last batch used. ``extra`` tensors (the stage's weight average) are stored as
    they are, under ``extra.``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    opt_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    meta = {
        "format": CKPT_FORMAT,
        "model_config": json.dumps(model.config.to_dict()),
        "state": state.to_json(),
        "param_groups": groups,
        "numpy_rng": json.dumps(rng_state),
        "run_args": json.dumps(run_args),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


@dataclass
class Checkpoint:
    model: PatchDriveModel
    state: TrainState
    run_args: dict[str, Any]
    optimizer_state: dict[str, Any] | None  # torch optimizer state_dict, or None
    numpy_rng_state: dict[str, Any]
    torch_rng_state: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # save_checkpoint's ``extra``


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; failures are ModelLoadError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from None
    if meta.get("format") != CKPT_FORMAT:
        raise ModelLoadError(
            f"{path} is not a pdn-train checkpoint (format={meta.get('format')!r})"
        )
    model = PatchDriveModel(ModelConfig.from_dict(json.loads(meta["model_config"])))
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    opt_state = None
    groups = json.loads(meta["param_groups"])
    if groups is not None:
        per: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, key = k.split(".", 2)
                per.setdefault(int(idx), {})[key] = v
        opt_state = {"state": per, "param_groups": groups}
    return Checkpoint(
        model=model,
        state=TrainState.from_json(meta["state"]),
        run_args=json.loads(meta["run_args"]),
        optimizer_state=opt_state,
        numpy_rng_state=json.loads(meta["numpy_rng"]),
        torch_rng_state=tensors["rng.torch"],
        extra={k[6:]: v for k, v in tensors.items() if k.startswith("extra.")},
    )
