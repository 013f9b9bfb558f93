#!/usr/bin/env bash
# Device call: the coopmat2 kernel tests (the split of GK/GV over buffers included) and
# the long runs, where L = 1M now splits GK/GV below the 4 GiB allocation limit.
set -uo pipefail
. bench/gpu_env.sh
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 DMAVK_REQUIRE_COOPMAT2_BF16=1 timeout 200 ../../.gpu/kern.test -test.run 'CoopMat2|Pack|VCheck' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"; grep -E -- "--- FAIL" "$OUT/kern.txt" | head
timeout 150 $D bench --sweep long --reps 3 --profile 2>&1 | grep -vE "^bench: \[" | sed 's/  */ /g' | tee "$OUT/bench.txt"
