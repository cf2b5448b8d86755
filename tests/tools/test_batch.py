"""Batch sizes: ``--batch 1,8`` on tune, bench, calibrate and export, ``tune(batch=...)``, and
``suites.workloads``'s rebatching of suites, specs and models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from tvmconv.spec import spec_from_dict
from tvmconv.tools import cli, options
from tvmconv.suites import conv, suite
from tvmconv.suites.workloads import batches, workloads

runner = CliRunner()


@pytest.mark.parametrize("command", [["tune", "--suite", "effnet"], ["bench", "--suite", "effnet"],
                                     ["calibrate", "--suite", "effnet"],
                                     ["export", "-t", "x86-avx2", "-o", "unused", "--suite", "effnet"]])
@pytest.mark.parametrize("bad", ["0", "1,x", "", "8,-1", "1.5", "1,,8"])
def test_a_bad_batch_list_is_a_usage_error_naming_batch(command, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(cli.app, [*command, "--batch", bad])
    assert out.exit_code == cli.EXIT_USAGE, out.output
    text = " ".join(out.output.replace("│", " ").split())  # (rich wraps the message in a box)
    assert "Invalid value for --batch" in text and "positive integers" in text
    assert not (tmp_path / "unused").exists()  # refused before anything ran


def test_batch_list_parsing():
    assert options.batches(None) is None
    assert options.batches("1,8") == (1, 8)
    assert options.batches(" 8, 1,8") == (8, 1)  # int() takes the spaces; repeats dropped, order kept
    assert batches(4) == (4,) and batches([1, 8, 1]) == (1, 8)
    for bad in (0, -1, [], [1, 0], [2.0], "8", True, [True], object()):
        with pytest.raises(ValueError, match="batch must be a positive integer"):
            batches(bad)


def test_a_suite_at_two_batch_sizes_holds_both_and_keeps_its_counts():
    base = suite("resnet18")
    assert {s.n for s, _ in base} == {1}  # suites stay defined at batch 1
    got = workloads("resnet18", batch=[1, 8])
    assert len(got) == 2 * len(base)
    expected = {}
    for spec, count in base:
        for n in (1, 8):
            expected[dataclasses.replace(spec, n=n)] = count
    assert dict(got) == expected
    # the batch shows in every name (tables and JSON print the name) and the shapes follow it
    for spec, _ in got:
        assert f"_n{spec.n}_" in spec.name and spec.arg_shapes[0][1][0] == spec.n == spec.out_shape[0]
    assert workloads("resnet18") == base and workloads("resnet18", batch=None) == base


def test_a_specs_batch_is_replaced_and_checked():
    spec = conv(16, (9, 9), 8, 3, n=2, bias=True)
    assert workloads(spec, batch=[1, 8]) == [(dataclasses.replace(spec, n=1), 1), (dataclasses.replace(spec, n=8), 1)]
    # the same spec twice after rebatching counts once, with both counts
    assert workloads([spec, dataclasses.replace(spec, n=1)], batch=4) == [(dataclasses.replace(spec, n=4), 2)]
    # the new spec is validated: a batch whose input passes 32-bit indexing is named
    with pytest.raises(ValueError, match="32-bit"):
        workloads(spec, batch=2**24)
    # every family has a batch: each suite's fused variants too
    for s, _ in workloads("variants", batch=3):
        assert s.n == 3 and spec_from_dict(s.to_dict()) == s


class _TwoViews(torch.nn.Module):
    """One conv on the input, one on the input stacked twice along the batch."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3)
        self.b = torch.nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.a(x).sum() + self.b(torch.cat([x, x])).sum()


def test_a_models_layers_follow_its_input_batch(tmp_path):
    model, x = _TwoViews(), torch.randn(2, 3, 8, 8)
    found = dict((s.c_out, s.n) for s, _ in workloads(model, example_inputs=(x,)))
    assert found == {4: 2, 5: 4}
    got = [(s.c_out, s.n) for s, _ in workloads(model, example_inputs=(x,), batch=[1, 8])]
    assert got == [(4, 1), (4, 8), (5, 2), (5, 16)]
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model.eval(), (x,)), str(path))
    assert [(s.c_out, s.n) for s, _ in workloads(path, input_shape=(2, 3, 8, 8), batch=[1, 8])] == got


class _Stop(Exception):
    pass


def test_tune_hands_each_workload_at_each_batch_size(monkeypatch):
    """``tune(batch=...)`` and ``tvmconv tune --batch``: what reaches the search (stopped there)."""
    from tvmconv.tuning import space
    from tvmconv.tuning.api import tune

    handed = []

    def prepare(items, tgt, *seeds):
        handed.append(items)
        raise _Stop

    monkeypatch.setattr(space, "prepare", prepare)
    with pytest.raises(_Stop):
        tune("effnet", target="x86-avx2", batch=[1, 8])
    assert handed[-1] == workloads("effnet", batch=[1, 8])
    spec = conv(8, (6, 6), 8, 3)
    out = runner.invoke(cli.app, ["tune", "--target", "x86-avx2", "--spec", spec.to_json(), "--batch", "2,3"])
    assert isinstance(out.exception, _Stop), out.output
    assert handed[-1] == [(dataclasses.replace(spec, n=2), 1), (dataclasses.replace(spec, n=3), 1)]
    out = runner.invoke(cli.app, ["tune", "--target", "x86-avx2", "--suite", "effnet"])
    assert isinstance(out.exception, _Stop) and handed[-1] == suite("effnet")  # no --batch: as defined


def test_bench_calibrate_and_export_pass_the_batch(monkeypatch, tmp_path):
    from tvmconv.tools import bench, calibrate, export

    seen = {}

    def stop(name):
        def f(what, *args, batch=None, **kw):
            seen[name] = workloads(what, batch=batch)
            raise _Stop
        return f

    monkeypatch.setattr(bench, "cases", stop("bench"))
    monkeypatch.setattr(calibrate, "calibrate", stop("calibrate"))
    monkeypatch.setattr(export, "export", lambda what, target, out, batch=None, **kw: stop("export")(what,
                                                                                                     batch=batch))
    runner.invoke(cli.app, ["bench", "--suite", "effnet", "--batch", "1,8"])
    runner.invoke(cli.app, ["calibrate", "--suite", "effnet", "--batch", "1,8"])
    runner.invoke(cli.app, ["export", "-t", "x86-avx2", "-o", str(tmp_path / "x"), "--suite", "effnet",
                            "--batch", "1,8"])
    assert seen == {k: workloads("effnet", batch=[1, 8]) for k in ("bench", "calibrate", "export")}


def test_calibrate_runs_a_named_model_at_each_batch_size_and_bench_cases_follow():
    from tvmconv.backends.target import resolve
    from tvmconv.tools import bench
    from tvmconv.suites.workloads import network_workloads

    one = network_workloads("effnet", resolve("x86-avx2"))
    both = network_workloads("effnet", resolve("x86-avx2"), (1, 2))
    assert {s.n for s, _ in one} == {1}
    assert sorted(both, key=str) == sorted(one + [(dataclasses.replace(s, n=2), c) for s, c in one], key=str)
    # bench's default (every variant on its default shape) at another batch: the inputs carry it
    cases = bench.cases("variants", batch=2)
    assert len(cases) == len(bench.cases("variants")) and all(c.args[0].shape[0] == 2 for c in cases)
