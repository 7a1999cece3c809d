"""Small building blocks shared by the saliency network and the crop detector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StridedPointwiseConv(nn.Conv2d):
    """A 1x1 convolution with stride > 1 (a residual block's projection shortcut).

    Where gradients are recorded it runs as "take every stride-th pixel, then a 1x1 convolution
    at stride 1": the same weights and the same outputs, but not oneDNN's strided 1x1 backward,
    which corrupts the heap (glibc aborts with "double free or corruption") for channels_last
    inputs with 6-15 channels on AVX-512 CPUs (torch 2.13.0+cpu, AMD EPYC with avx512_bf16).
    Inference (no grad) keeps the stock strided kernel: nothing changes in speed or output.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        sy, sx = self.stride
        return F.conv2d(x[:, :, ::sy, ::sx], self.weight, self.bias, 1, 0, 1, self.groups)


class ConvBNAct(nn.Sequential):
    """conv -> batch norm -> ReLU (or no activation): the unit everything is made of."""

    def __init__(
        self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        conv = StridedPointwiseConv if k == 1 and stride > 1 else nn.Conv2d
        layers: list[nn.Module] = [
            conv(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: cheap at high resolution because the 3x3 conv is depthwise."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 2) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(
            ConvBNAct(cin, hidden, 1) if expand != 1 else nn.Identity(),
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
            ConvBNAct(hidden, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_res else y


class BasicBlock(nn.Module):
    """ResNet-18 basic block, for the larger GPU configuration."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, act=False)
        self.down = (
            ConvBNAct(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else None
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return self.act(self.conv2(self.conv1(x)) + skip)


def stage(cin: int, cout: int, n: int, stride: int, kind: str, expand: int = 2) -> nn.Sequential:
    """n blocks, the first one changing resolution/width."""
    if kind == "mobile":
        blocks = [InvertedResidual(cin, cout, stride, expand)]
        blocks += [InvertedResidual(cout, cout, 1, expand) for _ in range(n - 1)]
    elif kind == "resnet":
        blocks = [BasicBlock(cin, cout, stride)]
        blocks += [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
    else:
        raise ValueError(f"unknown block kind {kind!r}; expected 'mobile' or 'resnet'")
    return nn.Sequential(*blocks)


class Normalize(nn.Module):
    """Pixel values 0..255 (uint8 or float) -> roughly zero-mean unit-variance.

    Inside the model so callers hand over raw pixels. For inference the 1/STD scale can be
    folded into the first convolution (``fold_scale_into``), which is exact: zero padding is
    zero either way. The mean cannot be folded without changing what the padding means.
    """

    MEAN = 115.0
    STD = 64.0

    def __init__(self) -> None:
        super().__init__()
        self.scale = 1.0 / self.STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        y = x - self.MEAN  # uint8 in -> float out: the one pass over the pixels
        return y if self.scale == 1.0 else y * self.scale

    @torch.no_grad()
    def fold_scale_into(self, conv: nn.Conv2d) -> None:
        """Multiply ``conv`` (the next layer) by the scale and drop it here: one pass fewer."""
        conv.weight.mul_(self.scale)
        self.scale = 1.0


def first_conv(module: nn.Module) -> nn.Conv2d:
    """The first Conv2d of a module, in registration order (the stem's input convolution)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(module).__name__} has no Conv2d")
