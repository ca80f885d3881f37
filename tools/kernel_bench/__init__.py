"""Per-kernel benchmark rows; tools/bench_kernels.py prints them as one table."""

from __future__ import annotations

import time
from typing import Callable, NamedTuple


class Row(NamedTuple):
    kernel: str                 # "reorder", "bitmap", "batching", "delineate"
    operation: str              # what was timed, e.g. "release"
    unit: str                   # what an item is: "sequences", "extents", "frames", "bytes"
    items: int                  # items processed by one call of each variant
    kernel_s: float             # best time of one call, numba kernel (after warm-up)
    reference_s: float          # the same work through datapath.reference
    numpy_s: float | None       # best numpy-vectorised alternative, None if there is none
    target_per_s: float | None  # the target in items/s, None if it names none


def best_time(func: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``repeat`` calls after one untimed warm-up call (JIT, caches)."""
    func()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best
