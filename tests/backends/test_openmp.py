"""CPU kernels' parallel loops on PyTorch's OpenMP pool (backends/openmp.py)."""

import ctypes
import os
import shutil
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

import tvmconv.functional as TF
from tvmconv import knobs
from tvmconv.backends import openmp
from tvmconv.backends.machine import machine_of
from tvmconv.backends.target import resolve
from tvmconv.runtime import build

# (where both are there the pool must be shared: a skip on pool() would hide a broken launcher)
pytestmark = pytest.mark.skipif(not (sys.platform == "linux" and shutil.which(os.environ.get("CC", "gcc"))),
                                reason="the shared pool needs Linux and a C compiler")


class _Env(ctypes.Structure):
    _fields_ = [("sync_handle", ctypes.c_void_p), ("num_task", ctypes.c_int32)]


_LAMBDA = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Env), ctypes.c_void_p)
_LAUNCH = ctypes.CFUNCTYPE(ctypes.c_int, _LAMBDA, ctypes.c_void_p, ctypes.c_int)


def _launch(num_task: int, fail_at: int = -1):
    """Run the launcher on a Python task that records ``(task_id, penv.num_task, thread)``."""
    seen = []

    def task(task_id, env, _):
        seen.append((task_id, env.contents.num_task, threading.get_ident()))
        return -1 if task_id == fail_at else 0

    rc = _LAUNCH(openmp._launcher()[0])(_LAMBDA(task), None, num_task)
    return rc, seen


@pytest.mark.parametrize("num_task, expect", [(0, None), (1, 1), (5, 5)])
def test_the_launcher_runs_every_task_once(num_task, expect):
    expect = expect or min(knobs.num_threads(), torch.get_num_threads())  # 0: one per thread, as torch's
    rc, seen = _launch(num_task)
    assert rc == 0
    assert sorted(t for t, _, _ in seen) == list(range(expect))
    assert {n for _, n, _ in seen} == {expect}  # each task sees how many there are
    if expect > 1 and torch.get_num_threads() > 1:
        assert len({ident for _, _, ident in seen}) > 1  # and they ran on the pool, not one thread


def test_a_failed_task_fails_the_launch():
    rc, seen = _launch(4, fail_at=2)
    assert rc == -1 and sorted(t for t, _, _ in seen) == [0, 1, 2, 3]


def test_a_forked_child_runs_the_tasks_in_turn():
    import multiprocessing as mp

    _launch(2)  # the pool exists in the parent
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:  # libgomp's workers are not in the child: a pool launch would hang
        rc, ids = pool.apply_async(_child_launch).get(timeout=60)
    assert rc == 0 and ids == [0, 1, 2, 3]


def _child_launch():
    rc, seen = _launch(4)
    return rc, sorted(t for t, _, _ in seen)


def test_one_torch_thread_runs_the_tasks_in_turn():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc, seen = _launch(0)
    finally:
        torch.set_num_threads(threads)
    assert rc == 0 and [t for t, _, _ in seen] == [0]


# A process of its own: the launcher bound first in the child (the parent ran only PyTorch's
# convolutions) as in a DataLoader worker, or bound in the parent, on either pool. (A child that
# keeps several threads after its parent ran OpenMP hangs in PyTorch's own ops: DataLoader sets one.)
_FORK = """
import os, sys, torch, torch.nn.functional as F
import tvmconv.functional as TF
x, w = torch.randn(1, 16, 20, 20), torch.randn(32, 16, 3, 3)
(TF.conv2d if sys.argv[1] == "kernel" else F.conv2d)(x, w)  # the parent's pool has run
want = F.conv2d(x, w)
pid = os.fork()
if pid == 0:
    torch.set_num_threads(1)
    ok = torch.allclose(TF.conv2d(x, w), want, atol=1e-4, rtol=1e-4)
    os._exit(0 if ok else 3)
print(os.waitpid(pid, 0)[1])
"""


@pytest.mark.parametrize("case, pool", [("torch", "1"), ("kernel", "1"), ("kernel", "0")])
def test_a_forked_child_runs_kernels_on_any_pool(tmp_path, case, pool):
    import subprocess

    env = {**os.environ, "TVMCONV_CACHE_DIR": str(tmp_path), "TVMCONV_SHARED_POOL": pool, "TVMCONV_DISPATCH": "0"}
    # a session of its own: a hung child is killed with its parent (an orphan would spin on)
    proc = subprocess.Popen([sys.executable, "-c", _FORK, case], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail("the forked child hung")
    assert proc.returncode == 0 and stdout.split()[-1] == "0", stderr[-2000:]


def test_loaded_kernels_run_on_the_shared_pool_and_match_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TVMCONV_PARALLEL_LAUNCH_US", "0")  # split every kernel
    monkeypatch.setenv("TVMCONV_DISPATCH", "0")  # the kernel, never the vendor path
    x, w = torch.randn(1, 32, 28, 28), torch.randn(64, 32, 3, 3)
    spec = TF.spec_of(TF.conv2d, x, w, padding=1)
    for fresh in (True, False):  # compiled (then loaded from the cache), and loaded
        build.clear_memory_cache()
        for _ in range(20):  # the pool's threads take turns with torch's own ops between calls
            out = TF.conv2d(x, w, padding=1)
            torch.add(x, 1)
        kern = build.load(spec, resolve(None))
        assert (kern.loaded_from == "") == fresh and not kern.plan.serial
        lib = ctypes.CDLL(next(tmp_path.rglob("kernels/*/*.so")).as_posix())
        assert ctypes.c_void_p.in_dll(lib, "__TVMBackendParallelLaunch").value == openmp._launcher()[0]
        torch.testing.assert_close(out, F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    build.clear_memory_cache()


_ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_int, ctypes.c_int)
_FREE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def test_temporary_buffers_come_from_a_per_thread_arena_in_nested_pairs():
    """A kernel's buffers are allocated and freed in nested pairs: the arena hands out aligned,
    disjoint blocks, a free pops back to the block freed, and what does not fit (or is not for the
    CPU) goes to TVM's workspace and back."""
    found = openmp._launcher()
    alloc, free = _ALLOC(found.alloc), _FREE(found.free)
    a = alloc(1, 0, 1152, 2, 32)
    b = alloc(1, 0, 64, 2, 32)
    assert a % 64 == 0 and b % 64 == 0 and b >= a + 1152
    ctypes.memset(a, 1, 1152)
    ctypes.memset(b, 2, 64)  # (disjoint: a's bytes stay)
    assert ctypes.string_at(a, 1152) == b"\x01" * 1152
    assert free(1, 0, b) == 0 and free(1, 0, a) == 0
    assert alloc(1, 0, 16, 2, 32) == a  # popped back: the next pair starts where a did
    assert free(1, 0, a) == 0
    big = alloc(1, 0, 4 << 20, 2, 32)  # more than the arena holds: TVM's workspace
    assert big and not a <= big < a + (1 << 20)
    ctypes.memset(big, 0, 4 << 20)
    assert free(1, 0, big) == 0
    seen = []

    def task(task_id, env, _):  # each thread its own arena
        p = alloc(1, 0, 256, 2, 32)
        ctypes.memset(p, task_id, 256)
        seen.append((p, threading.get_ident(), ctypes.string_at(p, 256) == bytes([task_id]) * 256))
        return free(1, 0, p)

    assert _LAUNCH(found.launch)(_LAMBDA(task), None, 4) == 0
    assert all(ok for _, _, ok in seen)
    threads = {ident: p for p, ident, _ in seen}
    assert len(set(threads.values())) == len(threads)  # one block per thread, reused by its tasks


def test_a_depthwise_kernels_staged_rows_come_from_the_arena(tmp_path, monkeypatch):
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TVMCONV_PARALLEL_LAUNCH_US", "0")
    monkeypatch.setenv("TVMCONV_DISPATCH", "0")
    x, w = torch.randn(1, 96, 14, 14), torch.randn(96, 1, 3, 3)
    x[0, 5, 3, 3] = float("nan")
    build.clear_memory_cache()
    out = TF.conv2d(x, w, padding=1, groups=96)
    lib = ctypes.CDLL(next(tmp_path.rglob("kernels/*/*.so")).as_posix())
    assert ctypes.c_void_p.in_dll(lib, "__TVMBackendAllocWorkspace").value == openmp._launcher().alloc
    torch.testing.assert_close(out, F.conv2d(x, w, padding=1, groups=96), atol=1e-4, rtol=1e-4, equal_nan=True)
    build.clear_memory_cache()


def test_the_pool_is_part_of_the_machine_key(monkeypatch):
    tgt = resolve(None)
    shared = machine_of(tgt).key
    monkeypatch.setenv("TVMCONV_SHARED_POOL", "0")
    openmp._launcher.cache_clear()
    try:
        from tvmconv.backends import machine

        machine._machine.cache_clear()
        assert openmp.pool() == "tvm" and not openmp.share_pool("/nonexistent.so")
        assert openmp._launcher()[0]  # still in front of TVM's pool: a forked child runs in turn
        assert machine_of(tgt).key != shared  # launch costs and dispatch choices are measured per pool
    finally:
        monkeypatch.delenv("TVMCONV_SHARED_POOL")
        openmp._launcher.cache_clear()
        machine._machine.cache_clear()
    assert machine_of(tgt).key == shared


def test_a_file_left_under_the_launchers_name_is_compiled_over(tmp_path, monkeypatch):
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    first = openmp._compiled()
    assert first.parent == tmp_path / "machine"
    first.write_bytes(b"\x7fELF garbage")
    again = openmp._compiled()
    assert again == first and ctypes.CDLL(str(again)).tvmconv_parallel_launch
