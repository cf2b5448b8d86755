"""A network's time summed kernel by kernel on both sides: tvmconv.compile's functions, each timed alone
(``CompiledModel.profile``), and ONNX Runtime's nodes from its own profiler (warm, median of 100 runs per
node), the forwards of both timed whole beside them. One JSON line per network.

    python benchmarks/kernel_sums.py mobilenet_v2 efficientnet_b0
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import tvmconv
from tvmconv.models import MODELS


def _forward_ms(fn, rounds: int = 15) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _ort(model, x, out: Path):
    import onnxruntime as ort

    path = out / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    so.enable_profiling, so.profile_file_prefix = True, str(out / "ort")
    sess = ort.InferenceSession(str(path), so)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    forward = _forward_ms(lambda: sess.run(None, feed), rounds=100)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per.setdefault(e["name"], []).append(e["dur"])
    return forward, sum(statistics.median(d) for d in per.values()) / 1e3, len(per)


def main() -> None:
    torch.set_num_threads(2)
    for name in sys.argv[1:]:
        model, x = MODELS[name](backend="torch").eval(), torch.randn(1, 3, 224, 224)
        fast = tvmconv.compile(model, (x,))
        rows = fast.profile(rounds=10)
        with torch.no_grad():
            forward = _forward_ms(lambda: fast(x))
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            ort_forward, ort_sum, nodes = _ort(model, x, Path(tmp))
        print(json.dumps({"model": name, "tvmconv_functions": len(rows),
                          "tvmconv_sum_ms": round(sum(r.seconds * r.calls for r in rows) * 1e3, 3),
                          "tvmconv_forward_ms": round(forward, 3), "onnxruntime_nodes": nodes,
                          "onnxruntime_sum_ms": round(ort_sum, 3), "onnxruntime_forward_ms": round(ort_forward, 3)}),
              flush=True)


if __name__ == "__main__":
    main()
