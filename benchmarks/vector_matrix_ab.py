"""A/B of the classifier's vector-matrix schedule (``llvm_generic.VectorMatrix``): one vector of outputs
a parallel task (the rule before, written out here) against blocks of whole vectors (the rule now), on
the classifiers of MobileNetV2 (1280 -> 1000), MobileNetV3-Large (960 -> 1280, 1280 -> 1000) and
ResNet-18 (512 -> 1000): ``x (1, K) @ W (K, N) + b`` as the importer folds it. Each kernel timed hot
(20 calls back to back) and cold (the caches flushed before each call, as a forward reaches the
classifier with its weight out of cache), interleaved, best and median of 15 rounds, microseconds.
One JSON line per shape.

    python benchmarks/vector_matrix_ab.py
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import tvm
from tvm import te

from tvmconv.backends import llvm_generic
from tvmconv.backends.openmp import share_pool
from tvmconv.backends.target import resolve

SHAPES = [(1280, 1000), (960, 1280), (512, 1000)]
ROUNDS = 15


def _func(K: int, N: int):
    x, W, b = te.placeholder((1, K), name="x"), te.placeholder((K, N), name="W"), te.placeholder((N,), name="b")
    k = te.reduce_axis((0, K), "k")
    mm = te.compute((1, N), lambda i, n: te.sum(x[i, k] * W[k, n], axis=k), name="matmul")
    return te.create_prim_func([x, W, b, te.compute((1, N), lambda i, n: mm[i, n] + b[n], name="add")])


def _before(func, lanes: int):
    """The rule before: one vector of outputs a parallel task."""
    sch = tvm.s_tir.Schedule(func)
    blk = sch.get_sblock("matmul")
    i, n, k = sch.get_loops(blk)
    fused = sch.fuse(i, n)
    outer, inner = sch.split(fused, factors=[None, lanes])
    sch.reorder(outer, k, inner)
    sch.vectorize(inner)
    sch.parallel(outer)
    sch.decompose_reduction(blk, k)
    add = sch.get_sblock("add")
    a_out, a_in = sch.split(sch.fuse(*sch.get_loops(add)), factors=[None, lanes])
    sch.vectorize(a_in)
    return sch.mod


def main() -> None:
    tgt = resolve(None)
    target, dev, lanes = tvm.target.Target(tgt.tvm()), tvm.cpu(), tgt.backend.lanes("float32")
    tmp = Path(tempfile.mkdtemp())
    for K, N in SHAPES:
        func = _func(K, N)
        rng = np.random.default_rng(K + N)
        xs, ws, bs = (rng.random(s, dtype=np.float32) for s in ((1, K), (K, N), (N,)))
        want = xs @ ws + bs
        runs, err = {}, {}
        for label, mod in (("before", _before(func, lanes)), ("after", llvm_generic.VectorMatrix(lanes).apply(
                func, target, False).mod)):
            path = tmp / f"{label}_{K}_{N}.so"  # (a path per library: dlopen hands back a loaded one)
            tvm.compile(mod, target=target).export_library(str(path))
            lib = tvm.runtime.load_module(str(path))
            share_pool(path)  # (as tvmconv loads its libraries: PyTorch's OpenMP pool)
            args = [tvm.runtime.tensor(a, dev) for a in (xs, ws, bs, np.zeros((1, N), np.float32))]
            lib["main"](*args)
            err[label] = float(np.abs(args[-1].numpy() - want).max())
            runs[label] = (lib.time_evaluator("main", dev, number=20, repeat=1),
                           lib.time_evaluator("main", dev, number=1, repeat=1, cache_flush_bytes=64 << 20), args)
        times = {f"{label}_{how}": [] for label in runs for how in ("hot", "cold")}
        for _ in range(ROUNDS):
            for label, (hot, cold, args) in runs.items():
                times[f"{label}_hot"].append(hot(*args).results[0])
                times[f"{label}_cold"].append(cold(*args).results[0])
        print(json.dumps({"K": K, "N": N, "target": tgt.profile,
                          **{f"{k}_us": round(min(t) * 1e6, 1) for k, t in times.items()},
                          **{f"{k}_median_us": round(sorted(t)[len(t) // 2] * 1e6, 1) for k, t in times.items()},
                          "max_abs_error": max(err.values())}), flush=True)


if __name__ == "__main__":
    main()
