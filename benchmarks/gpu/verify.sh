#!/bin/bash
# A short lease's check of the default CUDA schedules (after step1.sh): the shape-table tests with
# inputs on the GPU, and every suite workload against cuDNN (correctness only), side by side.
cd "$(dirname "$0")/../.." && source benchmarks/gpu/env.sh
cat /tmp/comp.xz.00 .devtvm/comp.xz.01 | xz -d -T0 > "$SITE/tvm/lib/libtvm_compiler.so"
TVMCONV_TEST_DEVICE=cuda timeout ${SECONDS_MAX:-140} python3 -m pytest -q -p no:cacheprovider -n 10 tests/test_variants.py \
  -k matches_reference > "$OUTDIR/variants-cuda.log" 2>&1 &
timeout ${SECONDS_MAX:-140} python3 - > "$OUTDIR/suite-check.log" 2>&1 <<'PY'
import logging, torch
logging.getLogger("tvmconv").setLevel(logging.ERROR)
from tvmconv.tools import bench as B
from tvmconv import functional as TF
from tvmconv.backends.target import resolve
from tvmconv.suites.workloads import workloads
tgt, bad, n = resolve("cuda-sm90"), [], 0
torch.backends.cudnn.allow_tf32 = False
for spec, _ in workloads("all"):
    c = B.on_device(B.case_for(spec), tgt)
    with torch.no_grad():
        got, want = c.op(*c.args, **c.kwargs), c.reference(*c.args, **c.kwargs)
    err = ((got - want).abs().max() / want.abs().max().clamp(min=1)).item()
    n += 1
    if err > 1e-3:
        bad.append((spec.name, err))
    print(spec.name, f"{err:.2e}", flush=True)
print(f"checked {n}, wrong {len(bad)}: {bad}")
PY
wait
tail -4 "$OUTDIR/variants-cuda.log"; tail -2 "$OUTDIR/suite-check.log"
