"""The one-thread threshold from what a parallel launch costs on this machine (backends/launch.py)."""

import json
import math

import pytest
import torch

import tvmconv.functional as TF
from tvmconv.backends import blocking, launch
from tvmconv.backends.machine import machine_of
from tvmconv.backends.target import resolve


def _small_spec():  # 0.5 MFLOP: serial_estimate about 17 us
    return TF.spec_of(TF.conv2d, torch.randn(1, 64, 8, 8), torch.randn(64, 64, 1, 1))


def test_serial_below_is_where_one_thread_beats_the_split():
    assert launch.serial_below_s(30e-6, 1) == math.inf
    assert launch.serial_below_s(30e-6, 2) == pytest.approx(60e-6)
    assert launch.serial_below_s(30e-6, 4) == pytest.approx(40e-6)


def test_plans_follow_the_threshold():
    spec = _small_spec()
    est = blocking.serial_estimate(spec)
    assert blocking.plan_for(spec, 16, 32, serial_below_s=2 * est).serial
    assert not blocking.plan_for(spec, 16, 32, serial_below_s=est / 2).serial
    # a transferred plan takes this machine's choice where it is given, else keeps the record's
    parallel = blocking.plan_for(spec, 8, 16, serial_below_s=0.0)
    assert blocking.transfer_plan(parallel, spec, 8, 16, 32, serial_below_s=2 * est).serial
    assert not blocking.transfer_plan(parallel, spec, 8, 16, 32).serial


def test_the_backend_plans_from_the_launch_cost(monkeypatch):
    spec, tgt = _small_spec(), resolve("x86-avx2")
    est = blocking.serial_estimate(spec)
    monkeypatch.setenv("TVMCONV_PARALLEL_LAUNCH_US", str(est * 1e6))  # threshold 2 * est on 2 threads
    assert tgt.backend.default_plan(spec).serial
    monkeypatch.setenv("TVMCONV_PARALLEL_LAUNCH_US", "0")
    assert tgt.backend.default_plan(spec).serial == (tgt.num_cores <= 1)
    monkeypatch.setenv("TVMCONV_PARALLEL_LAUNCH_US", "fast")
    with pytest.raises(ValueError, match="TVMCONV_PARALLEL_LAUNCH_US"):
        tgt.backend.default_plan(spec)


def test_a_target_of_another_machine_uses_the_default(monkeypatch):
    monkeypatch.delenv("TVMCONV_PARALLEL_LAUNCH_US", raising=False)
    assert launch.parallel_launch_s(resolve("arm64-linux")) == launch.DEFAULT_LAUNCH_S


def test_measured_once_per_machine_and_kept_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TVMCONV_PARALLEL_LAUNCH_US", raising=False)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    launch._stored.cache_clear()
    tgt = resolve(None)
    try:
        seconds = launch.parallel_launch_s(tgt)  # measured for real: two small kernels compiled and timed
        assert 0 <= seconds < 1e-2
        stored = tmp_path / "machine" / f"{machine_of(tgt).key}.json"
        assert json.loads(stored.read_text())["parallel_launch_s"] == seconds
        # the next process reads it back instead of measuring
        launch._stored.cache_clear()
        monkeypatch.setattr(launch, "measure", lambda *a, **k: pytest.fail("measured again"))
        assert launch.parallel_launch_s(tgt) == seconds
        # a corrupt file is set aside and measured again
        stored.write_text("{not json")
        launch._stored.cache_clear()
        monkeypatch.setattr(launch, "measure", lambda *a, **k: 3e-5)
        assert launch.parallel_launch_s(tgt) == 3e-5
        assert json.loads(stored.read_text())["parallel_launch_s"] == 3e-5
    finally:
        launch._stored.cache_clear()
