#!/usr/bin/env bash
# Device call: the coopmat2 kernel's bf16 variants (tests, selftest rows) and their speed
# beside fp16 at 16K. Binaries in .gpu/ (see gpu.sh).
set -uo pipefail
. bench/gpu_env.sh
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 DMAVK_REQUIRE_COOPMAT2_BF16=1 timeout 300 ../../.gpu/kern.test -test.run 'CoopMat2|Attention' -test.v >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"
grep -E -- "--- FAIL" "$OUT/kern.txt" | head -20
grep -B1 -A8 -- "--- FAIL" "$OUT/kern.txt" | grep -v "=== RUN" | head -40
grep -A2 "BF16/" "$OUT/kern.txt" | grep "rel err" | head -10
timeout 200 $D selftest >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
grep -E "bfloat16|FAIL|ERROR" "$OUT/selftest.txt" | grep -v portable | head -20
for dt in float16 bfloat16; do
	timeout 60 $D bench --lengths 16K --h 8 --reps 5 --dtype $dt 2>&1 | grep -E "custom|rror" | head -2
	timeout 60 $D bench --lengths 16K --h 8 --reps 3 --dtype $dt --mode none 2>&1 | grep -E "custom|rror" | head -2
done | sed 's/  */ /g'
