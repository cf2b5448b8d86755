"""The LLVM-CPU backend: x86 (AVX2, AVX-512) and aarch64 (NEON) profiles, built natively, with a
cross compiler or with the Android NDK. Its default schedules are in llvm_schedules.py, its
blocking rules in blocking.py."""

from __future__ import annotations

import time

from . import registry
from .base import Backend
from .timing import torch_threads
from .toolchain import Toolchain


# CPUs LLVM gives half-precision vector arithmetic without an mattr saying so (avx512fp16)
_NATIVE_FP16_CPUS = ("sapphirerapids", "graniterapids", "graniterapids-d", "emeraldrapids")


@registry.register
class LLVMBackend(Backend):
    kind = "llvm"
    device_type = "cpu"
    description = "a CPU target"
    runner_device = "cpu"
    searches_sketch = True
    bench_goal_text = "compute: not slower than vendor; memory: 3x and 60% of bandwidth; fused: 1.5x"
    # Goals of issue 4 by kind of workload: (vendor_s / tvmconv_s at least, roofline fraction at least)
    BENCH_GOALS = {"compute": (1.0, None), "memory": (3.0, 0.60), "fused": (1.5, None)}

    @property
    def intrinsics_module(self) -> str:
        triple = self.target.dict.get("mtriple", "")
        return "arm_cpu" if triple.startswith(("aarch64", "arm")) else "riscv_cpu" if triple.startswith("riscv") else "x86"

    # -- facts -------------------------------------------------------------------------------
    def tile_registers(self, dtype: str, weights: int = 2) -> int:
        """Vectors of ``dtype`` the default schedule's register tile may hold beside ``weights``
        weight vectors (``blocking._tile_registers``)."""
        from .blocking import _tile_registers

        return _tile_registers(self.lanes(dtype), self.facts.vector_registers, self.registers_per_vector(dtype),
                               weights)

    def registers_per_vector(self, dtype: str) -> int:
        """SIMD registers one vector of ``dtype`` takes in the arithmetic: 2 for float16 where the
        target has no half-precision arithmetic (x86 without avx512fp16, aarch64 without fullfp16)
        -- LLVM converts every half vector to floats, twice as wide, for each multiply and add
        (vcvtph2ps/vcvtps2ph around vmulps and vaddps on AVX2) -- else 1."""
        if dtype != "float16":
            return 1
        d = self.target.dict
        feats = " ".join(d.get("mattr", []))
        native = "+avx512fp16" in feats or "+fullfp16" in feats or d.get("mcpu", "") in _NATIVE_FP16_CPUS
        return 1 if native else 2

    def serial_below_s(self) -> float:
        """The single-thread time below which a kernel runs on one thread: from what a parallel
        launch costs on the machine that runs the target (backends/launch.py)."""
        from .launch import parallel_launch_s, serial_below_s

        return serial_below_s(parallel_launch_s(self.target), self.cores)

    def _blocking_args(self, dtype: str) -> dict:
        return {"widen": self.registers_per_vector(dtype), "l1d_bytes": self.facts.l1d_bytes,
                "serial_below_s": self.serial_below_s()}

    # -- where the kernels run ---------------------------------------------------------------
    @property
    def torch_callable(self) -> bool:
        return self.target.runs_here

    @property
    def packs_weights(self) -> bool:
        return self.target.runs_here

    def schedule_model_functions(self, mod):
        import tvm

        from .llvm_generic import schedule_module

        return schedule_module(mod, tvm.target.Target(self.target.tvm()), self.lanes("float32"))

    def adopt_library(self, path) -> None:
        if self.target.runs_here:
            from .openmp import share_pool

            share_pool(path)

    @property
    def thread_pool(self) -> str:
        from .openmp import pool

        return pool() if self.target.runs_here else ""

    def unavailable(self, action: str) -> str | None:
        if self.target.runs_here:
            return None
        p = self.target.profile
        return (f"target {p!r} does not run on this machine's CPU; {action} runs on the machine it times (use "
                f"`tvmconv export --target {p} --check` to run it under emulation)")

    def check_tensors(self, op: str, device) -> None:
        tgt = self.target
        if device is not None and device.type != self.device_type:
            raise ValueError(f"{op}: the tensors are on '{device}' but target {tgt.profile!r} is a CPU target "
                             f"({tgt.kind}); pass target=None or a CUDA profile such as 'cuda-sm90', or move the "
                             f"tensors with .cpu()")
        if not tgt.runs_here:
            raise ValueError(f"{op}: target {tgt.profile!r} ({tgt.kind}, {tgt.dict.get('mtriple', '')}) does not run "
                             f"on this machine's CPU; ops run on CPU targets of this host and on CUDA GPUs. Use "
                             f"`tvmconv export --target {tgt.profile}` to compile for it")

    # -- default schedule rules --------------------------------------------------------------
    def default_plan(self, spec):
        from .blocking import plan_for

        return plan_for(spec, self.lanes(spec.dtype), self.facts.vector_registers, **self._blocking_args(spec.dtype))

    def plan_candidates(self, spec) -> list:
        from .blocking import plan_candidates

        return plan_candidates(spec, self.lanes(spec.dtype), vector_registers=self.facts.vector_registers,
                               **self._blocking_args(spec.dtype))

    def transfer_record(self, record, spec, source):
        """A record of a profile with the same vector width and register file is replayed as it is.
        One of another width is transferred: its plan re-derived for this target's lanes and
        registers (``blocking.transfer_plan``: the record's vectors a block and pixel tile, on
        this width) under this target's default schedule -- not its trace, whose decisions are
        made in the other width's blocks. Measured on an AVX-512 Xeon (docs/design.md): on ResNet-18
        layers the transferred build beat both the AVX2 code and our untuned default (886 against
        1298 and 1622 us, geometric mean), on MobileNet v1's it tied; the trace replayed with its
        lane split rescaled did not beat it."""
        from .blocking import transfer_plan
        from .llvm_schedules import trace_json
        from ..variants.compute import plan_from_dict, plan_to_dict

        dtype = spec.dtype
        old, new = source.lanes(dtype), self.lanes(dtype)
        same_regs = source.facts.vector_registers == self.facts.vector_registers
        if old == new and same_regs:
            return record
        plan = transfer_plan(plan_from_dict(record.plan), spec, old, new, self.facts.vector_registers,
                             **self._blocking_args(dtype))
        sch, used = self.default_schedule(spec, plan)
        return record.replace(plan=plan_to_dict(used), trace=trace_json(sch), transferred_from=source.profile,
                              dispatch=None, validated=None)

    def default_schedule(self, spec, plan=None):
        """``(Schedule, Plan)``; ``plan``: another blocking than ``default_plan``'s."""
        from .llvm_schedules import default_schedule

        lanes = self.lanes(spec.dtype)
        return default_schedule(spec, plan if plan is not None else self.default_plan(spec), lanes, self.cores)

    # -- toolchain ---------------------------------------------------------------------------
    def toolchain(self) -> Toolchain:
        return Toolchain.for_target(self.target)

    @property
    def exports_c_library(self) -> bool:
        return True

    def export_kernel(self, func, cname: str, out, build_target, tools: Toolchain | None = None) -> dict:
        """``<cname>.so`` (linked with the target's toolchain) and ``<cname>.o`` (a system-library
        object for the static library)."""
        import tvm

        tools = tools or self.toolchain()
        ex = tvm.compile(tvm.IRModule({cname: func}), target=build_target.tvm())
        so = out / f"{cname}.so"
        tools.export_library(ex, str(so))
        sys_ex = tvm.compile(tvm.IRModule({cname: func.with_attr("system_lib_prefix", "")}), target=build_target.tvm())
        obj = out / f"{cname}.o"
        sys_ex.mod.write_to_file(str(obj))
        return {"shared": so.name, "object": obj.name}

    # -- tuning ------------------------------------------------------------------------------
    def cost_model_family(self) -> str | None:
        return "x86" if self.intrinsics_module == "x86" else None  # (the shipped logs are x86's)

    def search_threads(self) -> int:
        return self.cores

    def tuning_unavailable(self) -> str | None:
        if self.target.runs_here:
            return None
        return (f"target {self.target.profile!r} cannot run on this machine: pass rpc='HOST:PORT:KEY' naming an RPC "
                f"tracker and the key its devices registered under")

    def measure_without_pack(self, measure_kind: str) -> bool:
        # An RPC device allocates its own arguments, without the slack a kernel without its packing needs
        return measure_kind != "rpc"

    # -- timing and the vendor path ----------------------------------------------------------
    def time(self, fns, *, rounds: int = 7, threads: int | None = None) -> list[list[float]]:
        from . import timing

        with torch_threads(threads):
            return timing.interleaved_many(fns, rounds=rounds)

    def roofline(self, threads: int, *, gemm_n: int = 2048, copy_mb: int = 256) -> tuple[float, float, int]:
        """Peak FLOP/s from torch.mm on (gemm_n x gemm_n) float32 matrices; bandwidth from copying a
        ``copy_mb`` MiB buffer (bytes read + bytes written), best of several runs each."""
        import torch

        with torch_threads(threads):
            a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
            c = torch.empty(gemm_n, gemm_n)
            t_mm = _best(lambda: torch.mm(a, b, out=c), 5)
            src = torch.ones(copy_mb * 2 ** 20 // 4)
            dst = torch.empty_like(src)
            t_cp = _best(lambda: dst.copy_(src), 5)
        return 2 * gemm_n ** 3 / t_mm, 2 * src.numel() * 4 / t_cp, threads

    @classmethod
    def bench_goal(cls, family: str, kind: str) -> tuple[float, float | None]:
        return cls.BENCH_GOALS[kind]


def _best(fn, n: int) -> float:
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)
