"""tvmconv export --model: a whole model as one C library (tools/export_model.py), run natively and
under qemu-aarch64 on several threads, compared with the same model in PyTorch."""

from __future__ import annotations

import collections
import copy
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tvmconv.graph import lowering
from tvmconv import models as M
from tvmconv.tools import export_model as XM

SMALL = (1, 3, 64, 64)


def _model(name: str, shape=SMALL) -> torch.nn.Module:
    """A tvmconv.models model, seeded and calibrated (every layer matters to the check)."""
    kw = {"width_mult": 0.25} if name == "mobilenet_v1" else {}
    return XM.builtin_model(name, shape, **kw)


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
    # every convolution runs a tvmconv kernel: the grouped ones (depthwise, shuffled) included
    assert m["kernels"] and any(k.startswith("shuffled_group") or int(re.search(r"_g(\d+)_", k).group(1)) > 1
                                for k in m["kernels"].values())
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
    # no Android device here: the library's objects, in a glibc harness under qemu, which needs
    # neither zig nor the NDK (a library exported elsewhere checks here)
    monkeypatch.setattr(android, "zig", lambda: None)
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
    model = _model("effnet", (2, 3, 32, 32))
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
        XM.export_model(_model("effnet", (1, 3, 32, 32)), "arm64-linux", tmp_path)
    with pytest.raises(ValueError, match="input shape"):
        XM.export_model("effnet", "arm64-linux", tmp_path)
    with pytest.raises(ValueError, match="neither a tvmconv.models name"):
        XM.export_model("no-such-model", "arm64-linux", tmp_path, input_shape=SMALL)
    with pytest.raises(ValueError, match="CPU targets"):
        XM.export_model(_model("effnet", (1, 3, 32, 32)), "cuda-sm90", tmp_path, input_shape=(1, 3, 32, 32))


# -- whole models beyond a chain of convolutions: squeeze-excitation, tuples (channel split) ---------
class _SqueezeExcitation(torch.nn.Module):
    """torchvision.ops.SqueezeExcitation: tvmconv.convert fuses it into one squeeze_excitation op."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = torch.nn.Conv2d(c, squeeze, 1), torch.nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = torch.nn.ReLU(), torch.nn.Sigmoid()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class _SENet(torch.nn.Module):
    """(N, 3, H, W) -> (N, 10): a stem, a squeeze-excitation block, a 3x3 conv, pooling, a linear layer."""

    def __init__(self):
        super().__init__()
        self.stem, self.se = torch.nn.Conv2d(3, 16, 3, 2, 1), _SqueezeExcitation(16, 4)
        self.conv, self.fc = torch.nn.Conv2d(16, 16, 3, 1, 1), torch.nn.Linear(16, 10)

    def forward(self, x):
        y = self.conv(self.se(torch.relu(self.stem(x))))
        return self.fc(torch.relu(y).mean((2, 3)))


SE_SHAPE = (1, 3, 32, 32)


def test_a_squeeze_excitation_model_runs_on_this_machine_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = XM.calibrate(_SENet(), SE_SHAPE)
    manifest = XM.export_model(model, None, tmp_path, input_shape=SE_SHAPE)
    assert any(k.startswith("squeeze_excitation") for k in manifest["kernels"].values()), manifest["kernels"]
    assert XM.check_model(tmp_path, model, log=lambda line: None) < 1e-4  # the library runs: no -1 from a kernel


def test_a_step_whose_buffers_its_kernel_refuses_fails_at_export_time(monkeypatch):
    torch.manual_seed(0)
    ep = XM.exported_program(_SENet().eval(), SE_SHAPE)
    # the kernel's arguments as the program holds them (the fc weights 4-D): what the kernel's
    # generated code refuses on every call, refused here instead
    monkeypatch.setattr(lowering, "_kernel_arg", lambda importer, node, shape, spec, name: importer.env[node])
    with pytest.raises(ValueError, match=r"squeeze_excitation.* fc1_weight .*\(4, 16\).*\(4, 16, 1, 1\) \(4-D\)"):
        XM.lower(ep, "x86-avx2")


_NULL_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tvmconv_model.h"
int main(void) {
  void* in[TVMCONV_MODEL_NUM_INPUTS];
  void* out[TVMCONV_MODEL_NUM_OUTPUTS];
  for (int i = 0; i < TVMCONV_MODEL_NUM_INPUTS; ++i) {
    size_t n = 1;
    for (int d = 0; d < TVMCONV_MODEL_INPUT_NDIM[i]; ++d) n *= TVMCONV_MODEL_INPUT_SHAPE[i][d];
    in[i] = calloc(n, sizeof(float));
  }
  for (int o = 0; o < TVMCONV_MODEL_NUM_OUTPUTS; ++o) {
    size_t n = 1;
    for (int d = 0; d < TVMCONV_MODEL_OUTPUT_NDIM[o]; ++d) n *= TVMCONV_MODEL_OUTPUT_SHAPE[o][d];
    out[o] = calloc(n, sizeof(float));
  }
  tvmconv_model* m = tvmconv_model_create();
  const void* const* ins = (const void* const*)in;
  printf("%d %d %d\n", tvmconv_model_run(NULL, ins, out), tvmconv_model_run(m, NULL, out),
         tvmconv_model_run(m, ins, NULL));
  for (int o = 0; o < TVMCONV_MODEL_NUM_OUTPUTS; ++o) {
    void* keep = out[o];
    out[o] = NULL;
    printf("%d ", tvmconv_model_run(m, ins, out));
    out[o] = keep;
  }
  for (int i = 0; i < TVMCONV_MODEL_NUM_INPUTS; ++i) {
    void* keep = in[i];
    in[i] = NULL;
    printf("%d ", tvmconv_model_run(m, ins, out));
    in[i] = keep;
  }
  printf("%d\n", tvmconv_model_run(m, ins, out));
  tvmconv_model_free(m);
  return 0;
}
"""


class _TwoInTwoOut(torch.nn.Module):
    """``(x (N, 3, H, W), y (N, 8, H, W)) -> (conv(x) + y, relu(conv(x)))``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 1, 1)

    def forward(self, x, y):
        a = self.conv(x)
        return a + y, torch.relu(a)


def test_model_run_refuses_every_null_pointer_from_c(tmp_path):
    torch.manual_seed(0)
    model, out = _TwoInTwoOut().eval(), tmp_path
    m = XM.export_model(model, None, out, example_inputs=(torch.randn(1, 3, 16, 16), torch.randn(1, 8, 16, 16)))
    assert len(m["inputs"]) == 2 and len(m["outputs"]) == 2
    (out / "null.c").write_text(_NULL_MAIN)
    subprocess.run(["gcc", "-O2", "-o", "null", "null.c", "libtvmconv_model.a", "-pthread", "-lm"], cwd=out,
                   check=True, capture_output=True)
    run = subprocess.run([str(out / "null")], cwd=out, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)  # no segfault
    # NULL model, input array, output array; each NULL output; each NULL input; then all given
    assert run.stdout.split() == ["-1"] * 7 + ["0"], run.stdout
    assert XM.check_model(out, model, log=lambda line: None) < 1e-4  # every input fed, every output compared


def _channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _branch(c_in: int, c_out: int, stride: int) -> torch.nn.Sequential:
    """ShuffleNetV2's branch: 1x1 + BN + ReLU, 3x3 depthwise (``stride``) + BN, 1x1 + BN + ReLU."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, stride, 1, groups=c_out, bias=False), nn.BatchNorm2d(c_out),
                         nn.Conv2d(c_out, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class _ShuffleV2Unit(torch.nn.Module):
    """Stride 1: half the channels through the branch (``x.chunk``), the other half as they are;
    stride 2: two branches on the whole input. Then ``cat`` and a channel shuffle."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.branch2 = _branch(c_in // 2, c_out // 2, 1)
        else:
            nn = torch.nn
            self.branch1 = nn.Sequential(nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in, bias=False),
                                         nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out // 2, 1, bias=False),
                                         nn.BatchNorm2d(c_out // 2), nn.ReLU())
            self.branch2 = _branch(c_in, c_out // 2, 2)

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            y = torch.cat((x1, self.branch2(x2)), 1)
        else:
            y = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return _channel_shuffle(y, 2)


def test_a_shufflenet_v2_model_with_a_channel_split_runs_on_this_machine_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), _ShuffleV2Unit(16, 32, 2), _ShuffleV2Unit(32, 32, 1),
                          _ShuffleV2Unit(32, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    XM.calibrate(model, (1, 3, 32, 32))
    prog = XM.lower(XM.exported_program(model, (1, 3, 32, 32)), "x86-avx2")
    born: dict = {}  # temp -> the step writing it
    for i, (_, args) in enumerate(prog.steps):
        for a in args:
            if prog.buffers[a].kind == "temp":
                born.setdefault(a, i)
    assert max(collections.Counter(born.values()).values()) == 2, prog.steps  # the split: a step writing two
    XM.export_model(model, None, tmp_path, input_shape=(1, 3, 32, 32))
    assert XM.check_model(tmp_path, model, log=lambda line: None) < 1e-4


# -- export --check sees every layer -------------------------------------------------------------
def test_the_check_refuses_a_model_whose_layers_do_not_change_its_output():
    x = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))]
    torch.manual_seed(0)
    seeded = M.MODELS["mobilenet_v2"](backend="torch", width_mult=0.35).eval()  # saturated: zeroing a layer
    with pytest.raises(RuntimeError, match="cannot see layer features"):  # changes nothing
        XM.every_layer_matters(seeded, x)
    XM.every_layer_matters(XM.builtin_model("mobilenet_v2", (1, 3, 32, 32), width_mult=0.35), x)


def test_the_check_catches_one_wrong_layer_of_mobilenet_v2(tmp_path):
    model = XM.builtin_model("mobilenet_v2", (1, 3, 32, 32), width_mult=0.35)
    XM.export_model(model, None, tmp_path, input_shape=(1, 3, 32, 32))
    assert XM.check_model(tmp_path, model, log=lambda line: None) < 1e-4
    for layer in ("features.0.0", "features.9.conv.1.0"):  # the stem, a depthwise mid-way
        wrong = copy.deepcopy(model)  # the library's weights but one layer's, as a wrong kernel would give
        with torch.no_grad():
            wrong.get_submodule(layer).weight.mul_(0.9)
        with pytest.raises(RuntimeError, match="differs from PyTorch"):
            XM.check_model(tmp_path, wrong, log=lambda line: None)
    torch.manual_seed(0)  # seeded as it comes: saturated, its output the same whatever its layers compute
    seeded = M.MODELS["mobilenet_v2"](backend="torch", width_mult=0.35).eval()
    with pytest.raises(RuntimeError, match="cannot see layer features"):
        XM.check_model(tmp_path, seeded, log=lambda line: None)


def test_a_model_name_exports_and_checks_as_one_calibrated_model(tmp_path):
    XM.export_model("effnet", None, tmp_path, input_shape=(1, 3, 32, 32))
    assert XM.check_model(tmp_path, "effnet", log=lambda line: None) < 1e-4  # the same weights, rebuilt
