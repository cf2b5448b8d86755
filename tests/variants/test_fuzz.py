"""Fuzzing every op family as a careless or hostile caller would: tensors at odd storage offsets,
strided and channels_last views, NumPy arrays, NaN and Inf in the input, another dtype, a mix of
dtypes, parameters far out of range. Each case must give torch's answer (NaN where torch gives NaN)
or raise a clear ValueError/TypeError; where torch itself refuses the call, tvmconv must refuse it
with one of those. A crash ends the test process, a silent wrong result fails the comparison.

Cases are drawn by hypothesis with a fixed seed (``derandomize``), from a few rows of the shared
shape table so that most cases reuse a compiled kernel: ``TVMCONV_FUZZ_EXAMPLES`` (default 200)
cases per family. ``TVMCONV_FUZZ_REPORT=path`` writes the counts of each outcome as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS, Case

from ..conftest import at_offset

EXAMPLES = int(os.environ.get("TVMCONV_FUZZ_EXAMPLES", "200"))
ROWS = [r for r in SHAPE_TABLE if r.label in ("base", "stride2", "depthwise", "odd_sizes")]
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OUTCOMES: Counter = Counter()

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _strided(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in a non-contiguous view (every other element of a buffer twice as long)."""
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    view = wide[..., ::2]
    view.copy_(t)
    return view


def _numpy_at_offset(t: torch.Tensor, offset: int) -> np.ndarray:
    flat = np.empty(t.numel() + offset, dtype=t.numpy().dtype)
    arr = flat[offset:].reshape(t.shape)
    arr[...] = t.numpy()
    return arr


@st.composite
def _form(draw, t: torch.Tensor, numpy: bool):
    """One tensor argument as a caller might pass it."""
    if numpy:
        return _numpy_at_offset(t, draw(st.integers(0, 17)))
    kind = draw(st.sampled_from(["plain", "offset", "strided", "channels_last"]))
    if kind == "offset":
        return at_offset(t, draw(st.integers(1, 17)))
    if kind == "strided" and t.dim() >= 1 and t.shape[-1] > 1:
        return _strided(t)
    if kind == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _poison(draw, x: torch.Tensor) -> torch.Tensor:
    """``x`` with a few NaN, +Inf or -Inf values at drawn positions (or unchanged)."""
    count = draw(st.integers(0, 3))
    if not count:
        return x
    x = x.clone()
    flat = x.view(-1)
    for _ in range(count):
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"),
                                                                            float("-inf")]))
    return x


_OUT_OF_RANGE = [0, -1, -(2**31), 2**31, 2**40, 10**12]


@st.composite
def fuzz_cases(draw, variant):
    """``(reference case, case as passed to tvmconv, what was done to it)``."""
    row = draw(st.sampled_from(ROWS))
    case = variant.make_case(row, torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    dtype = draw(st.sampled_from([torch.float32] * 5 + [torch.float64, torch.int32]))
    what = [row.label, str(dtype)]
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in case.args]
    kwargs = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in case.kwargs.items()}
    if dtype.is_floating_point:
        args[0] = _poison(draw, args[0])
    if draw(st.integers(0, 9)) == 0 and len(args) > 1 and isinstance(args[1], torch.Tensor):
        args[1] = args[1].to(torch.float64 if dtype == torch.float32 else torch.float32)
        what.append("mixed dtypes")
    numeric = [k for k, v in kwargs.items() if type(v) is int]
    if numeric and draw(st.integers(0, 7)) == 0:
        key = draw(st.sampled_from(numeric))
        kwargs[key] = draw(st.sampled_from(_OUT_OF_RANGE))
        what.append(f"{key}={kwargs[key]}")
    reference = Case(tuple(args), dict(kwargs))
    numpy = dtype.is_floating_point and draw(st.integers(0, 4)) == 0
    passed = Case(tuple(draw(_form(a, numpy)) if isinstance(a, torch.Tensor) else a for a in args),
                  {k: draw(_form(v, numpy)) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
    what.append("numpy" if numpy else "torch")
    return reference, passed, what


def _check(variant, reference: Case, passed: Case, what: list[str]) -> str:
    try:
        expected = variant.run_reference(reference)
    except Exception as exc:  # noqa: BLE001 - torch refuses the call: tvmconv must refuse it clearly
        with pytest.raises((ValueError, TypeError)):
            variant.run(passed)
        return f"refused by both ({type(exc).__name__})"
    try:
        actual = variant.run(passed)
    except (ValueError, TypeError) as exc:
        assert str(exc), what  # a clear error names what is wrong
        return "refused by tvmconv"
    if isinstance(actual, np.ndarray):
        actual = torch.from_numpy(actual)
    assert tuple(actual.shape) == tuple(expected.shape), what
    tol = 1e-9 if expected.dtype == torch.float64 else 2e-4
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=tol, rtol=tol, equal_nan=True,
                               msg=lambda m: f"{variant.name} {what}: {m}")
    return "nan in the answer" if expected.isnan().any() else "same answer"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fuzz_gives_torchs_answer_or_a_clear_error(name):
    variant = VARIANTS[name]

    @SETTINGS
    @given(fuzz_cases(variant))
    def run(drawn):
        outcome = _check(variant, *drawn)
        OUTCOMES[(name, outcome)] += 1

    with torch.no_grad():
        run()
    report = os.environ.get("TVMCONV_FUZZ_REPORT")
    if report:
        counts = {f"{n}: {o}": c for (n, o), c in sorted(OUTCOMES.items())}
        with open(report, "w") as f:
            json.dump(counts, f, indent=1)
