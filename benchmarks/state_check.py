"""What the compiled module's per-call check of its source model costs: the walk of the module tree it made
before (every parameter and buffer found again, then identity, data pointer and version read) against
``CompiledModel._state`` (a kept list, found again only after a parameter, buffer or submodule was set
somewhere). Best and median of 15 rounds of 200 calls, us, per network. One JSON line per network.

    python benchmarks/state_check.py mobilenet_v2 shufflenet_v2_x1_0 efficientnet_b0 resnet18
"""
from __future__ import annotations

import json
import statistics
import sys
import timeit

import torch

from tvmconv.graph.compiler import CompiledModel
from tvmconv.models import MODELS


def main() -> None:
    for name in sys.argv[1:]:
        model = MODELS[name](backend="torch").eval()
        fast = CompiledModel.__new__(CompiledModel)  # (only its check: nothing compiled)
        torch.nn.Module.__init__(fast)
        fast._source, fast._tensors, fast._seen = [model], None, None
        walk = lambda: tuple((id(t), t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))  # noqa: E731
        assert walk() == fast._state()
        times: dict = {"walk": [], "kept list": []}
        for _ in range(15):
            for label, fn in (("walk", walk), ("kept list", fast._state)):
                times[label].append(min(timeit.repeat(fn, number=200, repeat=1)) / 200 * 1e6)
        print(json.dumps({"model": name, "tensors": len(walk()),
                          **{f"{k}_best_us": round(min(v), 1) for k, v in times.items()},
                          **{f"{k}_median_us": round(statistics.median(v), 1) for k, v in times.items()}}), flush=True)


if __name__ == "__main__":
    main()
