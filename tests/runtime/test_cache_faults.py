"""Damaged, foreign, planted and locked files in the user cache: the op still gives PyTorch's
answer, with one warning, and nothing outside the cache is touched.

Cases that could crash the interpreter (loading a damaged library) run in a fresh child process,
so a SIGBUS or SIGSEGV fails the test instead of killing pytest.
"""

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import tvmconv.functional as TF
from tvmconv import storage
from tvmconv.runtime import cache
from tvmconv.backends import target as T
from tvmconv.runtime import build, dispatch

X_SHAPE, W_SHAPE = (1, 4, 6, 6), (4, 4, 3, 3)

# Two kernels taking and returning tensors of the same shapes: one's library in the other's place
# would run without complaint and compute the wrong thing
CHILD = """
    import json, torch, tvmconv.functional as TF
    torch.manual_seed(0)
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3)
    for op, ref in ((TF.conv2d, torch.nn.functional.conv2d),
                    (TF.conv_transpose2d, torch.nn.functional.conv_transpose2d)):
        with TF.capture_kernels() as ks:
            y = op(x, w, padding=1)
        err = (y - ref(x, w, padding=1)).abs().max().item()
        print(json.dumps({"variant": ks[0].spec.variant, "err": err, "loaded_from": ks[0].loaded_from}))
"""


def _child(cache_dir: Path, prefix: tuple = ()) -> tuple[dict, str]:
    """Run CHILD with ``cache_dir`` as the user cache: ``({variant: result}, stderr)``."""
    env = {k: v for k, v in os.environ.items() if k != "TVMCONV_TARGETS_DIR"}
    env["TVMCONV_CACHE_DIR"] = str(cache_dir)
    out = subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(CHILD)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"child died with {out.returncode}:\n{out.stderr[-3000:]}"
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["variant"]: r for r in results}, out.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A user cache holding both kernels' libraries, written by one child process, and where each
    variant's library is (the next child loads them from there)."""
    root = tmp_path_factory.mktemp("built") / "cache"
    results, _ = _child(root)
    assert all(r["err"] < 1e-4 and not r["loaded_from"] for r in results.values())
    results, _ = _child(root)
    libs = {variant: Path(r["loaded_from"]) for variant, r in results.items()}
    assert all(p.is_file() for p in libs.values()), results
    return root, libs


def _copy(built, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private copy of the built cache: ``(root, conv2d library, conv_transpose2d library)``."""
    built_root, libs = built
    root = tmp_path / "cache"
    shutil.copytree(built_root, root, symlinks=True)
    moved = {variant: root / p.relative_to(built_root) for variant, p in libs.items()}
    return root, moved["conv2d"], moved["conv_transpose2d"]


def _warnings_about(stderr: str, path: Path) -> list[str]:
    return [line for line in stderr.splitlines() if str(path) in line and "unusable" in line]


def _assert_fell_back(root: Path, lib: Path, prefix: tuple = (), moved: bool = True) -> None:
    """The child gives PyTorch's answers, does not load ``lib``, and warns about it once."""
    results, stderr = _child(root, prefix)
    assert all(r["err"] < 1e-4 for r in results.values()), results
    assert results["conv2d"]["loaded_from"] == ""
    assert len(_warnings_about(stderr, lib)) == 1, stderr
    assert bool(list(lib.parent.glob(lib.name + ".corrupt-*"))) == moved


# -- 1. a damaged or foreign library is never loaded ---------------------------------------------
def test_a_truncated_library_is_set_aside_and_rebuilt(built, tmp_path):
    root, lib, _ = _copy(built, tmp_path)
    data = lib.read_bytes()
    lib.write_bytes(data[:len(data) // 2])  # dlopen of this dies with SIGBUS
    _assert_fell_back(root, lib)
    results, stderr = _child(root)  # the next process loads the rebuilt library
    assert results["conv2d"]["loaded_from"] == str(lib) and not _warnings_about(stderr, lib)


def test_a_library_with_flipped_bits_is_set_aside(built, tmp_path):
    root, lib, _ = _copy(built, tmp_path)
    data = bytearray(lib.read_bytes())
    for at in range(64, len(data), len(data) // 16):
        data[at] ^= 0xFF
    lib.write_bytes(bytes(data))
    _assert_fell_back(root, lib)


def test_another_kernels_library_and_manifest_at_this_key_are_set_aside(built, tmp_path):
    root, lib, other = _copy(built, tmp_path)
    shutil.copy(other, lib)
    shutil.copy(cache.manifest_path(other), cache.manifest_path(lib))
    _assert_fell_back(root, lib)


def test_a_symlink_at_the_key_is_not_followed(built, tmp_path):
    root, lib, _ = _copy(built, tmp_path)
    outside = tmp_path / "outside.so"
    shutil.move(lib, outside)
    lib.symlink_to(outside)  # the very same bytes, but who controls where a link points?
    _assert_fell_back(root, lib)
    assert outside.exists()  # the link was moved aside, not what it points at


def _read_only_prefix(d: Path) -> tuple:
    """How to run the child with ``d`` read-only: chmod for a user, a read-only bind mount in a
    mount namespace of its own for root (whom permissions do not stop)."""
    if os.geteuid() != 0:
        d.chmod(0o555)
        return ()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount namespaces: cannot make a directory read-only")
    return ("unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(d))


def test_a_damaged_library_in_a_read_only_cache_is_ignored(built, tmp_path):
    root, lib, _ = _copy(built, tmp_path)
    data = lib.read_bytes()
    lib.write_bytes(data[:len(data) // 2])
    try:
        _assert_fell_back(root, lib, _read_only_prefix(lib.parent), moved=False)
    finally:
        lib.parent.chmod(0o700)
    assert lib.read_bytes() == data[:len(data) // 2]


# -- 2. an untrusted user cache is not loaded from -----------------------------------------------
@pytest.fixture
def fresh(monkeypatch):
    """A process state with no kernel in memory and no untrusted directory warned about yet."""
    monkeypatch.setattr(build, "_cache", {})
    monkeypatch.setattr(build, "_key_locks", {})
    monkeypatch.setattr(storage, "_warned_untrusted", set())


def _conv(target=None):
    torch.manual_seed(0)
    x, w = torch.randn(X_SHAPE), torch.randn(W_SHAPE)
    with TF.capture_kernels() as ks:
        y = TF.conv2d(x, w, padding=1, target=target)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    return ks[0]


@pytest.mark.parametrize("where, change", [("", "mode"), ("kernels", "mode"), ("", "owner")])
def test_libraries_in_an_untrusted_cache_are_not_loaded(built, tmp_path, monkeypatch, caplog, fresh, where, change):
    import tvm

    if change == "owner" and os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    root, lib, _ = _copy(built, tmp_path)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    loaded = []
    real = tvm.runtime.load_module
    monkeypatch.setattr(tvm.runtime, "load_module", lambda path, *a: loaded.append(path) or real(path, *a))
    assert _conv().loaded_from == str(lib)  # trusted: loaded (and the spy sees it)
    build._cache.clear()
    loaded.clear()
    d = root / where
    if change == "mode":
        d.chmod(0o777 if not where else 0o770)
    else:
        os.chown(d, 65534, -1)
    before = sorted(p.name for p in lib.parent.iterdir())
    kern = _conv()
    assert kern.loaded_from == "" and not [p for p in loaded if str(root) in str(p)]
    warned = [r.getMessage() for r in caplog.records if str(d) in r.getMessage()]
    assert len(warned) == 1 and ("chmod go-w" in warned[0] or "chown" in warned[0]), warned
    assert sorted(p.name for p in lib.parent.iterdir()) == before  # nothing set aside or written there


def test_new_cache_directories_are_private(tmp_path, monkeypatch, fresh):
    root = tmp_path / "new" / "cache"
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    old = os.umask(0o022)
    try:
        _conv()
    finally:
        os.umask(old)
    lib_dir = next(root.glob("kernels/*"))
    for d in (root, root / "kernels", lib_dir):
        assert d.stat().st_mode & 0o777 == 0o700, d


# -- 3. profiles from an untrusted directory are skipped -----------------------------------------
def _profile(d: Path, name: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps({"name": name, "description": "planted",
                                                "target": {"kind": "llvm", "mcpu": "x86-64"},
                                                "build": {"kind": "cross", "cc": "/tmp/evil.sh"}}))


def test_profiles_from_an_untrusted_directory_are_skipped(tmp_path, monkeypatch, caplog, fresh):
    targets = tmp_path / "targets"
    _profile(targets, "mine")
    _profile(targets, "x86-avx2")  # would override the shipped profile
    monkeypatch.setenv("TVMCONV_TARGETS_DIR", str(targets))
    assert T.profiles()["mine"].description == "planted"  # our own directory: read
    targets.chmod(0o777)
    found = T.profiles()
    assert "mine" not in found and found["x86-avx2"].description != "planted"
    assert Path(found["x86-avx2"].path).parent == T.shipped_profiles_dir()
    assert sum(str(targets) in r.getMessage() for r in caplog.records) == 1
    targets.chmod(0o700)


def test_profiles_under_an_untrusted_cache_root_are_skipped(tmp_path, monkeypatch, caplog, fresh):
    root = tmp_path / "cache"
    _profile(root / "targets", "mine")
    monkeypatch.delenv("TVMCONV_TARGETS_DIR", raising=False)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    root.chmod(0o700)
    assert "mine" in T.profiles()
    root.chmod(0o757)  # the root, not targets/ itself: anyone could swap targets/ for their own
    assert "mine" not in T.profiles()
    assert any(str(root) in r.getMessage() for r in caplog.records)
    root.chmod(0o700)


# -- 4. cache clear stays inside the cache -------------------------------------------------------
@pytest.fixture
def clear_setup(tmp_path, monkeypatch):
    root, victim = tmp_path / "cache", tmp_path / "victim"
    for d in (root / "kernels" / "x86-avx2", root / "schedules" / "x86-avx2", victim):
        d.mkdir(parents=True)
        (d / "file").write_text("keep")
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    return root, victim


@pytest.mark.parametrize("name", ["../../victim", "{victim}", "..", ".", "x86-avx2/../../../victim", "no_such"])
def test_cache_clear_refuses_a_target_that_is_not_a_profile_folder(clear_setup, name):
    from typer.testing import CliRunner

    from tvmconv.tools.cli import app

    root, victim = clear_setup
    out = CliRunner().invoke(app, ["cache", "clear", "--target", name.format(victim=victim), "--yes"])
    assert out.exit_code == 2 and "error:" in out.output, out.output
    assert (victim / "file").exists() and (root / "kernels" / "x86-avx2" / "file").exists()


def test_cache_clear_does_not_follow_a_symlinked_folder(clear_setup):
    from typer.testing import CliRunner

    from tvmconv.tools.cli import app

    root, victim = clear_setup
    (root / "kernels" / "planted").symlink_to(victim)
    out = CliRunner().invoke(app, ["cache", "clear", "--target", "planted", "--yes"])
    assert out.exit_code == 2 and "outside the cache" in out.output
    assert (victim / "file").exists()


def test_cache_clear_of_a_profile_deletes_only_its_folders(clear_setup):
    from typer.testing import CliRunner

    from tvmconv.tools.cli import app

    root, victim = clear_setup
    out = CliRunner().invoke(app, ["cache", "clear", "--target", "x86-avx2", "--kernels", "--yes"])
    assert out.exit_code == 0, out.output
    assert not (root / "kernels" / "x86-avx2").exists() and (root / "schedules" / "x86-avx2" / "file").exists()
    assert (victim / "file").exists()


# -- 5. malformed schedule records ---------------------------------------------------------------
def _record(spec, tgt) -> dict:
    """A valid schedule record for ``spec``: its default schedule, as a tuner would store it."""
    from tvmconv.variants.compute import plan_to_dict
    from tvmconv.backends.llvm_schedules import default_for
    from tvmconv.tuning.log import to_json

    sch, plan = default_for(spec, tgt)
    rec = {"format": cache.CACHE_FORMAT_VERSION, "key": cache.schedule_key(spec, tgt), "name": spec.name,
           "spec": spec.to_dict(), "target": tgt.key_dict, "profile": tgt.profile, "plan": plan_to_dict(plan),
           "trace": to_json(sch.trace.as_json()), "run_secs": 1e-5, "source": "test"}
    return json.loads(json.dumps(rec))


MALFORMED = {
    "run_secs null": {"run_secs": None},
    "run_secs string": {"run_secs": "0.001"},
    "run_secs negative": {"run_secs": -1.0},
    "plan a list": {"plan": []},
    "plan vb a string": {"plan": {"kind": "ocvec", "vb": "x"}},
    "trace a string": {"trace": "GetSBlock"},
    "dispatch a string": {"dispatch": "vendor"},
    "dispatch choice unknown": {"dispatch": {"choice": "gpu"}},
    "no plan": {"plan": None},
}


@pytest.fixture
def records(tmp_path, monkeypatch, fresh):
    """``(spec, target, user record path, shipped record path)`` in empty private caches."""
    shipped = tmp_path / "shipped"
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path / "user"))
    monkeypatch.setattr(cache, "shipped_root", lambda: shipped)
    tgt = T.host()
    spec = TF.spec_of(TF.conv2d, torch.randn(X_SHAPE), torch.randn(W_SHAPE), padding=1)
    return spec, tgt, cache.schedule_path(cache.user_root(), spec, tgt), cache.schedule_path(shipped, spec, tgt)


def _warned_about(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_user_record_is_set_aside(records, caplog, change):
    spec, tgt, user, _ = records
    cache.write_json(user, {**_record(spec, tgt), **change})
    kern = _conv(tgt)
    # (the record's dispatch choice is not applied: none is made yet for the default schedule)
    assert kern.schedule_source == "default" and kern.dispatch_source == dispatch.NOT_DECIDED
    assert not user.exists() and list(user.parent.glob(user.name + ".corrupt-*"))
    (warning,) = _warned_about(caplog, user)
    assert f"not a valid schedule record: {next(iter(change))}" in warning  # names the bad field


def test_a_malformed_user_record_does_not_hide_the_shipped_one(records, caplog):
    spec, tgt, user, shipped = records
    cache.write_json(shipped, _record(spec, tgt))
    cache.write_json(user, {**_record(spec, tgt), "run_secs": None})
    kern = _conv(tgt)
    assert kern.schedule_source == f"tuned:{shipped.name}"
    assert cache.find_record(spec, tgt)[1] == shipped
    assert len(_warned_about(caplog, user)) == 1 and shipped.exists()


def test_a_record_whose_trace_no_longer_applies_falls_back_and_stays(records, caplog):
    spec, tgt, user, _ = records
    cache.write_json(user, {**_record(spec, tgt), "trace": [[["GetSBlock", [], ["no_such_block", "main"], ["b0"]]],
                                                             []]})
    assert _conv(tgt).schedule_source == "default"
    assert user.exists() and "no longer applies" in caplog.text


def test_cache_list_shows_valid_records_only(records, caplog):
    from typer.testing import CliRunner

    from tvmconv.tools.cli import app

    spec, tgt, user, shipped = records
    cache.write_json(shipped, {**_record(spec, tgt), "dispatch": {"choice": "vendor"}})  # no times: still listed
    cache.write_json(user, {**_record(spec, tgt), "run_secs": "fast"})
    out = CliRunner().invoke(app, ["cache", "list"])
    assert out.exit_code == 0, out.output
    assert "vendor" in out.output and "shipped" in out.output and len(_warned_about(caplog, user)) == 1


# -- 6. one slow compile does not hold up other kernels ------------------------------------------
def test_a_slow_compile_does_not_block_another_kernels_first_call(monkeypatch, fresh):
    tgt = T.host()
    slow = TF.spec_of(TF.conv2d, torch.randn(X_SHAPE), torch.randn(W_SHAPE))
    quick = TF.spec_of(TF.conv2d, torch.randn(X_SHAPE), torch.randn(W_SHAPE), padding=1)
    started, release = threading.Event(), threading.Event()

    def compile_spec(spec, target, record=None):
        if spec == slow:
            started.set()
            release.wait(10)
        return f"kernel of {spec.name}"

    monkeypatch.setattr(build, "compile_spec", compile_spec)
    worker = threading.Thread(target=build.load, args=(slow, tgt), daemon=True)
    worker.start()
    try:
        assert started.wait(5)
        t0 = time.perf_counter()
        assert build.load(quick, tgt) == f"kernel of {quick.name}"
        assert time.perf_counter() - t0 < 1.0
    finally:
        release.set()
        worker.join(10)
    assert build.load(slow, tgt) == f"kernel of {slow.name}"


# -- 7. a held kernel lock does not stall the op -------------------------------------------------
def test_a_held_library_lock_skips_caching_instead_of_waiting(tmp_path, monkeypatch, caplog, fresh):
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(tmp_path / "cache"))
    tgt = T.host()
    spec = TF.spec_of(TF.conv2d, torch.randn(X_SHAPE), torch.randn(W_SHAPE), padding=1)
    lib = cache.kernel_path(tgt, build._lib_key(spec, tgt, None))
    cache.make_dirs(lib.parent)
    # what a stopped process holding the lock looks like: flock conflicts between two open files,
    # even in one process
    fd = os.open(f"{lib}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = []
    caplog.set_level(logging.INFO, logger="tvmconv")
    worker = threading.Thread(target=lambda: done.append(_conv(tgt)), daemon=True)
    try:
        worker.start()
        worker.join(10)
        assert done, "the op waited for the lock"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        worker.join(150)
    assert not lib.exists() and "held by another process" in caplog.text
