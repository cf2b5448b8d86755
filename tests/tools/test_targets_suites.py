"""Target profiles, suites and model workloads (no tuning here)."""

import json
import os

import pytest
import torch

from tvmconv.backends import target as T
from tvmconv.variants.registry import VARIANTS
from tvmconv.spec import spec_from_dict
from tvmconv.variants import ConvSpec
from tvmconv.suites import SUITES, suite
from tvmconv.suites.workloads import workloads

REQUIRED = ("x86-avx2", "x86-avx512", "arm64-linux", "android-arm64", "cuda-sm80", "cuda-sm90")


def test_shipped_profiles_are_valid_tvm_targets():
    import tvm

    found = T.profiles()
    assert set(REQUIRED) <= set(found)
    for name in REQUIRED:
        p = found[name]
        t = tvm.target.Target(p.target_info().dict)
        assert t.kind.name == p.target["kind"]
        assert p.build["kind"] in T.BUILD_KINDS and p.measure["kind"] in T.MEASURE_KINDS


def test_host_detection_follows_cpu_flags(monkeypatch):
    monkeypatch.setattr(T.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"})
    assert T.detect_profile_name() == "x86-avx512"
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx2", "fma"})
    assert T.detect_profile_name() == "x86-avx2"
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"sse4_2"})
    assert T.detect_profile_name() is None
    monkeypatch.setattr(T.platform, "machine", lambda: "aarch64")
    assert T.detect_profile_name() == "arm64-linux"


def test_an_x86_target_runs_here_only_where_the_cpu_has_its_vectors(monkeypatch):
    """AVX-512 code on an AVX2-only CPU dies of SIGILL: such a target is not run here (its ops,
    compile and launch timing refuse it or do not time it) but still builds and exports."""
    runs_here = T.TargetInfo.runs_here.func  # (uncached: each call reads the patched flags)
    avx512, avx2 = T.resolve("x86-avx512"), T.resolve("x86-avx2")
    monkeypatch.setattr(T.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx", "avx2", "fma"})
    assert runs_here(avx2) and not runs_here(avx512)
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx", "avx2", "fma", "avx512f"})
    assert runs_here(avx2) and runs_here(avx512)
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"sse4_2"})
    assert not runs_here(avx2)


@pytest.mark.skipif("avx512f" in T._cpu_flags() or T.platform.machine() != "x86_64", reason="an x86 CPU without AVX-512")
def test_compiling_for_avx512_on_a_cpu_without_it_is_a_clear_error():
    import tvmconv

    with pytest.raises(ValueError, match="does not run on this machine's CPU"):
        tvmconv.compile(torch.nn.Conv2d(3, 8, 3).eval(), torch.randn(1, 3, 8, 8), target="x86-avx512")
    with pytest.raises(ValueError, match="does not run on this machine's CPU"):
        tvmconv.ops.conv2d(torch.randn(1, 8, 8, 8), torch.randn(8, 1, 3, 3), groups=8, target="x86-avx512")


def test_user_profile_without_code_change(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TVMCONV_TARGETS_DIR", str(tmp_path))
    (tmp_path / "my-board.json").write_text(json.dumps({
        "name": "my-board", "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
        "build": {"kind": "cross", "cc": "aarch64-linux-gnu-gcc"},
        "measure": {"kind": "rpc", "tracker": "10.0.0.1:9190", "key": "board"}}))
    (tmp_path / "broken.json").write_text("{not json")
    info = T.resolve("my-board")
    assert info.profile == "my-board" and info.dict["mtriple"] == "aarch64-linux-gnu" and not info.runs_here
    assert "broken" not in T.profiles() and "broken.json" in caplog.text


def test_resolve_errors_name_the_argument():
    with pytest.raises(ValueError, match="target must be a profile name"):
        T.resolve("x86-avx9000")
    with pytest.raises(ValueError, match="'kind'"):
        T.resolve({"mcpu": "znver3"})
    with pytest.raises(ValueError, match="target must be"):
        T.resolve(3)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suites_are_real_layers(name):
    """Every convolution of a suite has the output shape torch computes for it."""
    items = suite(name)
    assert items and all(count >= 1 for _, count in items)
    assert len({s for s, _ in items}) == len(items)
    for spec, _ in items:
        assert spec_from_dict(json.loads(spec.to_json())) == spec
        if isinstance(spec, ConvSpec) and not spec.shuffle:
            nd = spec.ndim
            x = torch.empty((spec.n, spec.c_in, *spec.in_size), device="meta")
            pad = tuple(p for p, _ in spec.padding)
            if spec.transposed:
                w = torch.empty((spec.c_in, spec.c_out // spec.groups, *spec.kernel), device="meta")
                f = getattr(torch.nn.functional, f"conv_transpose{nd}d")
                y = f(x, w, None, spec.stride, pad, spec.output_padding, spec.groups, spec.dilation)
            else:
                w = torch.empty((spec.c_out, spec.c_in // spec.groups, *spec.kernel), device="meta")
                y = getattr(torch.nn.functional, f"conv{nd}d")(x, w, None, spec.stride, pad, spec.dilation,
                                                              spec.groups)
            assert tuple(y.shape) == spec.out_shape, spec.name


def test_shufflenet_suites_have_both_group_counts():
    g3 = {s.groups for s, _ in suite("shufflenet_v1_g3") if isinstance(s, ConvSpec) and s.kernel == (1, 1)}
    g8 = {s.groups for s, _ in suite("shufflenet_v1_g8") if isinstance(s, ConvSpec) and s.kernel == (1, 1)}
    assert g3 == {1, 3} and g8 == {1, 8}
    assert sum(c for _, c in suite("resnet18")) == 20  # ResNet-18 has 20 convolutions


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding="same", groups=8)
        self.up = torch.nn.ConvTranspose2d(8, 4, 4, 2, 1)
        self.c1 = torch.nn.Conv1d(4, 4, 3)

    def forward(self, x):
        y = self.up(self.dw(torch.relu(self.a(x) + self.b(x))))
        return self.c1(y.flatten(2))


def test_model_workloads_from_module_and_pt2(tmp_path):
    x = torch.randn(1, 3, 8, 8)
    found = workloads(_Net(), example_inputs=(x,))
    names = [(s.variant, c) for s, c in found]
    assert names == [("conv2d", 2), ("conv2d", 1), ("conv_transpose2d", 1), ("conv1d", 1)]
    assert found[1][0].groups == 8 and found[1][0].padding == ((1, 1), (1, 1))
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(_Net(), (x,)), str(path))
    assert workloads(path, input_shape=(1, 3, 8, 8)) == found
    with pytest.raises(ValueError, match="does not match"):
        workloads(path, input_shape=(1, 3, 16, 16))
    with pytest.raises(ValueError, match="example_inputs is required"):
        workloads(_Net())
    with pytest.raises(ValueError, match="does not exist"):
        workloads(tmp_path / "missing.pt2")


def test_cli_targets_and_cache(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tvmconv.tools.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["targets"])
    assert out.exit_code == 0 and "x86-avx512" in out.output and "detected for this host" in out.output
    bad = runner.invoke(app, ["tune", "--suite", "mobilenet_v1", "--op", "conv2d"])
    assert bad.exit_code != 0 and "exactly one of" in bad.output
    bad = runner.invoke(app, ["tune", "--op", "conv2d", "--shape", "1,3,8", "--weight", "4,3,3,3"])
    assert bad.exit_code == 2 and "input" in bad.output
    bad = runner.invoke(app, ["tune", "--spec", '{"variant": "conv9d"}'])
    assert bad.exit_code == 2 and "variant" in bad.output
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    assert runner.invoke(app, ["cache", "list"]).exit_code == 0
    miss = runner.invoke(app, ["cache", "show", "no_such_workload"])
    assert miss.exit_code == 2 and "no schedule record" in miss.output


@pytest.mark.parametrize("env, want", [({}, None), ({"TVMCONV_NUM_THREADS": "1", "TVM_NUM_THREADS": "2"}, 1),
                                       ({"TVM_NUM_THREADS": "1"}, 1)])
def test_kernels_run_on_the_threads_the_knob_gives(env, want):
    """TVM's runtime alone would use half the logical CPUs (it assumes hyper-threads): one
    thread on a 2-vCPU machine. tvmconv sizes TVM's pool from TVMCONV_NUM_THREADS, else
    TVM_NUM_THREADS, else every CPU the process may run on."""
    import subprocess
    import sys

    code = ("import torch, tvm, tvmconv.functional as TF\n"
            "TF.conv2d(torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3))\n"
            "print(tvm.get_global_func('runtime.NumThreads')())\n")
    base = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS",
                                                              "TVMCONV_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == (want or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("name", sorted(SUITES))
def test_shipped_schedules_cover_the_suites_on_x86(name):
    """Every layer of every suite has a shipped x86-avx2 record (in the repository, not the test's
    user cache) whose trace still applies to the current compute, and which records its dispatch
    choice."""
    from tvmconv.runtime import cache
    from tvmconv.runtime.build import apply_record
    from tvmconv.runtime.record import ScheduleRecord

    tgt = T.resolve("x86-avx2")
    for spec, _count in suite(name):
        path = cache.schedule_path(cache.shipped_root(), spec, tgt)
        assert path.exists(), f"no shipped schedule for {spec.name}"
        record = ScheduleRecord.from_dict(json.loads(path.read_text()))
        assert spec_from_dict(record.spec) == spec and record.run_secs > 0
        assert record.dispatch is not None and record.dispatch.choice in ("tvmconv", "vendor")
        apply_record(spec, record)  # raises if the trace no longer applies


def test_spec_of_names_the_kernel_a_call_runs_without_building_it():
    from tvmconv import functional as TF
    from tvmconv.runtime import build

    x, w = torch.randn(1, 8, 10, 10), torch.randn(16, 8, 3, 3)
    build.clear_memory_cache()
    spec = TF.spec_of(TF.conv2d, x, w, padding=1, stride=2)
    assert not build._cache and spec.stride == (2, 2) and spec.out_shape == (1, 16, 5, 5)
    with TF.capture_kernels() as kernels:
        y = TF.conv2d(x, w, padding=1, stride=2)
    assert kernels[-1].spec == spec and tuple(y.shape) == spec.out_shape
    with pytest.raises(ValueError, match="conv2d"):
        TF.spec_of(TF.conv2d, x, torch.randn(16, 3, 3, 3))
    assert [s.variant for s, _ in suite("variants")] == [v for v in VARIANTS if v != "deform_conv2d"]
