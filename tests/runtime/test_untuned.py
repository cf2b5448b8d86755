"""Untuned workloads, listed once: the first warned at once, every one noted in the user cache,
one warning at the end of the process naming them all with one command, and that command
(``tvmconv tune --untuned``) picking exactly them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvmconv.runtime import cache, untuned
from tvmconv.tools import cli
from tvmconv.suites import conv

TARGET = "x86-avx2"
REPO = Path(__file__).resolve().parents[2]

# two untuned workloads, the second called twice; conv2d 3->5 and 3->6 channels, 7x7, 3x3
_SCRIPT = """
import torch, tvmconv.functional as F
for c_out in {c_outs}:
    F.conv2d(torch.randn(1, 3, 7, 7), torch.randn(c_out, 3, 3, 3), target="{target}")
"""


def _run(tmp_path: Path, c_outs) -> tuple[subprocess.CompletedProcess, Path]:
    cache_dir, work = tmp_path / "cache", tmp_path / "work"
    cache_dir.mkdir(mode=0o700)
    work.mkdir()
    env = {**os.environ, "TVMCONV_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO), "TVMCONV_LOG_LEVEL": "WARNING"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(c_outs=list(c_outs), target=TARGET)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not any(work.iterdir())  # nothing written outside the cache
    return proc, cache_dir


def _name(c_out: int) -> str:
    return conv(3, (7, 7), c_out, 3).name


@pytest.fixture
def fresh(monkeypatch):
    """This process's list emptied, and no report registered for its end."""
    monkeypatch.setattr(untuned, "_seen", {})
    monkeypatch.setattr(untuned, "_registered", True)


def test_two_untuned_workloads_one_warning_at_the_end_with_one_command(tmp_path, monkeypatch, fresh):
    proc, cache_dir = _run(tmp_path, [5, 6, 6])
    err = proc.stderr
    assert err.count("no tuned schedule for") == 1 and _name(5) in err.split("Tune it with")[0]
    assert "more untuned workloads" in err  # the first warning says more may follow
    assert err.count("ran with their default schedule") == 1
    end = err[err.rfind("\n", 0, err.index("ran with their default schedule")) + 1:]  # the warning's lines
    assert end.startswith("tvmconv: 2 workload(s) ran") and _name(5) in end and _name(6) in end
    assert err.count("tvmconv tune --untuned") == 1 and end.rstrip().endswith(f"tvmconv tune --untuned --target {TARGET}")
    # every file the list needs lies in the cache
    files = [p for p in cache_dir.rglob("*") if "untuned" in p.parts]
    assert files and all(p.resolve().is_relative_to(cache_dir.resolve()) for p in files)
    stored = json.loads((cache_dir / "untuned" / f"{TARGET}.json").read_text())
    assert sorted(e["name"] for e in stored["workloads"].values()) == sorted([_name(5), _name(6)])

    # the command's selection: exactly those two (the search stopped before it starts)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(cache_dir))
    assert [s for s, _ in untuned.pending(TARGET)] == [conv(3, (7, 7), 5, 3), conv(3, (7, 7), 6, 3)]
    from tvmconv.tuning import space

    handed = []

    def prepare(items, tgt, *seeds):
        handed.append((items, tgt.profile))
        raise KeyboardInterrupt  # (tune's own way out: says so and exits 130)

    monkeypatch.setattr(space, "prepare", prepare)
    out = CliRunner().invoke(cli.app, ["tune", "--untuned", "--target", TARGET])
    assert out.exit_code == 130, out.output
    assert handed == [([(conv(3, (7, 7), 5, 3), 1), (conv(3, (7, 7), 6, 3), 1)], TARGET)]
    # a workload tuned since leaves the selection; one tuned into the user cache leaves the list
    monkeypatch.setattr(cache, "tuned_record", lambda spec, tgt: object() if spec.c_out == 5 else None)
    assert untuned.pending(TARGET) == [(conv(3, (7, 7), 6, 3), 1)]
    untuned.forget([conv(3, (7, 7), 6, 3)], TARGET)
    stored = json.loads((cache_dir / "untuned" / f"{TARGET}.json").read_text())
    assert [e["name"] for e in stored["workloads"].values()] == [_name(5)]
    # neither --untuned with another source, nor with nothing listed, tunes anything
    out = CliRunner().invoke(cli.app, ["tune", "--untuned", "--suite", "effnet", "--target", TARGET])
    assert out.exit_code == cli.EXIT_USAGE and len(handed) == 1
    untuned.forget([conv(3, (7, 7), 5, 3)], TARGET)
    out = CliRunner().invoke(cli.app, ["tune", "--untuned", "--target", TARGET])
    assert out.exit_code == 0 and "nothing to tune" in out.output and len(handed) == 1


def test_one_untuned_workload_is_warned_about_once_and_not_again_at_the_end(tmp_path, fresh):
    proc, _ = _run(tmp_path, [5, 5])
    assert proc.stderr.count("no tuned schedule for") == 1
    assert "ran with their default schedule" not in proc.stderr and "--untuned" not in proc.stderr


def test_the_list_is_bounded_and_never_written_outside_the_cache(tmp_path, monkeypatch, fresh):
    from tvmconv.backends.target import resolve

    tgt = resolve(TARGET)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr(untuned, "MAX_ENTRIES", 3)
    specs = [conv(3, (7, 7), c, 3) for c in range(1, 6)]
    for s in specs:
        untuned.note(s, tgt)
    assert untuned.seen() == [(TARGET, s) for s in specs]
    assert [s for s, _ in untuned.pending(TARGET)] == specs[-3:]  # the least recently noted dropped
    assert untuned.path("../x") is None and untuned.path("a/b") is None

    # a list folder that is a link out of the cache: nothing is written through it
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    other = tmp_path / "cache2"
    other.mkdir(mode=0o700)
    (other / "untuned").symlink_to(outside)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(other))
    untuned.note(conv(3, (7, 7), 9, 3), tgt)
    assert not any(outside.iterdir())


def test_the_end_warning_leaves_out_what_was_tuned_since(monkeypatch, caplog, fresh):
    import logging

    from tvmconv.backends.target import resolve

    tgt = resolve(TARGET)
    monkeypatch.setattr(untuned, "_store", lambda profile, spec: None)
    a, b, c = (conv(3, (7, 7), k, 3) for k in (5, 6, 7))
    for s in (a, b, c):
        untuned.note(s, tgt)
    monkeypatch.setattr(cache, "tuned_record", lambda spec, t: object() if spec == b else None)
    with caplog.at_level(logging.WARNING, logger="tvmconv"):
        untuned.report()
    (msg,) = [r.getMessage() for r in caplog.records]
    assert a.name in msg and c.name in msg and b.name not in msg and "2 workload(s)" in msg
