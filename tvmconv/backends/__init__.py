"""Everything that knows a device kind, and the only modules that branch on it.

``backend_for(target)`` (or ``target.backend``) gives the target's ``Backend`` (base.py): its
facts, default schedule rules, toolchain, timing and vendor path. Layout: base.py (the interface,
target resolution for tensors on a device), llvm.py and llvm_schedules.py (the LLVM-CPU backend:
x86 and aarch64), cuda.py and cuda_schedules.py (the CUDA backend), blocking.py (the CPU blocking
rules), toolchain.py (native, cross and NDK linking), target.py (profiles, ``Facts``), timing.py,
registry.py (the backends there are: each registers its class when this package is imported).

Imported before any kernel is built or run (every kernel goes through a target), so the thread
settings below reach TVM's runtime before its thread pool starts."""

import os as _os

from .. import knobs as _knobs

# TVM's runtime sizes its thread pool once, at the first parallel kernel, from TVM_NUM_THREADS,
# else OMP_NUM_THREADS, else half the logical CPUs (it assumes x86 CPUs have two hyper-threads
# per core): on a 2-vCPU machine every kernel would run on one thread. Tell it, before any kernel
# runs, how many threads tvmconv's kernels may use; MetaSchedule's measuring workers inherit it.
_os.environ["TVM_NUM_THREADS"] = str(_knobs.num_threads())
# After a kernel, TVM's workers spin (300,000 sched_yield calls: 100+ ms on a VM) waiting for the
# next one. PyTorch's OpenMP threads running meanwhile then share cores with spinning threads:
# measured here, a model step mixing both took 14-17 ms instead of 2 ms. Workers that sleep at once
# cost a few microseconds per kernel launch instead.
_os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(_knobs.spin_count()))

from .base import Backend, backend_for  # noqa: E402,F401 - after the settings above
# each registers its backend (registry.py): the CPU's first
from . import llvm  # noqa: E402,F401
from . import cuda  # noqa: E402,F401

__all__ = ["Backend", "backend_for"]
