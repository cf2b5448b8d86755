"""A/B of the register tile of pointwise layers whose output rows end in part of a vector (7, 14 and 28
wide on AVX2). Every such layer of the networks named (their compiled modules' convolutions, 1x1 maps
left out) under four plans: ``default``, this checkout's rule (``blocking._narrow_rows``: rows of 7 on
AVX2 keep channels in the vector, ``ocvec``); ``before``, the rule before it (the pixel tile, ``wvec``
over rows widened to whole vectors, where it applies); ``ocvec`` with three or two vectors of channels
by four pixels. Each kernel timed alone without its weight packing (the compiled module holds the
weight packed), on PyTorch's thread pool (as the compiled module's kernels run), interleaved, best and
median of ROUNDS repeats of 20 calls, microseconds. One JSON line per layer.
``--whole``: each network compiled twice in one process, each side with its own empty cache, once with
the rule before (``_narrow_rows`` false), the forwards timed in alternating rounds (15 rounds of 5
forwards, 2 threads, best and median in ms).

    python benchmarks/partial_rows_ab.py mobilenet_v2 mobilenet_v3_large efficientnet_b0 shufflenet_v2_x1_0
    python benchmarks/partial_rows_ab.py --whole mobilenet_v2 efficientnet_b0
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import tvm

import tvmconv
from tvmconv.backends import blocking, openmp
from tvmconv.backends.target import resolve
from tvmconv.models import MODELS
from tvmconv.runtime import build
from tvmconv.spec import spec_from_dict
from tvmconv.variants.compute import Plan

sys.path.insert(0, str(Path(__file__).parent))
import ab  # noqa: E402

ROUNDS = 15


def _layers(names) -> list:
    """The distinct pointwise, ungrouped convolutions with partial rows (not 1x1 maps) of the networks."""
    V = resolve(None).backend.lanes("float32")
    seen = {}
    for name in names:
        fast = tvmconv.compile(MODELS[name](backend="torch").eval(), (torch.randn(1, 3, 224, 224),))
        for call in fast.tvmconv_report.calls[0][1]:
            spec = spec_from_dict(call["spec"]) if call["spec"] else None
            if (spec is not None and getattr(spec, "variant", "") == "conv2d" and spec.kernel == (1, 1)
                    and spec.stride == (1, 1) and spec.groups == 1 and spec.out_size[-1] % V and spec.out_size[-1] > 1):
                seen.setdefault(spec, name)
    return list(seen.items())


def _on_shared_pool(ex):
    """``ex`` written as a library and loaded back, its parallel loops on PyTorch's pool and its
    buffers from the per-thread arena, as a compiled module's kernels run (backends/openmp.py)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="tvmconv-ab-")) / "kernel.so"
    ex.export_library(str(path))
    lib = tvm.runtime.load_module(str(path))
    openmp.share_pool(path)
    return lib


def _kernel(spec, plan, tgt):
    """``(timer, args)``: ``spec``'s kernel for ``plan``, its weight packed beforehand where it packs one."""
    be, dev = tgt.backend, tvm.cpu()
    sch, _ = be.default_schedule(spec, plan)
    sch = build._vectorize_output(sch, be.lanes("float32"))
    split = build.split_weight_pack(sch.mod, spec)
    main = split["main"] if split is not None else sch.mod["main"]
    lib = _on_shared_pool(tvm.compile(tvm.IRModule({"main": main}), target=tgt.tvm()))
    shapes = [[int(d) for d in p.shape] for p in main.params]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((spec.c_out, spec.c_in, 1, 1)).astype("float32")
    if split is not None:
        pack = tvm.compile(tvm.IRModule({"main": split["pack"].with_attr("global_symbol", "main")}),
                           target=tgt.tvm()).mod
        wt = tvm.runtime.tensor(np.zeros(shapes[1], "float32"), dev)
        pack["main"](tvm.runtime.tensor(w, dev), wt)
    else:
        wt = tvm.runtime.tensor(w.reshape(shapes[1]), dev)
    x = rng.standard_normal(shapes[0]).astype("float32")
    b = rng.standard_normal(spec.c_out).astype("float32")
    args = [tvm.runtime.tensor(x, dev), wt, tvm.runtime.tensor(b, dev),
            tvm.runtime.tensor(np.zeros(shapes[-1], "float32"), dev)]
    lib["main"](*args)
    want = torch.nn.functional.conv2d(torch.from_numpy(x).reshape(1, spec.c_in, *spec.in_size), torch.from_numpy(w),
                                      torch.from_numpy(b)).numpy()
    err = float(np.abs(args[-1].numpy().reshape(want.shape) - want).max())
    assert err < 1e-3 * max(1.0, float(np.abs(want).max())), err
    return lib.time_evaluator("main", dev, number=20, repeat=1), args


@contextlib.contextmanager
def _rule_before():
    """Inside the block, plans are chosen by the rule before ``blocking._narrow_rows``."""
    rule = blocking._narrow_rows
    blocking._narrow_rows = lambda out_w, V: False
    try:
        yield
    finally:
        blocking._narrow_rows = rule


def _whole(names: list[str]) -> None:
    import os
    import tempfile

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model, x = MODELS[name](backend="torch").eval(), torch.randn(1, 3, 224, 224)
            compiled = {}
            for side in ("before", "now"):
                os.environ["TVMCONV_CACHE_DIR"] = f"{tmp}/cache-{side}"
                build.clear_memory_cache()
                with _rule_before() if side == "before" else contextlib.nullcontext():
                    compiled[side] = tvmconv.compile(model, (x,))
            with torch.no_grad():
                diff = float((compiled["before"](x) - compiled["now"](x)).abs().max())
            print(json.dumps({"model": name, "max_abs_diff": diff, **ab.alternate_forwards(compiled, x)}), flush=True)


def main() -> None:
    if sys.argv[1] == "--whole":
        return _whole(sys.argv[2:])
    torch.set_num_threads(2)
    tgt = resolve(None)
    be = tgt.backend
    V = be.lanes("float32")
    for spec, net in _layers(sys.argv[1:]):
        with _rule_before():
            before = be.default_plan(spec)
        plans = {"default": be.default_plan(spec), "before": before,
                 "ocvec_3v4": Plan("ocvec", vb=3 * V, owi=4), "ocvec_2v4": Plan("ocvec", vb=2 * V, owi=4)}
        runs = {k: _kernel(spec, p, tgt) for k, p in plans.items()}
        best = {k: [] for k in runs}
        for _ in range(ROUNDS):
            for k, (timer, args) in runs.items():
                best[k].append(timer(*args).results[0])
        print(json.dumps({"layer": f"c{spec.c_in}->{spec.c_out} {spec.in_size[0]}x{spec.in_size[1]}", "network": net,
                          "target": tgt.profile, **{f"{k}_plan": repr(p) for k, p in plans.items()},
                          **{f"{k}_us": round(min(t) * 1e6, 1) for k, t in best.items()},
                          **{f"{k}_median_us": round(sorted(t)[len(t) // 2] * 1e6, 1) for k, t in best.items()}}),
              flush=True)


if __name__ == "__main__":
    main()
