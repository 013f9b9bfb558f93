#!/usr/bin/env bash
# Device call for issue 5: a decode step's time alone (AttendInto, the GPU idle before
# each step) and under sustained load (200 steps recorded back to back in one
# submission), issue 5's shape at Lk = 4K .. 1M, with the SM clock sampled throughout.
# Binaries in .gpu/ (go test -c -o .gpu/dma.test ./dma).
set -uo pipefail
. bench/gpu_env.sh
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv,noheader -lms 50 >"$OUT/clocks.txt" 2>&1 &
SMI=$!
(cd dma && DMAVK_BENCH_LK=${LKS:-4096,65536,262144,1048576} timeout 400 ../.gpu/dma.test -test.run XXX -test.bench KVCacheStep -test.benchtime ${N:-3}x 2>&1 | tee "$OUT/sustained.txt" | grep -E "^Benchmark")
kill $SMI
awk -F, '{print $2}' "$OUT/clocks.txt" | sort | uniq -c | sort -rn | head -5
