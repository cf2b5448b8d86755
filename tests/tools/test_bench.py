"""tvmconv bench: records, geometric means, roofline, chart and the model comparison. These tests
check structure and correctness of what is measured, never a speed (speed goals live in the
benchmark's output, not in tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tvmconv.tools import bench as B
from tvmconv.variants.registry import VARIANTS
from tvmconv.suites import conv, suite
from tvmconv.backends.target import resolve

FIELDS = {"workload", "variant", "flops", "tvmconv_s", "vendor_s", "ratio", "roofline_fraction"}


@pytest.fixture(scope="module")
def roof():
    return B.measure_roofline(1, gemm_n=256, copy_mb=16)


def test_roofline_is_positive_and_bounds_time(roof):
    assert roof.peak_flops > 1e8 and roof.bandwidth > 1e8
    assert roof.min_seconds(10 ** 9, 0) == pytest.approx(1e9 / roof.peak_flops)
    assert roof.min_seconds(0, 10 ** 9) == pytest.approx(1e9 / roof.bandwidth)


@pytest.mark.parametrize("name", ["mobilenet_v1", "shufflenet_v1_g3", "effnet", "resnet18", "ansor"])
def test_every_suite_workload_has_a_vendor_path_that_agrees(name):
    """case_for builds inputs and the vendor path for every workload; on a few, the tvmconv op and
    the vendor path give the same output."""
    cases = B.cases(name)
    assert len(cases) == len(suite(name))
    for c in cases[:: max(1, len(cases) // 3)]:
        with torch.no_grad():
            got = c.op(*c.args, **c.kwargs)
            want = c.reference(*c.args, **c.kwargs)
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4 * max(1.0, want.abs().max().item()))


def test_variant_cases_cover_the_registry():
    names = {c.label for c in B.variant_cases()}
    assert names == set(VARIANTS) - {"deform_conv2d"}  # torchvision is not a dependency


def test_run_case_record(roof):
    spec = conv(8, 12, 16, 3, 1, 1, g=8 // 4)
    rec = B.run_case(B.case_for(spec), resolve("x86-avx2"), roof, rounds=3)
    assert FIELDS <= set(rec)
    assert rec["ratio"] == pytest.approx(rec["tvmconv_s"] / rec["vendor_s"])
    assert rec["flops"] == spec.flops and rec["family"] == "grouped" and rec["kind"] == "compute"
    assert rec["max_rel_err"] < 1e-4
    assert rec["roofline_fraction"] == pytest.approx(roof.min_seconds(spec.flops, spec.bytes_moved) / rec["tvmconv_s"])


def test_families():
    assert B.case_for(conv(8, 8, 8, 3, 1, 1, g=8)).family == "depthwise"
    assert B.case_for(conv(8, 8, 8, 3, 1, 1, g=8)).kind == "memory"
    assert B.case_for(conv(8, 8, 16, 1)).family == "pointwise"
    assert B.case_for(conv(8, 8, 16, 3, 1, 2, d=2)).family == "dilated"
    assert B.case_for(conv(8, 8, 16, 3, 1, 1, g=2, shuffle=2)).kind == "fused"


def test_geomeans():
    recs = [{"family": "a", "ratio": 2.0}, {"family": "a", "ratio": 0.5}, {"family": "b", "ratio": 3.0}]
    g = B.geomeans(recs)
    assert g["a"] == pytest.approx(1.0) and g["b"] == pytest.approx(3.0)
    assert B.geomeans([{"family": "c", "ratio": x} for x in (1, 2, 4)])["c"] == pytest.approx(
        math.exp(np.mean(np.log([1, 2, 4]))))


def test_cli_bench_writes_json_and_chart(tmp_path):
    js, png = tmp_path / "b.jsonl", tmp_path / "b.png"
    proc = subprocess.run([sys.executable, "-m", "tvmconv", "bench", "--op", "conv2d", "--shape", "1,8,10,10",
                           "--weight", "8,1,3,3", "--groups", "8", "--padding", "1", "--rounds", "3", "--json",
                           str(js), "--png", str(png)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = [json.loads(line) for line in js.read_text().splitlines()]
    assert FIELDS <= set(rec) and rec["family"] == "depthwise" and rec["peak_flops"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per family" in proc.stdout


def test_model_bench_and_call_overhead():
    (rec,) = B.bench_models(["effnet"], resolve("x86-avx2"), batches=(2,), rounds=3)
    assert rec["batch"] == 2 and rec["max_abs_diff"] < 1e-4 and rec["tvmconv_s"] > 0 and rec["vendor_s"] > 0
    assert rec["converted"] + rec["kept"] == len(rec["layers"]) == 9 and rec["layers_torch_s"] > 0
    o = B.call_overhead(n=50)
    assert set(o) == {"kernel_s", "functional_s", "custom_op_s", "module_s"} and all(v > 0 for v in o.values())


def test_bench_times_the_kernel_even_where_dispatch_chose_the_vendor(roof, monkeypatch):
    """A workload whose record says 'vendor' is still timed on the tvmconv kernel (and the record
    says what dispatch would do)."""
    from tvmconv import functional as TF
    from tvmconv.runtime import call
    from tvmconv.runtime import build

    spec = conv(8, 9, 8, 3, 1, 1)
    case = B.case_for(spec)
    tgt = resolve("x86-avx2")
    with torch.no_grad(), TF.capture_kernels() as ks:
        case.op(*case.args, **case.kwargs, target=tgt)
    monkeypatch.setattr(ks[-1], "dispatch", "vendor")

    def no_vendor(_spec):
        raise AssertionError("the benchmark called the vendor path in place of the kernel")

    monkeypatch.setattr(call, "_vendor", no_vendor)
    rec = B.run_case(case, tgt, roof, rounds=3)
    assert rec["dispatch"] == "vendor" and rec["max_rel_err"] < 1e-4
    with torch.no_grad(), pytest.raises(AssertionError, match="vendor path"):  # the op itself would dispatch
        case.op(*case.args, **case.kwargs, target=tgt)
    build.clear_memory_cache()


@pytest.mark.parametrize("choice", ["tvmconv", "vendor"])
def test_bench_with_dispatch_also_times_the_path_the_op_takes(roof, monkeypatch, choice):
    """``dispatched``: a third timing, the op with dispatch on, which runs the vendor path exactly
    where this machine's choice is 'vendor'; the kernel's own time is still measured."""
    from tvmconv import functional as TF
    from tvmconv.runtime import build, call

    spec = conv(8, 9, 8, 3, 1, 1)
    case = B.case_for(spec)
    tgt = resolve("x86-avx2")
    with torch.no_grad(), TF.capture_kernels() as ks:
        case.op(*case.args, **case.kwargs, target=tgt)
    monkeypatch.setattr(ks[-1], "dispatch", choice)
    calls = []
    real = call._vendor

    def counted(s):
        calls.append(s)
        return real(s)

    monkeypatch.setattr(call, "_vendor", counted)
    rec = B.run_case(case, tgt, roof, rounds=3, dispatched=True)
    assert rec["dispatch"] == choice and rec["dispatched_s"] > 0 and rec["tvmconv_s"] > 0
    assert isinstance(rec["slower_than_vendor"], bool)
    assert rec["dispatched_ratio"] == pytest.approx(rec["dispatched_s"] / rec["vendor_s"])
    assert bool(calls) == (choice == "vendor")
    build.clear_memory_cache()


@pytest.mark.parametrize("recheck, slower", [([1.0] * 7, False), ([1.5] * 7, True)])
def test_a_dispatched_op_is_slower_only_if_a_recheck_agrees(monkeypatch, recheck, slower):
    """One run's spread is narrower than a shared machine's run-to-run noise: a path flagged in
    the bench's rounds is timed again (twice the rounds, the op first) and stays flagged only if
    it is slower beyond the spread there too."""
    from tvmconv.backends.llvm import LLVMBackend

    case, tgt = B.case_for(conv(8, 9, 8, 3, 1, 1)), resolve("x86-avx2")
    timed = []

    def time(_backend, fns, *, rounds, threads=None):
        timed.append(rounds)
        return [recheck, [1.0] * rounds]

    monkeypatch.setattr(LLVMBackend, "time", time)
    out = B._dispatched(case, tgt, 1, [2.0, 2.0, 2.1], [1.0, 1.0, 1.1], 3)
    assert out["dispatched_ratio"] == pytest.approx(2.0) and timed == [7]
    assert out["dispatched_recheck_ratio"] == pytest.approx(recheck[0]) and out["slower_than_vendor"] is slower
    # not slower in the bench's rounds: no recheck
    out = B._dispatched(case, tgt, 1, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], 3)
    assert not out["slower_than_vendor"] and "dispatched_recheck_ratio" not in out and timed == [7]


def test_bench_with_dispatch_settles_an_undecided_workload_first(roof):
    """A workload not yet calibrated on this machine is decided (first-use calibration) before the
    rounds are timed, so the timed op runs one path throughout."""
    from tvmconv import functional as TF
    from tvmconv.runtime import build, dispatch

    spec = conv(8, 10, 8, 3, 1, 1)
    case = B.case_for(spec)
    tgt = resolve("x86-avx2")
    with torch.no_grad(), TF.no_dispatch(), TF.capture_kernels() as ks:
        case.op(*case.args, **case.kwargs, target=tgt)
    assert ks[-1].dispatch == dispatch.UNDECIDED
    rec = B.run_case(case, tgt, roof, rounds=3, dispatched=True)
    assert rec["dispatch"] in ("tvmconv", "vendor") and rec["dispatch_source"] == dispatch.CALIBRATED
    build.clear_memory_cache()
