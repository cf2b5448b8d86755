"""TVM's parallel loops run on the process's OpenMP thread pool, PyTorch's, not on a second pool.

A CPU kernel compiled by TVM splits its outer loop through ``__TVMBackendParallelLaunch``: a
function pointer each loaded library holds, which TVM's runtime points at its own thread pool.
PyTorch runs its ops on an OpenMP pool whose idle workers spin for a while (libgomp: 300,000
spins) before sleeping. In a model mixing the two on 2 vCPUs, TVM's worker and PyTorch's spinning
worker took turns on one core: ResNet-18's converted layers took 64.5 ms a pass in the model
against 40.1 ms alone (benchmarks/results/x86-avx512-resnet18-in-model.md, Intel Xeon, AVX-512).
``share_pool`` points a loaded library's launch at the launcher (``openmp_launch.c``, beside this
module), which runs the tasks through the same OpenMP runtime (``GOMP_parallel``): whichever
worker is awake takes the next loop, PyTorch's or ours. It also points the library's temporary
buffers (``__TVMBackendAllocWorkspace``: a task's staged rows, a register tile's write-back) at a
per-thread arena: TVM's workspace pool cost 30-60 ns an alloc/free pair, and its kernels make one
or two pairs per parallel task (on the Zen 3, MobileNetV2's 14x14 and 7x7 depthwise layers ran
25-37% faster without them: benchmarks/results/x86-avx2-zen3-workspace-ab.md).

The launcher is compiled once per machine with the native C compiler (the one that links the
kernels) into the user cache, and bound to the OpenMP runtime already mapped into this process
(PyTorch's own copy first). Without a compiler, an OpenMP runtime, ``/proc`` or a writable cache,
or with ``TVMCONV_SHARED_POOL=0``, libraries keep TVM's pool (``pool()`` says which).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from .. import knobs, storage

log = logging.getLogger("tvmconv")

_RUNTIME = re.compile(r"/lib(gomp|omp|iomp5)[-.\w]*\.so[.\d]*$")
_forked = False  # this process is a fork of one that imported tvmconv


def _in_child() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_in_child)


class _Launcher(NamedTuple):
    launch: int  # tvmconv_parallel_launch's address (0: none could be built)
    alloc: int  # tvmconv_workspace_alloc's, tvmconv_workspace_free's
    free: int
    pool: str  # "openmp" or "tvm"


def pool() -> str:
    """Which pool this process's CPU kernels run on: ``"openmp"`` (shared with PyTorch) or ``"tvm"``."""
    return _launcher().pool


def share_pool(library: str | os.PathLike) -> bool:
    """Point the parallel launch of ``library`` (a kernel library TVM has loaded) at the launcher:
    on the shared pool, or on TVM's (where the pool is not shared) but run in turn in a forked
    child; and its temporary buffers at the launcher's per-thread arena. False where no launcher
    could be built (no C compiler: TVM's pool and workspace, as loaded, nothing changed) or the
    library has no parallel loop."""
    found = _launcher()
    if not found.launch:
        return False
    try:  # (the path TVM dlopen'ed: the same handle, and no second copy)
        lib = ctypes.CDLL(os.fspath(library))
    except OSError:
        return False
    pointed = False
    for name, value in (("__TVMBackendParallelLaunch", found.launch), ("__TVMBackendAllocWorkspace", found.alloc),
                        ("__TVMBackendFreeWorkspace", found.free)):
        try:
            slot = ctypes.c_void_p.in_dll(lib, name)
        except ValueError:  # (no parallel loop, no temporary buffer in it)
            continue
        slot.value = value
        pointed |= name == "__TVMBackendParallelLaunch"
    return pointed


def _openmp_runtime() -> str | None:
    """The path of the OpenMP runtime mapped into this process: PyTorch's if it has one."""
    import torch  # noqa: F401 - its OpenMP runtime is the pool worth sharing

    try:
        with open("/proc/self/maps") as f:
            found = {line.split()[-1] for line in f if _RUNTIME.search(line.rstrip())}
    except OSError:  # not Linux
        return None
    torch_dir = str(Path(torch.__file__).parent)
    return min(found, key=lambda p: (not p.startswith(torch_dir), p), default=None)


@functools.lru_cache(maxsize=1)
def _launcher() -> _Launcher:
    """The launcher's entry points, bound to this process's OpenMP runtime where the pool is shared,
    else to TVM's launch; its workspace functions fall back on TVM's."""
    runtime = _openmp_runtime() if knobs.shared_pool() else None
    if knobs.shared_pool() and runtime is None:
        log.info("tvmconv: no OpenMP runtime in this process; kernels keep TVM's thread pool")
    try:
        lib = ctypes.CDLL(str(_compiled()))
        import tvm  # noqa: F401 - its runtime defines the launch and the workspace functions

        here = ctypes.CDLL(None)
        lib.tvmconv_workspace_bind(*(ctypes.cast(getattr(here, name), ctypes.c_void_p) for name in
                                     ("TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace")))
        if runtime is not None:
            omp = ctypes.CDLL(runtime)
            lib.tvmconv_parallel_bind(*(ctypes.cast(getattr(omp, name), ctypes.c_void_p) for name in
                                        ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads",
                                         "omp_get_max_threads")),
                                      ctypes.c_int(knobs.num_threads()), ctypes.c_int(int(_forked)))
        else:
            tvm_launch = ctypes.cast(here.TVMBackendParallelLaunch, ctypes.c_void_p)
            lib.tvmconv_parallel_bind_tvm(tvm_launch, ctypes.c_int(int(_forked)))
        address = lambda name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0  # noqa: E731
        return _Launcher(address("tvmconv_parallel_launch"), address("tvmconv_workspace_alloc"),
                         address("tvmconv_workspace_free"), "openmp" if runtime is not None else "tvm")
    except (OSError, AttributeError, TypeError, subprocess.SubprocessError) as exc:
        log.warning("tvmconv: cannot build the kernels' thread-pool launcher (%s: %s); kernels run on TVM's own "
                    "pool", type(exc).__name__, exc)
        return _Launcher(0, 0, 0, "tvm")


# What openmp_launch.c does, and why:
# TVM's ABI (tvm/runtime/c_backend_api.h): the launch runs flambda(task_id, penv, cdata) for every
# task id below penv->num_task; num_task 0 means "as many as the pool has": here, OpenMP's thread
# count now (torch.set_num_threads sets it). A kernel that returned nonzero made the launch fail.
# TVM's CPU schedules use no TVMBackendParallelBarrier, so the env's sync_handle stays NULL. A team
# smaller than asked (a nested region) runs the remaining ids in turn.
# Neither libgomp's pool nor TVM's survives fork(): a parallel region in a child of a process that
# had one waits forever (gomp_team_end; TVM's queues). So kernels launch here even where PyTorch's
# pool is not shared (the launch then goes on to TVM's, ``tvm_launch``), and in a forked child the
# launch runs every task in turn: the child is
# told by pthread_atfork where the launcher was bound before the fork, else by Python's at-fork hook
# (``_in_child``: this module was imported before the fork), and a child that set one thread
# (DataLoader workers do: torch.set_num_threads(1)) runs in turn anyway.
def launch_source() -> str:
    """The launcher's C source (openmp_launch.c, shipped in the package). Its text names the
    compiled launcher in the cache: a changed byte compiles a new one."""
    return resources.files(__package__).joinpath("openmp_launch.c").read_text(encoding="utf-8")


def _compiled() -> Path:
    """The launcher's library: kept in the user cache's machine/ beside a manifest of its bytes
    (``storage.keep``: a file someone left there under its name is compiled over, never loaded),
    else compiled into a private temporary directory for this process."""

    cc = os.environ.get("CC", "gcc")
    name = f"openmp-launch-{storage.digest({'cc': cc, 'source': launch_source()})[:12]}.so"
    path = storage.user_root() / "machine" / name
    if storage.keep(path, lambda tmp: _compile(cc, tmp)):
        return path
    path = Path(tempfile.mkdtemp(prefix="tvmconv-openmp-")) / name  # (mode 0o700)
    _compile(cc, path)
    return path


def _compile(cc: str, out: Path) -> None:
    src = out.with_suffix(".c")
    try:
        src.write_text(launch_source())
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-pthread", str(src), "-o", str(out)], check=True,
                       capture_output=True, timeout=120)
    finally:
        src.unlink(missing_ok=True)
