"""The LLVM-CPU backend: x86 (AVX2, AVX-512) and aarch64 (NEON) profiles, built natively, with a
cross compiler or with the Android NDK. Its default schedules are in llvm_schedules.py, its
blocking rules in blocking.py."""

from __future__ import annotations

import time

from .base import Backend
from .timing import torch_threads
from .toolchain import Toolchain


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
    def tile_registers(self, dtype: str) -> int:
        """Vector registers the default schedule's register tile may hold at ``dtype``."""
        from .blocking import _tile_registers

        return _tile_registers(self.lanes(dtype), self.facts.vector_registers)

    # -- where the kernels run ---------------------------------------------------------------
    @property
    def torch_callable(self) -> bool:
        return self.target.runs_here

    @property
    def packs_weights(self) -> bool:
        return self.target.runs_here

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

        return plan_for(spec, self.lanes(spec.dtype), self.facts.vector_registers)

    def plan_candidates(self, spec) -> list:
        from .blocking import plan_candidates

        return plan_candidates(spec, self.lanes(spec.dtype), vector_registers=self.facts.vector_registers)

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
