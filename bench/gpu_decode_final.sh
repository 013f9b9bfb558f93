#!/usr/bin/env bash
# Device call for issue 5 (session 5, last): the decode kernel tests, the dma KV-cache
# tests, the whole selftest, then bench/gpu_sustained.sh (random and equal weights; SDPA).
set -uo pipefail
. bench/gpu_env.sh
(cd internal/kern && timeout 200 ../../.gpu/kern.test -test.run 'TopW|Decode|Append' >"$OUT/kern.txt" 2>&1)
echo "kern tests: $(tail -1 "$OUT/kern.txt")"; grep -E -- "--- FAIL" "$OUT/kern.txt" | head
(cd dma && timeout 200 ../.gpu/dma.test -test.run 'KVCache' >"$OUT/dma.txt" 2>&1)
echo "dma KV-cache tests: $(tail -1 "$OUT/dma.txt")"; grep -E -- "--- FAIL" "$OUT/dma.txt" | head
timeout 200 $D selftest >"$OUT/selftest.txt" 2>&1
echo "selftest: $(tail -1 "$OUT/selftest.txt")"; grep -E "FAIL|shared .*decode|decode.*shared" "$OUT/selftest.txt" | head
bash bench/gpu_sustained.sh
