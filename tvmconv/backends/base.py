"""The one interface behind which every device difference sits (like Triton's ``BaseBackend``):
``backend_for(target)`` gives the ``Backend`` of a target's device kind, and the rest of tvmconv
asks it -- vector lanes, registers and caches (the target's ``Facts``), the default schedule,
how to compile, link and export, how to time, what the vendor path needs -- instead of testing
the kind itself. Two backends: ``LLVMBackend`` (x86 and aarch64 CPUs, backends/llvm.py) and
``CUDABackend`` (backends/cuda.py). tests/backends/test_device_kind_guard.py keeps every other
module from branching on the kind.

No TVM or torch import here: the command line and the argument checks import this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
from typing import Callable

from . import registry
from .target import TargetInfo, resolve


class Backend:
    """A target's device kind. One object per ``TargetInfo`` (``target.backend``)."""

    kind = ""  # the TVM target kind it compiles for
    device_type = ""  # the torch device type of the tensors its kernels take
    description = ""  # for messages: "a CPU target", "a CUDA target"

    def __init__(self, target: TargetInfo):
        self.target = target
        self.facts = target.facts

    @classmethod
    def code_hash(cls) -> str:
        """A digest of the code this backend compiles with, part of every kernel's cache key
        (runtime/build.py): the source of the module that defines the class, so a backend registered
        from outside the package (Triton's ``hash()``) never loads a library its older code built.
        A backend spread over several modules overrides it."""
        return _module_digest(cls.__module__)

    # -- target facts ------------------------------------------------------------------------
    def lanes(self, dtype: str) -> int:
        """Elements of ``dtype`` in one vector (``facts.vector_bits``)."""
        return self.target.lanes(dtype)

    @property
    def cores(self) -> int:
        """Threads the kernels run on (``num-cores``; a GPU: its multiprocessors, 0 if unknown)."""
        return self.target.num_cores

    # -- where the kernels run ---------------------------------------------------------------
    @property
    def torch_callable(self) -> bool:
        """Its compiled kernels are called by the ops in this process (on this CPU, or a GPU)."""
        raise NotImplementedError

    @property
    def packs_weights(self) -> bool:
        """The op packs the weight in a kernel of its own (``runtime.build.split_weight_pack``)."""
        return False

    def unavailable(self, action: str) -> str | None:
        """Why ``action`` ("bench", "tune") cannot run this target on this machine; None if it can."""
        raise NotImplementedError

    def check_tensors(self, op: str, device) -> None:
        """Raise ValueError naming ``op`` when tensors on ``device`` cannot run on this target."""
        raise NotImplementedError

    @classmethod
    def target_of_device(cls, device) -> TargetInfo:
        """The target of tensors on ``device`` (a torch.device of this backend's ``device_type``)
        called without one: a GPU's own profile."""
        raise NotImplementedError

    # -- default schedule rules --------------------------------------------------------------
    def default_plan(self, spec):
        """The ``Plan`` (compute blocking) the default schedule is written for."""
        raise NotImplementedError

    def plan_candidates(self, spec) -> list:
        """Other blockings worth measuring while tuning (none where the search starts from the plain
        compute)."""
        return []

    def default_schedule(self, spec, plan=None):
        """``(Schedule, Plan)``: the default schedule, a trace a record can hold; ``plan``: one of
        ``plan_candidates`` instead of ``default_plan``'s blocking."""
        raise NotImplementedError

    def template_schedules(self, spec) -> list:
        """``[(Plan, Schedule), ...]``: hand-written schedules with knobs worth measuring while
        tuning, beside the default (none where the plan candidates are the knobs)."""
        return []

    def transfer_record(self, record, spec, source: TargetInfo):
        """``record`` (a ``ScheduleRecord`` of ``spec`` tuned on ``source``, a profile this target
        lists as ``compatible``) as a record to compile for this target: the record itself where
        its schedule suits this target as it is, a record re-derived for this target (its
        ``transferred_from`` set) where it does not, or None where it cannot be (the default
        schedule is used). Never a schedule to be compiled as ``source``'s code."""
        return None

    def default_module(self, spec):
        """``(IRModule, Plan)`` of the default schedule."""
        sch, plan = self.default_schedule(spec)
        return sch.mod, plan

    def compile_fallback(self, spec):
        """The module to compile where a schedule failed to, or None: the unscheduled compute."""
        return None

    def schedule_model_functions(self, mod):
        """``(mod, {rule: functions})``: the TIR functions of a whole model's Relax module that are
        not tvmconv kernels (LegalizeOps' pooling, adds, activations, matmuls), scheduled for this
        kind. Unchanged by default."""
        return mod, {}

    # -- toolchain ---------------------------------------------------------------------------
    def before_compile(self) -> None:
        """Set up what ``tvm.compile`` needs for this kind (once per process is enough)."""

    def before_load(self) -> None:
        """Set up what loading a kernel library needs for this kind (nothing by default)."""

    def adopt_library(self, path) -> None:
        """Set up a kernel library TVM has just loaded from ``path`` to run here (nothing by default)."""

    @property
    def thread_pool(self) -> str:
        """The thread pool this kind's kernels run on here: part of the machine key, since what a
        parallel launch costs depends on it ("" where there is none to choose)."""
        return ""

    def toolchain(self):
        """The ``Toolchain`` that links this target's libraries (None: TVM's own, e.g. CUDA)."""
        return None

    def export_library(self, executable, path: str) -> None:
        """Write ``executable`` as a loadable library at ``path`` with this target's toolchain."""
        tools = self.toolchain()
        if tools is None:
            executable.export_library(str(path))
        else:
            tools.export_library(executable, str(path))

    @property
    def exports_c_library(self) -> bool:
        """``tvmconv export`` writes a static library, a header and a C example for it."""
        return False

    def export_kernel(self, func, cname: str, out, build_target: TargetInfo) -> dict:
        """Compile one kernel (``func``, named ``cname``) into files under ``out``; returns the
        manifest's ``files`` entry."""
        raise NotImplementedError

    # -- tuning ------------------------------------------------------------------------------
    def tuning_export(self):
        """MetaSchedule ``LocalBuilder``'s ``f_export`` for this target (None: its default)."""
        tools = self.toolchain()
        return tools.tuning_export() if tools is not None else None

    runner_device = ""  # MetaSchedule ``RunnerInput``'s device ("cpu", "cuda")
    intrinsics_module = ""  # the ``tvm.s_tir.tensor_intrin`` module MetaSchedule's rules look up
    searches_sketch = False  # the search space is the default schedule as a sketch (else MetaSchedule's own)

    def cost_model_family(self) -> str | None:
        """The shipped MetaSchedule cost model this target's search starts from
        (``costmodels/<family>.tar``, ``tuning.costmodel``); None: none, the search's model starts
        empty."""
        return None

    def search_threads(self) -> int:
        """Threads the search itself may use."""
        import os

        return os.cpu_count() or 1

    def measure_without_pack(self, measure_kind: str) -> bool:
        """Trials time the kernel without its weight packing, as the op runs it."""
        return False

    def tuning_unavailable(self) -> str | None:
        """Why tuning cannot measure this target's trials on this machine (without an RPC tracker);
        None if it can."""
        raise NotImplementedError

    def runner_repeat_ms(self, min_repeat_ms: int) -> int:
        """MetaSchedule's ``min_repeat_ms`` for a trial of this target."""
        return min_repeat_ms

    # -- timing and the vendor path ----------------------------------------------------------
    def time(self, fns: list[Callable[[], object]], *, rounds: int = 7, threads: int | None = None) -> list[list[float]]:
        """Seconds per call of each of ``fns`` (interleaved rounds, see backends/timing.py),
        synchronised with the device where it runs asynchronously."""
        raise NotImplementedError

    def vendor_mode(self):
        """A context manager under which the vendor path computes as tvmconv's kernels do."""
        return contextlib.nullcontext()

    def to_device(self, tensor):
        """``tensor`` where this target's kernels take it."""
        return tensor

    def vendor_name(self, cpu_name: str) -> str:
        """The vendor library's name on this device, from its CPU one (oneDNN)."""
        return cpu_name

    def roofline(self, threads: int, **sizes) -> tuple[float, float, int]:
        """``(peak FLOP/s, bandwidth bytes/s, threads)`` measured now with torch on this device."""
        raise NotImplementedError

    def machine(self) -> str | None:
        """The device, for reports (None: the host CPU's description)."""
        return None

    def device_model(self) -> str:
        """The model of the device the kernels run on, for the machine key (backends/machine.py)."""
        from .machine import cpu_model

        return cpu_model()

    def time_call(self, fn: Callable[[], object]) -> tuple[object, float]:
        """``(fn(), seconds it took)``: one call, timed where it runs (first-use calibration)."""
        import time

        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    bench_goal_text = ""  # what `tvmconv bench` reports its goals as

    @classmethod
    def bench_goal(cls, family: str, kind: str) -> tuple[float, float | None]:
        """``(speed-up at least, roofline fraction at least)`` for a bench record."""
        raise NotImplementedError


def supported(target: TargetInfo) -> bool:
    """A backend exists for ``target``'s kind (else its kernels are built unscheduled)."""
    return target.kind in registry.kinds()


@functools.lru_cache(maxsize=None)
def _module_digest(name: str) -> str:
    """sha256 of module ``name``'s source file (16 hex digits; "" where it has none)."""
    path = getattr(sys.modules.get(name), "__file__", None)
    if not path or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def backend_for(target) -> Backend:
    """The backend of ``target`` (anything ``resolve`` accepts). Raises ValueError for a kind no
    backend handles."""
    tgt = target if isinstance(target, TargetInfo) else resolve(target)
    try:
        cls = registry.backend_class(tgt.kind)
    except ValueError as exc:
        raise ValueError(f"target {tgt.profile!r}: {str(exc).removeprefix('target: ')}") from None
    return cls(tgt)


def backend_class(kind: str) -> type[Backend]:
    """The backend class of a TVM target kind (a bench record's ``target_kind``)."""
    return registry.backend_class(kind)


def target_for_tensors(op: str, device, target) -> TargetInfo:
    """The target a call of ``op`` on tensors on ``device`` (a torch.device, None: the CPU) runs
    on: ``target`` (or the default) for CPU tensors; for tensors on a GPU, ``target`` if it is a
    target of that device, else the profile of the tensors' own GPU. Raises ValueError where the
    two do not match, or the target does not run here."""
    dev = device.type if device is not None else "cpu"
    if dev != "cpu" and (target is None or (isinstance(target, str) and target in ("host", "native", dev))):
        cls = registry.for_device(dev)
        if cls is None:
            raise ValueError(f"{op}: no tvmconv backend runs tensors on {dev!r} (backends for: "
                             f"{', '.join(registry.device_types())})")
        return cls.target_of_device(device)
    tgt = resolve(target)
    backend = tgt.backend
    backend.check_tensors(op, device)
    return tgt
