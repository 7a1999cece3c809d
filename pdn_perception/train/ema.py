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
    ``num_batches_tracked``) are copied, not averaged. The module's tensors are looked up
    once: each training step is then one fused in-place lerp over all of them.
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = module
        live = module.state_dict()  # tensors sharing storage with the module's own
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in live.items()}
        floats = {k for k, v in live.items() if v.dtype.is_floating_point}
        self._float_live = [v for k, v in live.items() if k in floats]
        self._float_shadow = [self.shadow[k] for k in live if k in floats]
        self._other = [(self.shadow[k], v) for k, v in live.items() if k not in floats]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the module's current weights into the average (after each optimiser step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._float_shadow, self._float_live, 1.0 - d)
        for s, v in self._other:
            s.copy_(v)

    def copy_to_module(self) -> None:
        """Load the averaged weights into the module (the end of the stage)."""
        self.module.load_state_dict(self.shadow, strict=True)

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
