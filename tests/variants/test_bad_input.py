"""Bad arguments fail early and clearly.

Every op checks its arguments before building or compiling anything. A bad argument raises
``TypeError`` (wrong type or dtype), ``ValueError`` (wrong value, shape, rank, device, or an empty
tensor where PyTorch refuses it too: where PyTorch returns an empty tensor, so does the op) or ``RuntimeError`` (a tensor that requires grad while grad mode is on), with a message
that names the offending argument. Each case below starts from a valid call (``BASE``, checked
against the reference in ``test_base_call_is_valid``) and changes one argument.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import tvmconv.functional as TF
from tvmconv.runtime import build
from tvmconv.variants.registry import VARIANTS

from ..conftest import assert_close

_g = torch.Generator().manual_seed(2024)


def _r(*shape):
    return torch.randn(*shape, generator=_g)


# -- one valid call per op ------------------------------------------------------------------------
X1 = _r(2, 4, 9)           # conv1d / conv_transpose1d input
X2 = _r(2, 4, 7, 8)        # every 2-D op's input: N=2, C=4, H=7, W=8
X3 = _r(1, 4, 5, 5, 5)     # conv3d / conv_transpose3d input
B6 = _r(6)

BASE: dict[str, dict] = {
    "conv1d": dict(input=X1, weight=_r(6, 4, 3), bias=B6, padding=1),
    "conv2d": dict(input=X2, weight=_r(6, 4, 3, 3), bias=B6, padding=1),
    "conv3d": dict(input=X3, weight=_r(6, 4, 3, 3, 3), bias=B6, padding=1),
    "conv_transpose1d": dict(input=X1, weight=_r(4, 3, 3), bias=_r(3), stride=2, padding=1, output_padding=1),
    "conv_transpose2d": dict(input=X2, weight=_r(4, 3, 3, 3), bias=_r(3), stride=2, padding=1, output_padding=1),
    "conv_transpose3d": dict(input=X3, weight=_r(4, 3, 3, 3, 3), bias=_r(3), stride=2, padding=1,
                             output_padding=1),
    # 3x3 kernel, no padding: output 5x6; one offset group
    "deform_conv2d": dict(input=X2, offset=_r(2, 18, 5, 6), weight=_r(6, 4, 3, 3), bias=B6,
                          mask=torch.rand(2, 9, 5, 6, generator=_g)),
    # channel multiplier 2: depthwise (8, 1, 3, 3), pointwise (5, 8, 1, 1)
    "depthwise_separable_conv2d": dict(input=X2, depthwise_weight=_r(8, 1, 3, 3), pointwise_weight=_r(5, 8, 1, 1),
                                       depthwise_bias=_r(8), pointwise_bias=_r(5), padding=1,
                                       mid_activation="relu6", activation="relu"),
    "channel_shuffle": dict(input=X2, groups=2),
    "channel_wise_conv": dict(input=X2, weight=_r(2, 3), bias=_r(2), padding=1),
    "squeeze_excitation": dict(input=X2, fc1_weight=_r(2, 4), fc1_bias=_r(2), fc2_weight=_r(4, 2), fc2_bias=_r(4)),
    "effnet_block": dict(input=X2, weight_1x3=_r(4, 1, 1, 3), weight_3x1=_r(4, 1, 3, 1), bias_1x3=_r(4),
                         bias_3x1=_r(4), activation="relu"),
    "spatial_separable_conv2d": dict(input=X2, weight_kx1=_r(6, 2, 3, 1), weight_1xk=_r(4, 3, 1, 3),
                                     bias_kx1=B6, bias_1xk=_r(4), padding=1, groups=2),
    "flattened_conv2d": dict(input=X2, lateral_weight=_r(5, 4, 1, 1), vertical_weight=_r(5, 1, 3, 1),
                             horizontal_weight=_r(5, 1, 1, 3), bias=_r(5), padding=1),
    "shuffled_group_conv2d": dict(input=X2, weight=_r(6, 2, 3, 3), bias=B6, padding=1, groups=2, shuffle_groups=3),
}


def call(op: str, **changes):
    """The op's valid base call with ``changes`` applied."""
    return getattr(TF, op)(**{**BASE[op], **changes})


def reference(op: str, **changes):
    """The same call on the variant's independent reference (positional, in the op's order)."""
    bound = inspect.signature(getattr(TF, op)).bind(**{**BASE[op], **changes})
    bound.apply_defaults()
    args = [v for name, v in bound.arguments.items() if name != "target"]
    return VARIANTS[op].reference(*args)


@pytest.mark.parametrize("op", sorted(BASE))
def test_base_call_is_valid(op):
    """Every error case changes exactly one thing in a call that is otherwise valid and correct."""
    assert_close(call(op), reference(op), atol=2e-4, rtol=2e-4)


# -- the catalogue of bad calls: (op, changes, exception, message pattern) ------------------------
def _meta(*shape):
    return torch.empty(*shape, device="meta")


def _grad(t):
    return t.clone().requires_grad_(True)


ARG = "argument '{}'"
OUT_SIZE = r"input spatial size .* output size would be"
CASES = []


def case(id_, op, exc, match, **changes):
    CASES.append(pytest.param(op, changes, exc, match, id=id_))


# wrong rank of input and weight
case("conv1d-input-4d", "conv1d", ValueError, ARG.format("input") + " must be 2-D or 3-D", input=_r(1, 4, 3, 9))
case("conv1d-input-1d", "conv1d", ValueError, ARG.format("input"), input=_r(9))
case("conv1d-weight-2d", "conv1d", ValueError, ARG.format("weight") + " must be 3-D", weight=_r(6, 4))
case("conv2d-input-5d", "conv2d", ValueError, ARG.format("input") + " must be 3-D or 4-D", input=_r(1, 2, 4, 7, 8))
case("conv2d-input-2d", "conv2d", ValueError, ARG.format("input"), input=_r(7, 8))
case("conv2d-weight-3d", "conv2d", ValueError, ARG.format("weight") + " must be 4-D", weight=_r(6, 4, 3))
case("conv2d-weight-5d", "conv2d", ValueError, ARG.format("weight"), weight=_r(6, 4, 3, 3, 1))
case("conv3d-input-6d", "conv3d", ValueError, ARG.format("input") + " must be 4-D or 5-D", input=_r(1, 1, 4, 5, 5, 5))
case("conv3d-weight-4d", "conv3d", ValueError, ARG.format("weight") + " must be 5-D", weight=_r(6, 4, 3, 3))
case("conv_transpose2d-input-2d", "conv_transpose2d", ValueError, ARG.format("input"), input=_r(7, 8))
case("conv_transpose2d-weight-3d", "conv_transpose2d", ValueError, ARG.format("weight"), weight=_r(4, 3, 3))
case("deform-input-3d", "deform_conv2d", ValueError, ARG.format("input") + " must be 4-D", input=_r(4, 7, 8))
case("deform-offset-3d", "deform_conv2d", ValueError, ARG.format("offset"), offset=_r(18, 5, 6))
case("deform-weight-3d", "deform_conv2d", ValueError, ARG.format("weight"), weight=_r(6, 4, 9))
case("deform-mask-3d", "deform_conv2d", ValueError, ARG.format("mask"), mask=_r(9, 5, 6))
case("dwsep-input-3d", "depthwise_separable_conv2d", ValueError, ARG.format("input"), input=_r(4, 7, 8))
case("dwsep-dw-3d", "depthwise_separable_conv2d", ValueError, ARG.format("depthwise_weight"),
     depthwise_weight=_r(8, 3, 3))
case("dwsep-pw-2d", "depthwise_separable_conv2d", ValueError, ARG.format("pointwise_weight"),
     pointwise_weight=_r(5, 8))
case("shuffle-input-2d", "channel_shuffle", ValueError, ARG.format("input"), input=_r(2, 4))
case("channel_wise-input-2d", "channel_wise_conv", ValueError, ARG.format("input"), input=_r(2, 4))
case("channel_wise-weight-3d", "channel_wise_conv", ValueError, ARG.format("weight") + " must be 2-D",
     weight=_r(2, 1, 3))
case("se-input-2d", "squeeze_excitation", ValueError, ARG.format("input"), input=_r(2, 4))
case("se-fc1-3d", "squeeze_excitation", ValueError, ARG.format("fc1_weight"), fc1_weight=_r(2, 4, 1))
case("effnet-input-3d", "effnet_block", ValueError, ARG.format("input"), input=_r(4, 7, 8))
case("effnet-w1x3-3d", "effnet_block", ValueError, ARG.format("weight_1x3"), weight_1x3=_r(4, 1, 3))
case("spatial_sep-input-3d", "spatial_separable_conv2d", ValueError, ARG.format("input"), input=_r(4, 7, 8))
case("spatial_sep-wkx1-3d", "spatial_separable_conv2d", ValueError, ARG.format("weight_kx1"), weight_kx1=_r(6, 2, 3))
case("flattened-input-5d", "flattened_conv2d", ValueError, ARG.format("input"), input=_r(1, 2, 4, 7, 8))
case("flattened-vertical-3d", "flattened_conv2d", ValueError, ARG.format("vertical_weight"),
     vertical_weight=_r(5, 3, 1))
case("shuffled-input-5d", "shuffled_group_conv2d", ValueError, ARG.format("input"), input=_r(1, 2, 4, 7, 8))

# channels not divisible by groups
case("conv1d-groups", "conv1d", ValueError, r"input channels \(4\) must be divisible by groups \(3\)", groups=3)
case("conv2d-groups", "conv2d", ValueError, r"input channels \(4\) must be divisible by groups \(3\)",
     weight=_r(6, 1, 3, 3), groups=3)
case("conv2d-out-channels-groups", "conv2d", ValueError, r"weight\.shape\[0\] \(output channels\) \(6\) must be "
     r"divisible by groups \(4\)", weight=_r(6, 1, 3, 3), groups=4)
case("conv3d-groups", "conv3d", ValueError, r"divisible by groups \(3\)", groups=3)
case("conv_transpose2d-groups", "conv_transpose2d", ValueError, r"divisible by groups \(3\)", groups=3)
case("shuffle-groups", "channel_shuffle", ValueError, r"input channels \(4\) must be divisible by groups \(3\)",
     groups=3)
case("spatial_sep-groups", "spatial_separable_conv2d", ValueError, r"divisible by groups \(3\)", groups=3)
case("spatial_sep-mid-groups", "spatial_separable_conv2d", ValueError,
     r"weight_kx1\.shape\[0\] \(3\) must be divisible by groups \(2\)", weight_kx1=_r(3, 2, 3, 1),
     weight_1xk=_r(4, 1, 1, 3), bias_kx1=_r(3))
case("shuffled-groups", "shuffled_group_conv2d", ValueError, r"divisible by groups \(3\)", groups=3)
case("shuffled-shuffle_groups", "shuffled_group_conv2d", ValueError,
     r"output channels \(6\) must be divisible by shuffle_groups \(4\)", shuffle_groups=4)
case("channel_wise-groups", "channel_wise_conv", ValueError,
     r"input channels \(4\) must be divisible by weight\.shape\[0\] \(groups\) \(3\)", weight=_r(3, 1), bias=_r(3))
case("deform-weight-groups", "deform_conv2d", ValueError, r"divisible by weight\.shape\[1\] \(3\)",
     weight=_r(6, 3, 3, 3))
case("deform-offset-groups", "deform_conv2d", ValueError, r"divisible by offset groups \(3\)",
     offset=_r(2, 54, 5, 6), mask=None)
case("deform-offset-channels", "deform_conv2d", ValueError, r"offset\.shape\[1\] \(17\) must be a multiple",
     offset=_r(2, 17, 5, 6))
case("conv2d-groups-zero", "conv2d", ValueError, ARG.format("groups") + " must be a positive int", groups=0)
case("conv2d-groups-negative", "conv2d", ValueError, ARG.format("groups"), groups=-2)
case("conv2d-groups-float", "conv2d", TypeError, ARG.format("groups"), groups=2.0)
case("shuffle-groups-none", "channel_shuffle", TypeError, ARG.format("groups"), groups=None)

# weight (and other operand) shapes that do not fit the input
case("conv1d-weight-shape", "conv1d", ValueError, ARG.format("weight") + " must have shape", weight=_r(6, 3, 3))
case("conv2d-weight-shape", "conv2d", ValueError, ARG.format("weight") + r" must have shape \(C_out, C_in/groups=4",
     weight=_r(6, 3, 3, 3))
case("conv3d-weight-shape", "conv3d", ValueError, ARG.format("weight") + " must have shape", weight=_r(6, 2, 3, 3, 3))
case("conv_transpose2d-weight-shape", "conv_transpose2d", ValueError,
     ARG.format("weight") + r" must have shape \(C_in=4", weight=_r(3, 4, 3, 3))
case("conv2d-unbatched-weight-shape", "conv2d", ValueError, ARG.format("weight"), input=_r(3, 7, 8))
case("dwsep-dw-shape", "depthwise_separable_conv2d", ValueError, ARG.format("depthwise_weight"),
     depthwise_weight=_r(8, 2, 3, 3))
case("dwsep-dw-multiplier", "depthwise_separable_conv2d", ValueError, ARG.format("depthwise_weight"),
     depthwise_weight=_r(6, 1, 3, 3))
case("dwsep-pw-shape", "depthwise_separable_conv2d", ValueError, ARG.format("pointwise_weight") + " must have shape",
     pointwise_weight=_r(5, 4, 1, 1))
case("spatial_sep-wkx1-shape", "spatial_separable_conv2d", ValueError, ARG.format("weight_kx1") + " must have shape",
     weight_kx1=_r(6, 2, 3, 2))
case("spatial_sep-w1xk-shape", "spatial_separable_conv2d", ValueError, ARG.format("weight_1xk") + " must have shape",
     weight_1xk=_r(4, 3, 1, 2))
case("flattened-lateral-shape", "flattened_conv2d", ValueError, ARG.format("lateral_weight"),
     lateral_weight=_r(5, 3, 1, 1))
case("flattened-vertical-shape", "flattened_conv2d", ValueError, ARG.format("vertical_weight"),
     vertical_weight=_r(5, 1, 3, 2))
case("flattened-horizontal-shape", "flattened_conv2d", ValueError, ARG.format("horizontal_weight"),
     horizontal_weight=_r(4, 1, 1, 3))
case("se-fc1-shape", "squeeze_excitation", ValueError, ARG.format("fc1_weight") + " must have shape",
     fc1_weight=_r(2, 3))
case("se-fc1-4d-not-1x1", "squeeze_excitation", ValueError, ARG.format("fc1_weight"), fc1_weight=_r(2, 4, 1, 2))
case("se-fc2-shape", "squeeze_excitation", ValueError, ARG.format("fc2_weight") + " must have shape",
     fc2_weight=_r(4, 3))
case("effnet-w1x3-shape", "effnet_block", ValueError, ARG.format("weight_1x3") + " must have shape",
     weight_1x3=_r(4, 1, 3, 1))
case("effnet-w3x1-shape", "effnet_block", ValueError, ARG.format("weight_3x1") + " must have shape",
     weight_3x1=_r(3, 1, 3, 1))
case("deform-offset-spatial", "deform_conv2d", ValueError, ARG.format("offset") + " must have shape",
     offset=_r(2, 18, 6, 6))
case("deform-mask-shape", "deform_conv2d", ValueError, ARG.format("mask") + " must have shape",
     mask=_r(2, 8, 5, 6))

# zero and negative stride, dilation; negative padding and output_padding
for _op in ("conv1d", "conv2d", "conv3d", "conv_transpose2d", "deform_conv2d", "depthwise_separable_conv2d",
            "spatial_separable_conv2d", "flattened_conv2d", "channel_wise_conv", "shuffled_group_conv2d"):
    case(f"{_op}-stride-zero", _op, ValueError, ARG.format("stride") + " must be positive", stride=0)
    case(f"{_op}-stride-negative", _op, ValueError, ARG.format("stride") + " must be positive", stride=-1)
    case(f"{_op}-padding-negative", _op, ValueError, ARG.format("padding") + " must be non-negative", padding=-1)
for _op in ("conv2d", "conv_transpose2d", "deform_conv2d", "depthwise_separable_conv2d",
            "spatial_separable_conv2d", "shuffled_group_conv2d"):
    case(f"{_op}-stride-tuple-negative", _op, ValueError, ARG.format("stride"), stride=(1, -2))
    case(f"{_op}-padding-tuple-negative", _op, ValueError, ARG.format("padding"), padding=(0, -1))
    case(f"{_op}-dilation-zero", _op, ValueError, ARG.format("dilation") + " must be positive", dilation=0)
case("conv3d-dilation-negative", "conv3d", ValueError, ARG.format("dilation"), dilation=(1, 1, -1))
case("channel_wise-dilation-zero", "channel_wise_conv", ValueError, ARG.format("dilation"), dilation=0)
case("conv2d-stride-float", "conv2d", TypeError, ARG.format("stride"), stride=1.5)
case("conv2d-stride-3-tuple", "conv2d", ValueError, ARG.format("stride"), stride=(1, 1, 1))
case("conv2d-padding-bool", "conv2d", TypeError, ARG.format("padding"), padding=True)
case("conv2d-padding-unknown-string", "conv2d", ValueError, ARG.format("padding"), padding="full")
case("channel_wise-padding-tuple", "channel_wise_conv", ValueError, ARG.format("padding"), padding=(1, 1))
case("conv_transpose2d-output_padding-negative", "conv_transpose2d", ValueError,
     ARG.format("output_padding") + " must be non-negative", output_padding=-1)

# padding='same' with a stride; 'same' for an op that does not take it
for _op, _nd in (("conv1d", 1), ("conv2d", 2), ("conv3d", 3), ("depthwise_separable_conv2d", 2),
                 ("shuffled_group_conv2d", 2)):
    case(f"{_op}-same-stride2", _op, ValueError, r"padding='same' is not supported for strided", padding="same",
         stride=2)
case("conv2d-same-stride-2-1", "conv2d", ValueError, r"padding='same'", padding="same", stride=(1, 2))
case("conv_transpose2d-same", "conv_transpose2d", ValueError, ARG.format("padding"), padding="same")
case("deform-same", "deform_conv2d", TypeError, ARG.format("padding"), padding="same")
case("spatial_sep-same", "spatial_separable_conv2d", TypeError, ARG.format("padding"), padding="same")

# output size < 1: input smaller than the (dilated) kernel, or padding too large for a transposed conv
case("conv1d-input-smaller-than-kernel", "conv1d", ValueError, OUT_SIZE, input=_r(2, 4, 2), padding=0)
case("conv2d-input-smaller-than-kernel", "conv2d", ValueError, OUT_SIZE, input=_r(2, 4, 2, 8), padding=0)
case("conv2d-dilated-kernel-too-large", "conv2d", ValueError, OUT_SIZE, dilation=5)
case("conv3d-input-smaller-than-kernel", "conv3d", ValueError, OUT_SIZE, input=_r(1, 4, 5, 1, 5), padding=0)
case("conv_transpose1d-padding-too-large", "conv_transpose1d", ValueError, OUT_SIZE, input=_r(2, 4, 1), stride=1,
     output_padding=0, padding=2)
case("deform-input-smaller-than-kernel", "deform_conv2d", ValueError, OUT_SIZE, input=_r(2, 4, 2, 2))
case("dwsep-input-smaller-than-kernel", "depthwise_separable_conv2d", ValueError, OUT_SIZE, input=_r(2, 4, 1, 1),
     padding=0)
case("spatial_sep-input-smaller-than-kernel", "spatial_separable_conv2d", ValueError, OUT_SIZE,
     input=_r(2, 4, 2, 2), padding=0)
case("flattened-input-smaller-than-kernel", "flattened_conv2d", ValueError, OUT_SIZE, input=_r(2, 4, 7, 2),
     padding=0)
case("shuffled-input-smaller-than-kernel", "shuffled_group_conv2d", ValueError, OUT_SIZE, input=_r(2, 4, 7, 1),
     padding=0)
case("channel_wise-kernel-longer-than-group", "channel_wise_conv", ValueError, OUT_SIZE, padding=0)
case("effnet-height-1", "effnet_block", ValueError, ARG.format("input") + " must have height >= 2",
     input=_r(2, 4, 1, 8))

# transposed: output_padding must be smaller than stride or dilation
case("conv_transpose1d-output_padding-eq-stride", "conv_transpose1d", ValueError,
     ARG.format("output_padding") + r" .* must be smaller than either stride .* or dilation", output_padding=2)
case("conv_transpose2d-output_padding-eq-stride", "conv_transpose2d", ValueError,
     ARG.format("output_padding"), output_padding=2)
case("conv_transpose2d-output_padding-one-axis", "conv_transpose2d", ValueError,
     ARG.format("output_padding"), stride=(2, 1), output_padding=(1, 1))
case("conv_transpose2d-output_padding-ge-both", "conv_transpose2d", ValueError,
     ARG.format("output_padding"), stride=2, dilation=2, output_padding=2)
case("conv_transpose3d-output_padding-stride1", "conv_transpose3d", ValueError,
     ARG.format("output_padding"), stride=1, output_padding=1)

# dtypes: mixed float dtypes, integers and other non-float dtypes
case("conv2d-weight-float64", "conv2d", TypeError, ARG.format("weight") + " has dtype torch.float64",
     weight=_r(6, 4, 3, 3).double())
case("conv2d-bias-float16", "conv2d", TypeError, ARG.format("bias") + " has dtype torch.float16", bias=B6.half())
case("conv1d-input-float64", "conv1d", TypeError, ARG.format("weight"), input=X1.double())
case("conv_transpose2d-weight-float64", "conv_transpose2d", TypeError, ARG.format("weight"),
     weight=_r(4, 3, 3, 3).double())
case("deform-offset-float64", "deform_conv2d", TypeError, ARG.format("offset"), offset=_r(2, 18, 5, 6).double())
case("deform-mask-float64", "deform_conv2d", TypeError, ARG.format("mask"), mask=_r(2, 9, 5, 6).double())
case("dwsep-pw-float64", "depthwise_separable_conv2d", TypeError, ARG.format("pointwise_weight"),
     pointwise_weight=_r(5, 8, 1, 1).double())
case("se-fc2-bias-float64", "squeeze_excitation", TypeError, ARG.format("fc2_bias"), fc2_bias=_r(4).double())
case("channel_wise-weight-float64", "channel_wise_conv", TypeError, ARG.format("weight"), weight=_r(2, 3).double())
case("effnet-w3x1-float64", "effnet_block", TypeError, ARG.format("weight_3x1"), weight_3x1=_r(4, 1, 3, 1).double())
case("flattened-numpy-float64-weight", "flattened_conv2d", TypeError, ARG.format("horizontal_weight"),
     horizontal_weight=_r(5, 1, 1, 3).double().numpy())
case("conv2d-input-int32", "conv2d", TypeError, ARG.format("input") + " must have dtype float16, float32 or float64",
     input=X2.to(torch.int32))
case("conv2d-weight-int64", "conv2d", TypeError, ARG.format("weight") + " must have dtype",
     weight=_r(6, 4, 3, 3).to(torch.int64))
case("conv3d-input-int64", "conv3d", TypeError, ARG.format("input"), input=X3.long())
case("shuffle-input-int64", "channel_shuffle", TypeError, ARG.format("input"), input=X2.long())
case("deform-offset-int", "deform_conv2d", TypeError, ARG.format("offset"), offset=_r(2, 18, 5, 6).int())
case("se-input-uint8", "squeeze_excitation", TypeError, ARG.format("input"), input=X2.to(torch.uint8))
case("conv2d-input-numpy-int32", "conv2d", TypeError, ARG.format("input") + " must have a floating dtype",
     input=X2.numpy().astype(np.int32))
case("conv2d-input-bool", "conv2d", TypeError, ARG.format("input"), input=X2 > 0)
case("conv2d-input-bfloat16", "conv2d", TypeError, ARG.format("input"), input=X2.bfloat16(),
     weight=_r(6, 4, 3, 3).bfloat16(), bias=B6.bfloat16())
case("conv2d-input-complex", "conv2d", TypeError, ARG.format("input"), input=X2.to(torch.complex64))

# not a dense tensor (also after a dense call of the same shapes has been cached)
case("conv2d-input-sparse", "conv2d", TypeError, ARG.format("input") + " must be a dense .strided. tensor, got layout torch.sparse_coo",
     input=X2.to_sparse())
case("conv2d-weight-sparse", "conv2d", TypeError, ARG.format("weight") + " must be a dense",
     weight=_r(6, 4, 3, 3).to_sparse())
case("dwsep-input-sparse", "depthwise_separable_conv2d", TypeError, ARG.format("input") + " must be a dense",
     input=X2.to_sparse())

# not a tensor
case("conv2d-input-list", "conv2d", TypeError, ARG.format("input") + " must be a torch.Tensor or numpy.ndarray, got list",
     input=X2.tolist())
case("conv1d-weight-list", "conv1d", TypeError, ARG.format("weight") + " .* got list", weight=_r(6, 4, 3).tolist())
case("conv2d-bias-tuple", "conv2d", TypeError, ARG.format("bias") + " .* got tuple", bias=tuple(B6.tolist()))
case("conv2d-input-float", "conv2d", TypeError, ARG.format("input") + " .* got float", input=1.0)
case("conv2d-input-none", "conv2d", TypeError, ARG.format("input") + " .* got None", input=None)
case("conv_transpose2d-input-list", "conv_transpose2d", TypeError, ARG.format("input"), input=X2.tolist())
case("deform-offset-list", "deform_conv2d", TypeError, ARG.format("offset"), offset=[0.0] * 18)
case("dwsep-dw-list", "depthwise_separable_conv2d", TypeError, ARG.format("depthwise_weight"),
     depthwise_weight=[[1.0]])
case("shuffle-input-list", "channel_shuffle", TypeError, ARG.format("input"), input=X2.tolist())
case("channel_wise-weight-list", "channel_wise_conv", TypeError, ARG.format("weight"), weight=[[1.0, 2.0, 3.0]])
case("se-fc1-none", "squeeze_excitation", TypeError, ARG.format("fc1_weight") + " .* got None", fc1_weight=None)
case("effnet-input-list", "effnet_block", TypeError, ARG.format("input"), input=X2.tolist())
case("spatial_sep-w1xk-list", "spatial_separable_conv2d", TypeError, ARG.format("weight_1xk"), weight_1xk=[1.0])
case("flattened-lateral-list", "flattened_conv2d", TypeError, ARG.format("lateral_weight"), lateral_weight=[1.0])
case("shuffled-weight-list", "shuffled_group_conv2d", TypeError, ARG.format("weight"), weight=[1.0])

# a tensor on another device than the CPU target ('meta' stands in for any non-CPU device)
_META = r" is on device 'meta'; tvmconv's backends run on 'cpu' and 'cuda' tensors"
case("conv2d-input-meta", "conv2d", ValueError, ARG.format("input") + _META, input=_meta(2, 4, 7, 8))
case("conv2d-weight-meta", "conv2d", ValueError, ARG.format("weight") + _META, weight=_meta(6, 4, 3, 3))
case("conv2d-bias-meta", "conv2d", ValueError, ARG.format("bias") + _META, bias=_meta(6))
case("conv1d-input-meta", "conv1d", ValueError, ARG.format("input") + _META, input=_meta(2, 4, 9))
case("conv3d-weight-meta", "conv3d", ValueError, ARG.format("weight") + _META, weight=_meta(6, 4, 3, 3, 3))
case("conv_transpose2d-input-meta", "conv_transpose2d", ValueError, ARG.format("input") + _META,
     input=_meta(2, 4, 7, 8))
case("deform-offset-meta", "deform_conv2d", ValueError, ARG.format("offset") + _META, offset=_meta(2, 18, 5, 6))
case("dwsep-pw-meta", "depthwise_separable_conv2d", ValueError, ARG.format("pointwise_weight") + _META,
     pointwise_weight=_meta(5, 8, 1, 1))
case("shuffle-input-meta", "channel_shuffle", ValueError, ARG.format("input") + _META, input=_meta(2, 4, 7, 8))
case("channel_wise-input-meta", "channel_wise_conv", ValueError, ARG.format("input") + _META,
     input=_meta(2, 4, 7, 8))
case("se-input-meta", "squeeze_excitation", ValueError, ARG.format("input") + _META, input=_meta(2, 4, 7, 8))
case("effnet-input-meta", "effnet_block", ValueError, ARG.format("input") + _META, input=_meta(2, 4, 7, 8))
case("spatial_sep-wkx1-meta", "spatial_separable_conv2d", ValueError, ARG.format("weight_kx1") + _META,
     weight_kx1=_meta(6, 2, 3, 1))
case("flattened-input-meta", "flattened_conv2d", ValueError, ARG.format("input") + _META, input=_meta(2, 4, 7, 8))
case("shuffled-input-meta", "shuffled_group_conv2d", ValueError, ARG.format("input") + _META,
     input=_meta(2, 4, 7, 8))

# empty tensors
_EMPTY = " is empty"
case("conv2d-input-channels-0", "conv2d", ValueError, ARG.format("input") + _EMPTY, input=X2[:, :0])
case("conv2d-input-width-0", "conv2d", ValueError, ARG.format("input") + _EMPTY, input=X2[..., :0])
case("conv2d-weight-out-channels-0", "conv2d", ValueError, ARG.format("weight") + _EMPTY, weight=_r(0, 4, 3, 3))
case("conv2d-weight-kernel-0", "conv2d", ValueError, ARG.format("weight") + _EMPTY, weight=_r(6, 4, 0, 3))
case("conv2d-bias-0", "conv2d", ValueError, ARG.format("bias") + _EMPTY, bias=_r(0))
case("conv1d-input-length-0", "conv1d", ValueError, ARG.format("input") + _EMPTY, input=X1[..., :0])
case("conv3d-input-depth-0", "conv3d", ValueError, ARG.format("input") + _EMPTY, input=X3[:, :, :0])
case("deform-offset-0", "deform_conv2d", ValueError, ARG.format("offset") + _EMPTY, offset=_r(2, 0, 5, 6))
case("dwsep-input-0", "depthwise_separable_conv2d", ValueError, ARG.format("input") + _EMPTY, input=X2[:, :, :0])
case("shuffle-input-0", "channel_shuffle", ValueError, ARG.format("input") + _EMPTY, input=X2[:0])
case("channel_wise-weight-0", "channel_wise_conv", ValueError, ARG.format("weight") + _EMPTY, weight=_r(2, 0))
case("se-input-0", "squeeze_excitation", ValueError, ARG.format("input") + _EMPTY, input=X2[..., :0])
case("effnet-input-0", "effnet_block", ValueError, ARG.format("input") + _EMPTY, input=X2[:0])
case("spatial_sep-input-0", "spatial_separable_conv2d", ValueError, ARG.format("input") + _EMPTY, input=X2[:0])
case("flattened-input-0", "flattened_conv2d", ValueError, ARG.format("input") + _EMPTY, input=X2[:0])
case("conv2d-input-numpy-empty", "conv2d", ValueError, ARG.format("input") + _EMPTY,
     input=np.zeros((0, 4, 7, 8), np.float32))

# bias (and other 1-D operand) of the wrong shape
_BIAS = " must have shape"
case("conv1d-bias-short", "conv1d", ValueError, ARG.format("bias") + r" must have shape \(6,\)", bias=_r(5))
case("conv2d-bias-long", "conv2d", ValueError, ARG.format("bias") + r" must have shape \(6,\)", bias=_r(7))
case("conv2d-bias-2d", "conv2d", ValueError, ARG.format("bias") + " must be 1-D", bias=_r(6, 1))
case("conv3d-bias", "conv3d", ValueError, ARG.format("bias") + _BIAS, bias=_r(4))
case("conv_transpose2d-bias-uses-c_in", "conv_transpose2d", ValueError, ARG.format("bias") + r" must have shape \(3,\)",
     bias=_r(4))
case("deform-bias", "deform_conv2d", ValueError, ARG.format("bias") + _BIAS, bias=_r(4))
case("dwsep-depthwise_bias", "depthwise_separable_conv2d", ValueError, ARG.format("depthwise_bias") + _BIAS,
     depthwise_bias=_r(4))
case("dwsep-pointwise_bias", "depthwise_separable_conv2d", ValueError, ARG.format("pointwise_bias") + _BIAS,
     pointwise_bias=_r(8))
case("channel_wise-bias", "channel_wise_conv", ValueError, ARG.format("bias") + _BIAS, bias=_r(4))
case("se-fc1_bias", "squeeze_excitation", ValueError, ARG.format("fc1_bias") + _BIAS, fc1_bias=_r(4))
case("se-fc2_bias", "squeeze_excitation", ValueError, ARG.format("fc2_bias") + _BIAS, fc2_bias=_r(2))
case("effnet-bias_1x3", "effnet_block", ValueError, ARG.format("bias_1x3") + _BIAS, bias_1x3=_r(3))
case("effnet-bias_3x1-2d", "effnet_block", ValueError, ARG.format("bias_3x1") + " must be 1-D", bias_3x1=_r(4, 1))
case("spatial_sep-bias_kx1", "spatial_separable_conv2d", ValueError, ARG.format("bias_kx1") + _BIAS, bias_kx1=_r(4))
case("spatial_sep-bias_1xk", "spatial_separable_conv2d", ValueError, ARG.format("bias_1xk") + _BIAS, bias_1xk=_r(6))
case("flattened-bias", "flattened_conv2d", ValueError, ARG.format("bias") + _BIAS, bias=_r(4))
case("shuffled-bias", "shuffled_group_conv2d", ValueError, ARG.format("bias") + _BIAS, bias=_r(3))

# activation strings
_ACT = r" must be None, 'relu' or 'relu6'"
case("dwsep-activation-gelu", "depthwise_separable_conv2d", ValueError, ARG.format("activation") + _ACT,
     activation="gelu")
case("dwsep-activation-case", "depthwise_separable_conv2d", ValueError, ARG.format("activation") + _ACT,
     activation="ReLU")
case("dwsep-mid_activation", "depthwise_separable_conv2d", ValueError, ARG.format("mid_activation") + _ACT,
     mid_activation="tanh")
case("dwsep-activation-callable", "depthwise_separable_conv2d", ValueError, ARG.format("activation"),
     activation=torch.relu)
case("effnet-activation", "effnet_block", ValueError, ARG.format("activation") + _ACT, activation="sigmoid")
case("effnet-activation-empty", "effnet_block", ValueError, ARG.format("activation"), activation="")

# the target
case("conv2d-target-int", "conv2d", ValueError, r"target must be", target=5)
case("conv2d-target-no-kind", "conv2d", ValueError, r"target must be a TVM target dict with a 'kind' key",
     target={"mcpu": "x"})
case("conv2d-target-arm64", "conv2d", ValueError, r"target 'arm64-linux' .* does not run on this machine's CPU.*"
     r"tvmconv export --target arm64-linux", target="arm64-linux")
case("dwsep-target-cuda", "depthwise_separable_conv2d", ValueError, r"target 'cuda-sm90' runs on a CUDA GPU, but "
     r"the tensors are on the CPU; move them with .cuda\(\)", target="cuda-sm90")
case("conv2d-target-cuda-sm80", "conv2d", ValueError, r"target 'cuda-sm80' runs on a CUDA GPU", target="cuda-sm80")
case("conv2d-target-cuda-dict", "conv2d", ValueError, r"target 'custom' runs on a CUDA GPU",
     target={"kind": "cuda", "arch": "sm_90"})


# an empty argument or output where PyTorch returns an empty tensor: the same tensor (the other
# empty cases above are refused by PyTorch too, and raise ValueError here)
EMPTY_RESULTS = [pytest.param("conv2d", dict(input=X2[:0]), id="conv2d-input-batch-0"),
                 pytest.param("conv_transpose2d", dict(input=X2[:0]), id="conv_transpose2d-input-0"),
                 pytest.param("conv_transpose2d", dict(input=_r(2, 4, 1, 1), padding=(2, 1)),
                              id="conv_transpose2d-output-height-0")]


@pytest.mark.parametrize("op,changes", EMPTY_RESULTS)
def test_empty_results_are_pytorchs(op, changes):
    got, want = call(op, **changes), reference(op, **changes)
    assert got.numel() == 0 and got.shape == want.shape and got.dtype == want.dtype


@pytest.mark.parametrize("op,changes,exc,match", CASES)
def test_bad_argument_raises_clear_error(op, changes, exc, match):
    with pytest.raises(exc, match=match) as info:
        call(op, **changes)
    # Exactly the documented class: not a subclass from deeper down (a TVM error, an IndexError...)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value).startswith(f"{op}: ") or "target" in changes, str(info.value)


def test_a_rejected_call_compiles_nothing():
    """Arguments are checked before any kernel is built: no bad call reaches the compiler."""
    before = len(build._cache)
    for p in CASES:
        op, changes, exc, _ = p.values
        with pytest.raises(exc):
            call(op, **changes)
    assert len(build._cache) == before


@pytest.mark.parametrize("value,exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_shuffle_groups_is_named(value, exc):
    with pytest.raises(exc) as info:
        call("shuffled_group_conv2d", shuffle_groups=value)
    assert "'shuffle_groups'" in str(info.value), str(info.value)


# -- requires_grad: differentiable in grad mode (deform_conv2d: forward only), plain under no_grad ------
GRAD_CASES = [
    ("conv1d", "input"), ("conv2d", "input"), ("conv2d", "weight"), ("conv2d", "bias"), ("conv3d", "weight"),
    ("conv_transpose2d", "input"), ("deform_conv2d", "offset"), ("depthwise_separable_conv2d", "pointwise_weight"),
    ("channel_shuffle", "input"), ("channel_wise_conv", "input"), ("squeeze_excitation", "input"),
    ("effnet_block", "weight_3x1"), ("spatial_separable_conv2d", "weight_kx1"), ("flattened_conv2d", "input"),
    ("shuffled_group_conv2d", "weight"),
]


@pytest.mark.parametrize("op,name", GRAD_CASES, ids=[f"{o}-{n}" for o, n in GRAD_CASES])
def test_requires_grad(op, name):
    t = torch.nn.Parameter(BASE[op][name].clone()) if name != "input" else _grad(BASE[op][name])
    got = call(op, **{name: t})
    with torch.no_grad():
        want = reference(op, **{name: t})
    assert got.requires_grad
    assert_close(got.detach(), want, atol=2e-4, rtol=2e-4)
    if op == "deform_conv2d":
        with pytest.raises(RuntimeError, match="deform_conv2d: no backward"):
            got.sum().backward()
    else:
        (g_got,) = torch.autograd.grad(got.sum(), t)
        t2 = t.detach().clone().requires_grad_(True)
        (g_want,) = torch.autograd.grad(reference(op, **{name: t2}).sum(), t2)
        assert_close(g_got, g_want, atol=2e-4, rtol=2e-4)
    with torch.no_grad():
        got = call(op, **{name: t})
    assert not got.requires_grad
    assert_close(got, want, atol=2e-4, rtol=2e-4)
    # inference mode counts as grad mode off too
    with torch.inference_mode():
        assert_close(call(op, **{name: t}), want, atol=2e-4, rtol=2e-4)


def test_detached_tensor_is_accepted():
    x = _grad(X2)
    assert_close(call("conv2d", input=x.detach()), reference("conv2d"), atol=2e-4, rtol=2e-4)


# -- after all those errors the interpreter and the kernels are still fine ---------------------------
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_still_healthy_after_errors():
    # provoke every error again, back to back, in one process
    for p in CASES:
        op, changes, exc, _ = p.values
        with pytest.raises(exc):
            call(op, **changes)
    # then valid calls, some on kernels compiled before the errors and some on new shapes
    F = torch.nn.functional
    g = torch.Generator().manual_seed(99)
    x = torch.randn(1, 6, 9, 7, generator=g)
    w = torch.randn(4, 3, 3, 3, generator=g)
    b = torch.randn(4, generator=g)
    assert_close(TF.conv2d(x, w, b, stride=2, padding=1, groups=2), F.conv2d(x, w, b, 2, 1, 1, 2), 2e-4, 2e-4)
    wt = torch.randn(6, 2, 2, 3, generator=g)
    assert_close(TF.conv_transpose2d(x, wt, stride=2, output_padding=1),
                 F.conv_transpose2d(x, wt, stride=2, output_padding=1), 2e-4, 2e-4)
    assert_close(TF.channel_shuffle(x, 3), F.channel_shuffle(x, 3), 0, 0)
    x1 = torch.randn(3, 5, 11, generator=g)
    w1 = torch.randn(2, 5, 4, generator=g)
    assert_close(TF.conv1d(x1, w1, padding="same"), F.conv1d(x1, w1, padding="same"), 2e-4, 2e-4)
    for op in ("conv2d", "conv_transpose2d", "deform_conv2d", "depthwise_separable_conv2d", "squeeze_excitation"):
        assert_close(call(op), reference(op), atol=2e-4, rtol=2e-4)


def test_valid_edge_cases_next_to_the_errors():
    """Arguments just inside the limits are accepted and correct (the checks are not too strict)."""
    F = torch.nn.functional
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 5, 5, generator=g)
    w = torch.randn(3, 4, 3, 3, generator=g)
    # input exactly as large as the dilated kernel: output 1x1
    assert_close(TF.conv2d(x, w, dilation=2), F.conv2d(x, w, dilation=2), 2e-4, 2e-4)
    # padding larger than the kernel is legal for a forward convolution
    assert_close(TF.conv2d(x, w, padding=4), F.conv2d(x, w, padding=4), 2e-4, 2e-4)
    # output_padding >= stride is fine while it is below the dilation
    wt = torch.randn(4, 2, 3, 3, generator=g)
    assert_close(TF.conv_transpose2d(x, wt, stride=1, dilation=2, output_padding=1),
                 F.conv_transpose2d(x, wt, stride=1, output_padding=1, dilation=2), 2e-4, 2e-4)
    # transposed padding that leaves exactly one output pixel
    x1 = torch.randn(1, 4, 1, 1, generator=g)
    assert_close(TF.conv_transpose2d(x1, wt, padding=1), F.conv_transpose2d(x1, wt, padding=1), 2e-4, 2e-4)
    # padding='same' with stride 1 given as a tuple
    assert_close(TF.conv2d(x, w, padding="same", stride=(1, 1)), F.conv2d(x, w, padding="same"), 2e-4, 2e-4)
    # NumPy integer scalars are ints
    assert_close(TF.conv2d(x, w, stride=np.int64(2), padding=np.int32(1)), F.conv2d(x, w, stride=2, padding=1),
                 2e-4, 2e-4)
    # effnet at the minimum height
    e = torch.randn(1, 4, 2, 3, generator=g)
    args = (e, torch.randn(4, 1, 1, 3, generator=g), torch.randn(4, 1, 3, 1, generator=g))
    assert_close(TF.effnet_block(*args), VARIANTS["effnet_block"].reference(*args), 2e-4, 2e-4)
