"""Argument checking and normalisation at the API boundary.

Every error names the argument and says what was expected, the way torch.nn.functional does:
``TypeError`` for a wrong type or dtype, ``ValueError`` for a wrong value, shape or device.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
import torch

from .backends import registry as _backends  # the torch device types some backend runs

SUPPORTED_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16"}
_NP_DTYPES = {np.dtype("float32"), np.dtype("float64"), np.dtype("float16")}


class Empty(ValueError):
    """An empty tensor argument, or an empty output: the op answers as PyTorch does (an empty
    tensor where PyTorch returns one, this error where PyTorch raises; functional.py)."""


class Args:
    """The tensors of one call, converted to torch tensors (CPU, or all on one CUDA device),
    remembering whether the caller gave NumPy arrays (then the result is returned as NumPy)."""

    def __init__(self, op: str):
        self.op = op
        self.numpy = False
        self.dtype: torch.dtype | None = None
        self.device: torch.device | None = None  # the first tensor's; the others must match

    def tensor(self, value: Any, name: str, *, ndim: Sequence[int] | int | None = None,
               optional: bool = False) -> torch.Tensor | None:
        if value is None:
            if optional:
                return None
            raise TypeError(f"{self.op}: argument '{name}' must be a torch.Tensor or numpy.ndarray, got None")
        if isinstance(value, np.ndarray):
            if value.dtype not in _NP_DTYPES:
                raise TypeError(f"{self.op}: argument '{name}' must have a floating dtype "
                                f"(float16, float32 or float64), got numpy {value.dtype}")
            if name == "input":
                self.numpy = True
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif not isinstance(value, torch.Tensor):
            raise TypeError(f"{self.op}: argument '{name}' must be a torch.Tensor or numpy.ndarray, "
                            f"got {type(value).__name__}")
        if value.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{self.op}: argument '{name}' must have dtype float16, float32 or float64, "
                            f"got {value.dtype}")
        if self.dtype is None:
            self.dtype = value.dtype
        elif value.dtype != self.dtype:
            raise TypeError(f"{self.op}: argument '{name}' has dtype {value.dtype} but input has dtype "
                            f"{self.dtype}; all tensors must share one dtype")
        if value.layout is not torch.strided:
            raise TypeError(f"{self.op}: argument '{name}' must be a dense (strided) tensor, got layout "
                            f"{value.layout}; convert it with .to_dense()")
        device = value.device
        if device.type not in _backends.device_types():
            raise ValueError(f"{self.op}: argument '{name}' is on device '{device}'; tvmconv's backends run "
                             f"on {' and '.join(repr(t) for t in _backends.device_types())} tensors")
        if self.device is None:
            self.device = device
        elif device != self.device:
            raise ValueError(f"{self.op}: argument '{name}' is on device '{device}' but input is on "
                             f"'{self.device}'; all tensors must be on one device")
        if ndim is not None:
            allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
            if value.dim() not in allowed:
                want = " or ".join(f"{d}-D" for d in allowed)
                raise ValueError(f"{self.op}: argument '{name}' must be {want}, got {value.dim()}-D "
                                 f"tensor of shape {tuple(value.shape)}")
        if value.numel() == 0:
            raise Empty(f"{self.op}: argument '{name}' is empty (shape {tuple(value.shape)}); every dimension must "
                        f"be at least 1 (except where PyTorch returns an empty tensor for it)")
        if value.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{self.op}: argument '{name}' requires grad, but tvmconv kernels have no "
                               f"backward yet; call it under torch.no_grad() or detach the tensor")
        return value

    def tensors(self, **named: tuple[Any, Sequence[int] | int]) -> list[torch.Tensor | None]:
        """``tensor(value, name, ndim=ndim)`` for each ``name=(value, ndim)``, in order (which
        decides the error a call with several bad arguments gets); biases and masks may be None."""
        return [self.tensor(value, name, ndim=ndim, optional="bias" in name or name == "mask")
                for name, (value, ndim) in named.items()]

    @property
    def dtype_name(self) -> str:
        return SUPPORTED_DTYPES[self.dtype]


def int_tuple(value: Any, n: int, name: str, op: str, *, minimum: int) -> tuple[int, ...]:
    """``value`` as an n-tuple of ints >= minimum (an int is repeated, as torch does)."""
    if isinstance(value, bool) or (not isinstance(value, (numbers.Integral, tuple, list))):
        raise TypeError(f"{op}: argument '{name}' must be an int or a tuple of {n} ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = (int(value),) * n
    else:
        if len(value) == 1:
            value = tuple(value) * n
        if len(value) != n or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{op}: argument '{name}' must be an int or a tuple of {n} ints, got {value!r}")
        out = tuple(int(v) for v in value)
    if any(v < minimum for v in out):
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: argument '{name}' must be {bound}, got {value!r}")
    return out


def conv_padding(padding: Any, n: int, kernel: tuple[int, ...], dilation: tuple[int, ...],
                 stride: tuple[int, ...], op: str) -> tuple[tuple[int, int], ...]:
    """torch's padding argument (int, tuple, 'same' or 'valid') as (before, after) per axis."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                                 f"(stride={stride}); use an explicit padding")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))  # torch puts the odd pixel after
            return tuple(pads)
        raise ValueError(f"{op}: argument 'padding' must be 'same', 'valid', an int or a tuple of {n} ints, "
                         f"got {padding!r}")
    return tuple((p, p) for p in int_tuple(padding, n, "padding", op, minimum=0))


def check_groups(groups: Any, op: str, name: str = "groups") -> int:
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{op}: argument '{name}' must be a positive int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{op}: argument '{name}' must be a positive int, got {groups}")
    return int(groups)


def check_divisible(value: int, groups: int, what: str, op: str, gname: str = "groups") -> None:
    if value % groups:
        raise ValueError(f"{op}: {what} ({value}) must be divisible by {gname} ({groups})")


def check_shape(t: torch.Tensor | None, expected: tuple[int, ...], name: str, op: str, why: str = "") -> None:
    if t is not None and tuple(t.shape) != tuple(expected):
        raise ValueError(f"{op}: argument '{name}' must have shape {tuple(expected)}{why}, "
                         f"got {tuple(t.shape)}")


def check_out_size(in_size, out_size, kernel, padding, dilation, op: str) -> None:
    if any(o < 1 for o in out_size):
        raise (Empty if min(out_size) == 0 else ValueError)(
            f"{op}: input spatial size {tuple(in_size)} padded by {tuple(padding)} is smaller than the "
            f"dilated kernel (kernel {tuple(kernel)}, dilation {tuple(dilation)}): output size would be "
            f"{tuple(out_size)}")


def activation(value: Any, name: str, op: str) -> str | None:
    if value in (None, "relu", "relu6"):
        return value
    raise ValueError(f"{op}: argument '{name}' must be None, 'relu' or 'relu6', got {value!r}")
