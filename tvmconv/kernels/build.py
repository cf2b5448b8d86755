"""Build kernels (TVM-facing): schedule, compile, and keep compiled kernels in memory by spec.

``load(spec, target)`` is the one entry point the ops use. A kernel is compiled once per
(spec, target) per process; the second call is a dictionary lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import tvm

from ..spec import Spec
from ..target import TargetInfo
from .compute import Plan, prim_func
from .schedules import default_schedule, plan_for

log = logging.getLogger("tvmconv")


@dataclass
class Kernel:
    """A compiled kernel: ``func(*args, out)`` with tensors shaped as ``spec.arg_shapes``."""

    spec: Spec
    target: TargetInfo
    plan: Plan
    func: object
    executable: object
    compile_seconds: float
    schedule_source: str  # "default", "unscheduled" (fallback) or, later, "tuned:<record>"

    def __call__(self, *args):
        self.func(*args)


# Keyed by the spec object itself (a frozen dataclass: hashing it is cheaper than its JSON digest)
_cache: dict[tuple[Spec, TargetInfo], Kernel] = {}
_lock = threading.Lock()


def schedule(spec: Spec, target: TargetInfo):
    """Return ``(IRModule, plan, source)`` for ``spec``: the default schedule for CPU targets."""
    if target.kind == "llvm":
        plan = plan_for(spec, target.lanes(spec.dtype))
        mod, plan = default_schedule(spec, plan, target.lanes(spec.dtype), target.dict.get("num-cores", 1))
        return mod, plan, "default"
    plan = Plan()
    return tvm.IRModule({"main": prim_func(spec, plan)}), plan, "unscheduled"


def compile_spec(spec: Spec, target: TargetInfo) -> Kernel:
    """Schedule and compile ``spec`` for ``target``; a schedule that fails to compile falls back to
    the unscheduled definition (correct, slow) with a warning rather than failing the op."""
    t0 = time.perf_counter()
    mod, plan, source = schedule(spec, target)
    try:
        ex = tvm.compile(mod, target=target.tvm())
    except Exception as exc:  # a schedule bug must not make the op unusable
        log.warning("tvmconv: default schedule of %s failed to compile (%s); using the unscheduled kernel",
                    spec.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        plan, source = Plan(), "unscheduled"
        ex = tvm.compile(tvm.IRModule({"main": prim_func(spec, plan)}), target=target.tvm())
    func = ex["main"] if target.is_host_runnable else None
    return Kernel(spec, target, plan, func, ex, time.perf_counter() - t0, source)


def load(spec: Spec, target: TargetInfo) -> Kernel:
    """The compiled kernel for ``spec`` on ``target``, compiling it on first use."""
    key = (spec, target)
    kern = _cache.get(key)
    if kern is not None:
        return kern
    with _lock:
        kern = _cache.get(key)
        if kern is None:
            kern = compile_spec(spec, target)
            _cache[key] = kern
    return kern


def clear_memory_cache() -> None:
    with _lock:
        _cache.clear()
