"""Every registered variant against its independent reference, over the one shared shape table."""

import numpy as np
import pytest
import torch

import tvmconv
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS

from ..conftest import DEVICE, assert_close, on_device

CASES = [(v, row) for v in VARIANTS for row in SHAPE_TABLE]


@pytest.mark.parametrize("variant,row", CASES, ids=[f"{v}-{r.label}" for v, r in CASES])
def test_matches_reference(variant, row):
    v = VARIANTS[variant]
    case = v.make_case(row, torch.Generator().manual_seed(hash(row.label) % 2**31))
    got = v.run(on_device(case))  # on the GPU with TVMCONV_TEST_DEVICE=cuda; the reference on the CPU
    want = v.run_reference(case)
    assert isinstance(got, torch.Tensor)
    assert got.device.type == DEVICE
    assert got.dtype == want.dtype
    assert_close(got.cpu(), want, atol=2e-4, rtol=2e-4)


def test_registry_covers_the_catalogue():
    expected = {
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
        "channel_shuffle", "deform_conv2d", "depthwise_separable_conv2d", "shuffled_group_conv2d",
        "spatial_separable_conv2d", "flattened_conv2d", "channel_wise_conv", "squeeze_excitation",
        "effnet_block",
    }
    assert set(VARIANTS) == expected
    for name in expected:
        assert getattr(tvmconv.functional, name) is VARIANTS[name].op


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_numpy_in_numpy_out(variant):
    v = VARIANTS[variant]
    case = v.make_case(SHAPE_TABLE[0], torch.Generator().manual_seed(7))
    np_args = tuple(a.numpy() if isinstance(a, torch.Tensor) else a for a in case.args)
    np_kwargs = {k: (a.numpy() if isinstance(a, torch.Tensor) else a) for k, a in case.kwargs.items()}
    got = v.op(*np_args, **np_kwargs)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert_close(torch.from_numpy(got), v.run_reference(case), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("variant", ["conv2d", "depthwise_separable_conv2d", "squeeze_excitation", "conv_transpose2d"])
def test_float64(variant):
    v = VARIANTS[variant]
    case = v.make_case(SHAPE_TABLE[1], torch.Generator().manual_seed(3))
    args = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in case.args)
    kwargs = {k: (a.double() if isinstance(a, torch.Tensor) else a) for k, a in case.kwargs.items()}
    got = v.op(*args, **kwargs)
    assert got.dtype == torch.float64
    assert_close(got, v.reference(*args, **kwargs), atol=1e-10, rtol=1e-10)


def test_zero_copy_output_is_fresh_and_inputs_untouched():
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(4, 4, 3, 3)
    x0, w0 = x.clone(), w.clone()
    y = tvmconv.functional.conv2d(x, w, padding=1)
    assert torch.equal(x, x0) and torch.equal(w, w0)
    assert y.data_ptr() not in (x.data_ptr(), w.data_ptr())


def test_non_contiguous_and_channels_last_inputs():
    x = torch.randn(2, 8, 10, 12)
    w = torch.randn(16, 8, 3, 3)
    want = torch.nn.functional.conv2d(x, w, padding=1)
    assert_close(tvmconv.functional.conv2d(x.to(memory_format=torch.channels_last), w, padding=1), want)
    xt = torch.randn(2, 8, 12, 10).transpose(2, 3)  # non-contiguous view
    assert not xt.is_contiguous()
    assert_close(tvmconv.functional.conv2d(xt, w, padding=1), torch.nn.functional.conv2d(xt, w, padding=1))
    wt = torch.randn(8, 16, 3, 3).transpose(0, 1)
    assert_close(tvmconv.functional.conv2d(x, wt, padding=1), torch.nn.functional.conv2d(x, wt, padding=1))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_input(nd):
    op = getattr(tvmconv.functional, f"conv{nd}d")
    ref = getattr(torch.nn.functional, f"conv{nd}d")
    x = torch.randn(3, *([6] * nd))
    w = torch.randn(5, 3, *([3] * nd))
    got = op(x, w, padding=1)
    assert got.shape == ref(x, w, padding=1).shape
    assert_close(got, ref(x, w, padding=1))


@pytest.mark.parametrize("padding", ["same", "valid", (1, 2), 0])
def test_padding_forms(padding):
    x = torch.randn(1, 3, 9, 8)
    for k in (3, 4):  # an even kernel pads asymmetrically under 'same'
        w = torch.randn(4, 3, k, k)
        want = torch.nn.functional.conv2d(x, w, padding=padding, dilation=(1, 2) if padding == "same" else 1)
        got = tvmconv.functional.conv2d(x, w, padding=padding, dilation=(1, 2) if padding == "same" else 1)
        assert_close(got, want)


def test_second_call_does_not_rebuild():
    from tvmconv.runtime import build

    x = torch.randn(1, 5, 7, 7)
    w = torch.randn(6, 5, 3, 3)
    tvmconv.functional.conv2d(x, w)
    n = len(build._cache)
    tvmconv.functional.conv2d(torch.randn(1, 5, 7, 7), w)
    assert len(build._cache) == n
    tvmconv.functional.conv2d(torch.randn(1, 5, 7, 8), w)  # a new shape is a new spec
    assert len(build._cache) == n + 1


