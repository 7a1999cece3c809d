"""ROS parameters derived from the config dataclasses (pdn_perception.ros.params).

Descriptors come from the field metadata, nothing is written twice; rclpy's own checks and the
node's set-parameters callback reject bad values with a reason. The rclpy parts run in this
process on a context of their own (no traffic is exchanged, so no large-frame profile is needed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from pdn_perception.core.config import (
    ConfigError,
    NodeConfig,
    PipelineConfig,
    field_specs,
    load_yaml,
)
from pdn_perception.ros import params

REPO_ROOT = Path(__file__).resolve().parents[1]
DOMAIN_ID = 22


def specs() -> dict[str, params.ParamSpec]:
    return {s.name: s for s in params.parameter_specs()}


def test_every_config_field_is_a_parameter_with_its_default_and_help() -> None:
    got = specs()
    fields = [f for cls in (PipelineConfig, NodeConfig) for f in field_specs(cls)]
    assert set(got) == {name for name, *_ in fields}
    for name, _kind, default, meta in fields:
        spec = got[name]
        assert spec.default == default, name
        assert spec.descriptor.description == meta["help"], name
        assert spec.descriptor.name == name
    for name in ("top_k", "mode", "score_threshold", "nms_iou_threshold", "crop_size"):
        assert name in got
    for name in ("saliency_input_size", "max_batch_size", "backend", "model_path"):
        assert name in got
    for name in ("publish_debug_image", "input_reliability", "autostart"):
        assert name in got


def test_descriptors_carry_types_ranges_steps_and_choices() -> None:
    got = specs()
    top_k = got["top_k"].descriptor
    assert top_k.type == ParameterType.PARAMETER_INTEGER
    assert got["top_k"].default == 4
    (r,) = top_k.integer_range
    assert (r.from_value, r.to_value, r.step) == (1, 64, 0)
    (r,) = got["crop_size"].descriptor.integer_range
    assert (r.from_value, r.to_value, r.step) == (64, 2048, 32)
    assert "rebuild" in got["crop_size"].descriptor.additional_constraints
    (f,) = got["score_threshold"].descriptor.floating_point_range
    assert (f.from_value, f.to_value) == (0.0, 1.0)
    assert got["score_threshold"].descriptor.type == ParameterType.PARAMETER_DOUBLE
    assert "one of: topk, tiles, global" in got["mode"].descriptor.additional_constraints
    assert (
        "one of: best_effort, reliable"
        in got["input_reliability"].descriptor.additional_constraints
    )
    assert got["max_batch_size"].descriptor.integer_range[0].from_value == 0  # 0 = auto
    assert got["publish_debug_image"].descriptor.type == ParameterType.PARAMETER_BOOL
    assert got["model_path"].descriptor.type == ParameterType.PARAMETER_STRING
    assert got["autostart"].descriptor.read_only
    assert not got["top_k"].descriptor.read_only


def test_a_new_config_field_becomes_a_parameter_without_ros_code() -> None:
    @dataclasses.dataclass(frozen=True)
    class Extra:
        gain: float = dataclasses.field(
            default=2.0, metadata={"help": "a gain", "range": (0.5, 4.0)}
        )

    (spec,) = params.parameter_specs([Extra])
    assert spec.default == 2.0 and spec.descriptor.description == "a gain"
    assert spec.descriptor.floating_point_range[0].to_value == 4.0


def test_propose_validates_by_building_the_config() -> None:
    current = (PipelineConfig(), NodeConfig())
    pipe, node = params.propose(current, [Parameter("top_k", value=9)])
    assert pipe.top_k == 9 and node == current[1]
    assert current[0].rebuild_changes(pipe) == frozenset()
    pipe, _ = params.propose(current, [Parameter("backend", value="cpu")])
    assert current[0].rebuild_changes(pipe) == {"backend"}
    with pytest.raises(ConfigError, match="mode = 'all' is not one of topk, tiles, global"):
        params.propose(current, [Parameter("mode", value="all")])
    with pytest.raises(ConfigError, match=r"top_k = 0 is out of range \[1, 64\]"):
        params.propose(current, [Parameter("top_k", value=0)])
    with pytest.raises(ConfigError, match="read-only"):
        params.propose(current, [Parameter("autostart", value=False)])
    # rclpy's own parameters pass through untouched
    assert params.propose(current, [Parameter("use_sim_time", value=True)]) == current


def test_params_yaml_holds_exactly_the_defaults() -> None:
    values = load_yaml(REPO_ROOT / "config" / "params.yaml")
    assert values == params.config_values(PipelineConfig(), NodeConfig())
    for name, value in values.items():  # ROS types: a double must be written as a float
        assert type(value) is type(specs()[name].default), name


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.ros
def test_declared_on_a_node_with_overrides_and_rclpy_range_checks(context) -> None:
    import rclpy
    from rclpy.exceptions import InvalidParameterValueException

    node = rclpy.create_node(
        "pdn_params_probe",
        context=context,
        parameter_overrides=[Parameter("top_k", value=8), Parameter("mode", value="tiles")],
    )
    try:
        params.declare_config_parameters(node)
        pipe, cfg = params.configs_from_node(node)
        assert (pipe.top_k, pipe.mode, cfg.autostart) == (8, "tiles", True)
        (result,) = node.set_parameters([Parameter("top_k", value=65)])
        assert not result.successful
        assert result.reason == "Parameter top_k out of range. Min: 1, Max: 64, value: 65"
        (result,) = node.set_parameters([Parameter("crop_size", value=500)])
        assert not result.successful and "not a valid step" in result.reason
        (result,) = node.set_parameters([Parameter("nms_iou_threshold", value=-0.1)])
        assert not result.successful and "out of range" in result.reason
    finally:
        node.destroy_node()
    bad = rclpy.create_node(
        "pdn_params_probe_bad", context=context, parameter_overrides=[Parameter("top_k", value=0)]
    )
    try:
        with pytest.raises(InvalidParameterValueException):
            params.declare_config_parameters(bad)
    finally:
        bad.destroy_node()


@pytest.mark.ros
def test_node_callback_rejects_bad_choices_and_applies_good_values(context) -> None:
    from pdn_perception.ros.node import PdnPerceptionNode

    node = PdnPerceptionNode(context=context)  # unconfigured: no pipeline is built
    try:
        (result,) = node.set_parameters([Parameter("mode", value="everything")])
        assert not result.successful
        assert result.reason == (
            "PipelineConfig.mode = 'everything' is not one of topk, tiles, global"
        )
        (result,) = node.set_parameters([Parameter("backend", value="quantum")])
        assert not result.successful and "not one of auto, cpu" in result.reason
        (result,) = node.set_parameters([Parameter("top_k", value="four")])
        assert not result.successful and result.reason.startswith("Wrong parameter type")
        assert node.cfg[0].top_k == 4 and node.cfg[0].mode == "topk"  # nothing half-applied
        (result,) = node.set_parameters([Parameter("top_k", value=12)])
        assert result.successful
        assert node.cfg[0].top_k == 12 and node.get_parameter("top_k").value == 12
    finally:
        node.stop()
        node.destroy_node()


def test_launch_file_declares_its_arguments_and_runs_the_console_script() -> None:
    """The launch file cannot run here (no `launch` on PyPI): check what it wires, statically."""
    import ast

    source = (REPO_ROOT / "launch" / "pdn_perception.launch.py").read_text()
    tree = ast.parse(source)
    declared = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "DeclareLaunchArgument"
        and isinstance(node.args[0], ast.Constant)
    }
    assert declared == {"image", "namespace", "params_file", "use_sim_time", "rviz"}
    assert 'executable="pdn_perception_node"' in source
    assert (
        "pdn_perception_node = pdn_perception.ros.node:main" in (REPO_ROOT / "setup.py").read_text()
    )
    assert (REPO_ROOT / "rviz" / "pdn_perception.rviz").is_file()
