"""The command line's conventions: --version, --json listings, one-line errors on stderr with
distinct exit codes (2 a wrong argument, 1 a failure, 3 results that differ)."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata

from typer.testing import CliRunner

from tvmconv.tools import cli
from tvmconv.variants.registry import VARIANTS
from tvmconv.tools.suites import SUITES, suite

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
    assert records and all(r["profile"] == "x86-avx2" and r["run_secs"] > 0 for r in records)


def test_bench_refuses_a_target_this_machine_cannot_run_before_measuring(monkeypatch):
    from tvmconv.tools import bench

    monkeypatch.setattr(bench, "measure_roofline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured")))
    out = runner.invoke(cli.app, ["bench", "--target", "arm64-linux"])
    assert out.exit_code == cli.EXIT_USAGE and "does not run on this machine" in out.output


def test_tune_without_its_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(cli, "_TUNE_EXTRA", ("no_such_module_tvmconv",))
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
