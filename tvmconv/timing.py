"""Wall-clock timing of two callables, interleaved so both see the same machine state."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(a: Callable[[], object], b: Callable[[], object], *, rounds: int = 7, min_round_s: float = 0.02,
                warmup: int = 2, settle_s: float = 0.05) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b``: one list entry per round, each the mean of enough
    back-to-back calls to fill ``min_round_s``. Rounds alternate a, b, a, b..."""
    for _ in range(warmup):
        a()
        b()
    reps = {}
    for name, fn in (("a", a), ("b", b)):
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, int(min_round_s / one))
    out_a, out_b = [], []
    for _ in range(rounds):
        for name, fn, out in (("a", a, out_a), ("b", b, out_b)):
            # Let the other runtime's worker threads (TVM's pool, torch's OpenMP) stop spinning
            # before this one starts: on a 2-core machine their spinning halves either's speed.
            time.sleep(settle_s)
            fn()
            n = reps[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - t0) / n)
    return out_a, out_b


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> float:
    """Interquartile range relative to the median."""
    if len(xs) < 4:
        return (max(xs) - min(xs)) / statistics.median(xs)
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / statistics.median(xs)
