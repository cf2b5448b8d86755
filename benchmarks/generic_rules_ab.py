"""A/B of the rules that schedule a compiled model's non-convolution functions (backends/llvm_generic.py):
each network's functions as LegalizeOps, FuseOps and FuseTIR make them, scheduled by another revision's rules
(its llvm_generic.py, unpacked with ab.unpack) and by this checkout's, built for the host, their outputs
compared bit for bit, and timed alone in alternating rounds (TVM's time_evaluator on TVM's own pool, 2
threads; 15 rounds of 100 calls, best and median in us). One JSON line per function.
``--whole``: each network compiled twice in one process (tvmconv.compile, each side with its own empty
cache), once with the other revision's rules, and the two forwards timed in alternating rounds (15 rounds
of 5 forwards, 2 threads, best and median in ms): the same process, so the VM's drift falls on both alike.

    TVM_NUM_THREADS=2 python benchmarks/generic_rules_ab.py d355478 shufflenet_v2_x1_0 resnet18
    python benchmarks/generic_rules_ab.py --whole d355478 efficientnet_b0
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ab  # noqa: E402

import tvm  # noqa: E402
from tvm import tirx  # noqa: E402

from tvmconv.graph import lowering  # noqa: E402
from tvmconv.backends import llvm_generic  # noqa: E402
from tvmconv.backends.target import resolve  # noqa: E402
from tvmconv.models import MODELS  # noqa: E402

ROUNDS, NUMBER = 15, 100


def _rules_of(rev: str, tmp: Path):
    code = ab.unpack(rev, tmp / rev)
    spec = importlib.util.spec_from_file_location(f"llvm_generic_{code}", tmp / rev / "tvmconv/backends/llvm_generic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return code, module


def _functions(name: str) -> dict:
    """The network's PrimFuncs that are not tvmconv kernels, unscheduled."""
    model, x = MODELS[name](backend="torch").eval(), torch.randn(1, 3, 224, 224)
    mod, _ = lowering.relax_module(lowering.exported(model, (x,)), None, schedule=False)
    return {gv.name_hint: f for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and f.attrs.get("tirx.is_scheduled", 0) != 1}


def _built(rules, func, target, lanes):
    mod, counts = rules.schedule_module(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target, lanes)
    return tvm.compile(mod, target=target), next(iter(counts))


def _whole(rev: str, names: list[str]) -> None:
    import contextlib
    import os

    import tvmconv

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        code, old = _rules_of(rev, Path(tmp))
        for name in names:
            model, x = MODELS[name](backend="torch").eval(), torch.randn(1, 3, 224, 224)
            compiled = {}
            for label, rules in (("old", old), ("new", llvm_generic)):
                os.environ["TVMCONV_CACHE_DIR"] = str(Path(tmp) / f"cache-{label}")
                with contextlib.ExitStack() as stack:
                    if rules is not llvm_generic:
                        stack.callback(setattr, llvm_generic, "schedule_module", llvm_generic.schedule_module)
                        llvm_generic.schedule_module = rules.schedule_module
                    compiled[label] = tvmconv.compile(model, (x,))
            with torch.no_grad():
                same = torch.equal(compiled["old"](x), compiled["new"](x))
            print(json.dumps({"old": code, "model": name, "same_output": same,
                              **ab.alternate_forwards(compiled, x, rounds=ROUNDS)}), flush=True)


def main() -> None:
    if sys.argv[1] == "--whole":
        return _whole(sys.argv[2], sys.argv[3:])
    rev, names = sys.argv[1], sys.argv[2:]
    tgt = resolve(None)
    target, lanes, dev = tgt.tvm(), tgt.backend.lanes("float32"), tvm.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        code, old = _rules_of(rev, Path(tmp))
        for name in names:
            for fname, func in _functions(name).items():
                rng = np.random.default_rng(0)
                data = [rng.standard_normal([int(d) for d in p.shape]).astype(p.dtype) for p in func.params]
                sides = {}
                for label, rules in ((code, old), ("new", llvm_generic)):
                    lib, rule = _built(rules, func, target, lanes)
                    args = [tvm.runtime.tensor(a, dev) for a in data]
                    lib["main"](*args)
                    sides[label] = (lib.mod.time_evaluator("main", dev, number=NUMBER, repeat=1), args, rule)
                same = all(np.array_equal(a.numpy(), b.numpy(), equal_nan=True)
                           for a, b in zip(sides[code][1], sides["new"][1]))
                times = {label: [] for label in sides}
                for _ in range(ROUNDS):
                    for label, (timer, args, _) in sides.items():
                        times[label].append(timer(*args).mean * 1e6)
                row = {"model": name, "function": fname, "same_output": same}
                for label, ts in times.items():
                    side = "old" if label == code else "new"
                    row.update({f"{side}_rule": sides[label][2], f"{side}_best_us": round(min(ts), 2),
                                f"{side}_median_us": round(float(np.median(ts)), 2)})
                print(json.dumps({"old": code, **row}), flush=True)


if __name__ == "__main__":
    main()
