"""Layer by layer inside the forward, against ONNX Runtime: tvmconv.compile's functions timed as the forward
calls them (the VM's instrument around each call, so caches and threads are as a forward leaves them) and ONNX
Runtime's nodes from its profiler, the two models' forwards alternating in blocks of 6 in one process (the
first of each block left out: it waits on the other side's spinning threads), medians of 30 forwards each. Convolutions are matched
by (input channels, output channels, kernel, input size, groups); the rest is summed per side. One JSON line per
network (its layers, slowest difference first, under "layers").

    python benchmarks/in_forward_layers.py mobilenet_v2 efficientnet_b0
"""
from __future__ import annotations

import collections
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import tvmconv
from tvmconv.graph.compiler import instrumented
from tvmconv.models import MODELS

ROUNDS, BLOCK = 36, 6


def _ours(fast, x) -> tuple:
    """``(run, records, specs)``: the compiled module's forward, instrumented (``compiler.instrumented``)."""
    lib, calls = fast.tvmconv_report.calls[0]
    run, records = instrumented(lib, (x,))
    return run, records, {c["function"]: c["spec"] for c in calls}


def _key(spec: dict | None):
    if not spec or "c_in" not in spec:
        return None
    return (spec["c_in"], spec["c_out"], tuple(spec["kernel"]), tuple(spec["in_size"]), spec.get("groups", 1))


def main() -> None:
    torch.set_num_threads(2)
    import onnxruntime as ort

    for name in sys.argv[1:]:
        model, x = MODELS[name](backend="torch").eval(), torch.randn(1, 3, 224, 224)
        fast = tvmconv.compile(model, (x,))
        run, records, specs = _ours(fast, x)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
            so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "ort")
            sess = ort.InferenceSession(str(path), so)
            feed = {sess.get_inputs()[0].name: x.numpy()}
            for _ in range(3):
                run(), sess.run(None, feed)
            runs, kept = [], set()
            for block in range(ROUNDS // BLOCK):  # alternating blocks: a slow stretch of this VM hits both
                for i in range(BLOCK):  # (the first of a block waits on the other side's spinning threads)
                    records.clear()
                    run()
                    if i:
                        runs.append(list(records))
                for i in range(BLOCK):
                    sess.run(None, feed)
                    if i:
                        kept.add(3 + block * BLOCK + i)  # (the profile's run index, after 3 warm-ups)
            events = json.loads(Path(sess.end_profiling()).read_text())
        ours: dict = collections.defaultdict(float)
        for i, (symbol, _) in enumerate(runs[0]):
            key = _key(specs.get(symbol)) or ("other", symbol)
            ours[key] += statistics.median(r[i][1] for r in runs)
        per: dict = collections.defaultdict(list)
        info: dict = {}
        seen: collections.Counter = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                seen[e["name"]] += 1  # (this node's run: 0, 1, ...)
                if seen[e["name"]] - 1 in kept:
                    per[e["name"]].append(e["dur"] / 1e6)
                info[e["name"]] = e["args"]
        theirs: dict = collections.defaultdict(float)
        for node, durations in per.items():
            a = info[node]
            shapes = [next(iter(s.values())) for s in a.get("input_type_shape", [])]
            if "Conv" in a["op_name"] and len(shapes) >= 2:
                xs, ws = shapes[0], shapes[1]
                key = (xs[1], ws[0], tuple(ws[2:]), tuple(xs[2:]), xs[1] // ws[1])
            else:
                key = ("other", a["op_name"])
            theirs[key] += statistics.median(durations)
        layers = []
        for key in set(ours) | set(theirs):
            layers.append({"layer": "other" if key[0] == "other" else
                           f"c{key[0]}->{key[1]} k{'x'.join(map(str, key[2]))} {'x'.join(map(str, key[3]))} g{key[4]}",
                           "what": key[1] if key[0] == "other" else None,
                           "tvmconv_ms": round(ours.get(key, 0.0) * 1e3, 3),
                           "onnxruntime_ms": round(theirs.get(key, 0.0) * 1e3, 3)})
        layers.sort(key=lambda r: r["onnxruntime_ms"] - r["tvmconv_ms"])
        conv = [r for r in layers if r["layer"] != "other"]
        print(json.dumps({"model": name, "rounds": ROUNDS,
                          "tvmconv_ms": round(sum(r["tvmconv_ms"] for r in layers), 3),
                          "onnxruntime_ms": round(sum(r["onnxruntime_ms"] for r in layers), 3),
                          "conv_tvmconv_ms": round(sum(r["tvmconv_ms"] for r in conv), 3),
                          "conv_onnxruntime_ms": round(sum(r["onnxruntime_ms"] for r in conv), 3),
                          "layers": layers}), flush=True)


if __name__ == "__main__":
    main()
