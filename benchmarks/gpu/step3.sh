#!/bin/bash
# The shape-table tests on the GPU (inputs on the GPU, references on the CPU) while tuning runs.
cd "$(dirname "$0")/../.." && source benchmarks/gpu/env.sh
TVMCONV_TEST_DEVICE=cuda timeout ${TEST_SECONDS:-400} python3 -m pytest -q -p no:cacheprovider -n 4 tests/test_variants.py -k matches_reference 2>&1 | tee "$OUTDIR/pytest-variants-cuda.log" | tail -8
cp "$OUTDIR/pytest-cuda.log" "$OUTDIR/" 2>/dev/null
wc -l "$TVMCONV_CACHE_DIR"/tuning_logs/cuda-sm90/*/database_tuning_record.json 2>/dev/null
tail -c 400 /tmp/tune-cuda.log
