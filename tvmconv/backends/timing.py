"""Wall-clock timing of two callables, interleaved so both see the same machine state; the
machine's roofline (peak SGEMM FLOP/s, copy bandwidth) that timed work is judged against."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .target import TargetInfo


@dataclass
class Roofline:
    peak_flops: float  # FLOP/s of a large SGEMM
    bandwidth: float  # bytes/s of a large copy (read + write)
    threads: int

    def min_seconds(self, flops: int, nbytes: int) -> float:
        return max(flops / self.peak_flops, nbytes / self.bandwidth)


def measure_roofline(threads: int, *, target: TargetInfo | None = None, **sizes) -> Roofline:
    """The roofline of ``target``'s device (None: this CPU), measured now with torch: peak FLOP/s of
    a large float32 SGEMM and the bandwidth of a large copy (bytes read + written); ``sizes``
    (``gemm_n``, ``copy_mb``) override the backend's (see its ``roofline``)."""
    from .target import resolve

    backend = (target if target is not None else resolve("host")).backend
    return Roofline(*backend.roofline(threads, **sizes))


def interleaved(a: Callable[[], object], b: Callable[[], object], *, rounds: int = 7, min_round_s: float = 0.02,
                warmup: int = 2, settle_s: float = 0.05) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b``: one list entry per round, each the mean of enough
    back-to-back calls to fill ``min_round_s``. Rounds alternate a, b, a, b..."""
    out_a, out_b = interleaved_many([a, b], rounds=rounds, min_round_s=min_round_s, warmup=warmup, settle_s=settle_s)
    return out_a, out_b


def interleaved_many(fns: list[Callable[[], object]], *, rounds: int = 7, min_round_s: float = 0.02, warmup: int = 2,
                     settle_s: float = 0.05) -> list[list[float]]:
    """``interleaved`` for any number of callables: per callable, seconds per call in each round."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    reps = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
        reps.append(max(1, int(min_round_s / one)))
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, n, times in zip(fns, reps, out):
            # Let the other runtime's worker threads (TVM's pool, torch's OpenMP) stop spinning
            # before this one starts: on a 2-core machine their spinning halves either's speed.
            time.sleep(settle_s)
            fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t0) / n)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> float:
    """Interquartile range relative to the median."""
    if len(xs) < 4:
        return (max(xs) - min(xs)) / statistics.median(xs)
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / statistics.median(xs)


def interleaved_cuda(fns: list[Callable[[], object]], *, rounds: int = 7, min_round_s: float = 0.02,
                     warmup: int = 3) -> list[list[float]]:
    """``interleaved_many`` for callables that launch work on torch's current CUDA stream: each
    round is timed with CUDA events around enough back-to-back calls to fill ``min_round_s`` of GPU
    time, so it measures the kernels, not the launches (calls are queued asynchronously)."""
    import torch

    def gpu_seconds(fn, n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n

    for _ in range(warmup):
        for fn in fns:
            fn()
    torch.cuda.synchronize()
    reps = [max(1, min(10000, int(min_round_s / max(gpu_seconds(fn, 3), 1e-7)))) for fn in fns]
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, n, times in zip(fns, reps, out):
            times.append(gpu_seconds(fn, n))
    return out


class torch_threads:
    """``with torch_threads(n):`` PyTorch runs on ``n`` threads inside (None: as many as it has),
    as many as before after."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)
