#!/usr/bin/env bash
# Short device call: the coopmat2 kernel tests (fp16 and bf16), the long runs again (the
# full call's long rows ran with every pass 2.5x slower, selection included), and issue
# 4's table once more for its spread.
set -uo pipefail
. bench/gpu_env.sh
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 DMAVK_REQUIRE_COOPMAT2_BF16=1 timeout 200 ../../.gpu/kern.test -test.run 'CoopMat2|Storage' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"; grep -E -- "--- FAIL" "$OUT/kern.txt" | head
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
{
	timeout 150 $D bench --sweep long --reps 3 --profile
	timeout 90 $D bench --sweep peers --reps 10 --profile
} 2>&1 | grep -vE "^bench: \[" | sed 's/  */ /g' | tee "$OUT/bench.txt"
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
