"""An op's first call in a fresh process, whatever the cache, the machine and other processes hold:
it gives torch's answer within seconds, or names the problem once. Each case runs in a process of
its own (the launcher, the launch cost and the cache's trust are settled once per process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_FIRST_CALL = """
import sys, time, torch, torch.nn.functional as F
import tvmconv.functional as TF
x, w = torch.randn(1, 8, 12, 12), torch.randn(16, 8, 3, 3)
t0 = time.perf_counter()
ok = torch.allclose(TF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
print("SECONDS", time.perf_counter() - t0)
sys.exit(0 if ok else 3)
"""

# the machine key and the launcher's name in the user cache, as the first call computes them
_KEYS = """
import json
from tvmconv.backends import openmp
from tvmconv.backends.machine import machine_of
from tvmconv.backends.target import resolve
from tvmconv.runtime import cache
name = f"openmp-launch-{cache.digest({'cc': 'gcc', 'source': openmp.launch_source()})[:12]}.so"
print(json.dumps({"machine": machine_of(resolve(None)).key, "launcher": name}))
"""


def _env(cache_dir, **changes) -> dict:
    env = {**os.environ, "TVMCONV_CACHE_DIR": str(cache_dir), "TVMCONV_DISPATCH": "0"}
    env.pop("TVMCONV_PARALLEL_LAUNCH_US", None)  # (the tests' fixed value: measured here, as a user's)
    env.pop("CC", None)
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def _first_call(env: dict, timeout: float = 180) -> tuple[float, str]:
    """(seconds the first call took, stderr); fails the test on a hang or a wrong answer."""
    try:
        out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the first call did not return within {timeout} s")
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.split("SECONDS")[-1]), out.stderr


def _keys(cache_dir) -> dict:
    out = subprocess.run([sys.executable, "-c", _KEYS], env=_env(cache_dir), capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return _keys(tmp_path_factory.mktemp("keys"))


def test_fifos_in_the_cache_never_block(tmp_path, keys):
    for sub in ("dispatch", "machine"):
        (tmp_path / sub).mkdir(mode=0o700)
        os.mkfifo(tmp_path / sub / f"{keys['machine']}.json")
    os.mkfifo(tmp_path / "machine" / keys["launcher"])
    os.mkfifo(tmp_path / "machine" / (keys["launcher"][:-3] + ".json"))
    seconds, err = _first_call(_env(tmp_path, TVMCONV_DISPATCH="1"), timeout=120)
    assert "not a regular file" in err


def test_a_lock_held_by_a_live_process_costs_at_most_seconds(tmp_path, keys):
    locks = [tmp_path / "machine" / f"{keys['machine']}.json.lock", tmp_path / "machine" / f"{keys['launcher']}.lock",
             tmp_path / "dispatch" / f"{keys['machine']}.json.lock"]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
                               "held = [FileLock(p).acquire() for p in sys.argv[1:]]\nprint('held', flush=True)\n"
                               "time.sleep(600)", *map(str, locks)], stdout=subprocess.PIPE, text=True)
    try:
        for d in ("machine", "dispatch"):
            (tmp_path / d).mkdir(mode=0o700, exist_ok=True)
        assert holder.stdout.readline().strip() == "held"
        seconds, _ = _first_call(_env(tmp_path, TVMCONV_DISPATCH="1"), timeout=120)
    finally:
        holder.kill()
        holder.wait()
    # (the same first call with nothing held, for scale: a compile, a launch measurement)
    free, _ = _first_call(_env(tmp_path / "free", TVMCONV_DISPATCH="1"), timeout=120)
    assert seconds < free + 10, f"{seconds:.1f} s with the locks held, {free:.1f} s without"


@pytest.mark.parametrize("how", ["CC", "PATH"])
def test_without_a_c_compiler_ops_run_from_memory(tmp_path, how):
    if how == "CC":
        env = _env(tmp_path, CC="/nonexistent")
    else:  # no compiler on PATH at all: only python itself
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "python").symlink_to(sys.executable)
        env = _env(tmp_path / "cache", PATH=str(bin_dir))
    _, err = _first_call(env)
    assert "thread-pool launcher" in err and err.count("thread-pool launcher") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["file", "/dev/null"])
def test_a_cache_path_that_is_not_a_directory_runs_uncached(tmp_path, where):
    path = tmp_path / "a-file" if where == "file" else Path(where)
    if where == "file":
        path.write_text("not a directory\n")
    _, err = _first_call(_env(path))
    assert "is not a directory" in err and "Traceback" not in err
    if where == "file":
        assert path.read_text() == "not a directory\n"


# -- trust: every directory on the path, and no links --------------------------------------------
@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("TVMCONV_CACHE_DIR", str(root))
    return root


@pytest.mark.skipif(not shutil.which("gcc"), reason="the launcher needs a C compiler")
def test_the_launcher_is_never_loaded_through_a_link(private_cache, tmp_path):
    from tvmconv.backends import openmp
    from tvmconv.runtime import cache

    made = openmp._compiled()  # a genuine launcher, and its manifest
    elsewhere = tmp_path / "open"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o777)
    shutil.copy(made, elsewhere / made.name)  # byte-identical, in a directory anyone may write
    made.unlink()
    made.symlink_to(elsewhere / made.name)
    again = openmp._compiled()
    assert again == made and not again.is_symlink() and cache.file_manifest(again) is not None


def test_a_launch_cost_in_an_open_machine_directory_is_not_read(private_cache, monkeypatch):
    from tvmconv.backends import launch
    from tvmconv.backends.machine import machine_of
    from tvmconv.backends.target import resolve

    monkeypatch.delenv("TVMCONV_PARALLEL_LAUNCH_US", raising=False)
    tgt = resolve(None)
    machine = private_cache / "machine"
    machine.mkdir()
    os.chmod(machine, 0o777)
    (machine / f"{machine_of(tgt).key}.json").write_text(json.dumps({"format": 1, "parallel_launch_s": 0.009}))
    monkeypatch.setattr(launch, "measure", lambda target: 1.25e-6)
    launch._stored.cache_clear()
    try:
        assert launch.parallel_launch_s(tgt) == 1.25e-6  # measured: the forged 9 ms was not read
    finally:
        launch._stored.cache_clear()
