"""Property-based tests: random valid shapes and arguments, checked against torch.nn.functional and
``tvmconv.reference``.

Strategies only generate valid combinations (output size >= 1, channels divisible by groups,
output_padding below stride or dilation). Shapes stay tiny (channels <= 8, spatial <= 9,
kernel <= 4) because every new shape compiles a new TVM kernel (~0.2 s); ``max_examples`` is
kept small for the same reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tvmconv.functional as TF
import tvmconv.reference as R

from ..conftest import assert_close

SETTINGS = settings(max_examples=12, deadline=None)
TOL = dict(atol=2e-4, rtol=2e-4)

MAX_C = 8      # channels
MAX_SIZE = 9   # spatial extent of an input
MAX_K = 4      # kernel extent

# torch warns that it copies the input for 'same' padding with an even kernel; not our concern here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _int_or_tuple(draw, values: tuple[int, ...]):
    """Pass a per-axis argument as the tuple, or as one int when every axis has the same value."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return values


seeds = st.integers(0, 2**31 - 1)


# -- forward convolutions ---------------------------------------------------------------------------
@st.composite
def conv_cases(draw, nd: int, depthwise: bool = False):
    """Arguments of a valid ``conv{nd}d`` call: (input, weight, bias, stride, padding, dilation, groups)."""
    n = draw(st.integers(1, 2))
    if depthwise:
        multiplier = draw(st.sampled_from([1, 2]))
        c_in = draw(st.integers(1, MAX_C // multiplier))
        groups, icg, c_out = c_in, 1, c_in * multiplier
    else:
        groups = draw(st.integers(1, 4))
        icg = draw(st.integers(1, MAX_C // groups))
        c_in, c_out = groups * icg, groups * draw(st.integers(1, MAX_C // groups))
    kernel = draw(st.tuples(*[st.integers(1, MAX_K)] * nd))
    dilation = draw(st.tuples(*[st.integers(1, 2)] * nd))
    stride = draw(st.tuples(*[st.integers(1, 3)] * nd))
    mode = draw(st.sampled_from(["int", "same", "valid"] if stride == (1,) * nd else ["int"]))
    if mode == "int":
        pads = draw(st.tuples(*[st.integers(0, 3)] * nd))
        padding = _int_or_tuple(draw, pads)
        total_pad = [2 * p for p in pads]
    else:  # 'same' pads d*(k-1) in all (output size = input size); 'valid' pads nothing
        padding = mode
        total_pad = [d * (k - 1) if mode == "same" else 0 for k, d in zip(kernel, dilation)]
    # input + padding at least as large as the dilated kernel: output size >= 1
    size = [draw(st.integers(max(1, d * (k - 1) + 1 - tp), MAX_SIZE))
            for k, d, tp in zip(kernel, dilation, total_pad)]
    seed = draw(seeds)
    unbatched = n == 1 and draw(st.booleans())
    x = _randn(seed, *([] if unbatched else [n]), c_in, *size)
    w = _randn(seed + 1, c_out, icg, *kernel)
    b = _randn(seed + 2, c_out) if draw(st.booleans()) else None
    return x, w, b, _int_or_tuple(draw, stride), padding, _int_or_tuple(draw, dilation), groups


def _check_conv(nd: int, args):
    op, ref = getattr(TF, f"conv{nd}d"), getattr(F, f"conv{nd}d")
    got = op(*args)
    want = ref(*args)
    assert got.dtype == torch.float32
    assert_close(got, want, **TOL)



@SETTINGS
@given(conv_cases(1))
def test_conv1d_matches_torch(args):
    _check_conv(1, args)


@SETTINGS
@given(conv_cases(2))
def test_conv2d_matches_torch(args):
    _check_conv(2, args)


@SETTINGS
@given(conv_cases(2, depthwise=True))
def test_depthwise_conv2d_matches_torch(args):
    x, w, *_, groups = args
    assert groups == x.shape[-3] and w.shape[1] == 1 and w.shape[0] in (groups, 2 * groups)
    _check_conv(2, args)


# -- transposed convolution ----------------------------------------------------------------------------
@st.composite
def conv_transpose2d_cases(draw):
    """Arguments of a valid conv_transpose2d call:
    (input, weight, bias, stride, padding, output_padding, groups, dilation)."""
    n = draw(st.integers(1, 2))
    groups = draw(st.integers(1, 4))
    icg = draw(st.integers(1, MAX_C // groups))
    ocg = draw(st.integers(1, MAX_C // groups))
    kernel = draw(st.tuples(st.integers(1, MAX_K), st.integers(1, MAX_K)))
    stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    dilation = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    # torch: output_padding must be smaller than either stride or dilation
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = draw(st.tuples(st.integers(1, 7), st.integers(1, 7)))
    # output (i-1)*s - 2p + d*(k-1) + op + 1 >= 1
    pads = tuple(draw(st.integers(0, min(3, ((i - 1) * s + d * (k - 1) + op) // 2)))
                 for i, s, d, k, op in zip(size, stride, dilation, kernel, out_pad))
    seed = draw(seeds)
    x = _randn(seed, n, groups * icg, *size)
    w = _randn(seed + 1, groups * icg, ocg, *kernel)
    b = _randn(seed + 2, groups * ocg) if draw(st.booleans()) else None
    return (x, w, b, _int_or_tuple(draw, stride), _int_or_tuple(draw, pads), _int_or_tuple(draw, out_pad), groups,
            _int_or_tuple(draw, dilation))


@SETTINGS
@given(conv_transpose2d_cases())
def test_conv_transpose2d_matches_torch(args):
    got = TF.conv_transpose2d(*args)
    want = F.conv_transpose2d(*args)
    assert_close(got, want, **TOL)


# -- channel shuffle ----------------------------------------------------------------------------------
@st.composite
def shuffle_cases(draw):
    groups = draw(st.integers(1, 4))
    c = groups * draw(st.integers(1, MAX_C // groups))
    spatial = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    x = _randn(draw(seeds), draw(st.integers(1, 2)), c, *spatial)
    return x, groups


@SETTINGS
@given(shuffle_cases())
def test_channel_shuffle_matches_torch(case):
    x, groups = case
    got = TF.channel_shuffle(x, groups)
    # a pure permutation: bit-exact
    torch.testing.assert_close(got, F.channel_shuffle(x, groups), atol=0, rtol=0)
    np.testing.assert_array_equal(got.numpy(), R.channel_shuffle_numpy(x.numpy(), groups))
    # shuffling by C/groups undoes shuffling by groups
    back = TF.channel_shuffle(got, x.shape[1] // groups)
    torch.testing.assert_close(back, x, atol=0, rtol=0)


# -- channel-wise convolution ----------------------------------------------------------------------------
@st.composite
def channel_wise_cases(draw):
    """Arguments of a valid channel_wise_conv call: (input, weight, bias, stride, padding, dilation)."""
    groups = draw(st.integers(1, 4))
    cg = draw(st.integers(1, MAX_C // groups))
    k = draw(st.integers(1, MAX_K))
    dilation = draw(st.integers(1, 2))
    stride = draw(st.integers(1, 3))
    # L = (cg + 2p - d*(k-1) - 1) // s + 1 >= 1
    p_min = max(0, -(-(dilation * (k - 1) + 1 - cg) // 2))
    padding = draw(st.integers(p_min, p_min + 2))
    spatial = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    seed = draw(seeds)
    x = _randn(seed, draw(st.integers(1, 2)), groups * cg, *spatial)
    w = _randn(seed + 1, groups, k)
    b = _randn(seed + 2, groups) if draw(st.booleans()) else None
    return x, w, b, stride, padding, dilation


@SETTINGS
@given(channel_wise_cases())
def test_channel_wise_conv_matches_reference(args):
    x, w, b, stride, padding, dilation = args
    got = TF.channel_wise_conv(*args)
    want = R.channel_wise_conv(*args)
    groups, k = w.shape
    length = (x.shape[1] // groups + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    assert tuple(got.shape) == (x.shape[0], groups * length, *x.shape[2:])
    assert_close(got, want, **TOL)


# -- regressions found by random testing ----------------------------------------------------------------
@pytest.mark.parametrize("n,c_in,h,w", [(2, 1, 2, 1), (2, 2, 3, 3), (3, 1, 5, 4)])
def test_shuffled_group_conv2d_two_channel_identity_shuffle(n, c_in, h, w):
    """C_out == shuffle_groups == 2 with batch >= 2 once read weight 0 for channel 1 (a TVM 0.27
    IterMapSimplify bug: (f % 6 + 3) // 6 became (f + 3) % 6 // 6); identity shuffles now skip the index map."""
    x = _randn(n, n, c_in, h, w)
    wt = _randn(7, 2, c_in // (2 if c_in == 2 else 1), 1, 1)
    groups = 2 if c_in == 2 else 1
    got = TF.shuffled_group_conv2d(x, wt, groups=groups, shuffle_groups=2)
    want = F.channel_shuffle(F.conv2d(x, wt, groups=groups), 2)
    assert_close(got, want, **TOL)


@pytest.mark.parametrize("c_out,shuffle", [(4, 4), (6, 6), (4, 2), (6, 3), (2, 2)])
def test_shuffled_group_conv2d_small_shuffles(c_out, shuffle):
    """Neighbours of the case above that are correct (batch 1 for c_out=2)."""
    n = 1 if c_out == 2 else 2
    x = _randn(3, n, 2, 3, 4)
    wt = _randn(4, c_out, 2, 1, 1)
    got = TF.shuffled_group_conv2d(x, wt, shuffle_groups=shuffle)
    assert_close(got, F.channel_shuffle(F.conv2d(x, wt), shuffle), **TOL)
