"""The command line's conventions: --version, --json listings, one-line errors on stderr with
distinct exit codes (2 a wrong argument, 1 a failure, 3 results that differ)."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata

import pytest
from typer.testing import CliRunner

from tvmconv.tools import cli
from tvmconv.variants.registry import VARIANTS
from tvmconv.suites import SUITES, suite

runner = CliRunner()


def test_version():
    out = runner.invoke(cli.app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"tvmconv {metadata.version('tvmconv')}"


def test_listings_as_json():
    suites = json.loads(runner.invoke(cli.app, ["suites", "--json"]).output)
    assert [r["suite"] for r in suites] == [*SUITES, "all"]
    assert {r["suite"]: r["workloads"] for r in suites}["all"] == len(suite("all")) == 92
    variants = json.loads(runner.invoke(cli.app, ["variants", "--json"]).output)
    assert [r["variant"] for r in variants] == list(VARIANTS)
    targets = json.loads(runner.invoke(cli.app, ["targets", "--json"]).output)
    assert {"x86-avx2", "arm64-linux", "cuda-sm90"} <= {t["profile"] for t in targets}
    records = json.loads(runner.invoke(cli.app, ["cache", "list", "--json", "--target", "x86-avx2"]).output)
    assert records and all(r["profile"] == "x86-avx2" for r in records)
    # rows of tuned records carry their time; rows of workloads only calibrated here carry none
    assert all(r["run_secs"] > 0 for r in records if r["path"]) and any(r["path"] for r in records)
    assert all(r.keys() == records[0].keys() for r in records)


def test_bench_refuses_a_target_this_machine_cannot_run_before_measuring(monkeypatch):
    from tvmconv.tools import bench

    monkeypatch.setattr(bench, "measure_roofline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured")))
    out = runner.invoke(cli.app, ["bench", "--target", "arm64-linux"])
    assert out.exit_code == cli.EXIT_USAGE and "does not run on this machine" in out.output


def test_tune_without_its_extra_names_the_install_command(monkeypatch):
    from tvmconv.tools import tunecmd

    monkeypatch.setattr(tunecmd, "_TUNE_EXTRA", ("no_such_module_tvmconv",))
    out = runner.invoke(cli.app, ["tune", "--suite", "effnet"])
    assert out.exit_code == cli.EXIT_FAILED
    assert "pip install 'tvmconv[tune]'" in out.output and "Traceback" not in out.output


def test_results_that_differ_have_their_own_exit_code(monkeypatch):
    from tvmconv.tools import check

    real = check.check_variant

    def wrong(name, time_it=True):
        r = real(name, time_it=False)
        r.ok = False
        return r

    monkeypatch.setattr(check, "check_variant", wrong)
    out = runner.invoke(cli.app, ["check", "--variant", "conv2d", "--no-time"])
    assert out.exit_code == cli.EXIT_DIFFERS, out.output


def test_export_check_shows_the_compilers_output_when_the_example_does_not_build(monkeypatch, tmp_path):
    from tvmconv.tools import export

    monkeypatch.setattr(export, "export", lambda *a, **k: {"workloads": [], "target": "arm64-linux"})

    def failing(*a, **k):
        raise subprocess.CalledProcessError(2, ["make", "-s", "example"], output=b"",
                                            stderr=b"example.c:3:1: error: unknown type name 'boom'")

    monkeypatch.setattr(export, "check", failing)
    out = runner.invoke(cli.app, ["export", "--target", "arm64-linux", "--suite", "effnet", "-o", str(tmp_path),
                                  "--check"])
    assert out.exit_code == cli.EXIT_FAILED
    assert "unknown type name 'boom'" in out.output and "Traceback" not in out.output


# -- dispatch decided on this machine: calibrate, cache list ------------------------------------
def test_calibrate_stores_choices_that_cache_list_shows(tmp_path, monkeypatch):
    import torch

    import tvmconv.functional as TF
    from tvmconv.backends.machine import machine_of
    from tvmconv.backends.target import host
    from tvmconv.runtime import build, cache, dispatch
    from tvmconv.suites import cases

    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine A")
    monkeypatch.setattr(dispatch, "_tables", {})
    monkeypatch.setattr(build, "_cache", {})
    # timings injected: the vendor path faster by far more than the spread
    monkeypatch.setattr(cases, "time_case", lambda *a, **k: ([2e-3, 2.1e-3, 2e-3] * 3, [1e-3, 1.1e-3, 1e-3] * 3))
    spec = TF.spec_of(TF.conv2d, torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3), padding=1)
    out = runner.invoke(cli.app, ["calibrate", "--spec", spec.to_json(), "--json"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert row["workload"] == spec.name and row["choice"] == "vendor" and row["seconds"] > 0
    assert row["source"] == dispatch.CALIBRATED
    stored = json.loads(dispatch.path(machine_of(host())).read_text())
    (entry,) = stored["choices"].values()
    assert entry["source"] == "calibrate" and entry["choice"] == "vendor" and stored["machine"]["device"] == "test machine A"
    listed = json.loads(runner.invoke(cli.app, ["cache", "list", "--json"]).output)
    mine = [r for r in listed if r["workload"] == spec.name]
    assert [(r["choice"], r["dispatch_source"]) for r in mine] == [("vendor", dispatch.CALIBRATED)]
    assert all(r.keys() == listed[0].keys() for r in listed)  # a calibrated row reads like a record's
    # the shipped records say nothing of the machine they were measured on: not applied here
    shipped = {r["dispatch_source"] for r in listed if r["where"] == "shipped" and r["dispatch"]}
    assert shipped == {dispatch.RECORD_ELSEWHERE}
    # decided here: calibrating again keeps it, unless --redo
    timed = []
    monkeypatch.setattr(cases, "time_case", lambda *a, rounds=7, **k: timed.append(1) or ([1e-3] * rounds, [2e-3] * rounds))
    (row,) = json.loads(runner.invoke(cli.app, ["calibrate", "--spec", spec.to_json(), "--json"]).output)
    assert not timed and row["choice"] == "vendor" and row["margin"] == pytest.approx(0.5)
    (row,) = json.loads(runner.invoke(cli.app, ["calibrate", "--spec", spec.to_json(), "--redo", "--json"]).output)
    assert timed and row["choice"] == "tvmconv" and row["decided"] and (row["agree"], row["rounds"]) == (7, 7)
    assert "7/7 rounds" in runner.invoke(cli.app, ["calibrate", "--spec", spec.to_json(), "--redo"]).output
    # seen from another machine, this one's choices are not listed
    monkeypatch.setenv("TVMCONV_MACHINE", "test machine B")
    monkeypatch.setattr(dispatch, "_tables", {})
    listed = json.loads(runner.invoke(cli.app, ["cache", "list", "--json"]).output)
    assert not [r for r in listed if r["workload"] == spec.name]
    assert cache.user_root() == tmp_path


def test_calibrate_errors_are_one_line_with_the_usage_code():
    out = runner.invoke(cli.app, ["calibrate", "--spec", "{not json"])
    assert out.exit_code == cli.EXIT_USAGE and out.output.startswith("error: ") and out.output.count("\n") == 1
    out = runner.invoke(cli.app, ["calibrate"])
    assert out.exit_code == cli.EXIT_USAGE and "exactly one of" in out.output
    out = runner.invoke(cli.app, ["calibrate", "--suite", "mobilenet_v1", "--target", "arm64-linux"])
    assert out.exit_code == cli.EXIT_USAGE and "does not run on this machine" in out.output


def test_bench_layers_profiles_a_compiled_network_against_the_roofline(tmp_path, monkeypatch):
    from tvmconv.graph import compiler
    from tvmconv.backends.timing import Roofline

    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(compiler, "measure_roofline", lambda threads, target=None: Roofline(1e10, 1e9, threads))
    out = runner.invoke(cli.app, ["bench", "--model", "effnet", "--layers", "--rounds", "3",
                                  "--json", str(tmp_path / "layers.jsonl")])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in (tmp_path / "layers.jsonl").read_text().splitlines()]
    kernels = [r for r in rows if r["gflops"] is not None]
    assert kernels and all(r["model"] == "effnet" and r["batch"] == 1 for r in rows)
    assert all(r["of_roofline"] == r["roofline_seconds"] / r["seconds"] > 0 for r in rows)
    assert "furthest below the roofline" in out.output
    out = runner.invoke(cli.app, ["bench", "--layers", "--suite", "effnet"])
    assert out.exit_code == cli.EXIT_USAGE and "takes tvmconv.models networks" in out.output
