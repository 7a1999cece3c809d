"""Memory-aware batch planner: splits, never drops a crop, halves on out-of-memory."""

from __future__ import annotations

import pytest
import torch

from pdn_perception.core.batching import (
    BatchStats,
    estimate_crop_bytes,
    memory_budget,
    plan_batches,
    run_batched,
)

MB = 1 << 20


@pytest.mark.parametrize("n", [0, 1, 4, 7, 16, 25, 64])
@pytest.mark.parametrize("budget_crops", [1, 2, 3, 100])
def test_plan_covers_every_crop_exactly_once(n: int, budget_crops: int) -> None:
    plan = plan_batches(n, 10 * MB, budget_crops * 10 * MB)
    covered = [i for a, b in plan.batches for i in range(a, b)]
    assert covered == list(range(n))
    assert all(b - a <= plan.batch_size for a, b in plan.batches)
    assert plan.batch_size <= max(1, min(budget_crops, n if n else 1))


def test_budget_decides_parallel_or_sequential() -> None:
    assert plan_batches(4, 10 * MB, 100 * MB).parallel
    seq = plan_batches(4, 10 * MB, 25 * MB)
    assert not seq.parallel and seq.batch_size == 2 and len(seq.batches) == 2


def test_max_batch_size_caps_and_tiny_budget_still_runs_one() -> None:
    assert plan_batches(16, MB, 1000 * MB, max_batch_size=4).batch_size == 4
    plan = plan_batches(5, 100 * MB, 1)  # budget below one crop: still one at a time
    assert plan.batch_size == 1 and len(plan.batches) == 5


def test_bad_plan_arguments() -> None:
    with pytest.raises(ValueError):
        plan_batches(-1, 1, 1)
    with pytest.raises(ValueError):
        plan_batches(1, 0, 1)


def test_cpu_budget_comes_from_config() -> None:
    assert memory_budget(torch.device("cpu"), 512, 0) == 512 * MB
    assert estimate_crop_bytes(512) > 0


def test_oom_halves_batch_and_keeps_every_crop() -> None:
    crops = torch.arange(10, dtype=torch.float32).view(10, 1)
    seen_sizes: list[int] = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        seen_sizes.append(len(batch))
        if len(batch) > 3:  # a device that only fits 3 crops at a time
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch * 2

    stats = BatchStats()
    outs = run_batched(fn, crops, plan_batches(10, MB, 10 * MB), stats)
    assert torch.cat(outs).view(-1).tolist() == [i * 2.0 for i in range(10)]
    assert sum(stats.batch_sizes) == 10
    assert stats.oom_retries == 2  # 10 -> 5 -> 2
    assert max(stats.batch_sizes) <= 3


def test_oom_with_single_crop_reraises_and_other_errors_pass_through() -> None:
    def always_oom(batch: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        run_batched(always_oom, torch.zeros(2, 1), plan_batches(2, MB, 10 * MB))

    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batched(broken, torch.zeros(2, 1), plan_batches(2, MB, 10 * MB))
