#!/usr/bin/env bash
# Device call: the coopmat2 matmul (tests and `dmavk peak` with a few tiles), the
# coopmat2 attention's tests, and its tiles and builds at 16K (rows: mode row, then mode
# none). Binaries in .gpu/ (see gpu.sh); .gpu/cm2_t.spv: attention_cm2 with -DTENSOR_LOADS.
set -uo pipefail
. bench/gpu_env.sh
(cd internal/matmul && DMAVK_REQUIRE_COOPMAT=1 timeout 120 ../../.gpu/matmul.test -test.run . >"$OUT/matmul.txt" 2>&1)
echo "matmul tests: $(tail -1 "$OUT/matmul.txt")"; grep -E -- "--- FAIL|rror" "$OUT/matmul.txt" | head
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 timeout 200 ../../.gpu/kern.test -test.run 'CoopMat2' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"; grep -E -- "--- FAIL" "$OUT/kern.txt" | head
{
	timeout 60 $D peak
	for t in 128x128x64x256 256x128x32x256 128x256x32x256 128x128x32x128; do echo "== DMAVK_MATMUL_CM2=$t"; DMAVK_MATMUL_CM2=$t timeout 60 $D peak 2>&1 | grep -E "matrix|rror"; done
	for v in committed t; do
		spv=""; [[ $v != committed ]] && spv=$PWD/.gpu/cm2_$v.spv
		for tile in 64x64x256 128x64x256 64x64x128 64x32x256; do
			echo "== $v $tile"
			DMAVK_CM2_SPV=$spv DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E "custom|rror" | head -2
			DMAVK_CM2_SPV=$spv DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3 2>&1 | grep -E "custom|rror" | head -2
		done
	done
} 2>&1 | sed 's/  */ /g' | tee "$OUT/tune.txt"
