#!/bin/bash
# Wait for tuning to end; bench against cuDNN; bring back logs, records and results.
cd "$(dirname "$0")/../.." && source benchmarks/gpu/env.sh
for _ in $(seq 60); do [ -f /tmp/tune-cuda.rc ] && break; sleep 5; done  # at most 5 minutes
echo "tune exit $(cat /tmp/tune-cuda.rc)"; tail -c 1500 /tmp/tune-cuda.log
cd "$TVMCONV_CACHE_DIR" && wc -l tuning_logs/cuda-sm90/*/database_tuning_record.json; ls schedules/cuda-sm90 | wc -l
tar -cJf "$OUTDIR/cuda-sm90-cache.tar.xz" tuning_logs/cuda-sm90 schedules/cuda-sm90; cd - > /dev/null
cp /tmp/tune-cuda.jsonl /tmp/tune-cuda.log "$OUTDIR/" 2>/dev/null
timeout ${BENCH_SECONDS:-330} python3 -m tvmconv bench --target cuda-sm90 --suite all --json "$OUTDIR/cuda-sm90-all.jsonl" --png "$OUTDIR/cuda-sm90-all.png" > "$OUTDIR/bench-all.txt" 2>&1
tail -25 "$OUTDIR/bench-all.txt"
timeout 90 python3 -m tvmconv bench --target cuda-sm90 --json "$OUTDIR/cuda-sm90-variants.jsonl" --png "$OUTDIR/cuda-sm90-variants.png" > "$OUTDIR/bench-variants.txt" 2>&1
tail -8 "$OUTDIR/bench-variants.txt"
cd "$OUTDIR" && tar -cJf results.tar.xz --exclude=results.tar.xz --exclude=cuda-sm90-cache.tar.xz --exclude='*.png' . && find . -maxdepth 1 -type f ! -name results.tar.xz ! -name cuda-sm90-cache.tar.xz ! -name '*.png' -delete; ls -la
