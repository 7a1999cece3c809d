"""The PatchDrive model: a global saliency network plus one shared-weight crop detector."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from .detector import CropDetector
from .saliency import SaliencyNet

DEFAULT_CLASSES: tuple[str, ...] = ("boat", "vehicle", "nucleus")  # the shipped models' classes


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a PatchDrive model; stored inside the weights file (self-describing)."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    saliency_width: int = 12
    saliency_head_width: int = 24
    detector_kind: str = "light"  # light (CPU default) | resnet18 (ResNet-18 class, GPU)
    # the default 'light'-kind detector: 2.7 M params, ~5 GMAC per 512² crop, 86 % of it at
    # strides 8-16 (wide layers that bf16 AVX-512/AMX run efficiently); the stride-4 work is
    # two 3x3 convs (see CropDetector). ModelConfig.light() is the 0.18 M one for fp32 CPUs.
    detector_widths: tuple[int, int, int, int] = (32, 48, 128, 256)
    detector_depths: tuple[int, int, int] = (1, 2, 2)
    detector_neck_width: int = 48
    detector_stride: int = 4  # output stride of the heads: 4, or 2 (adds an FPN P2 level)
    detector_fine_width: int = 16  # width of the stride-2 level (detector_stride 2 only)

    def __post_init__(self) -> None:
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"ModelConfig.classes must be non-empty names, got {self.classes!r}")
        if self.detector_kind not in ("light", "resnet18"):
            raise ValueError(
                f"ModelConfig.detector_kind = {self.detector_kind!r} is not one of light, resnet18"
            )
        sizes = (
            self.saliency_width,
            self.saliency_head_width,
            *self.detector_widths,
            *self.detector_depths,
            self.detector_neck_width,
            self.detector_fine_width,
        )
        if self.detector_stride not in (2, 4):
            raise ValueError(
                f"ModelConfig.detector_stride must be 2 or 4, got {self.detector_stride}"
            )
        if not all(isinstance(v, int) and v >= 1 for v in sizes):
            raise ValueError(f"ModelConfig widths and depths must be integers >= 1: {self}")

    @classmethod
    def light(cls, classes: tuple[str, ...] = DEFAULT_CLASSES) -> ModelConfig:
        """The 0.18 M-param detector (~0.5 GMAC per 512² crop) for CPUs without bf16 units: in
        fp32 the default detector costs 3-4x as much per crop (``models/pdn_light``)."""
        return cls(
            classes=classes,
            detector_widths=(24, 24, 48, 96),
            detector_depths=(1, 1, 1),
            detector_neck_width=24,
        )

    @classmethod
    def large(cls, classes: tuple[str, ...] = DEFAULT_CLASSES) -> ModelConfig:
        """ResNet-18-class detector for GPUs (widths and depths of ResNet-18's first stages)."""
        return cls(
            classes=classes,
            detector_kind="resnet18",
            detector_widths=(64, 64, 128, 256),
            detector_depths=(2, 2, 2),
            detector_neck_width=64,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig key(s): {', '.join(unknown)}")
        conv = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**conv)


class PatchDriveModel(nn.Module):
    """Holds both networks; the pipeline calls them separately (selection sits between them)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.saliency = SaliencyNet(config.saliency_width, config.saliency_head_width)
        self.detector = CropDetector(
            len(config.classes),
            config.detector_kind,
            config.detector_widths,
            config.detector_depths,
            config.detector_neck_width,
            config.detector_stride,
            config.detector_fine_width,
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes
