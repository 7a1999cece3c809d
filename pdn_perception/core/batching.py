"""Memory-aware batching of crops: as many crops per detector call as memory allows, never fewer
crops than asked for.

Budget = free GPU memory minus a reserve (CUDA) or a configured byte budget (CPU); batch size =
budget // per-crop footprint, capped by ``max_batch_size``. When all crops fit, they run in one
parallel batch; otherwise in sequential batches. A CUDA out-of-memory error halves the batch and
retries the same crops, so no crop is ever dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

MB = 1 << 20
# Peak activation bytes per input pixel for the default crop detector in fp32 inference,
# measured with torch.cuda.max_memory_allocated at batch 1 vs 2 (about 90 bytes/pixel) and
# rounded up. Used on CPU, where no allocator statistics exist, and before warm-up measures it.
DEFAULT_BYTES_PER_PIXEL = 128


@dataclass(frozen=True)
class BatchPlan:
    """How n crops are split into detector calls."""

    batch_size: int
    batches: tuple[tuple[int, int], ...]  # (start, stop) index ranges, covering 0..n exactly
    per_crop_bytes: int
    budget_bytes: int

    @property
    def parallel(self) -> bool:
        """True when every crop runs in a single batch."""
        return len(self.batches) <= 1


def plan_batches(
    n: int, per_crop_bytes: int, budget_bytes: int, max_batch_size: int = 0, cap: int = 64
) -> BatchPlan:
    """Split n crops into batches that fit ``budget_bytes``; always at least one crop per batch.

    ``max_batch_size`` 0 means automatic (memory decides, up to ``cap``).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if per_crop_bytes <= 0:
        raise ValueError(f"per_crop_bytes must be > 0, got {per_crop_bytes}")
    fit = max(1, budget_bytes // per_crop_bytes)
    size = min(fit, cap, max_batch_size) if max_batch_size > 0 else min(fit, cap)
    size = max(1, min(size, max(n, 1)))
    batches = tuple((s, min(s + size, n)) for s in range(0, n, size))
    return BatchPlan(size, batches, per_crop_bytes, budget_bytes)


def estimate_crop_bytes(crop_size: int, bytes_per_pixel: int = DEFAULT_BYTES_PER_PIXEL) -> int:
    """Analytic per-crop activation footprint (used where it cannot be measured)."""
    return crop_size * crop_size * bytes_per_pixel


def memory_budget(device: torch.device, budget_mb: int, reserve_mb: int) -> int:
    """Bytes the detector batches may use now: free CUDA memory minus reserve, or the CPU budget."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return max(0, free - reserve_mb * MB)
    return budget_mb * MB


def measure_crop_bytes(
    fn: Callable[[torch.Tensor], object], crop_size: int, device: torch.device, dtype: torch.dtype
) -> int | None:
    """Measure the per-crop footprint on CUDA as peak(batch 2) - peak(batch 1); None elsewhere."""
    if device.type != "cuda":
        return None
    peaks = []
    for b in (1, 2):
        x = torch.zeros(b, 3, crop_size, crop_size, device=device, dtype=dtype)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(x)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
        del x
    return max(peaks[1] - peaks[0], 1)


@dataclass
class BatchStats:
    """What the last batched run did (for diagnostics)."""

    batch_sizes: list[int] = field(default_factory=list)
    oom_retries: int = 0


R = TypeVar("R")


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_batched(
    fn: Callable[[torch.Tensor], R],
    crops: torch.Tensor,
    plan: BatchPlan,
    stats: BatchStats | None = None,
) -> list[R]:
    """Run ``fn`` over crops (N, ...) batch by batch; on out-of-memory halve the batch and retry.

    Returns one output per executed batch, in crop order; the batch sizes are in ``stats``. Only
    when a single crop does not fit is the error re-raised (nothing smaller can be tried).
    """
    stats = stats if stats is not None else BatchStats()
    outputs: list[R] = []
    size = plan.batch_size
    start = 0
    n = crops.shape[0]
    while start < n:
        stop = min(start + size, n)
        try:
            out = fn(crops[start:stop])
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc) or size == 1:
                raise
            if crops.is_cuda:
                torch.cuda.empty_cache()
            size = max(1, size // 2)
            stats.oom_retries += 1
            continue
        outputs.append(out)
        stats.batch_sizes.append(stop - start)
        start = stop
    return outputs


def split_sizes(plan_sizes: Sequence[int]) -> str:
    """Human-readable batch sizes, e.g. '4' or '2+2'."""
    return "+".join(str(s) for s in plan_sizes) or "0"
