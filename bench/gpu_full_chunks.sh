#!/usr/bin/env bash
# Device call: coopmat2 attention with the plain score on chunks every row keeps whole;
# its tests, then tiles with 128-key chunks, at 16K (mode none, then row).
set -uo pipefail
. bench/gpu_env.sh
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 DMAVK_REQUIRE_COOPMAT2_BF16=1 timeout 300 ../../.gpu/kern.test -test.run 'CoopMat2|Attention' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"; grep -E -- "--- FAIL" "$OUT/kern.txt" | head
for tile in "" 64x128x256 64x128x128 32x128x128 64x64x128; do
	echo "== tile=${tile:-default}"
	DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3 2>&1 | grep -E "custom\||rror" | head -1
	DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E "custom\||rror" | head -1
done 2>&1 | sed 's/  */ /g'
