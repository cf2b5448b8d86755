"""Same-process A/B of two revisions' default kernels for a list of layers: each revision builds its
kernels (as the compiler does: ``build.with_epilogue``'s schedule, the op's bias in the store, the
partial tiles' stores vectorised) into a folder of shared libraries; then both folders' kernels
are loaded into one process as tvmconv loads its kernels (on PyTorch's OpenMP pool) and timed interleaved with PyTorch's layer, best and median of ROUNDS
repeats of 20 calls, microseconds. One JSON line per layer.

    PYTHONPATH=<unpacked old revision> python benchmarks/kernel_ab.py build /tmp/old
    python benchmarks/kernel_ab.py build /tmp/new
    python benchmarks/kernel_ab.py time old=/tmp/old new=/tmp/new > out.jsonl

A side ``label=FOLDER@tvm-workspace`` keeps TVM's own workspace functions for its kernels' temporary
buffers (the launcher's arena otherwise: backends/openmp.py); give it a copy of the folder (a library
path loads once per process).

(``ab.unpack`` unpacks a revision.) Layers (``KERNEL_AB_LAYERS``, the same for both steps): ``partial``, the
pointwise layers of MobileNetV2, EfficientNet-B0 and MobileNet v1 whose rows are not whole AVX2 vectors (14, 7
and 28 wide), as (c_in, c_out, width); ``effnet``, EfficientNet-B0's others on 14- and 7-wide rows;
``depthwise``, MobileNetV2's and EfficientNet-B0's depthwise layers, as (channels, width, kernel, stride).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import tvm

ROUNDS = 15
SETS = {"partial": [(64, 384, 14), (384, 64, 14), (96, 576, 14), (576, 96, 14), (160, 960, 7), (960, 160, 7),
          (320, 1280, 7), (960, 320, 7), (32, 192, 28), (40, 240, 28), (112, 672, 14),  # MobileNetV2, EffNet-B0
          (512, 512, 14), (512, 1024, 7), (1024, 1024, 7)],  # MobileNet v1
        "effnet": [(80, 480, 14), (480, 80, 14), (672, 112, 14), (192, 1152, 7), (1152, 192, 7), (1152, 320, 7),
                   (672, 192, 7)],  # EfficientNet-B0's other pointwise layers on 14- and 7-wide rows
        "depthwise": [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 3, 2), (192, 28, 3, 1),
                      (384, 14, 3, 1), (576, 14, 3, 1), (576, 14, 3, 2), (960, 7, 3, 1),  # MobileNetV2
                      (240, 28, 5, 1), (480, 14, 3, 1), (672, 14, 5, 1), (1152, 7, 5, 1)]}  # EfficientNet-B0
LAYERS = SETS[os.environ.get("KERNEL_AB_LAYERS", "partial")]


def _spec(*layer):
    """A pointwise layer (c_in, c_out, width) or a depthwise one (channels, width, kernel, stride), with bias."""
    from tvmconv.variants.conv import ConvSpec

    if len(layer) == 3:
        c_in, c_out, hw = layer
        return ConvSpec(c_in=c_in, in_size=(hw, hw), c_out=c_out, kernel=(1, 1), stride=(1, 1),
                        padding=((0, 0), (0, 0)), dilation=(1, 1), bias=True)
    c, hw, k, s = layer
    return ConvSpec(c_in=c, in_size=(hw, hw), c_out=c, kernel=(k, k), stride=(s, s),
                    padding=((k // 2, k // 2), (k // 2, k // 2)), dilation=(1, 1), groups=c, bias=True)


def _name(layer) -> str:
    return "_".join(map(str, layer))


def _label(layer) -> str:
    if len(layer) == 3:
        return "c%d->%d %dx%d" % (layer[0], layer[1], layer[2], layer[2])
    c, hw, k, s = layer
    return f"dw c{c} {hw}x{hw} {k}x{k}/{s}"


def build_all(folder: Path) -> None:
    """Each layer's kernel, as this checkout's compiler builds it, to ``folder/<c_in>_<c_out>_<hw>.so``."""
    from tvmconv.backends.target import resolve
    from tvmconv.runtime import build

    tgt = resolve(None)
    folder.mkdir(parents=True, exist_ok=True)
    for layer in LAYERS:
        spec = _spec(*layer)
        mod = build.with_epilogue(spec, tgt, None, None)
        func = build.vectorize_partial_tiles(mod["main"], tgt.backend.lanes("float32"))
        lib = tvm.compile(tvm.IRModule({"main": func}), target=tgt.tvm())
        lib.export_library(str(folder / f"{_name(layer)}.so"))
        shapes = [[int(d) for d in p.shape] for p in func.params]
        (folder / f"{_name(layer)}.json").write_text(json.dumps({"shapes": shapes, "plan": repr(
            tgt.backend.default_plan(spec))}))


def _tvm_workspace(path: Path) -> None:
    """Point the library's temporary buffers back at TVM's workspace functions."""
    import ctypes

    here, lib = ctypes.CDLL(None), ctypes.CDLL(str(path))
    for name in ("TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace"):
        try:
            ctypes.c_void_p.in_dll(lib, f"__{name}").value = ctypes.cast(getattr(here, name), ctypes.c_void_p).value
        except ValueError:  # (none in it)
            pass


def time_all(sides: dict[str, Path]) -> None:
    from tvmconv.backends.openmp import share_pool  # (importing tvmconv.backends sets TVM's thread count:
    # TVM alone takes half the CPUs, one of two vCPUs)

    torch.set_num_threads(2)
    dev = tvm.cpu()
    for layer in LAYERS:
        name, spec = _name(layer), _spec(*layer)
        x = torch.randn(1, spec.c_in, *spec.in_size)
        w = torch.randn(spec.c_out, spec.c_in // spec.groups, *spec.kernel)
        b = torch.randn(spec.c_out)
        kw = {"stride": spec.stride, "padding": spec.padding[0][0], "groups": spec.groups}
        want = torch.nn.functional.conv2d(x, w, b, **kw).numpy()
        runs, err, plans = {}, {}, {}
        for label, where in sides.items():
            folder, _, how = str(where).partition("@")
            folder = Path(folder)
            meta = json.loads((folder / f"{name}.json").read_text())
            lib = tvm.runtime.load_module(str(folder / f"{name}.so"))
            share_pool(folder / f"{name}.so")  # (as tvmconv loads its kernels: PyTorch's OpenMP pool)
            if how == "tvm-workspace":
                _tvm_workspace(folder / f"{name}.so")
            args = [tvm.runtime.tensor(v.reshape(s), dev) for v, s in
                    zip((x.numpy(), w.numpy(), b.numpy(), np.zeros(want.shape, "float32")), meta["shapes"])]
            lib["main"](*args)
            err[label] = float(np.abs(args[-1].numpy().reshape(want.shape) - want).max())
            runs[label], plans[label] = (lib.time_evaluator("main", dev, number=20, repeat=1), args), meta["plan"]
        times = {label: [] for label in (*runs, "torch")}
        for _ in range(ROUNDS):
            for label, (timer, args) in runs.items():
                times[label].append(timer(*args).results[0])
            t0 = time.perf_counter()
            for _ in range(20):
                torch.nn.functional.conv2d(x, w, b, **kw)
            times["torch"].append((time.perf_counter() - t0) / 20)
        print(json.dumps({"layer": _label(layer), **{f"{k}_plan": v for k, v in plans.items()},
                          **{f"{k}_us": round(min(t) * 1e6, 1) for k, t in times.items()},
                          **{f"{k}_median_us": round(sorted(t)[len(t) // 2] * 1e6, 1) for k, t in times.items()},
                          "max_abs_error": max(err.values())}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build_all(Path(sys.argv[2]))
    else:
        time_all({arg.split("=", 1)[0]: Path(arg.split("=", 1)[1]) for arg in sys.argv[2:]})
