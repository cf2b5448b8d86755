"""A/B of the default blocking rule for register-tiled (``ocvec``) kernels, as it was before 2026-12-07
("old": two vectors of output channels wherever there are enough) and as it is (``plan_for``): each plan's kernel built
with the default schedule, its weight packed once (as in a compiled model), timed alone with TVM's
time_evaluator in interleaved rounds (best of rounds); PyTorch's convolution alone beside it. One
JSON line per shape and plan to stdout.

    python benchmarks/plan_rule_ab.py <label> > results.jsonl
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from tvmconv.backends.blocking import _best_tile, _tile_registers
from tvmconv.backends.llvm_schedules import default_schedule
from tvmconv.backends.target import resolve
from tvmconv.runtime import build
from tvmconv.variants import ConvSpec, DepthwiseSeparableSpec
from tvmconv.variants.compute import Plan

# (kind, c_in, c_out, in_hw, kernel, stride): MobileNetV2/V1, EfficientNet-B0 and ResNet-18 layers
SHAPES = [("pw", 16, 96, 112, 1, 1), ("pw", 24, 144, 56, 1, 1), ("pw", 144, 24, 56, 1, 1), ("pw", 96, 24, 56, 1, 1),
          ("pw", 32, 192, 28, 1, 1), ("pw", 192, 32, 28, 1, 1), ("pw", 64, 384, 14, 1, 1), ("pw", 384, 64, 14, 1, 1),
          ("pw", 96, 576, 14, 1, 1), ("pw", 576, 96, 14, 1, 1), ("pw", 160, 960, 7, 1, 1), ("pw", 960, 160, 7, 1, 1),
          ("pw", 320, 1280, 7, 1, 1), ("pw", 64, 128, 56, 1, 1), ("pw", 256, 256, 28, 1, 1), ("pw", 512, 512, 14, 1, 1),
          ("pw", 1024, 1024, 7, 1, 1), ("pw", 240, 40, 28, 1, 1), ("pw", 672, 112, 14, 1, 1),
          ("conv", 3, 32, 224, 3, 2), ("conv", 3, 64, 224, 7, 2), ("conv", 64, 64, 56, 3, 1), ("conv", 64, 128, 56, 3, 2),
          ("conv", 128, 128, 28, 3, 1), ("conv", 256, 256, 14, 3, 1), ("conv", 512, 512, 7, 3, 1),
          ("dwsep", 32, 16, 112, 3, 1), ("dwsep", 96, 24, 112, 3, 2), ("dwsep", 144, 24, 56, 3, 1),
          ("dwsep", 192, 32, 28, 3, 1), ("dwsep", 384, 64, 14, 3, 1), ("dwsep", 576, 96, 14, 3, 1),
          ("dwsep", 960, 160, 7, 3, 1), ("dwsep", 64, 128, 112, 3, 2), ("dwsep", 512, 512, 14, 3, 1)]


def spec_of(kind, ci, co, hw, k, s):
    pad = ((k // 2, k // 2),) * 2
    if kind == "dwsep":
        return DepthwiseSeparableSpec(c_in=ci, in_size=(hw, hw), c_out=co, kernel=(k, k), stride=(s, s), padding=pad,
                                      dw_bias=True, pw_bias=True, mid_activation="relu6")
    return ConvSpec(c_in=ci, in_size=(hw, hw), c_out=co, kernel=(k, k), stride=(s, s), padding=pad, dilation=(1, 1),
                    bias=True)


def kernel(spec, plan, tgt):
    """The kernel of ``plan`` with its weight packing split off (run once), and its arguments."""
    import tvm

    sch, plan = default_schedule(spec, plan, tgt.backend.lanes(spec.dtype), 2)
    split = build.split_weight_pack(sch.mod, spec)
    main = (split or sch.mod)["main"]
    lib = tvm.compile(tvm.IRModule({"main": main}), target=tgt.tvm())
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.random.rand(*[int(d) for d in p.shape]).astype("float32"), dev) for p in main.params]
    return lib.mod.time_evaluator("main", dev, number=10, repeat=3), args, plan


def torch_time(spec, rounds: int) -> float:
    x = torch.randn(1, spec.c_in, *spec.in_size)
    if isinstance(spec, DepthwiseSeparableSpec):
        wd, wp = torch.randn(spec.c_in, 1, *spec.kernel), torch.randn(spec.c_out, spec.c_in, 1, 1)
        f = lambda: torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, wd, None, spec.stride, 1, 1, spec.c_in), wp)  # noqa: E731
    else:
        w = torch.randn(spec.c_out, spec.c_in, *spec.kernel)
        f = lambda: torch.nn.functional.conv2d(x, w, None, spec.stride, spec.padding[0][0])  # noqa: E731
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(10):
            f()
        best = min(best, (time.perf_counter() - t) / 10)
    return best


def main() -> None:
    torch.set_num_threads(2)
    label, rounds = sys.argv[1], 5
    tgt = resolve(None)
    V = tgt.backend.lanes("float32")
    regs = tgt.backend.facts.vector_registers
    for shape in SHAPES:
        spec = spec_of(*shape)
        out_w = spec.out_size[-1]
        new = tgt.backend.default_plan(spec)
        ocg = spec.c_out // getattr(spec, "groups", 1)
        vb = 2 * V if ocg >= 2 * V else V
        old = Plan("ocvec", vb=vb, owi=_best_tile(out_w, max(1, min(_tile_registers(V, regs) // (vb // V), out_w))))
        plans = {"old": old, "new": new} if (old.vb, old.owi) != (new.vb, new.owi) else {"same": new}
        built = {name: kernel(spec, p, tgt) for name, p in plans.items()}
        best = dict.fromkeys(built, float("inf"))
        for _ in range(rounds):
            for name, (ev, args, _) in built.items():
                best[name] = min(best[name], min(ev(*args).results))
        torch_s = torch_time(spec, rounds)
        for name, (_, _, plan) in built.items():
            print(json.dumps({"label": label, "shape": list(shape), "rule": name, "vb": plan.vb, "owi": plan.owi,
                              "us": round(best[name] * 1e6, 1), "torch_us": round(torch_s * 1e6, 1)}), flush=True)


if __name__ == "__main__":
    main()
