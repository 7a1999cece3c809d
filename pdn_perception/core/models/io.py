"""Weights on disk: safetensors (no pickle) with the architecture config in the file's metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .patchdrive import ModelConfig, PatchDriveModel

FORMAT = "pdn_perception/1"
DEFAULT_MODEL_NAME = "pdn_default.safetensors"
LIGHT_MODEL_NAME = "pdn_light.safetensors"  # ModelConfig.light(): for CPUs without bf16 units


class ModelLoadError(RuntimeError):
    """A weights file is missing, corrupt or does not match its declared architecture."""


def default_model_path() -> Path:
    """The shipped model: repo `models/` in a source checkout, else the ament share dir."""
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "models" / DEFAULT_MODEL_NAME]
    try:  # installed with colcon on a real ROS system
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("pdn_perception"))
        candidates.append(share / "models" / DEFAULT_MODEL_NAME)
    except Exception:
        pass
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


def light_model_path() -> Path:
    """The shipped pdn_light model (``ModelConfig.light()``), beside the default one."""
    return default_model_path().with_name(LIGHT_MODEL_NAME)


def shipped_models() -> list[Path]:
    """Every weights file beside the default model, sorted: what a user can pick from."""
    return sorted(default_model_path().parent.glob("*.safetensors"))


def save_model(
    model: PatchDriveModel, path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write weights + config; ``extra`` (training command, metrics...) goes into metadata too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "model_config": json.dumps(model.config.to_dict())}
    if extra:
        meta["extra"] = json.dumps(extra)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata header of a safetensors file (cheap: tensors are not read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from None


def load_model(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> PatchDriveModel:
    """Load a model in eval mode; every failure is a ModelLoadError that says what is wrong."""
    path = Path(path) if path else default_model_path()
    if not path.is_file():
        shipped = [str(p) for p in shipped_models()]
        raise ModelLoadError(
            f"model file not found: {path}"
            + ("" if path.name != DEFAULT_MODEL_NAME else " (train one with `pdn-train`)")
            + (f"; shipped models: {', '.join(shipped)}" if shipped else "")
        )
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "model_config" not in meta:
        raise ModelLoadError(
            f"{path} is not a pdn_perception model (metadata format={meta.get('format')!r})"
        )
    try:
        config = ModelConfig.from_dict(json.loads(meta["model_config"]))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{path}: invalid model_config in metadata: {exc}") from None
    model = PatchDriveModel(config)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read tensors from {path}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelLoadError(
            f"{path}: weights do not match the declared architecture: {' '.join(first)}"
        ) from None
    return model.eval().to(device)


def model_extra(path: str | Path) -> dict[str, Any]:
    """The free-form 'extra' metadata (training command, metrics) of a weights file."""
    raw = read_metadata(path).get("extra")
    return json.loads(raw) if raw else {}
