"""The op-level findings of the reliability review, one test each: misaligned tensors, weights
changed behind the op's back, NaN through the fused ops, thread isolation, spec validation, and
transposed convolutions with large strides. Every reference is torch.nn.functional."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tvmconv.functional as TF
from tvmconv import nn as tnn
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS
from tvmconv.spec import spec_from_dict
from tvmconv.variants import ConvSpec

from ..conftest import assert_close, at_offset

BASE = next(r for r in SHAPE_TABLE if r.label == "base")
FUSED = ["depthwise_separable_conv2d", "shuffled_group_conv2d", "spatial_separable_conv2d", "effnet_block",
         "squeeze_excitation"]


# -- alignment ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FUSED + ["conv2d"])
def test_tensors_at_any_storage_offset_give_torchs_answer(name):
    """Storage offsets of 1 to 12 floats (not 64-byte aligned) made the fused kernels fault; every
    offset must give the reference's answer, for torch tensors and NumPy arrays alike."""
    v = VARIANTS[name]
    case = v.make_case(BASE, torch.Generator().manual_seed(0))
    expected = v.run_reference(case)
    for offset in range(13):
        args = tuple(at_offset(a, offset) if isinstance(a, torch.Tensor) else a for a in case.args)
        assert_close(v.op(*args, **case.kwargs), expected)
    numpy_args = tuple(a.numpy()[np.newaxis][0] if isinstance(a, torch.Tensor) else a for a in args)
    assert_close(v.op(*numpy_args, **{k: (t.numpy() if isinstance(t, torch.Tensor) else t)
                                      for k, t in case.kwargs.items()}), expected)


def test_channel_split_into_effnet_block():
    """ShuffleNet's channel split: the second half of a (1, 8, 7, 7) map starts 196 floats in."""
    g = torch.Generator().manual_seed(0)
    full, w1, w2 = torch.randn(1, 8, 7, 7, generator=g), torch.randn(4, 1, 1, 3, generator=g), torch.randn(
        4, 1, 3, 1, generator=g)
    x = full[:, 4:]
    assert x.data_ptr() % 64
    expected = F.conv2d(F.max_pool2d(F.conv2d(x, w1, padding=(0, 1), groups=4), (2, 1)), w2, padding=(1, 0),
                        groups=4)
    assert_close(TF.effnet_block(x, w1, w2), expected)


# -- weights changed after the first call ----------------------------------------------------------
def _set_data(w, new):
    w.data = new


def _numpy_view(w, new):
    w.detach().numpy()[...] = new.numpy()


def _vector_to_parameters(w, new):
    torch.nn.utils.vector_to_parameters(new.reshape(-1), [w])


def _no_grad_copy(w, new):
    with torch.no_grad():
        w.copy_(new)


WRITES = {
    "data.mul_": lambda w, new: w.data.mul_(-0.5),
    "data.copy_": lambda w, new: w.data.copy_(new),
    "data =": _set_data,
    "numpy view": _numpy_view,
    "vector_to_parameters": _vector_to_parameters,
    "no_grad copy_": _no_grad_copy,
    "detach().zero_": lambda w, new: w.detach().zero_(),
    "data[0] =": lambda w, new: w.data.__setitem__(0, new[0]),
}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("module", ["Conv2d", "DepthwiseSeparableConv2d"])
def test_a_changed_weight_is_never_run_stale(module, write):
    """Whatever path changes a weight after the first call (several leave ``w._version`` as it
    was), the next call computes with the new values."""
    torch.manual_seed(0)
    if module == "Conv2d":
        m = tnn.Conv2d(16, 32, 3, padding=1).eval()
        weight = m.weight

        def ref(x):
            return F.conv2d(x, m.weight, m.bias, padding=1)
    else:
        m = tnn.DepthwiseSeparableConv2d(16, 32, 3, padding=1).eval()
        weight = m.pointwise.weight

        def ref(x):
            return F.conv2d(F.conv2d(x, m.depthwise.weight, m.depthwise.bias, padding=1, groups=16),
                            m.pointwise.weight, m.pointwise.bias)
    x = torch.randn(1, 16, 10, 10)
    with torch.no_grad(), TF.no_dispatch(), TF.capture_kernels() as ks:
        m(x)
        assert ks[-1].pack is not None  # this test is about the packed-weight path
        WRITES[write](weight, torch.randn(weight.shape))
        assert_close(m(x), ref(x))


def test_functional_call_with_a_weight_edited_through_numpy():
    x, w = torch.randn(1, 16, 9, 9), torch.randn(32, 16, 3, 3)
    first = TF.conv2d(x, w, padding=1)
    w.numpy()[:] = np.random.default_rng(0).standard_normal(w.shape)
    second = TF.conv2d(x, w, padding=1)
    assert not torch.allclose(first, second)
    assert_close(second, F.conv2d(x, w, padding=1))


# -- NaN and Inf as torch --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["depthwise_separable_conv2d", "effnet_block", "squeeze_excitation"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_come_out_as_torchs(name, value):
    """relu, relu6 and max pooling turned NaN into finite values (TVM's max(v, 0) lowers to
    ``v > 0 ? v : 0``)."""
    v = VARIANTS[name]
    case = v.make_case(BASE, torch.Generator().manual_seed(0))
    x = case.args[0].clone()
    x[0, 1, 2, 3] = value
    x[0, 3, 5, 0] = value
    args = (x, *case.args[1:])
    for acts in ([{}] if name == "squeeze_excitation" else
                 [dict(activation=a) for a in ("relu", "relu6", None)] if name == "effnet_block" else
                 [dict(mid_activation=a, activation=b) for a in ("relu", "relu6") for b in ("relu", None)]):
        kwargs = {**case.kwargs, **acts}
        expected = v.reference(*args, **kwargs)
        if value != value:
            assert expected.isnan().any()  # relu6 clamps an Inf, but nothing hides a NaN
        torch.testing.assert_close(v.op(*args, **kwargs), expected, atol=2e-4, rtol=2e-4, equal_nan=True)


# -- threads ---------------------------------------------------------------------------------------
def test_spec_of_in_one_thread_leaves_other_threads_calls_alone():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3)
    expected = F.conv2d(x, w)
    TF.conv2d(x, w)  # compiled before the race
    stop, errors = threading.Event(), []

    def specs():
        while not stop.is_set():
            TF.spec_of(TF.conv2d, x, w, padding=1)

    other = threading.Thread(target=specs)
    other.start()
    try:
        for _ in range(500):
            try:
                assert_close(TF.conv2d(x, w), expected)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(exc)
    finally:
        stop.set()
        other.join()
    assert errors == []


def test_capture_kernels_sees_only_its_own_threads_calls():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3)
    x1, w1 = torch.randn(1, 4, 6), torch.randn(4, 4, 3)
    TF.conv2d(x, w), TF.conv1d(x1, w1)
    done = threading.Event()

    def other():
        while not done.is_set():
            TF.conv1d(x1, w1)

    t = threading.Thread(target=other)
    t.start()
    try:
        with TF.capture_kernels() as ks:
            for _ in range(20):
                TF.conv2d(x, w)
                time.sleep(0.001)
    finally:
        done.set()
        t.join()
    assert len(ks) == 20 and {k.spec.variant for k in ks} == {"conv2d"}


# -- specs from files and the command line ---------------------------------------------------------
BASE_SPEC = ConvSpec(n=1, c_in=4, in_size=(6, 6), c_out=4, kernel=(3, 3), stride=(1, 1), padding=((1, 1), (1, 1)),
                     dilation=(1, 1), output_padding=(0, 0)).to_dict()
DWS_SPEC = {**{k: v for k, v in BASE_SPEC.items() if k in ("n", "c_in", "in_size", "c_out", "kernel", "stride",
                                                           "padding", "dilation", "dtype", "spec_format")},
            "variant": "depthwise_separable_conv2d", "multiplier": 1}


@pytest.mark.parametrize("spec, field", [
    ({**DWS_SPEC, "activation": "relu/../../x"}, "activation"),
    ({**DWS_SPEC, "mid_activation": "relu\n#define X"}, "mid_activation"),
    ({**BASE_SPEC, "n": -5}, "n"),
    ({**BASE_SPEC, "n": "1"}, "n"),
    ({**BASE_SPEC, "n": 10**12}, "n"),
    ({**BASE_SPEC, "n": True}, "n"),
    ({**BASE_SPEC, "dtype": "int8"}, "dtype"),
    ({**BASE_SPEC, "bias": 1}, "bias"),
    ({**BASE_SPEC, "groups": 3}, "groups"),
    ({**BASE_SPEC, "stride": [1]}, "stride"),
    ({**BASE_SPEC, "padding": [1, 1]}, "padding"),
    ({**BASE_SPEC, "in_size": [2**20, 2**20]}, "elements"),
])
def test_spec_fields_are_validated(spec, field):
    with pytest.raises(ValueError, match=field):
        spec_from_dict(spec)


@pytest.mark.parametrize("kwargs", [dict(stride=2**31), dict(padding=2**31), dict(dilation=2**40),
                                    dict(padding=2**30, stride=1)])
def test_huge_parameters_give_a_clear_error(kwargs):
    """Huge strides, paddings and dilations ended in TVM's "Literal value exceeds range of int32"
    or std::bad_alloc; now a ValueError that says what the limit is."""
    with pytest.raises(ValueError, match=r"2\*\*31-1"):
        TF.conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 1, 1), **kwargs)


def test_outputs_past_32_bit_indices_are_refused_before_compiling():
    x = torch.empty(1, 1, 2**16, 2**15 + 8)  # 2**31 + ... elements out of a transposed conv
    with pytest.raises(ValueError, match="elements"):
        TF.conv_transpose2d(x[:, :, :1, :1].expand(1, 1, 2**16, 2**15 + 8), torch.randn(1, 1, 2, 2), stride=1)


# -- transposed convolutions with large strides ---------------------------------------------------
@pytest.mark.parametrize("stride", [7, 100, 1000])
def test_transposed_conv_with_a_large_stride_compiles_quickly(stride):
    """Compile time grew as stride**1.7 (35 s at stride 100, over 300 s from 1,000) while holding
    the lock of every first call."""
    g = torch.Generator().manual_seed(stride)
    x, w = torch.randn(1, 3, 3, 4, generator=g), torch.randn(3, 2, 3, 3, generator=g)
    start = time.perf_counter()
    y = TF.conv_transpose2d(x, w, stride=stride, padding=1, output_padding=stride - 1)
    assert time.perf_counter() - start < 30
    assert_close(y, F.conv_transpose2d(x, w, stride=stride, padding=1, output_padding=stride - 1))
