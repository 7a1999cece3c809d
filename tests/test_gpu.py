"""GPU backends: parity with cpu fp32 and the engine cache. Skip with a reason where absent."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

from pdn_perception.core import Pipeline, PipelineConfig
from pdn_perception.core.models import PatchDriveModel

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
needs_trt = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("torch_tensorrt") is None,
    reason="needs CUDA and torch_tensorrt (GPU-host extra: pip install '.[tensorrt]')",
)


def _frame() -> np.ndarray:
    from pdn_perception.train.scenes import make_scene

    return make_scene(1_000_123).image


def _raw_outputs(p: Pipeline, crops: torch.Tensor) -> torch.Tensor:
    heat, _, _ = p.runtime.detector(crops.to(p.runtime.device, p.runtime.dtype))
    return heat.float().cpu()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["cuda", "compile"])
def test_gpu_backend_matches_cpu_fp32(tiny_model: PatchDriveModel, backend: str) -> None:
    crops = torch.randint(0, 256, (4, 3, 512, 512)).float()  # exact in uint8 (CPU) and fp16
    cpu = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    gpu = Pipeline(PipelineConfig(backend=backend), model=tiny_model)
    torch.testing.assert_close(
        _raw_outputs(gpu, crops), _raw_outputs(cpu, crops), atol=0.05, rtol=0.02
    )
    r_cpu, r_gpu = cpu(_frame()), gpu(_frame())
    assert r_gpu.crop_boxes.tolist() == r_cpu.crop_boxes.tolist()


@pytest.mark.gpu
@needs_trt
def test_tensorrt_matches_cpu_and_caches_engine(tiny_model: PatchDriveModel, tmp_path) -> None:
    cfg = PipelineConfig(backend="tensorrt", engine_cache_dir=str(tmp_path))
    trt = Pipeline(cfg, model=tiny_model)
    assert list(tmp_path.glob("detector-*.ep")), "engine written to the cache"
    cpu = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    crops = torch.randint(0, 256, (4, 3, 512, 512)).float()  # exact in uint8 (CPU) and fp16
    torch.testing.assert_close(
        _raw_outputs(trt, crops), _raw_outputs(cpu, crops), atol=0.05, rtol=0.02
    )
    again = Pipeline(cfg, model=tiny_model)
    assert "loaded from cache" in again.runtime.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the engine really builds")
def test_build_engine_cli_says_why_without_gpu() -> None:
    cmd = [sys.executable, "-m", "pdn_perception.cli.build_engine"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "TensorRT unavailable here" in proc.stderr and "cuda" in proc.stderr.lower()


@pytest.mark.gpu
@needs_cuda
def test_training_runs_on_cuda_and_saves_a_cpu_model(tmp_path, small_train_config) -> None:
    """Every stage on the GPU (batches made on the CPU, moved over), then a checkpoint and a
    saved model that load on the CPU like any other."""
    from pdn_perception.core.models import ModelConfig
    from pdn_perception.core.models.io import load_model, save_model
    from pdn_perception.train.checkpoint import load_checkpoint
    from pdn_perception.train.data import SceneBank
    from pdn_perception.train.scenes import make_scene
    from pdn_perception.train.trainer import StageBudget, Trainer

    bank = SceneBank([make_scene(s, size=(256, 256)) for s in range(4)], 128)
    cfg = small_train_config(
        saliency=StageBudget(steps=3),
        detector=StageBudget(steps=3),
        joint=StageBudget(steps=2),
        device="cuda",
    )
    tiny = ModelConfig(saliency_width=4, saliency_head_width=8, detector_neck_width=8)
    trainer = Trainer(cfg, bank, model_config=tiny, checkpoint_path=tmp_path / "ck.safetensors")
    history = trainer.run()
    assert next(trainer.model.parameters()).is_cuda
    assert all(np.isfinite(h["last_loss"]) for h in history.values()), history
    assert load_checkpoint(tmp_path / "ck.safetensors").state.done == list(history)
    out = save_model(trainer.model, tmp_path / "m.safetensors")
    assert not next(load_model(out).parameters()).is_cuda
