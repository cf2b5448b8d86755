#!/bin/bash
# The GPU plan, in one device call after step1.sh (carry the compiler library's second half,
# .devtvm/comp.xz.01): join TVM's compiler library, then compile every CUDA template candidate of
# every suite workload on all cores, time them interleaved with cuDNN (TF32 off) and keep the
# fastest per workload (python -m tvmconv.tuning.gpu_plan). Records, results, the summary and the
# log come back in $OUT; the compiled candidates stay in /tmp.
#   BUDGET (seconds, default 480): the plan's own limit, inside the device call's 600.
cd "$(dirname "$0")/../.." && source benchmarks/gpu/env.sh
set -e
cat /tmp/comp.xz.00 .devtvm/comp.xz.01 | xz -d -T0 > "$SITE/tvm/lib/libtvm_compiler.so"
echo "$(cat .devtvm/comp.sha)  $SITE/tvm/lib/libtvm_compiler.so" | sha256sum -c
set +e
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
timeout $(( ${BUDGET:-480} + 60 )) python3 -m tvmconv.tuning.gpu_plan --suite "${SUITE:-all}" --out "$OUTDIR/plan" \
  --work /tmp/gpu-plan --budget "${BUDGET:-480}" 2> "$OUTDIR/progress.txt"
echo "plan exit $?"; tail -5 "$OUTDIR/plan/plan.log"
ls "$OUTDIR/plan/schedules"/*/ | wc -l
