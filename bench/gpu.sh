#!/usr/bin/env bash
# One device call that checks and measures everything on the lent NVIDIA GPU (see
# ../shared/gpu/README.md): selftest of every path, the kernel tests, the device's
# peak, dmavk bench beside PyTorch SDPA on the same shapes, and the long-context runs.
# Binaries are built beforehand into .gpu/ (go build -o .gpu/dmavk ./cmd/dmavk;
# go test -c -o .gpu/kern.test ./internal/kern). Results go to $OUT (8 files at most).
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export DMAVK_CACHE_DIR=/tmp/dmavk-cache
D=.gpu/dmavk
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader

$D selftest --long >"$OUT/selftest.txt" 2>&1; grep -E "FAIL|ERROR" "$OUT/selftest.txt" | head -5
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 ../../.gpu/kern.test -test.run 'Attention|Select|Weights' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"

{
	$D peak
	$D bench --peak --lengths 4K,8K,16K,32K --h 8 --window 2048 --reps 10
	$D bench --lengths 32K --h 4 --window 2048 --reps 10
	$D bench --lengths 4K,16K --h 8 --mode none --reps 5
	DMAVK_DISABLE_COOPMAT=1 $D bench --lengths 16K --h 8 --window 2048 --reps 3
} >"$OUT/bench.txt" 2>"$OUT/bench.err"
$D bench --lengths 4K,8K,16K,32K --h 8 --window 2048 --reps 10 --json >"$OUT/dmavk_h8.json" 2>>"$OUT/bench.err"
$D bench --lengths 32K --h 4 --window 2048 --reps 10 --json >"$OUT/dmavk_h4.json" 2>>"$OUT/bench.err"
python3 bench/peers/sdpa.py --lengths 4096,8192,16384,32768 --h 8 --window 2048 --json "$OUT/sdpa_h8.json" >>"$OUT/bench.txt" 2>&1
python3 bench/peers/sdpa.py --lengths 32768 --h 4 --window 2048 --json "$OUT/sdpa_h4.json" >>"$OUT/bench.txt" 2>&1
{
	$D bench --lengths 128K --h 8 --window 2048 --reps 3
	DMAVK_DISABLE_COOPMAT=1 $D bench --lengths 32K --h 4 --window 2048 --reps 3
	$D bench --lengths 1024K --h 8 --window 2048 --reps 2
} >"$OUT/long.txt" 2>&1
cat "$OUT/bench.txt" "$OUT/long.txt"
python3 bench/peers/join.py "$OUT/dmavk_h8.json" "$OUT/sdpa_h8.json" "$OUT/dmavk_h4.json" "$OUT/sdpa_h4.json"
grep -E "FAIL|ERROR|error" "$OUT/selftest.txt" "$OUT/kern.txt" | head -20
