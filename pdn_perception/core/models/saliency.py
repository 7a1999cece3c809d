"""Global saliency network: a cheap look at the downscaled frame that says where to zoom in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, Normalize, stage


class SaliencyBackbone(nn.Module):
    """Features at strides 4 and 16 of the downscaled frame."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        w = width
        self.norm = Normalize()
        # Dense 3x3 convs throughout: on CPU they beat depthwise blocks per FLOP by 3-4x.
        self.stem = nn.Sequential(ConvBNAct(3, w, 3, 2), ConvBNAct(w, w * 2, 3, 2))  # stride 4
        self.s4 = ConvBNAct(w * 2, w * 2, 3)
        self.s8 = stage(w * 2, w * 3, 1, 2, "resnet")  # stride 8
        self.s16 = stage(w * 3, w * 4, 1, 2, "resnet")  # stride 16
        self.out_channels = (w * 2, w * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(self.norm(x))  # (B, w, H/2, W/2)
        f4 = self.s4(x)  # (B, 2w, H/4, W/4)
        f16 = self.s16(self.s8(f4))  # (B, 4w, H/16, W/16)
        return f4, f16


class SaliencyHead(nn.Module):
    """Fuses context (stride 16) into detail (stride 4); one objectness logit per cell."""

    def __init__(self, in_channels: tuple[int, int], width: int = 24) -> None:
        super().__init__()
        c4, c16 = in_channels
        self.lat4 = ConvBNAct(c4, width, 1)
        self.lat16 = ConvBNAct(c16, width, 1)
        self.fuse = ConvBNAct(width, width, 3)
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.constant_(self.out.bias, -4.0)  # objects are rare: start near p=0.02

    def forward(self, f4: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.lat16(f16), size=f4.shape[-2:], mode="nearest")
        return self.out(self.fuse(self.lat4(f4) + up))  # (B, 1, H/4, W/4) logits


class SaliencyNet(nn.Module):
    """Downscaled frame (B, 3, H, W) with values 0..255 -> saliency logits (B, 1, H/4, W/4)."""

    stride = 4

    def __init__(self, width: int = 12, head_width: int = 24) -> None:
        super().__init__()
        self.backbone = SaliencyBackbone(width)
        self.head = SaliencyHead(self.backbone.out_channels, head_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(*self.backbone(x))
