#!/usr/bin/env bash
# One device call that checks and measures everything on the lent NVIDIA GPU (see
# ../shared/gpu/README.md): selftest of every path, the kernel tests, the device's peak,
# dmavk bench beside PyTorch SDPA on the same shapes (issue 4's table and the paper's
# Table 2), the per-kernel profile and the long-context runs. Binaries are built
# beforehand into .gpu/ (go build -o .gpu/dmavk ./cmd/dmavk; go test -c -o .gpu/kern.test
# ./internal/kern; go test -c -o .gpu/matmul.test ./internal/matmul). Results go to $OUT (8 files at most); the joined tables are printed.
set -uo pipefail
. bench/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

timeout 240 $D selftest --long >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"
grep -E "FAIL|ERROR" "$OUT/selftest.txt" | head -5
(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 DMAVK_REQUIRE_COOPMAT2=1 DMAVK_REQUIRE_COOPMAT2_BF16=1 timeout 300 ../../.gpu/kern.test -test.run 'Attention|Select|Weights|Pack|VCheck' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"
(cd internal/matmul && DMAVK_REQUIRE_COOPMAT=1 timeout 120 ../../.gpu/matmul.test -test.run . >/tmp/matmul.txt 2>&1)
echo "matmul tests: $(tail -1 /tmp/matmul.txt)"
grep -E -- "--- FAIL" /tmp/matmul.txt "$OUT/kern.txt" | head -10

$D bench --sweep peers --configs >/tmp/peers.json
$D bench --sweep table2 --configs >/tmp/table2.json
{
	timeout 60 $D peak
	timeout 120 $D bench --sweep peers --reps 10 --profile
	timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --profile
	timeout 60 $D bench --lengths 16K --h 8 --reps 5 --dtype bfloat16
	DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --reps 5
	DMAVK_DISABLE_COOPMAT=1 timeout 60 $D bench --lengths 16K --h 8 --reps 3
	timeout 150 $D bench --sweep long --reps 2 --profile
} >"$OUT/bench.txt" 2>/tmp/bench.err
timeout 120 $D bench --sweep peers --reps 10 --json >"$OUT/peers_dmavk.json" 2>>/tmp/bench.err
timeout 150 $D bench --sweep table2 --reps 5 --json >"$OUT/t2_dmavk.json" 2>>/tmp/bench.err
timeout 120 python3 bench/peers/sdpa.py --configs /tmp/peers.json --json "$OUT/peers_sdpa.json" >>"$OUT/bench.txt" 2>&1
timeout 150 python3 bench/peers/sdpa.py --configs /tmp/table2.json --reps 10 --json "$OUT/t2_sdpa.json" >>"$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
python3 bench/peers/join.py "$OUT/peers_dmavk.json" "$OUT/peers_sdpa.json" | tee "$OUT/joined.md"
python3 bench/peers/join.py "$OUT/t2_dmavk.json" "$OUT/t2_sdpa.json" | tee -a "$OUT/joined.md"
