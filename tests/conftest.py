import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Every test session gets its own empty user cache (compiled kernels, schedules, tuning logs), set
# before tvmconv is imported; the shipped schedules of the repository are still read. One cache for
# the whole run: pytest-xdist's workers (``-n``) inherit it from the controlling process, so a kernel
# compiled by one worker is loaded by the others (the cache's locks make that safe).
os.environ["TVMCONV_CACHE_DIR"] = os.environ.get("TVMCONV_TEST_RUN_CACHE") or \
    tempfile.mkdtemp(prefix="tvmconv-test-cache-")
os.environ["TVMCONV_TEST_RUN_CACHE"] = os.environ["TVMCONV_CACHE_DIR"]
# The one-thread threshold of the default plans comes from a measurement of this machine
# (backends/launch.py); tests fix it, so which plan a shape gets does not follow a noisy VM
# (tests/backends/test_launch.py measures it for real).
os.environ.setdefault("TVMCONV_PARALLEL_LAUNCH_US", "7")

import numpy as np
import pytest
import torch

# The end-of-process list of untuned workloads is for a user's process, not a test session's
# hundreds of shapes (tests/runtime/test_untuned.py checks it in a process of its own)
from tvmconv.runtime import untuned  # noqa: E402

untuned._registered = True

# Kernels use every core; tests stay deterministic about threads so timings don't matter here.
torch.set_num_threads(2)


# Where the shape-table tests run the ops: "cpu" (CI), or "cuda" on a GPU machine
# (TVMCONV_TEST_DEVICE=cuda: the same tests, inputs on the GPU, references on the CPU).
DEVICE = os.environ.get("TVMCONV_TEST_DEVICE", "cpu")
if DEVICE not in ("cpu", "cuda"):
    raise ValueError(f"TVMCONV_TEST_DEVICE must be 'cpu' or 'cuda', got {DEVICE!r}")
if DEVICE == "cuda" and not torch.cuda.is_available():
    raise RuntimeError("TVMCONV_TEST_DEVICE=cuda, but torch sees no CUDA GPU")


def on_device(case, device: str = DEVICE):
    """A registry ``Case`` with its tensors on ``device``."""
    from tvmconv.variants.registry import Case

    move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return Case(tuple(move(a) for a in case.args), {k: move(v) for k, v in case.kwargs.items()})


def tolerance(dtype: torch.dtype, reduction: int = 1) -> float:
    """Absolute tolerance for values of order 1 summed over ``reduction`` terms."""
    eps = {torch.float32: 1e-6, torch.float64: 1e-13, torch.float16: 1e-3}[dtype]
    return 20 * eps * max(1, reduction) ** 0.5 + eps * 10


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def at_offset(t: torch.Tensor, offset: int) -> torch.Tensor:
    """``t``'s values in a tensor that starts ``offset`` elements into a larger buffer: not 64-byte
    aligned unless ``offset`` is a multiple of 64 bytes' worth of elements."""
    flat = torch.empty(t.numel() + offset, dtype=t.dtype)
    view = flat[offset:].view(t.shape)
    view.copy_(t)
    return view


def assert_close(actual, expected, atol=1e-4, rtol=1e-4):
    if isinstance(actual, np.ndarray):
        actual = torch.from_numpy(actual)
    assert tuple(actual.shape) == tuple(expected.shape), f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol, rtol=rtol)


@contextlib.contextmanager
def rpc_device(server_cmd: list[str], key: str, timeout_s: float = 300, server_log=None):
    """A TVM RPC tracker on 127.0.0.1 and one RPC server (``server_cmd`` + tracker arguments)
    registered under ``key``; yields the tracker's port. The server runs in its own session and
    its whole process group (the workers it spawns) is stopped at the end. ``server_log``: a path
    that gets the server's log (one "connected from" / "finish serving" line pair per session), and
    then the context yields ``(port, server_process)``."""
    from tvm import rpc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                                str(port), "--port-end", str(port + 1)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    server = None
    deadline = time.time() + timeout_s

    def queue():
        return rpc.connect_tracker("127.0.0.1", port).summary()["queue_info"]

    try:
        while True:
            try:
                queue()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        err = open(server_log, "w") if server_log else subprocess.DEVNULL  # noqa: SIM115 - closed with the server
        server = subprocess.Popen([*server_cmd, "--host", "127.0.0.1", "--tracker", f"127.0.0.1:{port}", "--key", key],
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        while not queue().get(key, {}).get("free"):
            if time.time() > deadline:
                raise TimeoutError(f"the RPC server under key {key!r} did not register with the tracker")
            time.sleep(0.5)
        yield (port, server) if server_log else port
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            if server_log:
                err.close()
        # the tracker serves from a TVM popen worker of its own: stop the whole group, or that
        # worker outlives the test (orphaned, polling its event loop)
        os.killpg(tracker.pid, signal.SIGTERM)
        tracker.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(tracker.pid, signal.SIGKILL)
