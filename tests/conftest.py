import os
import tempfile

# Every test session gets its own empty user cache (compiled kernels, schedules, tuning logs), set
# before tvmconv is imported; the shipped schedules of the repository are still read.
os.environ["TVMCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="tvmconv-test-cache-")

import numpy as np
import pytest
import torch

# Kernels use every core; tests stay deterministic about threads so timings don't matter here.
torch.set_num_threads(2)


def tolerance(dtype: torch.dtype, reduction: int = 1) -> float:
    """Absolute tolerance for values of order 1 summed over ``reduction`` terms."""
    eps = {torch.float32: 1e-6, torch.float64: 1e-13, torch.float16: 1e-3}[dtype]
    return 20 * eps * max(1, reduction) ** 0.5 + eps * 10


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def assert_close(actual, expected, atol=1e-4, rtol=1e-4):
    if isinstance(actual, np.ndarray):
        actual = torch.from_numpy(actual)
    assert tuple(actual.shape) == tuple(expected.shape), f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol, rtol=rtol)
