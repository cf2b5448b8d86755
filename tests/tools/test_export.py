"""tvmconv export: every variant cross-compiled for aarch64 (NEON) and run under qemu through the
static C example, compared with PyTorch here; CUDA source and cubin for sm_80 and sm_90 from nvcc;
the host's shared library loaded by TVM's runtime. References: torch.nn.functional and
tvmconv.reference (PyTorch ops; NumPy for deform_conv2d)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tvmconv.tools import c_sources
from tvmconv.tools import export as X
from tvmconv import functional as TF
from tvmconv import reference
from tvmconv.variants.registry import VARIANTS, ShapeRow

from ..conftest import rpc_device

ROW = ShapeRow("export", n=1, c=4, size=(6, 7), oc=8, k=3, stride=2, padding=1, groups=2)


@pytest.fixture(scope="module")
def specs():
    out = []
    for v in VARIANTS.values():
        with torch.no_grad(), TF.capture_kernels() as ks:
            v.run(v.make_case(ROW, torch.Generator().manual_seed(0)))
        out.append(ks[-1].spec)
    return out


def _elf_machine(path) -> int:
    head = open(path, "rb").read(20)
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


def test_every_variant_runs_on_emulated_aarch64(specs, tmp_path):
    m = X.export(specs, "arm64-linux", tmp_path)
    assert len(m["workloads"]) == len(VARIANTS)
    for name in ("libtvmconv_kernels.a", "tvmconv_kernels.h", "tvmconv_runtime.c", "example.c", "Makefile"):
        assert (tmp_path / name).exists(), name
    for w in m["workloads"]:
        assert _elf_machine(tmp_path / w["files"]["shared"]) == 183  # EM_AARCH64
        assert _elf_machine(tmp_path / w["files"]["object"]) == 183
        assert w["schedule"] in ("default", "tuned")
    lines = []
    assert X.check(tmp_path, log=lines.append) == (len(VARIANTS), len(VARIANTS)), "\n".join(lines)
    # the example with no arguments runs every kernel on its own inputs
    # on the threads asked for at run time
    run = subprocess.run(["qemu-aarch64-static", str(tmp_path / "example")], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TVMCONV_NUM_THREADS": "3"})
    assert run.returncode == 0 and run.stdout.count("rc 0") == len(VARIANTS), run.stdout + run.stderr
    assert run.stdout.count("(3 threads)") == len(VARIANTS)


_POOL_HARNESS = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
typedef struct { void* sync_handle; int32_t num_task; } Env;
typedef int (*Lambda)(int, Env*, void*);
extern void* __TVMBackendParallelLaunch;
int tvmconv_set_num_threads(int n);
static int hits[64], bad;
static pthread_t who[64];
static int task(int id, Env* env, void* cdata) {
  if (env->num_task != *(int*)cdata) bad = 1;
  __atomic_add_fetch(&hits[id], 1, __ATOMIC_RELAXED);
  who[id] = pthread_self();
  return id == 5 && *(int*)cdata == 7 ? -7 : 0;  /* task 5 of a 7-task launch fails */
}
int main(void) {
  int (*launch)(Lambda, void*, int) = (int (*)(Lambda, void*, int))__TVMBackendParallelLaunch;
  for (int round = 0; round < 300; ++round) {
    int threads = 1 + round % 4, want = round % 3 ? threads : 7;
    tvmconv_set_num_threads(threads);
    for (int i = 0; i < 64; ++i) hits[i] = 0;
    int rc = launch(task, &want, round % 3 ? 0 : 7);
    int ok = rc == (want == 7 ? -7 : 0) && !bad;
    for (int i = 0; i < 64; ++i) ok &= hits[i] == (i < want);
    int distinct = 0;
    for (int i = 0; i < want; ++i) { int seen = 0; for (int j = 0; j < i; ++j) seen |= pthread_equal(who[i], who[j]); distinct += !seen; }
    if (!ok) { printf("round %d: wrong\n", round); return 1; }
    if (round == 299 || round == 298) printf("threads %d tasks %d distinct %d\n", threads, want, distinct);
  }
  return 0;
}
"""


def test_the_exported_runtime_runs_every_task_once_on_its_pool(tmp_path):
    (tmp_path / "runtime.c").write_text(c_sources.text("runtime.c"))
    (tmp_path / "main.c").write_text(_POOL_HARNESS)
    subprocess.run(["gcc", "-O2", "-pthread", "-o", "pool", "main.c", "runtime.c"], cwd=tmp_path, check=True)
    run = subprocess.run([str(tmp_path / "pool")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # every round checked its tasks (a 7-task launch among them); the last two: each task on a thread of its own
    assert run.stdout.split("\n")[:2] == ["threads 3 tasks 3 distinct 3", "threads 4 tasks 4 distinct 4"]


def test_a_cpp_program_links_the_exported_kernels(specs, tmp_path):
    X.export(specs[:1], None, tmp_path)  # this machine's target: the program runs here
    assert 'extern "C"' in (tmp_path / "tvmconv_kernels.h").read_text()
    # compiled as C++ (the README's Android flow uses clang++), it links the C symbols and runs
    (tmp_path / "use.cpp").write_text(c_sources.text("kernels_example.c"))
    subprocess.run(["gcc", "-O2", "-c", "tvmconv_runtime.c"], cwd=tmp_path, check=True)
    subprocess.run(["g++", "-O2", "-o", "use", "use.cpp", "tvmconv_runtime.o", "libtvmconv_kernels.a", "-pthread",
                    "-lm"], cwd=tmp_path, check=True, capture_output=True)
    run = subprocess.run([str(tmp_path / "use")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "rc 0" in run.stdout, run.stdout + run.stderr



@pytest.mark.parametrize("target,arch", [("cuda-sm80", 80), ("cuda-sm90", 90)])
def test_every_variant_compiles_to_cubin(specs, tmp_path, target, arch):
    m = X.export(specs, target, tmp_path)
    for w in m["workloads"]:
        src = (tmp_path / w["files"]["cuda"]).read_text()
        assert "__global__" in src and w["cname"] in src
        cubin = tmp_path / w["files"]["cubin"]
        assert _elf_machine(cubin) == 190  # EM_CUDA
        e_flags = int.from_bytes(cubin.read_bytes()[48:52], "little")
        assert (e_flags >> 8) & 0xFF == arch  # the SM version nvcc compiled for


def test_host_shared_library_runs_in_tvm_runtime(specs, tmp_path):
    import tvm

    spec = next(s for s in specs if s.variant == "depthwise_separable_conv2d")
    m = X.export([spec], "x86-avx2", tmp_path)
    (w,) = m["workloads"]
    lib = tvm.runtime.load_module(str(tmp_path / w["files"]["shared"]))
    full, kernel = reference.random_args(spec, torch.Generator().manual_seed(1))
    out = torch.empty(spec.out_shape)
    lib[w["cname"]](*[t.reshape(shape) for t, (_, shape) in zip(kernel, spec.arg_shapes)], out)
    want = reference.reference_for(spec)[1](*full)
    np.testing.assert_allclose(out.view(want.shape).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_android_kernels_link_without_the_ndk(specs, tmp_path, monkeypatch):
    from tvmconv.backends import android

    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    m = X.export(specs[:2], "android-arm64", tmp_path)
    for w in m["workloads"]:
        lib = tmp_path / w["files"]["shared"]
        assert android.check_elf(lib) == []
        dynamic = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        # TVM's runtime provides the error hook the kernel imports: the library names it
        assert "[libtvm_runtime.so]" in dynamic and f"[{lib.name}]" in dynamic


def test_cli_export_check(tmp_path):
    out = tmp_path / "k"
    proc = subprocess.run([sys.executable, "-m", "tvmconv", "export", "--target", "arm64-linux", "--op", "conv2d",
                           "--shape", "1,8,9,9", "--weight", "8,1,3,3", "--groups", "8", "--padding", "1", "-o",
                           str(out), "--check"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 kernels match PyTorch (static C example)" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "arm64-linux" and manifest["workloads"][0]["args"][0]["shape"] == [1, 8, 9, 9]  # the op's own shapes


def test_export_errors_are_clear(tmp_path, monkeypatch):
    from tvmconv.backends import android

    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    monkeypatch.setattr(android, "zig", lambda: None)  # neither the NDK nor zig
    with pytest.raises(ValueError, match="TVM_NDK_CC") as info:
        X.export("effnet", "android-arm64", tmp_path)
    assert "tvmconv[android]" in str(info.value)
    with pytest.raises(ValueError, match="no-such-target|profile"):
        X.export("effnet", "no-such-target", tmp_path)


# -- an emulated aarch64 Python with TVM's runtime (scripts/aarch64-python.sh) -------------------
@pytest.fixture(scope="session")
def aarch64_python():
    root = Path.home() / ".cache" / "tvmconv" / "aarch64-python"
    script = Path(__file__).resolve().parents[2] / "scripts" / "aarch64-python.sh"
    subprocess.run(["bash", str(script), str(root)], check=True, timeout=1800, capture_output=True)
    return root


def test_every_variant_runs_in_tvm_runtime_on_emulated_aarch64(specs, tmp_path, aarch64_python):
    X.export(specs, "arm64-linux", tmp_path)
    lines = []
    got = X.check_runtime(tmp_path, str(aarch64_python / "python"), log=lines.append)
    assert got == (len(VARIANTS), len(VARIANTS)), "\n".join(lines)


def test_tune_arm64_through_an_emulated_rpc_server_then_export(aarch64_python, tmp_path, monkeypatch):
    """A tracker and an emulated aarch64 RPC server on 127.0.0.1; a small workload tuned for a few
    trials through them (timings under emulation mean nothing: this checks the flow), then exported
    with the tuned record and run."""
    from tvmconv.suites import conv
    from tvmconv.tuning.api import tune

    extra = aarch64_python / "site" / "tvm" / "lib" / "libtvm_runtime_extra.so"
    server = [str(aarch64_python / "python"), "-m", "tvm.exec.rpc_server", "--load-library", str(extra)]
    # (3 other blockings on arm64-linux, so 5 trials in all, each run under emulation; 4->8 channels
    # at 6x6 had 12)
    spec = conv(4, 3, 4, 3, 1, 1)
    with rpc_device(server, "arm64-test") as port:
        (r,) = tune([spec], target="arm64-linux", rpc=f"127.0.0.1:{port}:arm64-test", cache_dir=tmp_path, trials=3,
                    num_trials_per_iter=2, population=16, progress=False, seed=0)
    assert r.trials_run >= 1 and r.best_s > 0 and r.record_path and r.dispatch is None
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    m = X.export([spec], "arm64-linux", tmp_path / "out")
    assert m["workloads"][0]["schedule"] == "tuned" and m["workloads"][0]["record"]
    assert X.check(tmp_path / "out", log=lambda *_: None) == (1, 1)
