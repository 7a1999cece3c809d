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
