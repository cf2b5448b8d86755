"""Every environment variable tvmconv reads, declared once.

    TVMCONV_CACHE_DIR   user cache of tuned schedules and compiled kernels (default ~/.cache/tvmconv);
                        read only while no other user can write it (see cache.trusted)
    TVMCONV_TARGET      target profile name or TVM target JSON used when none is given
    TVMCONV_LOG_LEVEL   logging level of the ``tvmconv`` logger (default WARNING)
    TVMCONV_NUM_THREADS threads a compiled CPU kernel may use (default: TVM_NUM_THREADS if set,
                        else every CPU this process may run on)
    TVMCONV_SPIN_COUNT  how long TVM's idle kernel threads spin before sleeping (TVM's
                        TVM_THREAD_POOL_SPIN_COUNT; default 0: sleep at once, so PyTorch ops
                        between tvmconv kernels get the cores)
    TVMCONV_SHARED_POOL 1 (default): compiled CPU kernels run their parallel loops on PyTorch's OpenMP
                        thread pool (backends/openmp.py); 0: on TVM's own pool
    TVMCONV_PARALLEL_LAUNCH_US  what one parallel launch of TVM's CPU thread pool costs here, in
                        microseconds (default: measured once per machine, backends/launch.py);
                        kernels estimated below about twice it run on one thread
    TVMCONV_TARGETS_DIR extra target profiles (default $TVMCONV_CACHE_DIR/targets); read only while
                        no other user can write it
    TVMCONV_SHIPPED_DIR root holding the shipped targets/, schedules/ and tuning_logs/
                        (default: the installed package's _shipped/, or the repository of
                        an editable install)
    TVMCONV_DISPATCH    1 (default): a workload whose vendor path (PyTorch) was measured faster on
                        this machine runs the vendor path, and one not yet decided times both
                        over its first calls (runtime/dispatch.py); 0: always the tvmconv kernel
    TVMCONV_MACHINE     the device model in the machine key that dispatch choices are stored under
                        (default: this CPU's model name, or the GPU's); tests set it to simulate
                        another machine
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def cache_dir() -> Path:
    """The user cache root; created lazily by whoever writes to it."""
    env = os.environ.get("TVMCONV_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvmconv"


# os.environ.get costs about 1 us here (key encoding through the Mapping ABC), and the ops read
# TVMCONV_TARGET (and TVMCONV_DISPATCH where tuning chose the vendor) on every call; the mapping's
# own dict, looked up with the key encoded once, costs 0.1 us
_ENVIRON = getattr(os.environ, "_data", None)
_KEYS: dict[str, object] = {}


def _env(name: str) -> str | None:
    """``os.environ.get(name)``, cheaply."""
    if _ENVIRON is None:
        return os.environ.get(name)
    key = _KEYS.get(name)
    if key is None:
        key = _KEYS[name] = os.environ.encodekey(name)
    raw = _ENVIRON.get(key)
    return None if raw is None else os.environ.decodevalue(raw)


def dispatch() -> bool:
    return (_env("TVMCONV_DISPATCH") or "1").strip().lower() not in ("0", "false", "no", "off")


def machine() -> str | None:
    return _env("TVMCONV_MACHINE") or None


def default_target() -> str | None:
    return _env("TVMCONV_TARGET") or None


def log_level() -> str:
    return os.environ.get("TVMCONV_LOG_LEVEL", "WARNING").upper()


def num_threads() -> int:
    env = os.environ.get("TVMCONV_NUM_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError as exc:
            raise ValueError(f"TVMCONV_NUM_THREADS must be a positive integer, got {env!r}") from exc
        if value < 1:
            raise ValueError(f"TVMCONV_NUM_THREADS must be a positive integer, got {env!r}")
        return value
    tvm_env = os.environ.get("TVM_NUM_THREADS", "")
    if tvm_env.isdigit() and int(tvm_env) > 0:
        return int(tvm_env)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def spin_count() -> int:
    env = os.environ.get("TVMCONV_SPIN_COUNT", "0")
    if not env.isdigit():
        raise ValueError(f"TVMCONV_SPIN_COUNT must be a non-negative integer, got {env!r}")
    return int(env)


def shared_pool() -> bool:
    return (_env("TVMCONV_SHARED_POOL") or "1").strip().lower() not in ("0", "false", "no", "off")


def parallel_launch_us() -> float | None:
    env = os.environ.get("TVMCONV_PARALLEL_LAUNCH_US")
    if not env:
        return None
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e4:
        raise ValueError(f"TVMCONV_PARALLEL_LAUNCH_US must be microseconds between 0 and 10000, got {env!r}")
    return value


def targets_dir() -> Path:
    env = os.environ.get("TVMCONV_TARGETS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "targets"


def shipped_dir() -> Path:
    """The root of the shipped targets/ and schedules/: inside the installed package
    (``tvmconv/_shipped``, put there by setup.py's build step), or the repository itself for a
    source checkout (``pip install -e``)."""
    env = os.environ.get("TVMCONV_SHIPPED_DIR")
    if env:
        return Path(env).expanduser()
    packaged = resources.files("tvmconv") / "_shipped"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent
