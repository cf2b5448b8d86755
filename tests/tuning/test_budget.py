"""A tune under a time limit: the duration parser, the deadlines, the order the budget is spent
in, the seeds from the nearest records and the shipped cost model. One tiny tune with a 60 s limit
(another of 180 s where a loaded machine measured nothing in 60 s); the rest runs no search."""

import json
import time

import pytest

from tvmconv.backends.blocking import transfer_plan
from tvmconv.backends.target import resolve
from tvmconv.runtime import cache
from tvmconv.runtime.cache import new_record
from tvmconv.suites import conv
from tvmconv.tuning.budget import Deadlines, heaviest_first, parse_duration, validation_reserve
from tvmconv.variants.compute import plan_to_dict


def test_durations_parse_and_bad_ones_name_the_argument():
    assert parse_duration(None) is None
    assert parse_duration(90) == 90.0 and parse_duration(2.5) == 2.5
    assert parse_duration("90s") == 90.0 and parse_duration("10m") == 600.0 and parse_duration("1h") == 3600.0
    assert parse_duration("1.5h") == 5400.0 and parse_duration(" 45 ") == 45.0 and parse_duration("2M") == 120.0
    for bad in ("soon", "10 minutes", "-5s", "0", 0, -1, True, float("nan"), "", "1d", [10]):
        with pytest.raises(ValueError, match="time_limit"):
            parse_duration(bad)


def test_deadlines_keep_the_validation_reserve_and_at_least_a_tenth_for_the_search():
    d = Deadlines.plan(1000.0, 600.0, validation_reserve(10, 1.0))
    assert d.end == 1600.0 and d.end - d.search == pytest.approx(3.0 + 10 * (5 * 1.0 + 2.5))
    tight = Deadlines.plan(1000.0, 20.0, validation_reserve(50, 2.0))  # the reserve outgrows the limit
    assert tight.search == pytest.approx(1002.0) and tight.end == 1020.0


def test_the_costliest_layers_come_first():
    """Seconds per call times occurrences: a fast layer used 10 times outranks a slower one used
    once; unmeasured layers come last, in their order."""
    costs = [1e-3, 3e-4, None, 2e-3, 5e-4, None]
    weights = [1.0, 10.0, 1.0, 1.0, 1.0, 3.0]
    assert heaviest_first(costs, weights) == [1, 3, 0, 4, 2, 5]
    assert heaviest_first([], []) == []


def test_batch_cost_says_what_fits_before_the_deadline():
    from tvmconv.tuning.scheduler import _BatchCost

    c = _BatchCost(start_s=3.0, item_s=1.0)
    assert c.fits(100.0, 16) == 16 and c.fits(9.5, 16) == 6 and c.fits(3.5, 16) == 0
    c.learn(10, 8.0)  # measured: 0.5 s a schedule
    assert c.item_s == pytest.approx(0.5) and c.fits(9.5, 16) == 13


def _record(spec, tgt, plan, secs=1e-4):
    return new_record(spec, tgt, plan=plan_to_dict(plan), trace=[], run_secs=secs, source="metaschedule")


def test_seeds_are_the_nearest_same_variant_records_moved_to_this_target(tmp_path, monkeypatch):
    """The record of the same variant at the nearest shape, from a compatible profile (AVX2, 8
    lanes), seeds the plan phase with its plan moved to AVX-512's 16 lanes."""
    import dataclasses
    import shutil

    from tvmconv import knobs
    from tvmconv.tuning.seeds import nearest_records, seed_plans

    shipped = tmp_path / "shipped"  # the shipped profiles, none of the shipped records
    shutil.copytree(knobs.shipped_dir() / "targets", shipped / "targets")
    monkeypatch.setenv("TVMCONV_SHIPPED_DIR", str(shipped))
    avx2, avx512 = resolve("x86-avx2"), resolve("x86-avx512")
    want = conv(64, 28, 128, 3, 1, 1)
    near, far, pointwise = conv(64, 28, 96, 3, 1, 1), conv(16, 112, 32, 3, 1, 1), conv(64, 28, 128, 1)
    near_plan = avx2.backend.default_plan(near)
    if near_plan.kind == "ocvec":  # a plan of its own, not what this target would choose anyway
        near_plan = dataclasses.replace(near_plan, owi=2)
    for spec in (near, far, pointwise):
        plan = near_plan if spec is near else avx2.backend.default_plan(spec)
        cache.save_record(_record(spec, avx2, plan), spec, avx2, tmp_path / "user")
    got = nearest_records(want, avx512, tmp_path / "user", n=3)
    assert [r.spec for r in got] == [json.loads(json.dumps(s.to_dict())) for s in (near, pointwise, far)]
    expect = transfer_plan(near_plan, want, avx2.lanes("float32"), avx512.lanes("float32"),
                           avx512.facts.vector_registers)
    assert seed_plans(want, avx512, tmp_path / "user", n=1) == [expect]
    assert nearest_records(want, resolve("arm64-linux"), tmp_path / "user") == []  # not a compatible profile


def test_a_record_of_another_variant_is_no_seed():
    from tvmconv.tuning.seeds import distance

    a = conv(64, 28, 128, 3, 1, 1).to_dict()
    assert distance(a, a) == 0.0
    assert distance(a, {**a, "variant": "conv1d"}) is None and distance(a, {**a, "dtype": "float16"}) is None
    assert 0 < distance(a, {**a, "c_out": 96}) < distance(a, {**a, "c_out": 32})


def test_the_shipped_cost_model_loads_and_round_trips(tmp_path):
    """The shipped x86 model carries its booster and its training samples (so the first batch of a
    search is ranked by it), its sidecar names what it was trained on and how to retrain it, and
    save/load keeps both."""
    import numpy as np

    from tvmconv.tuning import costmodel

    path = costmodel.shipped_path(resolve("x86-avx512").backend.cost_model_family())
    assert path is not None and path.stat().st_size < 2_000_000  # small: a capped sample
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["samples"] > 0 and side["trained_on"] and side["command"].startswith("python -m tvmconv.tuning.costmodel")
    assert side["tvm"] and side["date"]
    m = costmodel.load(path)
    assert m.booster is not None and m.data_size == side["samples"] and m.num_warmup_samples <= m.data_size
    m.save(str(tmp_path / "again.tar"))
    again = costmodel.load(tmp_path / "again.tar")
    assert again.data_size == m.data_size and list(again.data) == list(m.data)
    g = next(iter(m.data.values()))
    xs = g.features[:5]
    assert np.allclose(m._predict(xs=xs), again._predict(xs=xs))
    assert resolve("arm64-linux").backend.cost_model_family() is None  # no shipped logs of that family


def test_a_cost_model_trains_on_a_log(tmp_path):
    """``python -m tvmconv.tuning.costmodel`` on a small log (a few workloads of the shipped log)
    writes a model that loads, and a sidecar."""
    from tvmconv.tuning import costmodel

    src = next((cache.shipped_root() / "tuning_logs").rglob("database_tuning_record.json"), None)
    if src is None:
        pytest.skip("no shipped tuning logs (an installed package: they stay in the repository)")
    log = tmp_path / "log"
    log.mkdir()
    with open(src.parent / "database_workload.json") as f:
        wl = [next(f) for _ in range(3)]
    (log / "database_workload.json").write_text("".join(wl))
    recs = []
    with open(src) as f:
        for line in f:
            if json.loads(line)[0] < 3:
                recs.append(line)
            if len(recs) >= 40:
                break
    (log / "database_tuning_record.json").write_text("".join(recs))
    out = tmp_path / "m" / "x86.tar"
    costmodel.main(["--logs", str(log), "--out", str(out), "--samples", "20"])
    side = json.loads(out.with_suffix(".json").read_text())
    assert 0 < side["samples"] <= 20
    assert costmodel.load(out).data_size == side["samples"]


def test_a_time_limited_tune_ends_in_time_and_loses_no_trial(tmp_path):
    """A limit for a small workload: the call returns within 5% of the limit (plus 1 s: the limit
    is counted from the call's start, after Python has imported tvmconv and torch), at least one
    trial is measured, and the log holds exactly the trials reported.

    Before its first trial the search process starts (imports TVM, MetaSchedule and torch) and the
    first batch starts MetaSchedule's workers, and the end of the limit is kept for distilling: on
    a 2-vCPU machine running the other tests (or anything else) beside it that took over 30 s, and
    the tune then rightly measured nothing (which the log and the report agreed on). So 60 s, and
    where even that measured nothing, once more with 180 s: every call must end in time and lose
    nothing, and one of them must measure a trial."""
    from tvmconv.tuning.api import results_json, tune

    for limit in (60, 180):
        root = tmp_path / f"{limit}s"
        t = time.time()
        # (conv2d 8->8 on a 3x3 input: 4 other blockings, so the plan phase's first batch is short)
        rs = tune([conv(8, 3, 8, 3, 1, 1)], target="x86-avx2", cache_dir=root, time_limit=f"{limit}s",
                  num_trials_per_iter=2, population=16, progress=False, seed=1)
        took = time.time() - t
        assert took <= 1.05 * limit + 1.0, took
        log = cache.log_dir(root, resolve("x86-avx2")) / "database_tuning_record.json"
        logged = len(log.read_text().splitlines()) if log.exists() else 0
        assert logged == sum(r.trials_run for r in rs) == sum(r.trials_total for r in rs)
        rows = [json.loads(line) for line in results_json(rs).splitlines()]
        assert all(row["tune_secs"] == pytest.approx(took, abs=1.0) for row in rows)
        if logged:
            break
    assert sum(r.trials_run for r in rs) >= 1


def test_bad_time_limit_is_a_clear_error():
    from tvmconv.tuning.api import tune

    with pytest.raises(ValueError, match="time_limit"):
        tune([conv(8, 10, 16, 3, 1, 1)], target="x86-avx2", time_limit="soon")


def test_cli_time_limit_is_passed_on_and_checked():
    from typer.testing import CliRunner

    from tvmconv.tools import cli

    out = CliRunner().invoke(cli.app, ["tune", "--suite", "mobilenet_v1", "--time-limit", "soon"])
    assert out.exit_code != 0 and "time_limit" in out.output and "Traceback" not in out.output
