#!/bin/bash
# Join the compiler library; smoke; the GPU tests; start tuning in the background.
cd "$(dirname "$0")/../.." && source benchmarks/gpu/env.sh
set -e
cat /tmp/comp.xz.00 .devtvm/comp.xz.01 | xz -d -T0 > "$SITE/tvm/lib/libtvm_compiler.so"
echo "$(cat .devtvm/comp.sha)  $SITE/tvm/lib/libtvm_compiler.so" | sha256sum -c
python3 -c "
import tvm, torch, time, tvmconv
from tvmconv import functional as TF
print('tvm', tvm.__version__, 'cuda exists', tvm.cuda(0).exist)
x = torch.randn(1, 32, 56, 56, device='cuda'); w = torch.randn(32, 1, 3, 3, device='cuda')
t0 = time.time(); y = TF.conv2d(x, w, padding=1, groups=32); torch.cuda.synchronize()
print('first call', round(time.time() - t0, 2), 's; max err', (y - torch.nn.functional.conv2d(x, w, padding=1, groups=32)).abs().max().item())
" 2>&1 | tail -5
set +e
python3 -m pytest -q -x -p no:cacheprovider tests/test_cuda.py -k "not shipped" 2>&1 | tee "$OUTDIR/pytest-cuda.log" | tail -15
TUNE_SECONDS=${TUNE_SECONDS:-780}
setsid bash -c "timeout -s TERM $TUNE_SECONDS python3 -m tvmconv tune --target cuda-sm90 --suite all --trials ${TUNE_TRIALS:-64} --per-iter ${PER_ITER:-16} --cache-dir "$TVMCONV_CACHE_DIR" --json /tmp/tune-cuda.jsonl > /tmp/tune-cuda.log 2>&1; echo \$? > /tmp/tune-cuda.rc" < /dev/null > /dev/null 2>&1 &
sleep 20; tail -c 600 /tmp/tune-cuda.log
