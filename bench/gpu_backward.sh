#!/usr/bin/env bash
# Device call for issue 6: the full selftest (forward, decode and backward rows) and the
# backward kernel tests on the GPU, then Forward + Backward through `dmavk bench
# --backward` beside SDPA's forward + backward on the same shapes (H = 8, D = 128,
# w = 2048, fp16, L = 4K and 16K), joined into one table. Binaries in .gpu/ (see gpu.sh).
set -uo pipefail
. bench/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 240 $D selftest >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
grep -E "FAIL|ERROR" "$OUT/selftest.txt" | head -5
(cd internal/kern && timeout 200 ../../.gpu/kern.test -test.run 'Backward' >"$OUT/kern_bwd.txt" 2>&1)
echo "kern backward tests: $(tail -1 "$OUT/kern_bwd.txt")"; grep -E -- "--- FAIL" "$OUT/kern_bwd.txt" | head
ARGS="--lengths 4K,16K --h 8 --d 128 --window 2048 --warmup 1s"
$D bench $ARGS --configs >/tmp/bwd.json
timeout 200 $D bench $ARGS --backward --reps 5 --json >"$OUT/bwd_dmavk.json" 2>"$OUT/bench.txt"
timeout 150 python3 bench/peers/sdpa.py --configs /tmp/bwd.json --backward --reps 10 --json "$OUT/bwd_sdpa.json" >>"$OUT/bench.txt" 2>&1
python3 bench/peers/join.py "$OUT/bwd_dmavk.json" "$OUT/bwd_sdpa.json" | tee "$OUT/joined.md"
