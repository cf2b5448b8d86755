"""The CUDA backend: NVIDIA GPUs through TVM's CUDA codegen (NVRTC, or nvcc without the
cuda-bindings package), timed with CUDA events, compared with cuDNN through PyTorch with TF32 off.
Its default schedules are in cuda_schedules.py."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

from .. import storage
from . import registry
from .base import Backend
from .target import TargetInfo, make, profiles

log = logging.getLogger("tvmconv")

# On CUDA (issue 6), against cuDNN through PyTorch: depthwise, grouped and fused variants faster;
# the standard ones (dense, pointwise, dilated, 1-D, 3-D, transposed) within 10%
BENCH_GOALS = {"faster": (1.0, None), "within10": (1 / 1.1, None)}
FASTER_FAMILIES = {"depthwise", "grouped", "shuffled_group", "depthwise_separable", "effnet_block",
                   "spatial_separable_conv2d", "flattened_conv2d", "channel_wise_conv", "squeeze_excitation",
                   "channel_shuffle", "deform_conv2d"}


@registry.register
class CUDABackend(Backend):
    kind = "cuda"
    device_type = "cuda"
    description = "a CUDA target"
    runner_device = "cuda"
    intrinsics_module = "cuda"
    searches_sketch = False
    bench_goal_text = "depthwise, grouped and fused: faster than cuDNN; the others: within 10% of it"

    @property
    def cores(self) -> int:
        return self.facts.multiprocessors

    # -- where the kernels run ---------------------------------------------------------------
    @property
    def torch_callable(self) -> bool:
        return True  # on the tensors' GPU

    @classmethod
    def target_of_device(cls, device) -> TargetInfo:
        return target_of_device(device)

    def unavailable(self, action: str) -> str | None:
        import torch

        if torch.cuda.is_available():
            return None
        return (f"target {self.target.profile!r} is a CUDA target and PyTorch sees no CUDA GPU here; {action} it on "
                f"a GPU machine")

    def check_tensors(self, op: str, device) -> None:
        tgt = self.target
        if device is None or device.type != self.device_type:
            raise ValueError(f"{op}: target {tgt.profile!r} runs on a CUDA GPU, but the tensors are on the CPU; "
                             f"move them with .cuda() (or export the kernels with `tvmconv export --target "
                             f"{tgt.profile}`)")

    # -- default schedule rules --------------------------------------------------------------
    def default_plan(self, spec):
        from ..variants.compute import Plan

        return Plan()  # the compute as written: the schedule does the blocking

    def default_schedule(self, spec, plan=None):  # (no plan_candidates: plan is None)
        from .cuda_schedules import cuda_default_schedule

        return cuda_default_schedule(spec, self.target), self.default_plan(spec)

    def template_schedules(self, spec, top: int = 6) -> list:
        """The ``top`` settings of the spec's template (cuda_templates.py) by its rough model:
        ``tvmconv tune`` measures them before MetaSchedule's search (the GPU plan, all of them)."""
        from .cuda_templates import candidates, plan, schedule

        out = []
        for knobs in candidates(spec, top):
            try:
                out.append((plan(spec), schedule(spec, knobs)))
            except Exception:  # noqa: BLE001 - a setting the compute cannot take is not measured
                continue
        return out

    def compile_fallback(self, spec):
        # an unscheduled kernel would run on the host, on device memory: never that
        from .cuda_schedules import cuda_direct_schedule

        return cuda_direct_schedule(spec).mod

    # -- toolchain ---------------------------------------------------------------------------
    def before_compile(self) -> None:
        use_nvcc()
        use_binary_cache()

    def before_load(self) -> None:
        use_binary_cache()

    def export_kernel(self, func, cname: str, out, build_target, tools=None) -> dict:
        """``<cname>.cu`` (the CUDA source) and ``<cname>.cubin`` (nvcc, for the target's arch)."""
        import tvm
        from tvm.support import nvcc

        use_nvcc()
        ex = tvm.compile(tvm.IRModule({cname: func}), target=build_target.tvm())
        src = ex.mod.imports[0].inspect_source()
        (out / f"{cname}.cu").write_text(src)
        arch = build_target.dict.get("arch", "sm_80")
        with tvm.target.Target(build_target.tvm()):
            cubin = nvcc.compile_cuda(src, target_format="cubin", arch=arch, compiler="nvcc")
        (out / f"{cname}.cubin").write_bytes(cubin)
        return {"cuda": f"{cname}.cu", "cubin": f"{cname}.cubin"}

    # -- tuning ------------------------------------------------------------------------------
    def tuning_unavailable(self) -> str | None:
        # MetaSchedule's runner times through TVM's CUDA runtime: ask TVM, not PyTorch (``unavailable``)
        if tvm_sees_gpu():
            return None
        return (f"target {self.target.profile!r} is a CUDA target and this machine has no CUDA GPU that TVM can "
                f"use: tune on a GPU machine, or pass rpc='HOST:PORT:KEY' naming an RPC tracker whose devices "
                f"have one")

    def runner_repeat_ms(self, min_repeat_ms: int) -> int:
        # a GPU kernel's time varies little, and tens of candidates are timed per batch
        return min(min_repeat_ms, 20)

    # -- timing and the vendor path ----------------------------------------------------------
    def time(self, fns, *, rounds: int = 7, threads: int | None = None) -> list[list[float]]:
        """GPU time from CUDA events (calls are queued asynchronously: launches are not timed)."""
        from . import timing

        return timing.interleaved_cuda(fns, rounds=rounds)

    def vendor_mode(self):
        return strict_fp32()

    def to_device(self, tensor):
        return tensor.cuda()

    def vendor_name(self, cpu_name: str) -> str:
        return cpu_name.replace("oneDNN", "cuDNN")

    def roofline(self, threads: int, *, gemm_n: int = 8192, copy_mb: int = 2048) -> tuple[float, float, int]:
        """The GPU's: 8192 x 8192 SGEMM (TF32 off: strict FP32, as the kernels compute) and a
        2 GiB copy, timed with CUDA events."""
        import torch

        from . import timing

        with strict_fp32():
            a, b = torch.randn(gemm_n, gemm_n, device="cuda"), torch.randn(gemm_n, gemm_n, device="cuda")
            c = torch.empty(gemm_n, gemm_n, device="cuda")
            src = torch.ones(copy_mb * 2 ** 20 // 4, device="cuda")
            dst = torch.empty_like(src)
            t_mm, t_cp = (min(t) for t in timing.interleaved_cuda(
                [lambda: torch.mm(a, b, out=c), lambda: dst.copy_(src)], rounds=5, min_round_s=0.05))
        return 2 * gemm_n ** 3 / t_mm, 2 * src.numel() * 4 / t_cp, torch.get_num_threads()

    def device_model(self) -> str:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"

    def time_call(self, fn):
        """One call's GPU time: the stream drained before and after (first-use calibration only)."""
        import time

        import torch

        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    def machine(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return None
        return (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"cuDNN {torch.backends.cudnn.version()}")

    @classmethod
    def bench_goal(cls, family: str, kind: str) -> tuple[float, float | None]:
        return BENCH_GOALS["faster" if family in FASTER_FAMILIES else "within10"]


def use_nvcc() -> None:
    """TVM compiles CUDA with NVRTC (the cuda-bindings package) unless told otherwise; without
    that package, use the CUDA toolkit's nvcc."""
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")


# TVM 0.27's runtime compiles a library's CUDA source each time the library is loaded, through
# its ``tvm_callback_cuda_compile`` hook (a second or two of nvcc or NVRTC per kernel). The binary
# cache answers that hook from the user cache instead; the GPU plan fills it ahead of its loads,
# on many cores (``prebuild_binary``).
_HOOK = "tvm_callback_cuda_compile"
_tvm_compile = None  # TVM's own hook, as registered before ours
binary_stats = {"read": 0, "compiled": 0}  # this process's answers from the cache (the GPU plan logs them)


def _tvm_hook():
    global _tvm_compile
    import tvm_ffi

    if _tvm_compile is None:
        use_nvcc()
        from tvm.support import nvcc  # noqa: F401 - registers TVM's hook

        _tvm_compile = tvm_ffi.get_global_func(_HOOK)
    return _tvm_compile


def binary_path(code: str) -> Path:
    """Where the binary cache keeps the binary of CUDA source ``code``: named by the source, the
    compute capability TVM compiles for now (the target in scope, else the GPU's), the compile
    mode and TVM's version."""
    from tvm.support import nvcc
    from tvm.target import Target

    key = {"source": code, "arch": nvcc.get_target_compute_version(Target.current(allow_none=True)),
           "mode": os.environ.get("TVM_CUDA_COMPILE_MODE", "nvrtc"), "tvm": storage.tvm_version()}
    return storage.user_root() / "machine" / "cuda-bin" / f"{storage.digest(key)[:32]}.bin"


def _cached_binary(code: str) -> bytes | None:
    """The binary of ``code`` from the cache, compiled by TVM's hook into it first where it is not
    there (beside a manifest of its bytes: ``storage.keep``); None where the cache cannot hold it."""

    path, made = binary_path(code), []

    def make(tmp: Path) -> None:
        made.append(tmp)
        tmp.write_bytes(bytes(_tvm_hook()(code)))

    if not storage.keep(path, make):
        return None
    binary_stats["compiled" if made else "read"] += 1
    return path.read_bytes()


@functools.lru_cache(maxsize=1)
def use_binary_cache() -> None:
    """Once per process: TVM's hook is answered from the binary cache, in this process and the
    next. Where the cache cannot serve, TVM compiles as before: the cache never fails a load."""
    import tvm_ffi

    tvm_compile = _tvm_hook()

    def cached(code):
        try:
            found = _cached_binary(code)
            if found is not None:
                return found
        except Exception as exc:  # noqa: BLE001 - never worse than TVM's own compile
            log.info("tvmconv: CUDA binary cache unavailable (%s)", str(exc).splitlines()[-1] if str(exc) else exc)
        return tvm_compile(code)

    tvm_ffi.register_global_func(_HOOK, cached, override=True)


def prebuild_binary(source: str, target: TargetInfo) -> None:
    """Compile ``source`` (a CUDA module's) into the binary cache for ``target``'s arch, where the
    runtime will look for it when a library holding it is loaded on such a GPU."""
    import tvm

    with tvm.target.Target(target.tvm()):
        if _cached_binary(source) is None:
            raise OSError("the user cache cannot hold CUDA binaries")


def tvm_sees_gpu() -> bool:
    """Whether TVM can run kernels on CUDA device 0 here."""
    import tvm

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - a TVM built without CUDA, or no driver
        return False


class strict_fp32:
    """Inside the block: TF32 off for cuDNN convolutions and cuBLAS matrix products (PyTorch lets
    cuDNN use TF32 by default), so the vendor path computes in FP32 as tvmconv's kernels do; and
    cuDNN's own autotuning on (``cudnn.benchmark``: it times its algorithms per shape and keeps
    the fastest), its best case."""

    def __enter__(self):
        import torch

        b = torch.backends
        self.old = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark)
        b.cudnn.allow_tf32 = b.cuda.matmul.allow_tf32 = False
        b.cudnn.benchmark = True

    def __exit__(self, *exc):
        import torch

        b = torch.backends
        b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark = self.old


def target_of_device(device) -> TargetInfo:
    """The target of the CUDA device of ``device`` (a torch.device; no index: the current one)."""
    import torch

    return for_cuda_device(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=16)
def for_cuda_device(index: int) -> TargetInfo:
    """The target of CUDA device ``index`` (ops given CUDA tensors and no ``target``): the profile
    named for its compute capability (``cuda-sm90`` on an H100), else a CUDA target dict for it.
    Read once per device."""
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    name = f"cuda-sm{major}{minor}"
    found = profiles()
    if name in found:
        return found[name].target_info()
    return make({"kind": "cuda", "arch": f"sm_{major}{minor}", "max_threads_per_block": 1024,
                 "max_shared_memory_per_block": 49152, "thread_warp_size": 32,
                 "host": {"kind": "llvm"}}, profile="custom")
