"""Running a spec's kernel on an op's tensors: resolve the target, load the kernel (runtime.build),
dispatch to the vendor path where it was measured faster on this machine (runtime.dispatch; a
workload not yet decided times both paths over its first calls), hand the tensors over aligned,
pack the weight, and return torch (or NumPy) out. Per-thread switches for benchmarks and reports."""

from __future__ import annotations

import contextlib
import functools
import threading

import torch

from .. import knobs, reference
from .._args import Args
from ..backends import base as _base
from ..backends.target import TargetInfo
from ..spec import Spec, check_spec
from . import build, dispatch


class _State(threading.local):
    """Per-thread switches: a block entered in one thread never changes another thread's calls."""

    def __init__(self):  # run once in each thread that uses it
        self.capture: list | None = None  # set by capture_kernels()
        self.no_dispatch = 0  # > 0 inside no_dispatch()
        self.spec_only = 0  # > 0 inside spec_of()
        self.collect: list | None = None  # set by collect_specs()
        self.packed: dict[int, torch.Tensor] = {}  # id(kernel) -> its packed-weight buffer (_packed)
        self.calibrating: dict[int, dispatch.Calibration] = {}  # id(kernel) -> its first-use timing here


_state = _State()


@contextlib.contextmanager
def no_dispatch():
    """Inside the block (in this thread), always run the tvmconv kernel, even where the vendor path
    was measured faster, and never time the two paths for a first-use choice (benchmarks use this
    to time the kernel itself)."""
    _state.no_dispatch += 1
    try:
        yield
    finally:
        _state.no_dispatch -= 1


def _dispatch_enabled() -> bool:
    return _state.no_dispatch == 0 and knobs.dispatch()


@functools.lru_cache(maxsize=None)
def _vendor(spec: Spec):
    found = reference.vendor_for(spec)
    return found[1] if found else None


@contextlib.contextmanager
def capture_kernels():
    """Collect the ``Kernel`` of every op this thread calls inside the block (for reports)."""
    outer, _state.capture = _state.capture, []
    try:
        yield _state.capture
    finally:
        _state.capture = outer


@contextlib.contextmanager
def collect_specs():
    """Inside the block (in this thread), each op call appends its spec to the yielded list and
    returns PyTorch's result (its vendor path) without building a kernel: what a model would run,
    found without compiling it. An op with no vendor path runs its kernel."""
    outer, _state.collect = _state.collect, []
    try:
        yield _state.collect
    finally:
        _state.collect = outer


class SpecOnly(Exception):  # noqa: N818 - not an error: how spec_of ends a call early
    """Raised by an op called under ``spec_of`` once its spec is known."""

    def __init__(self, spec: Spec):
        super().__init__(spec.name)
        self.spec = spec


def spec_of(fn, *args, **kwargs) -> Spec:
    """The normalised spec that ``fn(*args, **kwargs)`` (a tvmconv op) would run, without building
    or running its kernel: the arguments are checked as in a real call."""
    _state.spec_only += 1
    try:
        fn(*args, **kwargs)
    except SpecOnly as found:
        return found.spec
    finally:
        _state.spec_only -= 1
    raise ValueError(f"{getattr(fn, '__name__', fn)!r} ran no tvmconv kernel")


def _run(spec: Spec, a: Args, tensors: list[torch.Tensor | None], target=None, unbatched: bool = False):
    """Run ``spec``'s kernel on ``tensors`` (None entries are absent optional arguments)."""
    if _state.spec_only:
        raise SpecOnly(spec)
    if _state.collect is not None:
        _check_once(spec)
        _state.collect.append(spec)
        vendor = _vendor(spec)
        if vendor is not None:
            return _finish(vendor(*tensors), a, tensors, unbatched)
    # the ops' per-call path: a repeated call finds its checked spec and target in one lookup
    # (each step alone costs about a microsecond, which is most of a 10 us layer)
    hashable = target is None or isinstance(target, (str, TargetInfo))  # (not a target dict)
    key = (spec, a.device, target, knobs.default_target()) if hashable else None
    tgt = _RESOLVED.get(key) if key is not None else None
    if tgt is None:
        _check_once(spec)
        tgt = _resolve(a, target)
        if key is not None:
            if len(_RESOLVED) > 4096:
                _RESOLVED.clear()
            _RESOLVED[key] = tgt
    kern = build.load(spec, tgt)
    if _state.capture is not None:
        _state.capture.append(kern)
    vendor = _vendor(spec) if kern.dispatch != "tvmconv" and _dispatch_enabled() else None
    if vendor is None:
        out = _kernel_out(kern, a, tensors)
    elif kern.dispatch == "vendor":
        out = vendor(*tensors)
    else:  # undecided: this call is one of the first-use calibration's
        out = _calibrating(kern, vendor, a, tensors)
    return _finish(out, a, tensors, unbatched)


def _check_once(spec: Spec) -> None:
    if spec not in _CHECKED:  # check_spec is not free: once per spec
        check_spec(spec)
        _CHECKED.add(spec)


def _finish(out: torch.Tensor, a: Args, tensors: list, unbatched: bool):
    """``out`` as the op returns it: dense in the layout torch's convolution would give (the kernels
    write NCHW; a vendor path such as channel_wise_conv's ends in a permuted view), a no-op where it
    already is; unbatched or as a NumPy array where the call was."""
    out = out.contiguous(memory_format=memory_format(tensors[0]) if out.dim() == 4 else _CONTIGUOUS)
    if unbatched:
        out = out.squeeze(0)
    return out.numpy() if a.numpy else out


_CHANNELS_LAST, _CONTIGUOUS = torch.channels_last, torch.contiguous_format


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout an op's output takes, as torch's convolutions choose it: channels_last for a 4-D
    input laid out channels_last (and not also plain contiguous: 1x1 images, one channel), else
    contiguous. The kernels compute NCHW; a channels_last output is a copy."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=_CHANNELS_LAST):
        return _CHANNELS_LAST
    return _CONTIGUOUS


def _kernel_out(kern, a: Args, tensors: list) -> torch.Tensor:
    """The kernel's result on ``tensors``. On CUDA it launches on torch's current stream (tvm_ffi
    passes it with the tensors)."""
    out = torch.empty(kern.out_shape, dtype=a.dtype, device=a.device)
    args = [_kernel_arg(t) for t in tensors if t is not None]
    if kern.pack is not None:
        args[kern.packed_index] = _packed(kern, args[kern.packed_index])
    kern(*args, out)
    return out


def _calibrating(kern, vendor, a: Args, tensors: list) -> torch.Tensor:
    """One call of a kernel not yet decided on this machine: the path its calibration in this thread
    takes next (the kernel first), timed; the last of them decides (``dispatch.settle``)."""
    cal = _state.calibrating.get(id(kern))
    if cal is None:
        cal = _state.calibrating[id(kern)] = dispatch.Calibration()
    which = cal.next_path()
    run = (lambda: _kernel_out(kern, a, tensors)) if which == "tvmconv" else (lambda: vendor(*tensors))
    out, seconds = kern.target.backend.time_call(run)
    cal.add(which, seconds)
    if cal.done:
        del _state.calibrating[id(kern)]
        dispatch.settle(kern, cal.times["tvmconv"], cal.times["vendor"], "first use")
    return out


_CHECKED: set = set()  # specs that passed check_spec
_RESOLVED: dict = {}  # (spec, device, target, TVMCONV_TARGET) -> the target of a call that passed the checks


# TVM declares every buffer a kernel takes 64-byte aligned (its allocator's alignment) and its
# vector code may load with aligned instructions: a view at an odd offset (x[:, 4:], a NumPy array)
# would fault. torch's allocator aligns to 64 bytes, so a fresh copy always fits.
_ALIGN = 64


def _kernel_arg(t: torch.Tensor) -> torch.Tensor:
    """``t`` dense and 64-byte aligned: itself when it already is (no copy), else a copy."""
    t = t.contiguous()
    return t.clone() if t.data_ptr() % _ALIGN else t


def _packed(kern, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in the layout ``kern`` takes, packed on every call. A packing kept between calls
    cannot know when the weight changed: writes through ``w.data``, a NumPy view or another alias
    leave ``w._version`` as it was, and a stale packing is a silent wrong result. Packing is one
    pass over the weight (0.46 ms for ResNet's 512x512x3x3 against the kernel's 1.7 ms on the
    AVX-512 Xeon); the buffer is kept per thread and kernel, so no call allocates it."""
    buf = _state.packed.get(id(kern))
    if buf is None or buf.shape != kern.packed_shape or buf.dtype != weight.dtype:
        buf = _state.packed[id(kern)] = torch.empty(kern.packed_shape, dtype=weight.dtype)
    kern.pack(weight, buf)
    return buf


def _resolve(a: Args, target):
    """The target a call runs on: ``target`` (or the default) for CPU tensors; for GPU tensors,
    ``target`` if it is a target of their device, else the profile of the tensors' GPU."""
    return _base.target_for_tensors(a.op, a.device, target)
