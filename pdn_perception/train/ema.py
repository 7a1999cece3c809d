"""Exponential moving average of a module's weights during a training stage.

A short CPU schedule ends while the weights still jitter from batch to batch; the average of
the last few hundred steps is a better model than the last step, at no extra forward pass
(the YOLOX / timm ``ModelEMA`` practice). The shadow copy lives beside the module and replaces
its weights when the stage ends.
"""

from __future__ import annotations

import torch


class WeightEMA:
    """Shadow copy of ``module``'s floating-point parameters and buffers.

    ``decay`` is the long-run factor; early updates use ``min(decay, (1 + n) / (10 + n))`` so
    the average is not anchored to the random initialisation. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied, not averaged.
    """

    def __init__(self, module: torch.nn.Module, decay: float, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = updates
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if s.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                s.copy_(v)

    def copy_to(self, module: torch.nn.Module) -> None:
        """Load the averaged weights into ``module`` (the end of the stage)."""
        module.load_state_dict(self.shadow, strict=True)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Shadow tensors for a checkpoint, keys prefixed; ``updates`` rides along as a tensor."""
        out = {f"{prefix}{k}": v.detach().contiguous().cpu() for k, v in self.shadow.items()}
        out[f"{prefix}__updates__"] = torch.tensor(self.updates, dtype=torch.int64)
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> bool:
        """Restore from :meth:`tensors` output; False (shadow untouched) if none is there."""
        key = f"{prefix}__updates__"
        if key not in tensors:
            return False
        for k, s in self.shadow.items():
            s.copy_(tensors[f"{prefix}{k}"])
        self.updates = int(tensors[key])
        return True
