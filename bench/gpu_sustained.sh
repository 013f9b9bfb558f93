#!/usr/bin/env bash
# Device call for issue 5: a decode step's time alone (AppendAttendInto, the GPU idle
# between steps) and under sustained load (200 steps recorded back to back in one
# submission, submitted again and again), issue 5's shape at Lk = 4K .. 1M, random and
# equal weights, with the SM clock sampled throughout; SDPA on the same shapes after.
# Binaries in .gpu/: dma.test (go test -c -o .gpu/dma.test ./dma) and, to compare a
# second build in the same call, any .gpu/dma-*.test.
set -uo pipefail
. bench/gpu_env.sh
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv,noheader -lms 20 >"$OUT/clocks.txt" 2>&1 &
SMI=$!
for bin in .gpu/dma*.test; do
	for eq in 0 1; do
		echo "== $bin equal=$eq $(date +%T.%N)" | tee -a "$OUT/sustained.txt"
		(cd dma && DMAVK_BENCH_EQUAL=$eq DMAVK_BENCH_LK=${LKS:-4096,65536,262144,1048576} timeout 250 ../$bin -test.run XXX -test.bench KVCacheStep -test.benchtime ${N:-5}x 2>&1 | grep -E "^Benchmark" | tee -a "$OUT/sustained.txt")
	done
done
echo "== sdpa $(date +%T.%N)" | tee -a "$OUT/sustained.txt"
.gpu/dmavk bench --lengths 4K,64K,256K,1M --decode --h 32 --hkv 8 --d 128 --window 2048 --configs >/tmp/decode.json
timeout 150 python3 bench/peers/sdpa.py --configs /tmp/decode.json --reps 50 | tee -a "$OUT/sustained.txt"
kill $SMI
