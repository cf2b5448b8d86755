"""A/B of two revisions of tvmconv.compile on whole networks: run it once per revision (PYTHONPATH at a
checkout of each, a user cache of its own), alternating; each network compiled, then its forward and
eager's timed in 7 interleaved rounds (median, ms). One JSON line per network.

    TVMCONV_CACHE_DIR=$OLD_CACHE PYTHONPATH=<checkout of OLD> python benchmarks/compile_ab.py OLD mobilenet_v2 ...
    TVMCONV_CACHE_DIR=$NEW_CACHE python benchmarks/compile_ab.py NEW mobilenet_v2 ...
"""
import torch, tvmconv, sys, time, json
from tvmconv import models
torch.set_num_threads(2)
label = sys.argv[1]
for name in sys.argv[2:]:
    m = getattr(models, name)().eval(); x = torch.randn(1,3,224,224)
    fast = tvmconv.compile(m, (x,))
    with torch.no_grad():
        for _ in range(5): fast(x); m(x)
        tc, te = [], []
        for _ in range(7):
            t=time.perf_counter()
            for _ in range(5): fast(x)
            tc.append((time.perf_counter()-t)/5)
            t=time.perf_counter()
            for _ in range(2): m(x)
            te.append((time.perf_counter()-t)/2)
    tc.sort(); te.sort()
    print(json.dumps({"label": label, "model": name, "compile_ms": round(tc[3]*1e3, 2), "eager_ms": round(te[3]*1e3, 2),
                      "speedup": round(te[3]/tc[3], 3), "compile_best_ms": round(tc[0]*1e3, 2)}), flush=True)
