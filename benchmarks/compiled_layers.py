"""Where a compiled network's time goes: each function the Relax module calls (a tvmconv kernel, with
or without its epilogue, or a function TVM's own lowering made), timed alone on random inputs of
its shapes, with its share of the sum.

    python benchmarks/compiled_layers.py efficientnet_b0 --top 25
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch


def main() -> None:
    import tvm
    from tvm import relax

    from tvmconv import models
    from tvmconv.graph import lowering
    from tvmconv.backends.target import resolve

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tgt = resolve(None)
    model, x = getattr(models, args.model)().eval(), torch.randn(1, 3, 224, 224)
    mod, kernels = lowering.relax_module(lowering.exported(model, (x,)), tgt, schedule=False)
    mod, _ = tgt.backend.schedule_model_functions(mod)
    ex = tvm.compile(mod, target=tgt.tvm())
    lib = ex.mod.imports[0] if ex.mod.imports else ex.mod
    dev = tvm.cpu()
    rows = collections.OrderedDict()
    for b in mod["main"].body.blocks[0].bindings:
        v = b.value
        if not (isinstance(v, relax.Call) and v.op.name == "relax.call_tir"):
            continue
        name = v.args[0].name_hint
        shapes = [(tuple(int(d) for d in a.ty.shape), str(a.ty.dtype)) for a in v.args[1].fields]
        shapes.append((tuple(int(d) for d in b.var.ty.shape), str(b.var.ty.dtype)))
        key = (name, tuple(shapes))
        if key in rows:
            rows[key][1] += 1
            continue
        tensors = [tvm.runtime.tensor(np.random.rand(*s).astype(d), dev) for s, d in shapes]
        secs = lib.time_evaluator(name, dev, number=20, repeat=5)(*tensors).median
        rows[key] = [secs, 1]
    total = sum(s * n for s, n in rows.values())
    print(f"{args.model}: {len(rows)} distinct calls, {total * 1e3:.2f} ms in all (each timed alone)")
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0] * kv[1][1])
    for (name, shapes), (secs, n) in ranked[:args.top]:
        what = kernels[name].name if name in kernels else name
        print(f"{secs * n * 1e3:7.3f} ms {100 * secs * n / total:5.1f}%  x{n}  {what}  {shapes[-1][0]}")


if __name__ == "__main__":
    main()
