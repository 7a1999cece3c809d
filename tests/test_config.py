"""Config dataclasses: the one source of defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdn_perception.core.config import (
    ConfigError,
    NodeConfig,
    PipelineConfig,
    field_specs,
    load_pipeline_config,
    split_config,
)


def test_defaults_match_the_documented_interface() -> None:
    c = PipelineConfig()
    assert (c.mode, c.top_k, c.crop_size, c.saliency_input_size) == ("topk", 4, 512, 512)
    assert c.max_batch_size == 0 and c.backend == "auto"
    assert NodeConfig().autostart is True and NodeConfig().input_reliability == "best_effort"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"top_k": 0}, r"PipelineConfig.top_k = 0 is out of range \[1, 64\]"),
        ({"top_k": 65}, r"top_k = 65 is out of range"),
        ({"top_k": 2.5}, r"top_k must be an integer"),
        ({"top_k": True}, r"top_k must be an integer"),
        ({"mode": "sliding"}, r"mode = 'sliding' is not one of topk, tiles, global"),
        ({"crop_size": 500}, r"crop_size = 500 must be a multiple of 32"),
        ({"score_threshold": 1.5}, r"score_threshold = 1.5 is out of range \[0.0, 1.0\]"),
        ({"backend": "opencl"}, r"backend = 'opencl' is not one of"),
        ({"model_path": 3}, r"model_path must be a string"),
    ],
)
def test_bad_values_name_field_and_allowed_range(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PipelineConfig().replace(**changes)


def test_frozen_and_replace_validates() -> None:
    c = PipelineConfig()
    with pytest.raises(AttributeError):
        c.top_k = 8  # type: ignore[misc]
    assert c.replace(top_k=8).top_k == 8
    assert c.replace(score_threshold=1).score_threshold == 1.0  # int coerced to float
    assert c.top_k == 4


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match="unknown PipelineConfig key"):
        PipelineConfig.from_dict({"topk": 3})
    with pytest.raises(ConfigError, match="unknown config key"):
        split_config({"top_k": 3, "nonsense": 1})


def test_yaml_plain_and_ros_params_layout(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("top_k: 8\nmode: tiles\n")
    assert load_pipeline_config(plain).top_k == 8
    ros = tmp_path / "ros.yaml"
    ros.write_text("/**:\n  ros__parameters:\n    top_k: 2\n    publish_debug_image: false\n")
    cfg = load_pipeline_config(ros, mode="global")
    assert (cfg.top_k, cfg.mode) == (2, "global")
    pipe, node = split_config({"top_k": 3, "publish_debug_image": False})
    assert pipe.top_k == 3 and node.publish_debug_image is False


def test_yaml_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("top_k: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline_config(bad)
    bad.write_text("top_k: 0\n")
    with pytest.raises(ConfigError, match="out of range"):
        load_pipeline_config(bad)


def test_shipped_params_file_is_valid() -> None:
    path = Path(__file__).resolve().parents[1] / "config" / "params.yaml"
    if not path.exists():
        pytest.skip("config/params.yaml not present")
    from pdn_perception.core.config import load_yaml

    pipe, node = split_config(load_yaml(path))
    assert pipe == PipelineConfig() and node == NodeConfig(), "params.yaml mirrors the defaults"


def test_field_specs_carry_descriptions_and_ranges() -> None:
    specs = {
        name: (kind, default, meta) for name, kind, default, meta in field_specs(PipelineConfig)
    }
    kind, default, meta = specs["top_k"]
    assert kind is int and default == 4 and meta["range"] == (1, 64) and meta["help"]
    assert specs["mode"][2]["choices"] == ("topk", "tiles", "global")
    assert {"backend", "model_path", "crop_size"} <= PipelineConfig.rebuild_fields()
    assert "top_k" not in PipelineConfig.rebuild_fields()
