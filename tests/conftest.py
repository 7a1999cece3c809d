"""Shared fixtures: a tiny random-weight model for tests that only need shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pdn_perception.core.models import ModelConfig, PatchDriveModel, save_model


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
