#!/usr/bin/env bash
# Device call for issue 5: the decode kernels' tests and selftest rows on the GPU, then
# decode steps through dma.KVCache (--cache) beside SDPA dense decode on the same shapes
# (H = 32, Hkv = 8, D = 128, w = 2048, fp16, Lk = 4K .. 1M), joined into one table.
# Binaries in .gpu/ (see gpu.sh).
set -uo pipefail
. bench/gpu_env.sh
if [[ ${SKIP_TESTS:-0} != 1 ]]; then
(cd internal/kern && timeout 200 ../../.gpu/kern.test -test.run 'TopW|Decode|Append' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"; grep -E -- "--- FAIL" "$OUT/kern.txt" | head
(cd dma && timeout 200 ../.gpu/dma.test -test.run 'KVCache' >"$OUT/dma.txt" 2>&1)
echo "dma KV-cache tests: $(tail -1 "$OUT/dma.txt")"; grep -E -- "--- FAIL" "$OUT/dma.txt" | head
timeout 300 $D selftest >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
fi
# The SM clock while the steps run (the card idles at a low clock between short steps).
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,pstate,utilization.gpu --format=csv,noheader -lms 20 >"$OUT/clocks.txt" 2>&1 &
SMI=$!
ARGS="--lengths 4K,16K,64K,256K,1M --decode --h 32 --hkv 8 --d 128 --window 2048 --warmup 1s"
$D bench $ARGS --configs >/tmp/decode.json
timeout 200 $D bench $ARGS --cache --reps 20 --profile 2>&1 | grep -vE "^bench: \[" | tee "$OUT/bench.txt"
timeout 200 $D bench $ARGS --cache --reps 20 --json >"$OUT/decode_dmavk.json" 2>>"$OUT/bench.txt"
timeout 150 python3 bench/peers/sdpa.py --configs /tmp/decode.json --reps 50 --json "$OUT/decode_sdpa.json" >>"$OUT/bench.txt" 2>&1
# Every new key joining the best w (A = 0): the carried thresholds' worst case.
timeout 100 $D bench --lengths 64K,256K --decode --h 32 --hkv 8 --d 128 --window 2048 --cache --equal-weights --reps 20 --profile 2>&1 | grep -vE "^bench: \[" | tee -a "$OUT/bench.txt"
# Split workgroups (DMAVK_DECODE_GROUPS) for the split pass.
if [[ ${SWEEP:-0} == 1 ]]; then
for g in 256 1024 2048; do
echo "== DMAVK_DECODE_GROUPS=$g" | tee -a "$OUT/bench.txt"
DMAVK_DECODE_GROUPS=$g timeout 100 $D bench --lengths 64K,256K --decode --h 32 --hkv 8 --d 128 --window 2048 --cache --reps 20 --profile 2>&1 | grep -E "^  custom" | tee -a "$OUT/bench.txt"
done
fi
# Forward's decode route (no cache: ord, a full radix select, the decode kernels).
timeout 100 $D bench --lengths 64K,256K --decode --h 32 --hkv 8 --d 128 --window 2048 --reps 20 --profile 2>&1 | grep -vE "^bench: \[" | tee -a "$OUT/bench.txt"
kill $SMI
python3 bench/peers/join.py "$OUT/decode_dmavk.json" "$OUT/decode_sdpa.json" | tee "$OUT/joined.md"
