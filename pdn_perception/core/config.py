"""Typed, frozen, validated configuration: the one source of defaults and checks.

Every tunable lives here exactly once. Each field carries its description and its allowed range
or choices in ``metadata``; validation, YAML loading, the CLI and the ROS parameter descriptors
are all derived from these fields, so nothing is written twice.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .selection import COVERAGE_FLOOR, SELECTION_STRATEGIES

MODES: tuple[str, ...] = ("topk", "tiles", "global")
BACKENDS: tuple[str, ...] = ("auto", "cpu", "cuda", "compile", "tensorrt")
NMS_METRICS: tuple[str, ...] = ("iou", "ios")
RELIABILITY: tuple[str, ...] = ("best_effort", "reliable")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


def _param(
    default: Any,
    help: str,
    *,
    range: tuple[float, float] | None = None,
    choices: tuple[str, ...] | None = None,
    multiple_of: int | None = None,
    rebuild: bool = False,
) -> Any:
    """A dataclass field with its description and constraints in metadata.

    ``rebuild`` marks fields whose change needs the model/backend to be rebuilt (not just the next
    frame to read a new value); the node applies those off the hot path.
    """
    meta = {"help": help, "range": range, "choices": choices, "multiple_of": multiple_of}
    meta["rebuild"] = rebuild
    return field(default=default, metadata=meta)


def _field_type(cls: type, name: str) -> type:
    hints = typing.get_type_hints(cls)
    return hints[name]


def _check_field(cls: type, f: dataclasses.Field, value: Any) -> Any:
    """Validate (and lightly coerce int->float) one value; raise ConfigError naming the field."""
    kind = _field_type(cls, f.name)
    name = f"{cls.__name__}.{f.name}"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be a bool (true/false), got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
    elif kind is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    meta = f.metadata
    lo_hi = meta.get("range")
    if lo_hi is not None and not (lo_hi[0] <= value <= lo_hi[1]):
        raise ConfigError(f"{name} = {value!r} is out of range [{lo_hi[0]}, {lo_hi[1]}]")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} = {value!r} is not one of {', '.join(choices)}")
    mult = meta.get("multiple_of")
    if mult and value % mult:
        raise ConfigError(f"{name} = {value!r} must be a multiple of {mult}")
    return value


T = TypeVar("T", bound="_Validated")


class _Validated:
    """Mixin: validate every field on construction and offer dict/YAML round trips."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = _check_field(type(self), f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Build from a mapping; unknown keys are an error (typos must not pass silently)."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: T, **changes: Any) -> T:
        """A validated copy with some fields changed (the config itself is immutable)."""
        return self.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class PipelineConfig(_Validated):
    """What the PatchDrive pipeline does with one frame."""

    mode: str = _param(
        "topk",
        "topk: K salient crops; tiles: exhaustive grid; global: one downscaled pass",
        choices=MODES,
    )
    top_k: int = _param(4, "number of full-resolution crops per frame (topk mode)", range=(1, 64))
    crop_size: int = _param(
        512,
        "side of a full-resolution crop in frame pixels",
        range=(64, 2048),
        multiple_of=32,
        rebuild=True,
    )
    saliency_input_size: int = _param(
        512,
        "long side of the downscaled frame seen by the saliency backbone",
        range=(64, 2048),
        multiple_of=32,
    )
    crop_min_separation: float = _param(
        0.5,
        "min distance between crop centres as a fraction of crop_size (suppression)",
        range=(0.05, 1.0),
    )
    # coverage: topk K=4 AP@0.5 0.749 -> 0.755 on the 60 held-out frames of the model card,
    # 0.735 -> 0.781 on 30 others (seeds from 1,000,500)
    crop_selection: str = _param(
        "coverage",
        "where topk crops go: peak = on the hottest cells; coverage = where the most saliency "
        f"(>= {COVERAGE_FLOOR}) not yet in a crop lies",
        choices=SELECTION_STRATEGIES,
    )
    min_crop_saliency: float = _param(
        0.0,
        "topk: skip a crop (never the first) when no saliency cell it adds to the earlier crops "
        "is above this, so quiet frames cost fewer detector passes; 0 = always top_k crops, "
        "1 = one crop",
        range=(0.0, 1.0),
    )
    tile_overlap: float = _param(
        0.0, "overlap between neighbouring tiles (tiles mode)", range=(0.0, 0.9)
    )
    # Off: the baselines cost what tiling and one global pass cost, not a saliency pass more.
    saliency_all_modes: bool = _param(
        False,
        "also run the saliency net in tiles and global modes (for ~/saliency and overlays); "
        "topk always runs it",
    )
    # 0.4: best F1 of the shipped model on held-out scenes (0.84; recall 0.75, precision 0.94)
    score_threshold: float = _param(0.4, "minimum detection score kept", range=(0.0, 1.0))
    # 0.7: AP@[.5:.95] 0.431 -> 0.450 on the 60 held-out frames of the model card (AP@0.5 equal),
    # 0.439 -> 0.450 and AP@0.5 0.781 -> 0.801 on 30 others (seeds from 1,000,500)
    box_vote_iou: float = _param(
        0.7,
        "refine each box into the heat-weighted mean of its 3x3 neighbour cells' boxes with at "
        "least this IoU with it; 0 = off",
        range=(0.0, 1.0),
    )
    nms_iou_threshold: float = _param(
        0.5, "overlap above which the lower-scored box is suppressed", range=(0.0, 1.0)
    )
    nms_metric: str = _param(
        "iou",
        "overlap measure for cross-crop NMS: iou or ios (intersection over smaller)",
        choices=NMS_METRICS,
    )
    max_detections: int = _param(300, "maximum detections per frame after NMS", range=(1, 10000))
    max_batch_size: int = _param(
        0, "crops per detector batch; 0 = memory-aware automatic", range=(0, 64)
    )
    memory_budget_mb: int = _param(
        2048,
        "memory the detector batches may use on CPU (on CUDA: free memory is measured)",
        range=(16, 1 << 20),
    )
    memory_reserve_mb: int = _param(
        1024, "GPU memory left free for everything else", range=(0, 1 << 20)
    )
    backend: str = _param(
        "auto", "inference backend; auto picks the best available", choices=BACKENDS, rebuild=True
    )
    model_path: str = _param(
        "",
        "model .safetensors file; empty = the shipped default model "
        "(models/pdn_light.safetensors: 3-4x faster per crop, for CPUs without bf16)",
        rebuild=True,
    )
    engine_cache_dir: str = _param(
        "", "TensorRT engine cache dir; empty = ~/.cache/pdn_perception", rebuild=True
    )

    @classmethod
    def rebuild_fields(cls) -> frozenset[str]:
        """Fields whose change needs a new model/backend (applied off the hot path)."""
        return frozenset(f.name for f in fields(cls) if f.metadata.get("rebuild"))

    def rebuild_changes(self, new: PipelineConfig) -> frozenset[str]:
        """Rebuild fields whose value differs in ``new``: empty means a cheap reconfigure."""
        return frozenset(n for n in self.rebuild_fields() if getattr(self, n) != getattr(new, n))


@dataclass(frozen=True)
class NodeConfig(_Validated):
    """ROS-facing behaviour of the node (no ROS imports here: plain data)."""

    publish_debug_image: bool = _param(
        True, "publish ~/debug_image (only computed while subscribed)"
    )
    debug_image_size: int = _param(1024, "long side of the debug overlay image", range=(128, 4096))
    input_reliability: str = _param(
        "best_effort", "input image QoS reliability (applies on activate)", choices=RELIABILITY
    )
    autostart: bool = _param(True, "configure and activate the lifecycle node on start")
    diagnostics_period: float = _param(
        1.0, "seconds between /diagnostics messages", range=(0.1, 60.0)
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping. ROS params files (``node: {ros__parameters: {...}}``) are unwrapped."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    # ROS 2 params-file layout: {node_name or /**: {ros__parameters: {...}}}
    for value in data.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            return dict(value["ros__parameters"])
    return data


def split_config(data: Mapping[str, Any]) -> tuple[PipelineConfig, NodeConfig]:
    """Split one flat mapping into the pipeline and node configs; unknown keys are an error."""
    pipe_keys = {f.name for f in fields(PipelineConfig)}
    node_keys = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(data) - pipe_keys - node_keys)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    pipe = PipelineConfig.from_dict({k: v for k, v in data.items() if k in pipe_keys})
    node = NodeConfig.from_dict({k: v for k, v in data.items() if k in node_keys})
    return pipe, node


def load_pipeline_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """PipelineConfig from an optional YAML file (node keys are ignored) plus overrides."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    pipe_keys = {f.name for f in fields(PipelineConfig)}
    node_keys = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(data) - pipe_keys - node_keys)
    if unknown:
        raise ConfigError(f"unknown config key(s) in {path}: {', '.join(unknown)}")
    data = {k: v for k, v in data.items() if k in pipe_keys}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineConfig.from_dict(data)


def field_specs(cls: type) -> list[tuple[str, type, Any, Mapping[str, Any]]]:
    """(name, type, default, metadata) per field: what the ROS layer builds descriptors from."""
    out = []
    for f in fields(cls):
        kind = _field_type(cls, f.name)
        if isinstance(kind, types.UnionType):  # pragma: no cover - no union fields today
            raise TypeError(f"{cls.__name__}.{f.name}: union types are not supported as parameters")
        out.append((f.name, kind, f.default, f.metadata))
    return out


def reference_markdown() -> str:
    """The README's config reference table, generated from the fields (kept in sync by a test)."""
    lines = ["| parameter | type | default | allowed | what it does |", "|---|---|---|---|---|"]
    for cls in (PipelineConfig, NodeConfig):
        for name, kind, default, meta in field_specs(cls):
            if meta.get("choices"):
                allowed = " \\| ".join(meta["choices"])
            elif meta.get("range"):
                lo, hi = meta["range"]
                allowed = f"{lo} .. {hi}"
                if meta.get("multiple_of"):
                    allowed += f", multiple of {meta['multiple_of']}"
            else:
                allowed = ""
            note = meta["help"] + (" (rebuilds the model/backend)" if meta.get("rebuild") else "")
            shown = f'"{default}"' if isinstance(default, str) else str(default).lower()
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                shown = str(default)
            lines.append(f"| `{name}` | {kind.__name__} | `{shown}` | {allowed} | {note} |")
    return "\n".join(lines)
