"""Inference-only rewrites of a model's eval copy: fewer passes over memory, same outputs.

``fuse_conv_bn`` folds BatchNorm into the convolution before it (every backend). On CPU,
``fuse_conv_act`` then hands each convolution its ReLU, and each residual block its skip add,
as oneDNN post-ops (``torch.ops.mkldnn._convolution_pointwise``, the kernel inductor emits for
the same patterns): the activation is written once instead of written, read and written again.
A separate bf16 ReLU pass is slow on CPU (0.25 ms for four crops' 24 x 128² maps on the 2-core
AMX Xeon); fusing took topk K=4 from 30.8 to 26.4 ms a frame there, tiles from 83.6 to 59.9.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .models.blocks import BasicBlock, StridedPointwiseConv

# Convolutions that compute exactly nn.Conv2d's forward in inference (no grad).
_CONVS = (nn.Conv2d, StridedPointwiseConv)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d in a Sequential (in place)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fuse_conv_bn(child)
    if isinstance(module, nn.Sequential):
        mods = list(module._modules.items())
        for (na, a), (nb, b) in itertools.pairwise(mods):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                module._modules[na] = fuse_conv_bn_eval(a, b)
                module._modules[nb] = nn.Identity()
    return module


def conv_act_fusion_available() -> tuple[bool, str]:
    """Whether this torch has oneDNN's fused convolution (every x86/ARM CPU wheel does)."""
    if not torch.backends.mkldnn.is_available():
        return False, "torch was built without oneDNN (mkldnn)"
    if not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        return False, "torch.ops.mkldnn._convolution_pointwise is missing from this torch"
    return True, "oneDNN fused convolution"


class FusedConv2d(nn.Module):
    """A Conv2d whose ReLU (``relu=True``) and residual add (``forward(x, skip)``) run inside
    the convolution: y = relu(conv(x) + skip). Inference only: the op has no backward."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only zero-padded convolutions with numeric padding fuse: {conv}")
        self.weight = nn.Parameter(conv.weight.detach(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else None
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride = list(conv.stride)
        self.padding = list(conv.padding)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.relu = relu

    def prepack(self, input_size: list[int]) -> None:
        """Hold the weights in oneDNN's blocked layout for inputs of ``input_size`` (B, C, H, W),
        so no call reorders them again. Other input sizes still run (oneDNN reorders if its
        choice of layout differs); the weights can no longer be trained or saved."""
        if self.weight.is_mkldnn:
            return
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            self.weight.detach().to_mkldnn(),
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            input_size,
        )
        self.weight = nn.Parameter(packed, requires_grad=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        if skip is None:
            attr = "relu" if self.relu else "none"
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, *geometry, attr, [], None
            )
        unary = "relu" if self.relu else None
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, skip, self.weight, self.bias, *geometry, "add", None, unary, [], None
        )

    def extra_repr(self) -> str:
        c_out, c_in = self.weight.shape[:2]
        return (
            f"{c_in * self.groups}, {c_out}, kernel={tuple(self.weight.shape[2:])}, "
            f"stride={tuple(self.stride)}, relu={self.relu}"
        )


class FusedBasicBlock(nn.Module):
    """BasicBlock with its skip add and final ReLU inside the second convolution."""

    def __init__(self, block: BasicBlock) -> None:
        super().__init__()
        self.conv1 = block.conv1
        self.conv2 = FusedConv2d(_only_conv(block.conv2), relu=True)
        self.down = block.down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return self.conv2(self.conv1(x), skip)


def _only_conv(seq: nn.Module) -> nn.Conv2d:
    """The convolution of a BN-folded, activation-free ConvBNAct (conv + Identity)."""
    mods = [m for m in seq.children() if not isinstance(m, nn.Identity)]
    if not (isinstance(seq, nn.Sequential) and len(mods) == 1 and type(mods[0]) in _CONVS):
        raise ValueError(f"expected a BN-folded conv without activation, got {seq}")
    return mods[0]


def fuse_conv_act(module: nn.Module) -> nn.Module:
    """In a BN-folded eval model, fuse conv -> ReLU and residual blocks (in place).

    Only exact ``nn.Conv2d`` (and ``StridedPointwiseConv``, a plain strided conv without
    gradients) is rewritten; anything else is left as it is.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, BasicBlock):
            child = module._modules[name] = FusedBasicBlock(child)
        fuse_conv_act(child)  # a fused block's conv1 still holds its ReLU
    if isinstance(module, nn.Sequential):
        live = [(n, m) for n, m in module._modules.items() if not isinstance(m, nn.Identity)]
        for (na, a), (nb, b) in itertools.pairwise(live):
            if type(a) in _CONVS and isinstance(b, nn.ReLU):
                module._modules[na] = FusedConv2d(a, relu=True)
                module._modules[nb] = nn.Identity()
    return module


def prepack_convs(module: nn.Module, example: torch.Tensor) -> int:
    """Run every convolution of a fused eval model as oneDNN's op with its weights prepacked.

    Convolutions without a ReLU (heads, projections) become ``FusedConv2d(relu=False)``; then
    ``module`` runs once on ``example`` and each convolution's weights are reordered into
    oneDNN's blocked layout for the input size it saw. Eager oneDNN otherwise reorders them on
    every call, a fixed cost per layer: the saliency net on one 512² frame took 5.1-5.3 instead
    of 5.7-5.9 ms (2-core AMX Xeon, bf16, 2026-12-03, alternating, medians of 56). Same
    outputs, bit for bit (tests); other input sizes still run. Returns how many were packed.

    The CPU backend packs both nets, the detector for one crop: the layout serves every batch
    size (4 crops ~5 % faster, 16 crops the same or ~2 % faster, paired calls, bf16, AMX Xeon).
    """
    if not hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"):  # a private op: may go
        return 0
    _fuse_plain_convs(module)
    sizes: dict[FusedConv2d, list[int]] = {}

    def record(conv: nn.Module, args: tuple) -> None:
        sizes.setdefault(conv, list(args[0].shape))  # type: ignore[arg-type]

    convs = [m for m in module.modules() if isinstance(m, FusedConv2d)]
    hooks = [m.register_forward_pre_hook(record) for m in convs]
    try:
        with torch.inference_mode():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    for conv, size in sizes.items():
        conv.prepack(size)
    return len(sizes)


def _fuse_plain_convs(module: nn.Module) -> None:
    """Every remaining exact convolution -> FusedConv2d without activation (in place)."""
    for name, child in list(module.named_children()):
        if type(child) in _CONVS:
            module._modules[name] = FusedConv2d(child, relu=False)
        else:
            _fuse_plain_convs(child)


__all__ = [
    "FusedBasicBlock",
    "FusedConv2d",
    "conv_act_fusion_available",
    "fuse_conv_act",
    "prepack_convs",
]
