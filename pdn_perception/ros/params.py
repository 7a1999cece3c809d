"""ROS parameters derived from the config dataclasses: one declaration, no second copy.

Every field of :class:`PipelineConfig` and :class:`NodeConfig` becomes a parameter of the same
name. Its :class:`ParameterDescriptor` is built from the field's metadata (help text, range,
choices, multiple_of), so rclpy itself rejects wrong types and out-of-range values with a reason,
and a proposed change is then validated by building the new config: the :class:`ConfigError`
message is the rejection reason. Nothing here knows the individual fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..core.config import ConfigError, NodeConfig, PipelineConfig, field_specs, split_config

CONFIG_CLASSES: tuple[type, ...] = (PipelineConfig, NodeConfig)

# Read once at start-up; changing them later could not have any effect.
READ_ONLY: frozenset[str] = frozenset({"autostart"})

_ROS_TYPES: dict[type, int] = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def describe_field(
    name: str, kind: type, meta: Mapping[str, Any], read_only: bool = False
) -> ParameterDescriptor:
    """The ParameterDescriptor of one config field (what ``ros2 param describe`` shows)."""
    if kind not in _ROS_TYPES:
        raise TypeError(f"config field {name}: type {kind!r} has no ROS parameter type")
    desc = ParameterDescriptor(
        name=name, type=_ROS_TYPES[kind], description=meta.get("help", ""), read_only=read_only
    )
    constraints = []
    lo_hi = meta.get("range")
    step = meta.get("multiple_of") or 0
    if lo_hi is not None and kind is int:
        # ROS checks (value - from_value) % step == 0: equal to multiple_of when from is one too.
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        ros_step = step if step and lo % step == 0 else 0
        desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=ros_step)]
    elif lo_hi is not None and kind is float:
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    if step:
        constraints.append(f"multiple of {step}")
    if meta.get("choices"):
        constraints.append("one of: " + ", ".join(meta["choices"]))
    if meta.get("rebuild"):
        constraints.append("changing it rebuilds the model/backend off the hot path")
    desc.additional_constraints = "; ".join(constraints)
    return desc


@dataclass(frozen=True)
class ParamSpec:
    """A parameter to declare: name, default value and descriptor."""

    name: str
    default: Any
    descriptor: ParameterDescriptor


def parameter_specs(classes: Iterable[type] = CONFIG_CLASSES) -> list[ParamSpec]:
    """One ParamSpec per config field, derived from ``field_specs`` (names must be unique)."""
    specs: list[ParamSpec] = []
    seen: set[str] = set()
    for cls in classes:
        for name, kind, default, meta in field_specs(cls):
            if name in seen:
                raise ValueError(f"config field {name!r} is defined twice; parameter names clash")
            seen.add(name)
            specs.append(
                ParamSpec(name, default, describe_field(name, kind, meta, name in READ_ONLY))
            )
    return specs


def declare_config_parameters(node: Node, classes: Iterable[type] = CONFIG_CLASSES) -> None:
    """Declare every config field on ``node``; overrides (-p, params file) are applied by rclpy.

    rclpy raises InvalidParameterValueException / InvalidParameterTypeException for overrides
    that break a descriptor: start-up with a bad params file fails loudly, with the reason.
    """
    node.declare_parameters(
        "", [(s.name, s.default, s.descriptor) for s in parameter_specs(classes)]
    )


def configs_from_values(values: Mapping[str, Any]) -> tuple[PipelineConfig, NodeConfig]:
    """Config objects from ``{name: value}`` (raises ConfigError with the reason)."""
    return split_config(values)


def configs_from_node(node: Node) -> tuple[PipelineConfig, NodeConfig]:
    """Current parameter values of ``node`` as validated configs."""
    names = [s.name for s in parameter_specs()]
    return configs_from_values({n: node.get_parameter(n).value for n in names})


def config_values(pipeline: PipelineConfig, node: NodeConfig) -> dict[str, Any]:
    """The inverse: ``{name: value}`` of both configs (what a params file holds)."""
    return {**pipeline.to_dict(), **node.to_dict()}


def propose(
    current: tuple[PipelineConfig, NodeConfig], params: Sequence[Parameter]
) -> tuple[PipelineConfig, NodeConfig]:
    """The configs after applying ``params`` to ``current``; ConfigError says why not.

    Only config parameters are considered (``use_sim_time`` and friends are rclpy's business).
    """
    known = {s.name for s in parameter_specs()}
    changes = {p.name: p.value for p in params if p.name in known}
    for p in params:
        if p.name in READ_ONLY:
            raise ConfigError(f"{p.name} is read-only (only read at start-up)")
    return configs_from_values({**config_values(*current), **changes})


__all__ = [
    "CONFIG_CLASSES",
    "READ_ONLY",
    "ParamSpec",
    "config_values",
    "configs_from_node",
    "configs_from_values",
    "declare_config_parameters",
    "describe_field",
    "parameter_specs",
    "propose",
]
