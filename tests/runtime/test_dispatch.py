"""Dispatch decided on the machine that runs it (runtime/dispatch.py): a record's choice applies on
its own machine only, a workload not yet decided times both paths over its first calls (each call
giving the right answer) and stores the choice for this machine, read again by the next process.

Another machine is simulated with TVMCONV_MACHINE; where a test asserts a choice, the timings are
injected (the backend's ``time_call``), never the real speed of this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import tvmconv.functional as TF
from tvmconv import reference
from tvmconv.backends.llvm import LLVMBackend
from tvmconv.backends.machine import machine_of
from tvmconv.backends.target import host
from tvmconv.runtime import build, cache, call, dispatch
from tvmconv.runtime.cache import new_record
from tvmconv.runtime.record import Dispatch

X_SHAPE, W_SHAPE = (1, 4, 6, 6), (4, 4, 3, 3)
FIRST_USE = 2 * (dispatch.WARMUP + dispatch.CALLS)  # calls that decide


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Empty private caches, no shipped records, machine "A", nothing in memory; returns the
    host target."""
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path / "user"))
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine A")
    monkeypatch.delenv("TVMCONV_DISPATCH", raising=False)
    monkeypatch.setattr(cache, "shipped_root", lambda: tmp_path / "shipped")
    monkeypatch.setattr(build, "_cache", {})
    monkeypatch.setattr(build, "_key_locks", {})
    monkeypatch.setattr(dispatch, "_tables", {})
    monkeypatch.setattr(dispatch, "_settled_here", set())
    monkeypatch.setattr(call._state, "calibrating", {})
    return host()


class Paths:
    """The vendor path wrapped to count its calls, and timings injected by path: the vendor
    ``vendor_s`` a call, the kernel ``tvmconv_s``."""

    def __init__(self, monkeypatch, tvmconv_s=2e-3, vendor_s=1e-3):
        self.taken: list[str] = []
        self.local = threading.local()
        real = call._vendor

        def vendor(spec):
            fn = real(spec)

            def counted(*tensors):
                self.local.vendor = True
                return fn(*tensors)
            return counted

        def time_call(_backend, fn):
            self.local.vendor = False
            out = fn()
            which = "vendor" if self.local.vendor else "tvmconv"
            self.taken.append(which)
            return out, vendor_s if which == "vendor" else tvmconv_s

        monkeypatch.setattr(call, "_vendor", vendor)
        monkeypatch.setattr(LLVMBackend, "time_call", time_call)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(X_SHAPE, generator=g), torch.randn(W_SHAPE, generator=g)


def _conv(x, w):
    """One call, checked against torch: ``(result, its kernel)``."""
    with TF.capture_kernels() as ks:
        y = TF.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    return y, ks[0]


def _spec():
    return TF.spec_of(TF.conv2d, torch.randn(X_SHAPE), torch.randn(W_SHAPE), padding=1)


def _save_record(tgt, **dispatch_fields):
    """A user record of the test conv (its default schedule) carrying ``dispatch_fields``."""
    from tvmconv.tuning.log import to_json
    from tvmconv.variants.compute import plan_to_dict

    spec = _spec()
    sch, plan = tgt.backend.default_schedule(spec)
    rec = new_record(spec, tgt, plan=plan_to_dict(plan), trace=to_json(sch.trace.as_json()), run_secs=1e-5,
                     source="test", dispatch=Dispatch(**dispatch_fields) if dispatch_fields else None)
    return cache.save_record(rec, spec, tgt)


def _stored(tgt) -> dict:
    return json.loads(dispatch.path(machine_of(tgt)).read_text())


# -- the machine key -----------------------------------------------------------------------------
def test_the_machine_key_names_device_target_and_threads(here, monkeypatch):
    from tvmconv.backends.target import resolve

    a = machine_of(here)
    assert a == machine_of(here) and len(a.key) == 12 and a.device == "test machine A"
    assert "test machine A" in a.description and here.profile in a.description
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine B")
    assert machine_of(here).key != a.key
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine A")
    assert machine_of(resolve("x86-avx2")).key != machine_of(resolve("x86-avx512")).key
    more = resolve({**here.dict, "num-cores": here.num_cores + 1})
    assert machine_of(more).key != machine_of(resolve(here.dict)).key
    monkeypatch.delenv("TVMCONV_MACHINE")
    assert machine_of(here).device not in ("", "test machine A")  # this CPU's model


# -- a record's choice ---------------------------------------------------------------------------
def test_a_records_choice_applies_on_its_own_machine_only(here, monkeypatch):
    _save_record(here, choice="vendor", tvmconv_s=2e-5, vendor_s=1e-5, machine=machine_of(here).key)
    paths = Paths(monkeypatch)
    x, w = _inputs()
    _, kern = _conv(x, w)
    assert (kern.dispatch, kern.dispatch_source) == ("vendor", dispatch.RECORD_HERE)
    assert kern.schedule_source.startswith("tuned:")
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine B")  # the same record, read on another machine
    build.clear_memory_cache()
    _, kern = _conv(x, w)
    assert (kern.dispatch, kern.dispatch_source) == ("undecided", dispatch.RECORD_ELSEWHERE)
    assert paths.taken == ["tvmconv"]  # the first call of a workload not decided runs the kernel


def test_a_record_without_a_machine_is_not_applied(here):
    _save_record(here, choice="vendor", tvmconv_s=2e-5, vendor_s=1e-5)  # as the shipped records are
    _, kern = _conv(*_inputs())
    assert (kern.dispatch, kern.dispatch_source) == ("undecided", dispatch.RECORD_ELSEWHERE)


# -- first-use calibration -----------------------------------------------------------------------
@pytest.mark.parametrize("tvmconv_s, vendor_s, choice", [(2e-3, 1e-3, "vendor"), (1e-3, 2e-3, "tvmconv")])
def test_first_use_times_both_paths_then_stores_the_choice(here, monkeypatch, tvmconv_s, vendor_s, choice):
    paths = Paths(monkeypatch, tvmconv_s, vendor_s)
    x, w = _inputs()
    for i in range(FIRST_USE):
        _, kern = _conv(x, w)  # every call, calibrating ones included, gives torch's answer
        assert kern.dispatch == ("undecided" if i < FIRST_USE - 1 else choice)
    assert paths.taken == ["tvmconv", "vendor"] * (FIRST_USE // 2)
    assert kern.dispatch_source == dispatch.CALIBRATED
    (entry,) = _stored(here)["choices"].values()
    assert entry["choice"] == choice and entry["source"] == "first use" and entry["calls"] == 2 * dispatch.CALLS
    assert (entry["tvmconv_s"], entry["vendor_s"]) == (tvmconv_s, vendor_s) and entry["schedule"] == "default"
    assert (entry["tvmconv_best_s"], entry["vendor_best_s"]) == (tvmconv_s, vendor_s)  # what the rule compared
    _conv(x, w)
    assert len(paths.taken) == FIRST_USE  # decided: no more timing


@pytest.mark.parametrize("tvmconv_s, vendor_s, choice", [(1e-3, 10e-3, "tvmconv"), (10e-3, 1e-3, "vendor")])
def test_a_path_clearly_slower_is_given_fewer_calls(here, monkeypatch, tvmconv_s, vendor_s, choice):
    paths = Paths(monkeypatch, tvmconv_s, vendor_s)
    x, w = _inputs()
    for _ in range(FIRST_USE):
        _, kern = _conv(x, w)
    early = 2 * (dispatch.WARMUP + dispatch.EARLY)
    assert early < FIRST_USE and len(paths.taken) == early and kern.dispatch == choice
    (entry,) = _stored(here)["choices"].values()
    assert entry["calls"] == 2 * dispatch.EARLY


def test_judge_decides_only_where_the_paired_rounds_stand_out_of_the_noise():
    steady = [1e-3] * 7
    v = dispatch.judge(steady, [0.9e-3] * 7)
    assert (v.choice, v.decided, v.agree, v.rounds) == ("vendor", True, 7, 7) and v.label.startswith("vendor (0.90x")
    v = dispatch.judge(steady, [0.97e-3] * 7)  # faster in every round, but within the margin: the kernel
    assert (v.choice, v.decided) == ("tvmconv", False) and v.label.startswith("undecided: within noise")
    assert not dispatch.judge([1e-3] * 5, [0.6e-3] * 5).decided  # five rounds cannot pass the sign test
    # a vendor path faster only in its best round is within the noise (best times alone chose it)
    noisy_vendor = [0.9e-3, 3.0e-3, 2.5e-3, 2.4e-3, 2.6e-3, 2.3e-3, 2.5e-3]
    assert not dispatch.judge([2.2e-3] * 7, noisy_vendor).decided
    # a path more than CLEAR times slower in every call is decided from EARLY rounds on
    assert dispatch.judge([3e-3, 2.5e-3], [1e-3, 1.1e-3]).choice == "vendor"
    assert dispatch._sign_test_needs(7) == 7 and dispatch._sign_test_needs(15) == 13


NOISE = 0.25  # each round of each path takes up to 25% more than its true time (noise only adds time)


def _noisy_timer(kernel_s: float, vendor_s: float, rng):
    def time_rounds(k: int):
        jitter = lambda s: s * (1 + NOISE * rng.random())  # noqa: E731
        return [jitter(kernel_s) for _ in range(k)], [jitter(vendor_s) for _ in range(k)]
    return time_rounds


@pytest.mark.parametrize("ratio", [1.0, 1.05, 1.1, 1.2])
def test_on_a_noisy_machine_a_margin_under_the_noise_never_flips(ratio):
    """Two runs of ``measure`` on a timer with 25% jitter never decide a workload both ways, and never the
    slower path; equal paths are decided (arbitrarily) in at most 2 ALPHA of the runs."""
    import random

    rng = random.Random(int(ratio * 100))
    for kernel_s, vendor_s in ((1e-3, ratio * 1e-3), (ratio * 1e-3, 1e-3)):
        decided = 0
        for _ in range(300):
            first, second = (dispatch.measure(_noisy_timer(kernel_s, vendor_s, rng))[2] for _ in range(2))
            choices = {v.choice for v in (first, second) if v.decided}
            assert len(choices) <= 1, (first, second)
            if ratio > 1:
                assert choices <= {"tvmconv" if kernel_s < vendor_s else "vendor"}
            decided += first.decided + second.decided
        if ratio == 1.0:
            assert decided <= 600 * 2 * dispatch.ALPHA, decided  # (ALPHA a side: either way)


def test_on_a_noisy_machine_a_1_3x_difference_is_always_found():
    import random

    rng = random.Random(13)
    for kernel_s, vendor_s, faster in ((1e-3, 1.3e-3, "tvmconv"), (1.3e-3, 1e-3, "vendor")):
        for _ in range(300):
            a, b, v = dispatch.measure(_noisy_timer(kernel_s, vendor_s, rng))
            assert v.decided and v.choice == faster and len(a) == len(b) == dispatch.CALLS, v


def test_a_choice_within_the_noise_is_stored_as_such_and_measured_again_by_the_next_process(here, monkeypatch):
    paths = Paths(monkeypatch, tvmconv_s=1e-3, vendor_s=0.98e-3)  # the vendor 2% faster: within MARGIN
    x, w = _inputs()
    for _ in range(2 * (dispatch.WARMUP + dispatch.CALLS)):
        _, kern = _conv(x, w)
    assert kern.dispatch == "tvmconv"  # the kernel runs
    (entry,) = _stored(here)["choices"].values()
    assert entry["decided"] is False and entry["choice"] == "tvmconv" and entry["rounds"] == dispatch.CALLS
    n = len(paths.taken)
    _conv(x, w)
    assert len(paths.taken) == n  # not measured again in this process
    monkeypatch.setattr(dispatch, "_tables", {})  # a new process
    monkeypatch.setattr(dispatch, "_settled_here", set())
    build.clear_memory_cache()
    _, kern = _conv(x, w)
    assert (kern.dispatch, kern.dispatch_source) == ("undecided", dispatch.WITHIN_NOISE)
    assert len(paths.taken) == n + 1  # its first calls measure it again


def test_a_stored_choice_is_used_by_the_next_process(here, monkeypatch):
    paths = Paths(monkeypatch)
    x, w = _inputs()
    for _ in range(FIRST_USE):
        _conv(x, w)
    # as a new process: the file read again, the kernel loaded again
    monkeypatch.setattr(dispatch, "_tables", {})
    build.clear_memory_cache()
    _, kern = _conv(x, w)
    assert (kern.dispatch, kern.dispatch_source) == ("vendor", dispatch.CALIBRATED)
    assert paths.taken[FIRST_USE:] == []  # (the vendor ran, untimed)
    child = textwrap.dedent("""
        import torch, tvmconv.functional as TF
        x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3)
        with TF.capture_kernels() as ks:
            y = TF.conv2d(x, w, padding=1)
        torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
        print(ks[0].dispatch, "|", ks[0].dispatch_source)
    """)
    # (the child reads the shipped records too: this conv has none, its kernel is the default one)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"vendor | {dispatch.CALIBRATED}"
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine B")  # not another machine's choice
    build.clear_memory_cache()
    assert _conv(x, w)[1].dispatch_source == dispatch.NOT_DECIDED


def test_a_choice_made_for_another_schedule_is_not_applied(here, monkeypatch):
    Paths(monkeypatch)
    x, w = _inputs()
    for _ in range(FIRST_USE):
        _conv(x, w)
    _save_record(here)  # now tuned: the default schedule's choice says nothing of it
    build.clear_memory_cache()
    assert _conv(x, w)[1].dispatch_source == dispatch.NOT_DECIDED


@pytest.mark.parametrize("damage", [b"\x00\xffnot json", b'{"format": 1, "choices": {"k": {"choice": "gpu"}}}'])
def test_a_damaged_dispatch_file_is_set_aside_and_decided_again(here, monkeypatch, caplog, damage):
    p = dispatch.path(machine_of(here))
    cache.make_dirs(p.parent)
    p.write_bytes(damage)
    Paths(monkeypatch)
    x, w = _inputs()
    _, kern = _conv(x, w)
    assert kern.dispatch == "undecided" and list(p.parent.glob(p.name + ".corrupt-*"))
    assert str(p) in caplog.text
    for _ in range(FIRST_USE - 1):
        _, kern = _conv(x, w)
    assert kern.dispatch == "vendor" and list(_stored(here)["choices"].values())[0]["choice"] == "vendor"


def test_no_dispatch_and_dispatch_off_never_calibrate(here, monkeypatch):
    paths = Paths(monkeypatch)
    x, w = _inputs()
    with TF.no_dispatch():
        for _ in range(FIRST_USE + 2):
            _, kern = _conv(x, w)
    monkeypatch.setenv("TVMCONV_DISPATCH", "0")
    for _ in range(FIRST_USE + 2):
        _, kern = _conv(x, w)
    assert paths.taken == [] and kern.dispatch == "undecided"
    assert not dispatch.path(machine_of(here)).exists()


def test_threads_calibrating_at_once_all_get_torchs_answer(here, monkeypatch):
    paths = Paths(monkeypatch)
    x, w = _inputs()
    errors = []

    def work():
        try:
            for _ in range(FIRST_USE + 3):
                _conv(x, w)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(paths.taken) >= FIRST_USE and len(_stored(here)["choices"]) == 1
    assert _conv(x, w)[1].dispatch == "vendor"


def test_the_vendor_paths_result_is_dense_like_the_kernels(here, monkeypatch):
    """channel_wise_conv's vendor path ends in a permuted view; the op returns what its kernel and
    its custom op's fake implementation do: a dense tensor."""
    Paths(monkeypatch)
    x, w = torch.randn(1, 8, 5, 5), torch.randn(1, 3)  # weight (groups, k)
    for _ in range(4):  # calibrating: kernel, vendor, kernel, vendor
        y = TF.channel_wise_conv(x, w, padding=1)
        assert y.is_contiguous()
        torch.testing.assert_close(y, reference.channel_wise_conv(x, w, padding=1))
