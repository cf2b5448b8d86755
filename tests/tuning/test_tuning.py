"""Tuning and the schedule cache, with tiny budgets on small shapes.

Every tuning run here measures a handful of trials with a small evolutionary population; the
assertions are about the flow (what is recorded, found, loaded, kept apart, survived), never about
how fast the result is.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from tvmconv.runtime import cache
from tvmconv.runtime import build
from tvmconv.runtime.cache import new_record
from tvmconv.runtime.record import Candidate, ScheduleRecord, Validation
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS
from tvmconv.spec import spec_from_dict
from tvmconv.suites import conv
from tvmconv.backends.target import resolve
from tvmconv.tuning.api import tune

from ..conftest import assert_close, rpc_device

TINY = dict(trials=3, num_trials_per_iter=2, population=16, progress=False, seed=1)
# Small shapes with few blockings: a tune measures the default schedule under every plan candidate
# however small its budget (tuning/scheduler.py), so the shape decides what a "tiny" tune costs. On
# x86-avx2 SPEC has 4 other blockings (conv2d 8->16 at 10x10 had 17), SPEC_B 3 (pointwise 4->8 at
# 9x9 had 10); each is still an ocvec plan with candidates, a search seed and a vendor path.
SPEC_ARGS = (8, 3, 8, 3, 1, 1)
SPEC = conv(*SPEC_ARGS)  # conv2d 8->8, 3x3 input, 3x3 kernel, pad 1
X_SHAPE, W_SHAPE = (1, 8, 3, 3), (8, 8, 3, 3)  # its input and weight
SPEC_B_ARGS = (8, 2, 8, 1)
SPEC_B = conv(*SPEC_B_ARGS)  # pointwise 8->8, 2x2
TARGET = "x86-avx2"


def _env(cache_dir):
    env = dict(os.environ)
    env["TVMCONV_CACHE_DIR"] = str(cache_dir)
    return env


def _py(code: str, cache_dir, timeout=600, **kw):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(cache_dir), capture_output=True,
                          text=True, timeout=timeout, **kw)


RUN_SPEC = f"""
    import sys, torch, tvmconv.functional as F
    from tvmconv.runtime import build
    torch.manual_seed(0)
    x, w = torch.randn{X_SHAPE}, torch.randn{W_SHAPE}
    y = F.conv2d(x, w, padding=1, target="x86-avx2")
    err = (y - torch.nn.functional.conv2d(x, w, padding=1)).abs().max().item()
    k = build.load(*list(build._cache)[0])
    searching = ("log", "measure", "space", "scheduler", "candidates")  # the tuning modules importing MetaSchedule
    imported = any(f"tvmconv.tuning.{{m}}" in sys.modules for m in searching)
    print(k.schedule_source, "|", k.loaded_from, "|", err, "|", imported)
"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tiny tuning run of two workloads, shared by the tests that only read its results."""
    root = tmp_path_factory.mktemp("tuned")
    results = tune([SPEC, SPEC_B], target=TARGET, cache_dir=root, **TINY)
    return root, results


def test_tune_records_and_distills(tuned):
    root, results = tuned
    tgt = resolve(TARGET)
    assert [r.spec for r in results] == [SPEC, SPEC_B]
    for r in results:
        assert r.trials_run >= 1 and r.trials_total >= 2  # the default schedule + the trials
        assert r.best_s > 0 and r.default_s >= r.best_s and r.gflops > 0
        rec = json.loads(Path(r.record_path).read_text())
        assert rec["key"] == cache.schedule_key(r.spec, tgt) and spec_from_dict(rec["spec"]) == r.spec
        assert rec["target"] == tgt.key_dict and rec["source"] in ("default", "metaschedule", "plan-search")
        assert r.dispatch == rec["dispatch"]["choice"]  # measured with the validation, reported as recorded
        # chosen by timing the fastest logged schedules and the default again through the op
        cands = rec["validated"]["candidates"]
        assert len(cands) >= 2 and [c["source"] for c in cands].count("default") == 1
        assert cands[0]["tuning_secs"] == min(c["tuning_secs"] for c in cands)
        assert rec["run_secs"] == r.best_s == min(c["op_secs"] for c in cands)
        assert cache.schedule_id(ScheduleRecord.from_dict(rec)) == min(cands, key=lambda c: c["op_secs"])["id"]
        assert r.default_s == next(c["op_secs"] for c in cands if c["source"] == "default")
    log_dir = cache.log_dir(root, tgt)
    # TVM's own JSON database reads the log
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(log_dir), allow_missing=False)
    assert len(db.get_all_tuning_records()) == sum(r.trials_total for r in results)
    # ... though each workload's IR graph is stored minified, not indented as TVM writes it
    import base64

    lines = (log_dir / "database_workload.json").read_text().splitlines()
    assert len(lines) == len(set(lines)) >= 2
    for line in lines:
        shash, b64 = json.loads(line)
        raw = base64.b64decode(b64)
        assert int.from_bytes(raw[:8], "little") == len(raw) - 8 and b"\n" not in raw[8:]
        wl = ms.database.Workload.from_json([shash, b64])
        assert db.has_workload(wl.mod)


def test_every_logged_schedule_computes_the_reference(tuned):
    """Every trace MetaSchedule measured, replayed on the workload, compiles and matches torch."""
    import tvm

    from tvmconv.tuning.log import TuningLog
    from tvmconv.tuning.space import prepare

    root, _ = tuned
    tgt = resolve(TARGET)
    log = TuningLog(cache.log_dir(root, tgt))
    (w,) = prepare([(SPEC, 1)], tgt)
    torch.manual_seed(0)
    x, wt = torch.randn(X_SHAPE), torch.randn(W_SHAPE)
    expected = torch.nn.functional.conv2d(x, wt, padding=1)
    from tvmconv.tuning.space import plan_variants

    mods = [w.mod] + [mod for _, mod, _ in plan_variants(w, tgt)]  # the searched plan and the other blockings
    scripts = {m.script(): m for m in mods}
    records = [r for r in log.get_all_tuning_records() if r.workload.mod.script() in scripts]
    assert len(records) > len(mods)
    for rec in records:
        sch = tvm.s_tir.Schedule(scripts[rec.workload.mod.script()])
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        f = tvm.compile(sch.mod, target=tgt.tvm())["main"]
        out = torch.empty(SPEC.kernel_out_shape)
        f(x.view(SPEC.kernel_arg_shapes[0][1]), wt.view(SPEC.kernel_arg_shapes[1][1]), out)
        assert_close(out.view(expected.shape), expected)


def test_fresh_process_loads_tuned_kernel_without_tuning(tuned):
    root, _ = tuned
    first = _py(RUN_SPEC, root)
    assert first.returncode == 0, first.stderr
    source, loaded_from, err, tuning_imported = [s.strip() for s in first.stdout.strip().split("|")]
    # applies the trace (runtime/build.py) without importing the search module
    assert source.startswith("tuned:") and float(err) < 1e-4 and tuning_imported == "False"
    second = _py(RUN_SPEC, root)
    source2, loaded_from2, err2, tuning_imported2 = [s.strip() for s in second.stdout.strip().split("|")]
    assert source2 == source and float(err2) < 1e-4
    assert loaded_from2.endswith(".so") and tuning_imported2 == "False"  # only loads the library


def test_resume_spends_only_the_remaining_budget(tuned):
    root, results = tuned
    again = tune([SPEC, SPEC_B], target=TARGET, cache_dir=root, **TINY)
    assert [r.trials_run for r in again] == [0, 0]
    assert [r.trials_total for r in again] == [r.trials_total for r in results]


def test_scheduler_tops_up_the_least_searched_workload_first():
    """The next batch goes to the live task with the fewest trials per unit of weight, counting
    what earlier runs logged: a resumed run spends its budget where the log is thinnest."""
    from collections import defaultdict

    from tvmconv.tuning.scheduler import WeightedScheduler, least_searched

    trials = WeightedScheduler(done_before=[300, 40, 120]).trials
    assert least_searched([0, 1, 2], trials, [1.0, 1.0, 1.0]) == 1
    assert least_searched([0, 2], trials, [1.0, 1.0, 1.0]) == 2  # 1 exhausted or done
    assert least_searched([0, 1, 2], trials, [1.0, 1.0, 4.0]) == 2  # 120 / 4 < 40 / 1: a layer used 4 times
    assert least_searched([0, 1], defaultdict(int), [1.0, 1.0]) == 0  # a first run: ties go to the first
    assert least_searched([], trials, [1.0, 1.0, 1.0]) == -1


def test_search_ends_when_its_space_is_exhausted(tmp_path):
    """A workload whose sketch has a few points (a 1x1 output: only the unroll depth is sampled)
    stops being searched once the search finds nothing new, instead of searching in vain until the
    budget is spent, and the result says so."""
    spec = conv(16, 1, 16, 1)
    # (batches of 16, more than the space holds: the search measures what it finds in one batch and
    # finds nothing new in the next; batches of 4 took three, each starting MetaSchedule's workers)
    budget = {**TINY, "trials": 40, "num_trials_per_iter": 16}
    (r,) = tune([spec], target=TARGET, cache_dir=tmp_path, **budget)
    assert r.exhausted
    assert 1 <= r.trials_run < 40
    assert r.best_s is not None
    again = tune([spec], target=TARGET, cache_dir=tmp_path, **budget)[0]  # the log remembers: no search at all
    assert again.exhausted and again.trials_run == 0 and again.trials_total == r.trials_total
    assert tune([spec], target=TARGET, cache_dir=tmp_path, **{**budget, "trials": 0})[0].exhausted  # distilling says so too


def test_interrupted_tuning_loses_nothing_and_resumes(tmp_path):
    code = f"""
        from tvmconv.suites import conv
        from tvmconv.tuning.api import tune
        tune([conv{SPEC_ARGS}], target="x86-avx2", trials=40, num_trials_per_iter=2, population=16,
             progress=False)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    from tvmconv.tuning.space import plan_variants, prepare, search_start

    tgt = resolve(TARGET)
    (w,) = prepare([(SPEC, 1)], tgt)
    start = 1 + len(plan_variants(w, tgt))  # the default schedule under every blocking, measured first
    rec_file = cache.log_dir(tmp_path, tgt) / "database_tuning_record.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # until the search has measured the sketch seed and a trial of its own
        if rec_file.exists() and len(rec_file.read_text().splitlines()) >= start + 2:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = rec_file.read_text().splitlines()
    assert len(lines) >= start + 2
    with open(rec_file, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('[0,[[["GetSBlock",[],["pa')
    from tvmconv.tuning.log import TuningLog

    log = TuningLog(cache.log_dir(tmp_path, tgt))
    assert log.unreadable and "GetSBlock" in log.unreadable[0][0].read_text()
    assert sum(len(v) for v in log.records.values()) == len(lines)  # every whole line kept
    _, _, searched = search_start(w, tgt, log)  # the search's trials so far (the sketch seed included)
    assert searched >= 1
    # (a trial is any schedule timed, the plan phase's too: the log holds len(lines) of this workload's)
    (r,) = tune([SPEC], target=TARGET, cache_dir=tmp_path, trials=len(lines) + 2, num_trials_per_iter=2,
                population=16, progress=False)
    assert 1 <= r.trials_run <= 2 + 2  # only the remaining budget (one batch of slack)
    assert r.record_path and r.trials_total >= len(lines) + r.trials_run


def test_ctrl_c_stops_cleanly_and_distills(tmp_path):
    """SIGINT to `tvmconv tune` (what Ctrl-C sends): exit 130, no crash, the best so far distilled,
    and the search process and its workers gone (the log stops growing)."""
    cmd = [sys.executable, "-m", "tvmconv", "tune", "--target", TARGET, "--op", "conv2d", "--shape",
           ",".join(map(str, X_SHAPE)), "--weight", ",".join(map(str, W_SHAPE)), "--padding", "1", "--trials", "40",
           "--per-iter", "2", "--population", "16"]
    # SIGINT as in a terminal: a shell's background job (how CI may be started) ignores it, and Python
    # keeps an inherited SIG_IGN, so tune would never see the Ctrl-C
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rec_file = cache.log_dir(tmp_path, resolve(TARGET)) / "database_tuning_record.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (rec_file.exists() and len(rec_file.read_text().splitlines()) >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # say what was still running
        ps = subprocess.run(["ps", "-eo", "pid,ppid,pgid,stat,etime,args"], capture_output=True, text=True).stdout
        proc.kill()
        pytest.fail(f"tvmconv tune did not exit within 240 s of SIGINT; processes:\n{ps}")
    assert proc.returncode == 130, err
    assert "interrupted" in out and "Segfault" not in err and "terminate" not in err
    assert len(list((tmp_path / "schedules" / TARGET).glob("conv2d_*.json"))) == 1
    n = len(rec_file.read_text().splitlines())
    time.sleep(5)
    assert len(rec_file.read_text().splitlines()) == n
    # interrupted, it distilled the fastest logged schedule; --trials 0 measures nothing more and
    # chooses among the best candidates by timing them through the op
    (record,) = (tmp_path / "schedules" / TARGET).glob("conv2d_*.json")
    assert "validated" not in json.loads(record.read_text())
    again = subprocess.run(cmd[:cmd.index("--trials")] + ["--trials", "0"], env=_env(tmp_path), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert len(rec_file.read_text().splitlines()) == n
    assert len(json.loads(record.read_text())["validated"]["candidates"]) >= 2


def test_dispatch_is_measured_recorded_and_followed(tuned, monkeypatch):
    """After tuning, each op was timed against its vendor path and the faster one recorded; a
    record that says 'vendor' makes the op call the vendor path, unless TVMCONV_DISPATCH=0."""
    from tvmconv.backends.machine import machine_of

    root, results = tuned
    for r in results:
        assert r.dispatch in ("tvmconv", "vendor")
        rec = json.loads(Path(r.record_path).read_text())
        d = rec["dispatch"]  # (a later test's resumed run measures and records it again: it may flip)
        # dispatch.judge on the validation's paired rounds: the vendor only where decided, and faster
        assert d["vendor"] and isinstance(d["decided"], bool) and d["rounds"] >= 7
        assert d["choice"] == "tvmconv" or (d["decided"] and d["vendor_s"] < d["tvmconv_s"])
        # timed in the validation's own interleaved rounds, against the schedule it chose
        assert d["tvmconv_s"] == rec["run_secs"] and d["measured_at"] == rec["validated"]["measured_at"]
        # on this machine: the choice applies here only (runtime/dispatch.py)
        assert d["machine"] == machine_of(resolve(TARGET)).key and d["machine_description"]
    path = Path(results[0].record_path)
    rec = json.loads(path.read_text())
    rec["dispatch"].update(choice="vendor", decided=True)
    path.write_text(json.dumps(rec))
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    from tvmconv import functional as TF
    from tvmconv.runtime import call
    from tvmconv.runtime import build

    build.clear_memory_cache()
    calls = []

    def vendor(spec):
        def fn(*tensors):
            calls.append(spec.name)
            return torch.nn.functional.conv2d(tensors[0], tensors[1], padding=1)
        return fn

    monkeypatch.setattr(call, "_vendor", vendor)
    x, w = torch.randn(X_SHAPE), torch.randn(W_SHAPE)
    y = TF.conv2d(x, w, padding=1, target=TARGET)
    assert calls == [SPEC.name]
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1))
    with TF.no_dispatch():
        TF.conv2d(x, w, padding=1, target=TARGET)
    monkeypatch.setenv("TVMCONV_DISPATCH", "0")
    TF.conv2d(x, w, padding=1, target=TARGET)
    assert calls == [SPEC.name]
    build.clear_memory_cache()


SHARED_ARGS = (8, 2, 8, 3, 1, 1)  # what both tuners below tune: 3 other blockings on x86-avx2


def test_two_concurrent_tuners_share_one_cache(tmp_path, monkeypatch):
    code = f"""
        import sys
        from tvmconv.suites import conv
        from tvmconv.tuning.api import tune
        specs = [conv{SPEC_ARGS}, conv{SPEC_B_ARGS}]
        tune([specs[int(sys.argv[1])], conv{SHARED_ARGS}], target="x86-avx2", trials=3, num_trials_per_iter=2,
             population=16, progress=False)
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(i)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    from tvmconv.tuning.log import TuningLog

    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    tgt = resolve(TARGET)
    log = TuningLog(cache.log_dir(tmp_path, tgt))
    assert not log.unreadable  # no line was torn by the two writers
    shared = conv(*SHARED_ARGS)
    for spec in (SPEC, SPEC_B, shared):
        found = cache.find_record(spec, tgt)
        assert found is not None and spec_from_dict(found[0].spec) == spec
    from tvmconv.tuning.log import trace_json
    from tvmconv.tuning.space import plan_variants, prepare

    wls = prepare([(s, 1) for s in (SPEC, SPEC_B, shared)], tgt)
    for w in wls:  # every workload's records survived: the default schedule, the search's (its seed at least)
        assert w.default_trace in [t for _, t in log.records.get(log.shash(w.mod), ())]
        # (the search's records under whichever blocking it searched: the shared workload's two
        # tuners measured its blockings at different times, so the fastest one may differ from the
        # one either of them searched)
        mods = [w.mod] + [m for _, m, _ in plan_variants(w, tgt)]
        defaults = [w.default_trace] + [trace_json(s) for _, _, s in plan_variants(w, tgt)]
        assert any(t not in defaults for m in mods for _, t in log.records.get(log.shash(m), ()))
    for w in wls:  # and every other blocking of the default schedule was measured
        for _, mod, sch in plan_variants(w, tgt):
            assert trace_json(sch) in [t for _, t in log.records.get(log.shash(mod), ())]
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(cache.log_dir(tmp_path, tgt)), allow_missing=False)
    assert len(db.get_all_tuning_records()) == sum(len(v) for v in log.records.values())  # TVM reads them all


def test_corrupt_cache_files_are_set_aside_and_the_op_still_works(tuned, tmp_path, caplog):
    import shutil

    root, _ = tuned
    shutil.copytree(root, tmp_path / "c", dirs_exist_ok=True)
    tgt = resolve(TARGET)
    rec_path = cache.schedule_path(tmp_path / "c", SPEC, tgt)
    rec_path.write_text(rec_path.read_text()[:100])  # truncated
    for lib in (tmp_path / "c" / "kernels").rglob("*.so"):
        lib.write_bytes(b"not a library")
    out = _py(RUN_SPEC, tmp_path / "c")
    assert out.returncode == 0, out.stderr
    source, _, err, _ = [s.strip() for s in out.stdout.strip().split("|")]
    assert source == "default" and float(err) < 1e-4
    assert "unusable" in out.stderr and "moved it to" in out.stderr
    assert list(rec_path.parent.glob(rec_path.name + ".corrupt-*"))


def test_records_of_two_targets_are_kept_apart(tuned, monkeypatch):
    root, _ = tuned
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    avx2, avx512 = resolve("x86-avx2"), resolve("x86-avx512")
    other_cpu = resolve({"kind": "llvm", "mcpu": "skylake", "mattr": ["+avx2", "+fma"], "num-cores": 2})
    assert len({cache.log_dir(root, t) for t in (avx2, avx512, other_cpu)}) == 3
    assert cache.find_record(SPEC, avx2) is not None
    assert cache.find_record(SPEC, avx512) is None and cache.find_record(SPEC, other_cpu) is None
    # a profile listing x86-avx2 as compatible still finds the record (tuned on x86-avx2)...
    rec, _, found_on = cache.tuned_record(SPEC, avx512)
    assert found_on.profile == "x86-avx2" and rec.target == avx2.key_dict
    # ...and builds it transferred to its own 512-bit vectors, for x86-avx512, not as AVX2 code
    moved, source, build_target = build.choose(SPEC, avx512)
    assert build_target is avx512 and moved.transferred_from == "x86-avx2"
    assert source.startswith("transferred:") and source.endswith(" from x86-avx2")


def test_a_record_replaces_a_faster_one_only_after_beating_it_in_the_same_run(tmp_path):
    """save_record keeps the faster of two records; a validated record (candidates timed against
    each other in one run) replaces the record there when that record's schedule was among them."""
    tgt = resolve(TARGET)
    old = new_record(SPEC, tgt, plan={"kind": "ocvec"}, trace=["old"], run_secs=1.0)
    path = cache.save_record(old, SPEC, tgt, tmp_path)
    slower = old.replace(trace=["new"], run_secs=2.0)
    cache.save_record(slower, SPEC, tgt, tmp_path)
    assert json.loads(path.read_text())["trace"] == ["old"]  # times of two runs: the faster stays
    cache.save_record(slower.replace(validated=Validation(candidates=(Candidate(id="elsewhere"),))), SPEC, tgt,
                      tmp_path)
    assert json.loads(path.read_text())["trace"] == ["old"]
    cache.save_record(slower.replace(validated=Validation(candidates=(Candidate(id=cache.schedule_id(old)),))), SPEC,
                      tgt, tmp_path)
    assert json.loads(path.read_text())["trace"] == ["new"]  # it beat the old schedule in one run


def test_cache_key_changes_when_any_field_changes(monkeypatch):
    import dataclasses

    tgt = resolve("x86-avx2")
    base = cache.schedule_key(SPEC, tgt)
    for f in dataclasses.fields(SPEC):
        value = getattr(SPEC, f.name)
        changed = {"dtype": "float64", "bias": True, "transposed": True}.get(f.name)
        if changed is None:
            changed = (value + 1 if isinstance(value, int) else
                       tuple(tuple(x + 1 for x in v) if isinstance(v, tuple) else v + 1 for v in value))
        other = dataclasses.replace(SPEC, **{f.name: changed})
        assert cache.schedule_key(other, tgt) != base, f.name
    for change in ({"mcpu": "znver3"}, {"mattr": ["+avx2"]}, {"mtriple": "x86_64-linux-gnu"}):
        assert cache.schedule_key(SPEC, resolve({**tgt.dict, **change})) != base, change
    assert cache.schedule_key(SPEC, resolve({**tgt.dict, "num-cores": 64})) == base  # run-time only
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", cache.CACHE_FORMAT_VERSION + 1)
    assert cache.schedule_key(SPEC, tgt) != base
    monkeypatch.undo()
    monkeypatch.setattr(cache, "tvm_version", lambda: "0.28.0")
    assert cache.schedule_key(SPEC, tgt) != base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rpc_tracker():
    """A TVM RPC tracker and one x86 RPC server under key 'tvmconv-test', on 127.0.0.1: one for
    the module (starting the two takes about 25 s on a loaded 2-vCPU machine; the server takes
    the next session when one ends)."""
    with rpc_device([sys.executable, "-m", "tvm.exec.rpc_server"], "tvmconv-test", timeout_s=60) as port:
        yield port


def test_tuning_through_an_rpc_tracker(rpc_tracker, tmp_path):
    (r,) = tune([SPEC_B], target=TARGET, cache_dir=tmp_path, rpc=f"127.0.0.1:{rpc_tracker}:tvmconv-test", **TINY)
    assert r.trials_run >= 1 and r.failed_run == 0 and r.best_s > 0 and r.record_path


def test_a_device_that_drops_mid_tuning_fails_its_trials_and_tuning_goes_on(tmp_path):
    """The RPC server is killed once it has served its first session (the default schedule's
    measurement): what it measured is kept, every later trial fails after ``rpc_timeout`` instead
    of waiting forever for the device, and tuning ends with a record of the measured schedule."""
    log = tmp_path / "server.log"
    key = "tvmconv-drop"
    with rpc_device([sys.executable, "-m", "tvm.exec.rpc_server"], key, timeout_s=60, server_log=log) as (port, server):
        def drop_after_first_session():
            deadline = time.time() + 300
            while "finish serving" not in log.read_text() and time.time() < deadline:
                time.sleep(0.01)
            os.killpg(server.pid, signal.SIGKILL)

        killer = threading.Thread(target=drop_after_first_session, daemon=True)
        killer.start()
        t0 = time.perf_counter()
        (r,) = tune([SPEC_B], target=TARGET, cache_dir=tmp_path, rpc=f"127.0.0.1:{port}:{key}", rpc_timeout=3,
                    **TINY)
        took = time.perf_counter() - t0
        killer.join(timeout=10)
    assert server.poll() is not None, "the server was not dropped during tuning"
    assert log.read_text().count("connected from") == 1
    assert r.best_s > 0 and r.record_path and r.source == "default"  # the one measurement made is kept
    records = [json.loads(line) for line in
               next(tmp_path.glob("tuning_logs/x86-avx2/*/database_tuning_record.json")).read_text().splitlines()]
    secs = [rec[1][1] for rec in records]
    assert sum(max(s) < 1e9 for s in secs) == 1 and sum(max(s) >= 1e9 for s in secs) == len(secs) - 1 >= 2
    assert took < 120, f"tuning took {took:.0f} s after the device dropped"
    with pytest.raises(ValueError, match="rpc_timeout must be a positive number of seconds"):
        tune([SPEC_B], target=TARGET, cache_dir=tmp_path, rpc=f"127.0.0.1:{port}:{key}", rpc_timeout=0, **TINY)


def test_rpc_errors_are_clear(tmp_path, rpc_tracker):
    with pytest.raises(ConnectionError, match="no free device under key 'no-such-key'"):
        tune([SPEC_B], target=TARGET, cache_dir=tmp_path, rpc=f"127.0.0.1:{rpc_tracker}:no-such-key", **TINY)
    with pytest.raises(ConnectionError, match="cannot reach the RPC tracker"):
        tune([SPEC_B], target=TARGET, cache_dir=tmp_path, rpc=f"127.0.0.1:{_free_port()}:k", **TINY)
    with pytest.raises(ValueError, match="rpc must be HOST:PORT:KEY"):
        tune([SPEC_B], target=TARGET, cache_dir=tmp_path, rpc="localhost", **TINY)


def test_untuned_op_warns_once_naming_the_command(caplog, monkeypatch):
    import logging

    import tvmconv.functional as F

    monkeypatch.setattr(build, "_warned_untuned", False)
    build.clear_memory_cache()
    with caplog.at_level(logging.WARNING, logger="tvmconv"):
        F.conv2d(torch.randn(1, 3, 7, 7), torch.randn(5, 3, 3, 3), target=TARGET)
        F.conv2d(torch.randn(1, 3, 7, 7), torch.randn(6, 3, 3, 3), target=TARGET)
    msgs = [r.getMessage() for r in caplog.records if "no tuned schedule" in r.getMessage()]
    assert len(msgs) == 1 and "tvmconv tune --target x86-avx2 --spec '" in msgs[0]
    spec_json = msgs[0].split("--spec '")[1].split("'")[0]
    from tvmconv.spec import spec_from_dict

    assert spec_from_dict(json.loads(spec_json)).c_out == 5


def test_bad_tune_arguments():
    with pytest.raises(ValueError, match="trials must be a non-negative integer"):
        tune([SPEC], target=TARGET, trials=-1)
    with pytest.raises(ValueError, match="suite must be one of|what to tune"):
        tune("no_such_suite", target=TARGET)
    with pytest.raises(ValueError, match="target must be a profile name"):
        tune([SPEC], target="x86-avx9000")
    with pytest.raises(ValueError, match="cannot run on this machine"):
        tune([SPEC], target={"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    with pytest.raises(ConnectionError, match="cannot reach the RPC tracker"):
        tune([SPEC], target="android-arm64" if os.environ.get("TVM_NDK_CC") else "arm64-linux")


def test_trials_are_built_and_timed_as_the_backend_says():
    """The builder exports with the target's toolchain (``Backend.tuning_export``); the runner
    allocates with slack where trials are built without the weight packing
    (``measure_without_pack``) and fills each repeat for the backend's ``runner_repeat_ms``."""
    from tvmconv.tuning.measure import Measure, alloc_with_slack, make_builder, make_runner

    cross = resolve("arm64-linux")
    assert make_builder(cross, 1).f_export.keywords == cross.backend.tuning_export().keywords
    assert make_builder(resolve(TARGET), 1).f_export is None
    cpu, gpu = make_runner(Measure(), resolve(TARGET)), make_runner(Measure(), resolve("cuda-sm90"))
    assert cpu.f_alloc_argument is alloc_with_slack and cpu.evaluator_config.min_repeat_ms == 100
    assert gpu.f_alloc_argument is not alloc_with_slack and gpu.evaluator_config.min_repeat_ms == 20


SKETCH_ROWS = ("base", "stride2", "k1x1", "depthwise_m2_s2")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sketch_samples_compute_the_reference(variant):
    """MetaSchedule's design space (the default schedule as a sketch): schedules with random
    decisions, replayed as a tuned record through the op's own loading path, match the reference;
    the sketch's tile splits are sampled decisions the search can mutate."""
    import tvm

    from tvmconv.functional import spec_of
    from tvmconv.variants.compute import plan_to_dict
    from tvmconv.tuning.log import trace_json
    from tvmconv.tuning.space import prepare, sketch_space
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.schedule import Trace

    v = VARIANTS[variant]
    tgt = resolve(TARGET)
    rows = [r for r in SHAPE_TABLE if r.label in SKETCH_ROWS]
    for k, row in enumerate(rows):
        case = v.make_case(row, torch.Generator().manual_seed(k))
        spec = spec_of(v.op, *case.args, **case.kwargs)
        (w,) = prepare([(spec, 1)], tgt)
        ctx = ms.TuneContext(mod=w.mod, target=tgt.tvm(), space_generator=sketch_space(spec, w.plan, tgt),
                             task_name=spec.name)
        spaces = ctx.generate_design_space()
        assert spaces
        for j, space in enumerate(spaces):
            kinds = [inst.kind.name for inst in space.trace.insts]
            assert "SampleCategorical" in kinds  # the unroll depth, in every sketch
            if w.plan.kind in ("ocvec", "wvec"):
                assert "SamplePerfectTile" in kinds
            sch = tvm.s_tir.Schedule(w.mod, seed=1 + 7 * k + j)
            Trace(space.trace.insts, {}).apply_to_schedule(sch, remove_postproc=True)  # fresh random decisions
            sch.enter_postproc()
            for p in ctx.space_generator.postprocs:
                assert p.apply(sch)
            record = new_record(spec, tgt, plan=plan_to_dict(w.plan), trace=trace_json(sch), run_secs=1.0)
            kern = build.compile_spec(spec, tgt, record)
            assert kern.schedule_source.startswith("tuned:"), kern.schedule_source
            build.use_kernel(kern)
            try:
                assert_close(v.run(case), v.run_reference(case), atol=2e-4, rtol=2e-4)
            finally:
                build.clear_memory_cache()


def test_trials_are_measured_without_the_weight_packing_the_op_does_once():
    """Tuning times a kernel as the op runs it: where the op packs a weight once (the library's
    ``pack``), the measured build leaves the packing out and reads the packed weight through the
    weight's memory (``drop_weight_pack``). Given the op's packed weight that way, it computes the
    reference; kernels that do not pack are measured unchanged."""
    import math

    import tvm

    from tvmconv.functional import spec_of
    from tvmconv.runtime.build import drop_weight_pack, measure_slack
    from tvmconv.backends.llvm_schedules import default_for

    tgt = resolve(TARGET)
    (row,) = [r for r in SHAPE_TABLE if r.label == "base"]
    packing = []
    for name in sorted(VARIANTS):
        v = VARIANTS[name]
        case = v.make_case(row, torch.Generator().manual_seed(0))
        spec = spec_of(v.op, *case.args, **case.kwargs)
        kern = build.compile_spec(spec, tgt)
        mod = default_for(spec, tgt)[0].mod
        dropped = drop_weight_pack(mod)
        if kern.pack is None:
            assert dropped is mod, name
            continue
        assert dropped is not mod, name
        packing.append(name)
        main = tvm.compile(dropped, target=tgt.tvm())["main"]
        shapes = [shape for _, shape in spec.kernel_arg_shapes]
        n = math.prod(shapes[kern.packed_index])

        def measured(*args, main=main, shapes=shapes, n=n, i=kern.packed_index):
            flat = torch.randn(n + measure_slack(n))
            flat[:args[i].numel()] = args[i].reshape(-1)
            views = [flat[:n].view(s) if j == i else a.view(s) for j, (a, s) in enumerate(zip(args, shapes))]
            main(*views, args[-1].view(spec.kernel_out_shape))

        kern.func = measured
        build.use_kernel(kern)
        try:
            assert_close(v.run(case), v.run_reference(case), atol=2e-4, rtol=2e-4)
        finally:
            build.clear_memory_cache()
    assert {"conv2d", "conv_transpose2d", "depthwise_separable_conv2d", "shuffled_group_conv2d"} <= set(packing), packing
