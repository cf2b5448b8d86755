"""tvmconv export --model: a whole model as one C library (tools/export_model.py), run natively and
under qemu-aarch64 on several threads, compared with the same model in PyTorch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tvmconv import models as M
from tvmconv.tools import export_model as XM

SMALL = (1, 3, 64, 64)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"width_mult": 0.25} if name == "mobilenet_v1" else {}
    return M.MODELS[name](backend="torch", **kw).eval()


def _elf_machine(path) -> int:
    head = open(path, "rb").read(20)
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


@pytest.mark.parametrize("name", ["mobilenet_v1", "shufflenet_v1"])
def test_a_whole_model_runs_on_emulated_aarch64_on_several_threads(name, tmp_path):
    model = _model(name)
    m = XM.export_model(model, "arm64-linux", tmp_path, input_shape=SMALL)
    assert _elf_machine(tmp_path / m["library"]) == 183  # EM_AARCH64
    assert m["inputs"] == [{"shape": list(SMALL), "dtype": "float32"}] and m["outputs"][0]["shape"] == [1, 1000]
    # every convolution runs a tvmconv kernel: the fused ones included
    assert m["kernels"] and any(k.startswith(("depthwise_separable", "shuffled_group")) for k in m["kernels"].values())
    lines = []
    err = XM.check_model(tmp_path, model, threads=3, log=lines.append)
    assert err < 1e-4 and "(3 threads)" in lines[0], lines


@pytest.mark.parametrize("name", ["mobilenet_v1", "shufflenet_v1"])
def test_an_android_library_without_the_ndk_passes_the_loaders_checks_and_its_objects_match(name, tmp_path,
                                                                                          monkeypatch):
    from tvmconv.backends import android

    monkeypatch.delenv("TVM_NDK_CC", raising=False)  # zig links it (backends/android.py)
    model = _model(name)
    m = XM.export_model(model, "android-arm64", tmp_path, input_shape=SMALL)
    lib = tmp_path / m["library"]
    assert android.check_elf(lib) == []
    dynamic = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "Library soname: [libtvmconv_model.so]" in dynamic and "Shared library: [libc.so]" in dynamic
    # no Android device here: the library's objects, in a glibc harness under qemu
    err = XM.check_model(tmp_path, model, threads=2, log=lambda line: None)
    assert err < 1e-4


def test_the_android_checks_catch_what_the_loader_refuses(tmp_path):
    bad = tmp_path / "bad.so"  # linked for Linux: 4 KB pages, no SONAME
    (tmp_path / "x.c").write_text("int f(void) { return 1; }\n")
    subprocess.run(["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-Wl,-z,max-page-size=4096", "-Wl,--hash-style=gnu",
                    "-o", str(bad), str(tmp_path / "x.c")], check=True)
    from tvmconv.backends import android

    problems = android.check_elf(bad)
    assert "no SONAME" in problems and "no .hash section" in problems
    assert any("not 16 KB" in p for p in problems)


def test_the_arena_never_overlaps_two_live_tensors():
    ep = XM.exported_program(_model("shufflenet_v1"), SMALL)
    prog = XM.lower(ep, "x86-avx2")
    temps = {a for _, args in prog.steps for a in args if prog.buffers[a].kind == "temp"}
    born = {args[-1]: i for i, (_, args) in enumerate(prog.steps)}
    dies = {a: max(i for i, (_, args) in enumerate(prog.steps) if a in args) for a in temps}
    for a in prog.outputs:
        dies[a] = len(prog.steps)
    for a in temps:
        for b in temps:
            if a < b and born[a] <= dies[b] and born[b] <= dies[a]:  # alive at the same step
                ra = (prog.buffers[a].offset, prog.buffers[a].offset + prog.buffers[a].nbytes)
                rb = (prog.buffers[b].offset, prog.buffers[b].offset + prog.buffers[b].nbytes)
                assert ra[1] <= rb[0] or rb[1] <= ra[0], (a, b, ra, rb)
    assert max(prog.buffers[a].offset + prog.buffers[a].nbytes for a in temps) <= prog.arena
    assert prog.arena < sum(prog.buffers[a].nbytes for a in temps)  # and reuses memory


_CPP_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "tvmconv_model.h"
int main(int argc, char** argv) {
  size_t n_in = 1, n_out = 1;
  for (int d = 0; d < TVMCONV_MODEL_INPUT_NDIM[0]; ++d) n_in *= TVMCONV_MODEL_INPUT_SHAPE[0][d];
  for (int d = 0; d < TVMCONV_MODEL_OUTPUT_NDIM[0]; ++d) n_out *= TVMCONV_MODEL_OUTPUT_SHAPE[0][d];
  std::vector<char> raw(n_in * sizeof(float) + 128);
  char* base = raw.data() + (64 - reinterpret_cast<uintptr_t>(raw.data()) % 64) % 64;
  float* x = reinterpret_cast<float*>(base + 4);
  std::vector<float> y(n_out);
  FILE* f = std::fopen(argv[1], "rb");
  if (!f || std::fread(x, sizeof(float), n_in, f) != n_in) return 2;
  std::fclose(f);
  tvmconv_model* m = tvmconv_model_create();
  const void* in[] = {x};
  void* out[] = {y.data()};
  if (!m || tvmconv_model_run(m, in, out) != 0) return 1;
  f = std::fopen(argv[2], "wb");
  std::fwrite(y.data(), sizeof(float), n_out, f);
  std::fclose(f);
  tvmconv_model_free(m);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_a_cpp_program_runs_an_exported_pt2_on_this_machine(tmp_path):
    model = _model("effnet")
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "effnet.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))  # plain PyTorch: aten convolutions
    out = tmp_path / "lib"
    m = XM.export_model(path, None, out)
    assert m["inputs"][0]["shape"] == [2, 3, 32, 32] and m["kernels"]
    assert 'extern "C"' in (out / "tvmconv_model.h").read_text()
    (out / "main.cpp").write_text(_CPP_MAIN)  # C++, with an input 4 bytes off 64-byte alignment
    subprocess.run(["g++", "-O2", "-o", "main", "main.cpp", "libtvmconv_model.a", "-pthread", "-lm"], cwd=out,
                   check=True, capture_output=True)
    (out / "in.bin").write_bytes(x.numpy().tobytes())
    run = subprocess.run([str(out / "main"), "in.bin", "out.bin"], cwd=out, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    got = np.frombuffer((out / "out.bin").read_bytes(), dtype=np.float32).reshape(2, -1)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_cli_export_model_check(tmp_path):
    out = tmp_path / "effnet"
    proc = subprocess.run([sys.executable, "-m", "tvmconv", "export", "--target", "arm64-linux", "--model", "effnet",
                           "-o", str(out), "--check"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "one library for arm64-linux" in proc.stdout and "the whole model matches PyTorch" in proc.stdout
    for name in ("libtvmconv_model.so", "libtvmconv_model.a", "tvmconv_model.h", "example.c", "manifest.json"):
        assert (out / name).exists(), name


def test_export_model_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="input shape"):
        XM.export_model(_model("effnet"), "arm64-linux", tmp_path)
    with pytest.raises(ValueError, match="neither a tvmconv.models name"):
        XM.export_model("no-such-model", "arm64-linux", tmp_path, input_shape=SMALL)
    with pytest.raises(ValueError, match="CPU targets"):
        XM.export_model(_model("effnet"), "cuda-sm90", tmp_path, input_shape=(1, 3, 32, 32))
