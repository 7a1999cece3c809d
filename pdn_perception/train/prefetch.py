"""Make training batches in a background thread while the model trains on the previous one.

A 128² detector step is about a sixth data preparation (cropping, resizing, CenterNet targets,
uint8 -> float) and the rest forward/backward. Where a core is free for it (a GPU trains, or
torch runs fewer threads than there are cores: ``trainer.uses_prefetch``), one thread that
prepares batch k+1 while the main thread trains on batch k hides the preparation. numpy, OpenCV
and torch release the GIL in their kernels; between them each thread needs the GIL, and with
Python's default 5 ms switch interval the training thread waits for the producer's turn to end
before each of its hundreds of op launches. While a Prefetcher runs the interval is 0.5 ms
(restored on ``close``): with one torch thread on the 2-core AVX2 EPYC a detector step took
118-132 ms instead of 125-155 ms.

The producer is the only user of the RNG while it runs, and it draws exactly what the
sequential loop would draw, in the same order: training is bit-identical with and without it.
Each batch comes with the RNG state *after* it was made, so a checkpoint written after step k
resumes at batch k+1 (not at the batches already made ahead), and ``close`` rewinds the RNG to
that state, so later stages draw what they would have drawn without prefetching.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

_DONE = object()  # sentinel: the producer stopped on an exception (kept in ``_error``)
_SWITCH_INTERVAL_S = 0.0005  # GIL hand-over while the producer runs (Python's default: 0.005)


class Prefetcher(Generic[T]):
    """Iterator over ``make(rng)`` results, made ``depth`` ahead in a daemon thread."""

    def __init__(
        self, make: Callable[[np.random.Generator], T], rng: np.random.Generator, depth: int = 2
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._make = make
        self._rng = rng
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        #: RNG state after the last batch handed out (the state a checkpoint must store)
        self.rng_state: dict[str, Any] = rng.bit_generator.state
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, _SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="pdn-batches", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._make(self._rng)
                if not self._put((batch, self._rng.bit_generator.state)):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._error = e
            self._put(_DONE)

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        # Blocking is safe: until ``close`` the producer only ends by queueing _DONE.
        item = self._queue.get()
        if item is _DONE:  # the producer's own exception, with its traceback
            err = self._error
            raise err if err is not None else RuntimeError("the batch-making thread stopped")
        batch, self.rng_state = item
        return batch

    def close(self) -> None:
        """Stop the thread, drop batches made ahead and rewind the RNG to ``rng_state``."""
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch_interval)
        self._rng.bit_generator.state = self.rng_state

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
