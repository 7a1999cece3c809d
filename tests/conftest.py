"""Shared fixtures: a tiny random-weight model for tests that only need shapes, and training
settings small enough for a run in seconds."""

from __future__ import annotations

# First, before torch: the package sets OMP_WAIT_POLICY, which torch reads once, as it loads.
import pdn_perception  # noqa: F401

# isort: split
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pdn_perception.core.models import ModelConfig, PatchDriveModel, save_model
from pdn_perception.train.trainer import TrainConfig


def make_tiny_model(seed: int = 0) -> PatchDriveModel:
    """Random weights, default architecture: real shapes, no quality."""
    torch.manual_seed(seed)
    return PatchDriveModel(ModelConfig()).eval()


@pytest.fixture(scope="session")
def tiny_model() -> PatchDriveModel:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, tiny_model: PatchDriveModel) -> Path:
    """A random-weight model saved as safetensors, for subprocesses (node, CLIs)."""
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(tiny_model, path)
    return path


@pytest.fixture
def small_train_config() -> Callable[..., TrainConfig]:
    """Factory of a TrainConfig sized for tests (128² saliency input and inference crops, 64²
    windows and detector crops, batches of 2, one thread, no progress bars); keyword arguments
    override any field, stage budgets included."""

    def make(**overrides: Any) -> TrainConfig:
        base: dict[str, Any] = {
            "saliency_input_size": 128,
            "crop_size": 128,
            "top_k": 2,
            "sal_batch": 2,
            "sal_window": 64,
            "det_batch": 2,
            "det_crop": 64,
            "threads": 1,  # tiny convs: a second thread only adds sync cost
            "progress": False,
        }
        return TrainConfig(**{**base, **overrides})

    return make
