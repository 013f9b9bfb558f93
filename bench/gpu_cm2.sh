#!/usr/bin/env bash
# Device call for the coopmat2 attention kernel: its kernel tests on the NVIDIA GPU
# (workgroup scope), the selftest of every path, issue 4's table beside SDPA with the
# per-kernel profile, the KHR kernel on the same shape for comparison, dense mode and
# the long runs. Binaries are built beforehand into .gpu/ (see gpu.sh).
set -uo pipefail
. bench/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
$D devices >"$OUT/devices.txt" 2>&1
grep -E "flex|coopmat2|matrix 2" "$OUT/devices.txt"
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 timeout 240 ../../.gpu/kern.test -test.run "${KERN_RUN:-CoopMat2}" -test.v >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"
grep -E -- "--- FAIL|panic|D=128: \{" "$OUT/kern.txt" | head -20
timeout 200 $D selftest ${SELFTEST_ARGS:-} >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
grep -E "FAIL|ERROR|error" "$OUT/selftest.txt" | head -8
$D bench --sweep peers --configs >/tmp/peers.json
{
	timeout 120 $D bench --sweep peers --reps 10 --profile
	DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --reps 5 --profile
	timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --profile
	timeout 120 $D bench --sweep long --reps 2 --profile
} >"$OUT/bench.txt" 2>&1
timeout 120 $D bench --sweep peers --reps 10 --json >"$OUT/peers_dmavk.json" 2>>"$OUT/bench.txt"
timeout 120 python3 bench/peers/sdpa.py --configs /tmp/peers.json --json "$OUT/peers_sdpa.json" >>"$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
python3 bench/peers/join.py "$OUT/peers_dmavk.json" "$OUT/peers_sdpa.json" | tee "$OUT/joined.md"
