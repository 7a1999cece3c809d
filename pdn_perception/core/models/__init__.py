"""nn.Modules of PatchDrive, one concept per file, plus safetensors I/O."""

from .detector import CropDetector, decode
from .io import ModelLoadError, default_model_path, load_model, save_model
from .patchdrive import ModelConfig, PatchDriveModel
from .saliency import SaliencyNet

__all__ = [
    "CropDetector",
    "ModelConfig",
    "ModelLoadError",
    "PatchDriveModel",
    "SaliencyNet",
    "decode",
    "default_model_path",
    "load_model",
    "save_model",
]
