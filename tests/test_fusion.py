"""Inference rewrites (core/fusion.py): the fused CPU model computes what the unfused one does."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pdn_perception.core import backends
from pdn_perception.core.config import PipelineConfig
from pdn_perception.core.fusion import (
    FusedBasicBlock,
    FusedConv2d,
    conv_act_fusion_available,
    fuse_conv_act,
    prepack_convs,
)
from pdn_perception.core.models.blocks import BasicBlock
from pdn_perception.core.models.patchdrive import ModelConfig, PatchDriveModel
from pdn_perception.core.pipeline import Pipeline

FUSION_OK, FUSION_WHY = conv_act_fusion_available()
needs_fusion = pytest.mark.skipif(not FUSION_OK, reason=f"no fused convolution: {FUSION_WHY}")


def _random_stats_model(config: ModelConfig, seed: int = 0) -> PatchDriveModel:
    """Random weights and random BatchNorm statistics, so the BN fold is not an identity and
    about half of every pre-activation is negative (the ReLUs do something)."""
    torch.manual_seed(seed)
    model = PatchDriveModel(config)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@needs_fusion
@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig(detector_stride=2), ModelConfig.large()],
    ids=["light", "light-stride2", "resnet18"],
)
def test_fused_model_matches_unfused_fp32(config: ModelConfig) -> None:
    ref = backends._eval_copy(_random_stats_model(config), torch.device("cpu"), torch.float32)
    fused = fuse_conv_act(copy.deepcopy(ref))
    # Every ReLU went into a convolution and every residual block into its second conv.
    assert not any(isinstance(m, nn.ReLU | BasicBlock) for m in fused.modules())
    assert any(isinstance(m, FusedBasicBlock) for m in fused.modules())
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) > 10
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, 3, 96, 128), generator=gen).float()
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for want, got in zip(ref.detector(x), fused.detector(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused.saliency(x), ref.saliency(x), rtol=1e-4, atol=1e-4)


@needs_fusion
def test_fused_bf16_stays_within_bf16_rounding() -> None:
    """bf16: the fused add rounds once instead of twice, so outputs differ by rounding only."""
    model = _random_stats_model(ModelConfig())
    ref = backends._eval_copy(model, torch.device("cpu"), torch.float32)
    fused = fuse_conv_act(backends._eval_copy(model, torch.device("cpu"), torch.bfloat16))
    x = torch.randint(0, 256, (2, 3, 128, 128), generator=torch.Generator().manual_seed(2))
    x = x.float().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = ref.detector(x)[0]
        got = fused.detector(x.to(torch.bfloat16))[0].float()
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() < 0.05 * scale


@needs_fusion
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_prepacked_weights_compute_the_same_outputs_at_any_input_size(dtype: torch.dtype) -> None:
    """Packing only changes where the weights sit in memory: every convolution of both nets is
    packed, and the outputs are identical, also for batch sizes and frame shapes other than the
    example the weights were packed for."""
    model = _random_stats_model(ModelConfig())
    ref = fuse_conv_act(backends._eval_copy(model, torch.device("cpu"), dtype))
    packed = copy.deepcopy(ref)
    example = torch.zeros((1, 3, 128, 128), dtype=dtype).contiguous(
        memory_format=torch.channels_last
    )
    n_det = prepack_convs(packed.detector, example)
    n_sal = prepack_convs(packed.saliency, example)
    for net, n in ((packed.detector, n_det), (packed.saliency, n_sal)):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | FusedConv2d)]
        assert n == len(convs) > 5 and all(isinstance(m, FusedConv2d) for m in convs)
        assert all(m.weight.is_mkldnn for m in convs)
    gen = torch.Generator().manual_seed(4)
    with torch.inference_mode():
        for shape in ((1, 3, 128, 128), (3, 3, 96, 160)):
            x = torch.randint(0, 256, shape, generator=gen).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            for want, got in zip(ref.detector(x), packed.detector(x), strict=True):
                assert torch.equal(got, want)
            assert torch.equal(packed.saliency(x), ref.saliency(x))


@needs_fusion
def test_cpu_backend_runs_the_fused_model(tiny_model: PatchDriveModel) -> None:
    pipe = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    assert "fused" in pipe.runtime.reason and "prepacked" in pipe.runtime.reason
    frame = np.random.default_rng(3).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    result = pipe(frame)
    assert np.isfinite(result.saliency).all() and len(result.crop_boxes) > 0


def test_fusion_refuses_what_it_cannot_express() -> None:
    with pytest.raises(ValueError, match="zero-padded"):
        FusedConv2d(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), relu=True)
    # An unfusable pattern (ReLU after something other than a conv) is left as it is.
    seq = nn.Sequential(nn.Identity(), nn.ReLU())
    assert isinstance(fuse_conv_act(seq)[1], nn.ReLU)


def test_cpu_thread_policy_runs_small_bf16_work_on_one_thread() -> None:
    """Small bf16 calls run on one thread (a wake-up of the other costs more than the split);
    large ones and every fp32 call get all threads; the previous count is always restored."""
    before = torch.get_num_threads()
    small, large = backends.PARALLEL_MIN_PIXELS - 1, backends.PARALLEL_MIN_PIXELS
    bf16 = backends.cpu_thread_policy(3, bf16=True)
    fp32 = backends.cpu_thread_policy(3, bf16=False)
    for policy, pixels, want in ((bf16, small, 1), (bf16, large, 3), (fp32, small, 3)):
        with policy(pixels):
            assert torch.get_num_threads() == want
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), bf16(small):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_small_calls_parallel_measures_both_thread_counts_and_restores() -> None:
    """The CPU runtime's one-off measurement: real timings of a real net on 1 and on N threads,
    the thread count restored afterwards, and the answer consistent with the timings."""
    before = torch.get_num_threads()
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    parallel, one, par = backends.small_calls_parallel(net, 2, torch.float32, size=64, reps=3)
    assert one > 0 and par > 0
    assert parallel == (one > backends.SERIAL_MIN_GAIN * par)
    assert torch.get_num_threads() == before


_RUNTIME_REASON = """
import {first}, {second}
from pdn_perception.core.config import PipelineConfig
from pdn_perception.core.models.patchdrive import ModelConfig, PatchDriveModel
from pdn_perception.core.pipeline import Pipeline
pipe = Pipeline(PipelineConfig(backend="cpu"), model=PatchDriveModel(ModelConfig()))
print("REASON", pipe.runtime.reason)
"""


@pytest.mark.parametrize("torch_first", [True, False], ids=["torch-first", "package-first"])
def test_cpu_backend_says_when_openmp_waiting_was_set_too_late(torch_first: bool) -> None:
    """Torch reads OMP_WAIT_POLICY once, as it loads; a script that imports torch before the
    package gets spinning OpenMP threads (slow on shared cores), and is told so."""
    names = ("torch", "pdn_perception") if torch_first else ("pdn_perception", "torch")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = _RUNTIME_REASON.format(first=names[0], second=names[1])
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    reason = run.stdout.split("REASON", 1)[1]
    assert ("OpenMP threads spin" in reason) is torch_first
    assert ("import pdn_perception first" in run.stderr) is torch_first
