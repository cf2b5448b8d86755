"""A/B of the schedule of a mean over each channel's pixels (squeeze-excitation, global pooling) in a
compiled model: dlight's CPU ``Reduction`` against tvmconv's ``RowReduction`` (backends/llvm_generic.py),
on EfficientNet-B0's squeeze-excitation shapes, each timed alone (best of 5 repeats of 20 calls,
microseconds), interleaved. One JSON line per shape.

    python benchmarks/reduction_ab.py
"""
from __future__ import annotations

import json

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.s_tir import dlight as dl

from tvmconv.backends.llvm_generic import RowReduction
from tvmconv.backends.target import resolve

SHAPES = [(1, 32, 112, 112), (1, 96, 56, 56), (1, 144, 56, 56), (1, 144, 28, 28), (1, 240, 28, 28),
          (1, 480, 14, 14), (1, 672, 14, 14), (1, 1152, 7, 7)]


def _mean(shape):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.mean(x, axis=[2, 3], keepdims=True))
        bb.emit_func_output(y)
    return next(f for _, f in relax.transform.LegalizeOps()(bb.get()).functions_items() if isinstance(f, tirx.PrimFunc))


def main() -> None:
    tgt = resolve(None)
    target, dev = tgt.tvm(), tvm.cpu()
    for shape in SHAPES:
        func, x = _mean(shape), np.random.rand(*shape).astype("float32")
        runs = {}
        for label, rule in (("dlight_reduction", dl.cpu.Reduction()), ("row_reduction", RowReduction(tgt.backend.lanes("float32")))):
            with target:
                sch = rule.apply(func, target, False)
            if sch is None:
                continue
            lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
            out = tvm.runtime.tensor(np.zeros(shape[:2] + (1, 1), "float32"), dev)
            runs[label] = (lib.mod.time_evaluator("main", dev, number=20, repeat=1), tvm.runtime.tensor(x, dev), out)
        best = {label: [] for label in runs}
        for _ in range(5):
            for label, (timer, a, o) in runs.items():
                best[label].append(timer(a, o).results[0])
        print(json.dumps({"shape": list(shape), "target": tgt.profile,
                          **{f"{label}_us": round(min(t) * 1e6, 1) for label, t in best.items()}}), flush=True)


if __name__ == "__main__":
    main()
