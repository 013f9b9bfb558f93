#!/usr/bin/env bash
# Device call: the coopmat2 kernel's tests and selftest on the NVIDIA GPU, then its
# workgroup-scope tile swept (DMAVK_CM2_TILE) at L = 16K in modes row and none, then
# issue 4's table beside SDPA. Binaries in .gpu/ (see gpu.sh).
set -uo pipefail
. bench/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 timeout 240 ../../.gpu/kern.test -test.run "${KERN_RUN:-CoopMat2|Pack|VCheck|Tau}" -test.v >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"
grep -E -- "--- FAIL|panic|D=128: \{" "$OUT/kern.txt" | head -20
grep -B2 -A6 -- "--- FAIL" "$OUT/kern.txt" | grep -v "=== RUN" | head -30
timeout 200 $D selftest ${SELFTEST_ARGS:-} >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
grep -E "FAIL|ERROR|error" "$OUT/selftest.txt" | head -8
{
	for tile in ${TILES:-64x64x256 64x64x128 64x32x128 64x32x256 32x64x128 32x32x128 64x16x128}; do
		echo "== DMAVK_CM2_TILE=$tile"
		DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --reps 5 --profile 2>&1 | grep -E "custom|attention|error" | head -3
		DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3 2>&1 | grep -E "custom|error" | head -2
	done
} >"$OUT/tune.txt" 2>&1
cat "$OUT/tune.txt"
$D bench --sweep peers --configs >/tmp/peers.json
{
	timeout 120 $D bench --sweep peers --reps 10 --profile
	timeout 120 $D bench --sweep long --reps 2 --profile
} >"$OUT/bench.txt" 2>&1
timeout 120 $D bench --sweep peers --reps 10 --json >"$OUT/peers_dmavk.json" 2>>"$OUT/bench.txt"
timeout 120 python3 bench/peers/sdpa.py --configs /tmp/peers.json --json "$OUT/peers_sdpa.json" >>"$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
python3 bench/peers/join.py "$OUT/peers_dmavk.json" "$OUT/peers_sdpa.json" | tee "$OUT/joined.md"
