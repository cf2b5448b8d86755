"""What one parallel launch of TVM's CPU thread pool costs on this machine, measured once.

A kernel split over the pool pays for waking its sleeping workers (they sleep at once between
kernels: backends/__init__.py) on every call. That cost is a fact of the machine, not of the ISA:
about 7 us on the AMD Zen 3 the x86-avx2 records were tuned on, 35 to 45 us on a 2-vCPU Intel Xeon
VM with AVX-512 (futex wake-ups through the hypervisor). A kernel of 10 us on one thread ran in
50 us on two there. So the one-thread choice of the default blocking (``blocking.plan_for``) and
of a transferred record is made from this measurement: below ``serial_below_s`` a kernel runs on
one thread.

The cost depends on the pool a kernel runs on: kernels share PyTorch's OpenMP pool where they can
(backends/openmp.py), whose workers are often awake from the op before, and the pool is part of
the machine key. The measurement times a trivial kernel split over ``threads`` tasks against its one-thread twin
(interleaved rounds, medians) and is kept per machine (``backends.machine``) in the user cache's
``machine/<key>.json``. ``TVMCONV_PARALLEL_LAUNCH_US`` replaces it (tests; a target built here
for another machine uses ``DEFAULT_LAUNCH_S``).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time

from .. import knobs, storage
from .target import TargetInfo

log = logging.getLogger("tvmconv")

DEFAULT_LAUNCH_S = 7e-6  # a machine not measured (a cross target): the Zen 3's


def _probe():
    from ..variants import ConvSpec

    # 0.5 MFLOP, about 10 us on one thread: an EffNet layer
    return ConvSpec(dtype="float32", n=1, c_in=32, in_size=(16, 16), c_out=32, kernel=(1, 1), stride=(1, 1),
                    padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1, bias=False)


def serial_below_s(launch_s: float, threads: int) -> float:
    """The single-thread time below which one thread beats ``threads``: splitting saves at most
    ``t * (1 - 1/threads)`` and costs ``launch_s``. One thread: always."""
    return float("inf") if threads <= 1 else launch_s * threads / (threads - 1)


def parallel_launch_s(target: TargetInfo) -> float:
    """The cost of one parallel launch on ``target`` (seconds): ``TVMCONV_PARALLEL_LAUNCH_US``,
    else measured here (once per machine, kept in the user cache), else, for a target that does
    not run here, ``DEFAULT_LAUNCH_S``."""
    override = knobs.parallel_launch_us()
    if override is not None:
        return override * 1e-6
    if not target.runs_here:
        return DEFAULT_LAUNCH_S
    from .machine import machine_of

    return _stored(machine_of(target).key, target)


@functools.lru_cache(maxsize=8)
def _stored(key: str, target: TargetInfo) -> float:

    path = storage.user_root() / "machine" / f"{key}.json"
    found = storage.read_json(path) if storage.trusted(path.parent) else None
    if isinstance(found, dict) and isinstance(found.get("parallel_launch_s"), (int, float)) \
            and 0 <= found["parallel_launch_s"] < 1e-2:
        return float(found["parallel_launch_s"])
    try:
        seconds = measure(target)
    except Exception as exc:  # noqa: BLE001 - no kernel could be built here: the op must still run
        log.warning("tvmconv: cannot measure a parallel kernel launch here (%s: %s); assuming %.0f us",
                    type(exc).__name__, exc, DEFAULT_LAUNCH_S * 1e6)
        return DEFAULT_LAUNCH_S
    log.info("tvmconv: a parallel kernel launch costs %.1f us on this machine", seconds * 1e6)
    try:  # (another process holding the lock is storing its own measurement: never wait for it)
        with storage.lock(path, timeout=storage.SHORT_LOCK_TIMEOUT_S):
            storage.write_json(path, {"format": 1, "parallel_launch_s": seconds, "threads": target.num_cores,
                                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError as exc:  # a read-only cache, a held lock: measured again by the next process
        log.info("tvmconv: cannot keep the launch measurement in %s (%s)", path, exc)
    return seconds


def _loaded(backend, executable, path: str):
    """``executable``'s main function loaded as the ops load a kernel: from a library file, on the
    thread pool they use (backends/openmp.py); from memory, on TVM's pool, where nothing can link
    one (no C compiler), as the ops then run."""
    import subprocess

    import tvm

    try:
        backend.export_library(executable, path)
    except (OSError, TypeError, RuntimeError, subprocess.SubprocessError) as exc:
        log.info("tvmconv: timing the launch from memory (%s)", exc)
        return executable["main"]
    f = tvm.runtime.load_module(path)["main"]
    backend.adopt_library(path)
    return f


def measure(target: TargetInfo, *, rounds: int = 7, calls: int = 100) -> float:
    """Seconds a small convolution (``_probe``, under the default schedule) split over
    ``target.num_cores`` tasks takes beyond its share of the one-thread build: ``split - one /
    threads``, medians of interleaved rounds (0 when the split costs nothing). Measured on a real
    kernel, not an empty loop: on the Xeon VM an empty split kernel cost 12 us more than its twin,
    these convolutions 25 to 50 us."""
    import dataclasses

    import torch
    import tvm

    from .. import reference
    from .blocking import plan_for
    from .timing import interleaved_many, median

    backend, spec = target.backend, _probe()
    _, args = reference.random_args(spec, torch.Generator().manual_seed(0))
    args = [t.contiguous() for t in args]
    out = torch.empty(spec.kernel_out_shape)
    plan = plan_for(spec, backend.lanes(spec.dtype), backend.facts.vector_registers)
    fns = []
    with tempfile.TemporaryDirectory(prefix="tvmconv-launch-") as tmp:
        for serial in (True, False):
            sch, _ = backend.default_schedule(spec, dataclasses.replace(plan, serial=serial))
            f = _loaded(backend, tvm.compile(sch.mod, target=target.tvm()), f"{tmp}/{'one' if serial else 'split'}.so")
            fns.append(lambda f=f: [f(*args, out) for _ in range(calls)])
        one, split = interleaved_many(fns, rounds=rounds, min_round_s=0.0, warmup=1)
    threads = max(1, target.num_cores)
    return max(0.0, (median(split) - median(one) / threads) / calls)
