"""The timing rule shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], count: int, repeats: int = 3) -> float:
    """Items per second: ``count`` over the median of ``repeats`` timed calls after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return count / statistics.median(times)
