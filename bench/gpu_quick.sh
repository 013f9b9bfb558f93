#!/usr/bin/env bash
# A shorter device call than gpu.sh: selftest, selection tests, issue 4's table beside
# SDPA with the per-kernel profile, decode rows of Table 2, and the long runs.
set -uo pipefail
. bench/gpu_env.sh
$D selftest --long >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 ../../.gpu/kern.test -test.run 'Select|Attention' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"
$D bench --sweep peers --configs >/tmp/peers.json
{
	$D bench --sweep peers --reps 10 --profile
	$D bench --lengths 4K,16K,64K --decode --h 2 --hkv 1 --reps 10 --profile
	$D bench --sweep long --reps 2 --profile
} >"$OUT/bench.txt" 2>/tmp/bench.err
$D bench --sweep peers --reps 10 --json >"$OUT/peers_dmavk.json" 2>>/tmp/bench.err
python3 bench/peers/sdpa.py --configs /tmp/peers.json --json "$OUT/peers_sdpa.json" >>"$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
python3 bench/peers/join.py "$OUT/peers_dmavk.json" "$OUT/peers_sdpa.json" | tee "$OUT/joined.md"
