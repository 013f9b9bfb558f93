#!/usr/bin/env bash
# dmavk on a lent NVIDIA GPU machine (no Go, no Vulkan loader there), beside the peers
# a user would pick instead, in one call.
#
#   bench/gpu.sh prepare           here: build the binaries into .gpu/ (gzipped), the
#                                  Vulkan loader debs into .gl/, the peers into .peers/,
#                                  a current validation layer into .gpu/vvl.tgz
#   bench/gpu.sh PART...           there, from the checkout's root, results under $OUT
#
# Parts (in the order given):
#   selftest   dmavk selftest --long, every path
#   tests      the kern, matmul, dma, nn and doge test binaries
#   validate   the kern, matmul and dma tests and selftest --long under Debian testing's
#              validation layer with synchronization validation (tools/vvl.sh); any
#              message fails
#   vquick     validate's checks, short: the kern tests of the tensor-core paths
#              (coopmat2, backward, non-finite) and selftest --long, under the layer
#   peak       dmavk peak beside ggml's Vulkan matrix product
#   prefill    dmavk bench: DMA beside dense attention at w = 2048 (4K-32K), mode none
#              and bf16 at 16K, the KHR and portable paths; SDPA on the same shapes
#   tiles      the coopmat2 attention's tiles, each with the driver's kernel statistics
#   builds     the coopmat2 attention builds of bench/cm2-builds.sh (.gpu/cm2), each at
#              its tiles, modes none and row, with the driver's statistics; ggml's FA
#   quick      the coopmat2 kernel tests and dmavk selftest (not --long)
#   long       128K and 1M keys, with SDPA where it fits
#   decode     KV-cache decode steps, one at a time and back to back; SDPA decode
#   backward   Forward + Backward (4K, 16K at H 8, 32K at H 4; fast, deterministic,
#              bf16; every pass) beside SDPA's and flash-dmattn's forward + backward
#   bwdtiles   the coopmat2 backward's tiles (BWD_TILES), forward + backward at 16K, H 8
#   hostprof   Go CPU profiles of dmavk bench (forward + backward at 16K, forward at
#              128K) into $OUT/*.pprof: where a call's host time goes
#   bwdcheck   the backward's kern tests (non-finite included), then forward + backward
#              at 4K and 16K (H 8) and 32K (H 4) with every pass
#   targets    the prefill targets in one call: ggml's Vulkan FA (coopmat2, KHR), dmavk
#              modes none/row/shared at 16K and row at 32K H 4 (coopmat2, KHR),
#              flash-dmattn's Triton kernel, SDPA and Flex
#   peers      ggml's Vulkan flash attention and flash-dmattn's Triton kernel, SDPA, Flex
#   khrtests   the KHR attention's tests only: its kern tests (fp16, bf16, non-finite),
#              the dma tests and selftest with coopmat2 off, and its debugging build
#              (every chunk on the scalar P V route) on the kern tests
#   khr        the KHR cooperative-matrix attention (coopmat2 off): each build of
#              bench/cm-builds.sh, then other tiles, 16K/H8 modes none and row, with the
#              driver's statistics; ggml's KHR flash attention on the same shape first
#   doge       a Doge-160M-shaped model (random fp16 weights made and saved by
#              transformers): dmavk generate --bench beside transformers' sdpa, prefill
#              and decode tokens/s at 2K and 32K context, a decode step's host and GPU
#              time, peak GPU memory; then the longest context's prefill in chunks of 4096
#              (DOGE_DTYPE, DOGE_CONTEXTS, DOGE_STEPS, DOGE_CHUNK change it)
#
# The call's carry: [".gl", ".gpu", ".peers"]. Every part writes $OUT/PART.txt; the
# SM clock is sampled into $OUT/clocks.txt throughout (the card idles at a low clock).
set -uo pipefail

prepare() {
	set -e
	local top
	top=$(git rev-parse --show-toplevel)
	cd "$top"
	for d in /.gl/ /.gpu/ /.peers/; do
		grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
	done
	[[ -n $(ls .gl/*.deb 2>/dev/null) ]] || ../shared/gpu/vulkan-debs.sh
	rm -rf .gpu && mkdir -p .gpu .peers
	go build -o .gpu/dmavk ./cmd/dmavk
	for p in internal/kern internal/matmul dma nn doge; do
		go test -c -o ".gpu/$(basename $p).test" "./$p"
	done
	gzip -f .gpu/*.test .gpu/dmavk
	tools/vvl.sh pack .gpu/vvl.tgz
	bench/cm2-builds.sh .gpu/cm2 >/dev/null
	bench/cm-builds.sh .gpu/cm >/dev/null
	cp ../shared/peers/llamacpp-vulkan/test-backend-ops.gz .peers/
	cp ../shared/peers/flash-dmattn/*.py .peers/
	du -shc .gl .gpu .peers | tail -1
}

if [[ ${1:-} == prepare ]]; then
	prepare
	exit
fi
(($#)) || { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
: "${OUT:?OUT must name the results folder}"

# --- the machine ---------------------------------------------------------------
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export DMAVK_CACHE_DIR=/tmp/dmavk-cache
mkdir -p /tmp/bin
for f in .gpu/*.gz; do gunzip -c "$f" >"/tmp/bin/$(basename "${f%.gz}")"; done
chmod +x /tmp/bin/*
D=/tmp/bin/dmavk
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu --format=csv,noheader -lms 100 >"$OUT/clocks.txt" 2>&1 &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

# Tests of one package, from its folder as go test runs them: test PKGDIR BIN [RUNNER...]
tests() {
	local dir=$1 bin=$2
	shift 2
	(cd "$ROOT/$dir" && DMAVK_REQUIRE_COOPMAT=1 timeout 300 "$@" "/tmp/bin/$bin" -test.timeout 290s 2>&1)
}
summary() { # file label
	echo "$2: $(grep -E '^(PASS|FAIL|ok|[0-9]+ passed)' "$1" | tail -1)"
	grep -E -- '--- FAIL|FAIL:|ERROR|validation' "$1" | head -20
}

part_selftest() {
	timeout 400 $D selftest --long >"$OUT/selftest.txt" 2>&1
	summary "$OUT/selftest.txt" selftest
}

part_tests() {
	local p f="$OUT/tests.txt"
	: >"$f"
	for p in internal/kern:kern.test internal/matmul:matmul.test dma:dma.test nn:nn.test doge:doge.test; do
		echo "=== ${p%%:*}" >>"$f"
		tests "${p%%:*}" "${p##*:}" >>"$f"
	done
	summary "$f" tests
}

part_validate() {
	local p f="$OUT/validate.txt" vvl=("$ROOT/tools/vvl.sh" run "$ROOT/.gpu/vvl.tgz" --)
	: >"$f"
	for p in internal/kern:kern.test internal/matmul:matmul.test dma:dma.test; do
		echo "=== ${p%%:*} (validation, synchronization validation)" >>"$f"
		tests "${p%%:*}" "${p##*:}" "${vvl[@]}" >>"$f"
		echo "exit ${PIPESTATUS[0]}" >>"$f"
	done
	echo "=== selftest --long (validation, synchronization validation)" >>"$f"
	timeout 500 "${vvl[@]}" $D selftest --long >>"$f" 2>&1
	summary "$f" validate
	# Every distinct message id, counted.
	grep -oE 'VUID-[A-Za-z0-9_-]+|SYNC-[A-Za-z0-9_-]+|UNASSIGNED-[A-Za-z0-9_.-]+' "$f" | sort | uniq -c | sort -rn | head -30
}

part_vquick() {
	local f="$OUT/vquick.txt" vvl=("$ROOT/tools/vvl.sh" run "$ROOT/.gpu/vvl.tgz" --)
	{
		echo "=== kern CoopMat2|Backward|NonFinite (validation, synchronization validation)"
		(cd "$ROOT/internal/kern" && DMAVK_REQUIRE_COOPMAT=1 timeout 200 "${vvl[@]}" /tmp/bin/kern.test -test.timeout 190s \
			-test.run 'CoopMat2|Backward|NonFinite' 2>&1 | grep -vE '^(=== RUN|    --- PASS|--- PASS)')
		echo "=== selftest --long (validation, synchronization validation)"
		timeout 240 "${vvl[@]}" $D selftest --long 2>&1
	} >"$f" 2>&1
	summary "$f" vquick
	grep -oE 'VUID-[A-Za-z0-9_-]+|SYNC-[A-Za-z0-9_-]+|UNASSIGNED-[A-Za-z0-9_.-]+' "$f" | sort | uniq -c | sort -rn | head -30
}

tbo() {
	[[ -x /tmp/tbo ]] || { gunzip -c .peers/test-backend-ops.gz >/tmp/tbo && chmod +x /tmp/tbo; }
	timeout 120 /tmp/tbo perf -b Vulkan0 "$@" 2>&1 | grep -E 'MUL_MAT|FLASH_ATTN|Backend|not supported' | grep -v '^$'
}

part_peak() {
	{
		timeout 90 $D peak
		for t in ${PEAK_TILES:-128x256x64x256 128x128x64x256 256x128x64x256 128x256x32x256}; do
			echo "== coopmat2 tile $t"
			DMAVK_MATMUL_CM2=$t timeout 60 $D peak | grep -iE 'coopmat2|tflop'
		done
		echo "== ggml Vulkan MUL_MAT (coopmat2)"
		tbo -o MUL_MAT -p 'type_a=f16,type_b=f32,m=4096,n=512,k=14336'
		tbo -o MUL_MAT -p 'type_a=f16,type_b=f32,m=4096,n=4096,k=4096'
	} >"$OUT/peak.txt" 2>&1
	cat "$OUT/peak.txt"
}

sdpa() { timeout 200 python3 bench/peers/sdpa.py "$@"; }

part_prefill() {
	{
		$D bench --sweep peers --configs >/tmp/peers.json
		timeout 200 $D bench --sweep peers --reps 10 --warmup 1s --profile
		timeout 150 $D bench --sweep peers --reps 10 --json >/tmp/peers_dmavk.json
		timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --profile
		timeout 60 $D bench --lengths 16K --h 8 --reps 5 --dtype bfloat16
		DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --reps 5
		DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3
		DMAVK_DISABLE_COOPMAT=1 timeout 60 $D bench --lengths 16K --h 8 --reps 3
		sdpa --configs /tmp/peers.json --json /tmp/peers_sdpa.json
		python3 bench/peers/join.py /tmp/peers_dmavk.json /tmp/peers_sdpa.json
	} >"$OUT/prefill.txt" 2>&1
	grep -vE '^bench: \[' "$OUT/prefill.txt" | tail -40
}

# The coopmat2 attention's tiles (BRxBCxTHREADS) side by side, with the driver's
# statistics of each build (registers, shared memory, spills).
part_tiles() {
	local t
	{
		for t in ${CM2_TILES:-64x128x256 64x64x128 64x64x256 64x128x128 128x64x256 32x128x128}; do
			echo "== DMAVK_CM2_TILE=$t"
			DMAVK_CM2_TILE=$t timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --warmup 300ms --profile 2>&1 |
				grep -E '^ *(custom|section)|attention_cm2|error'
			DMAVK_CM2_TILE=$t timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E '^ *custom|error'
		done
	} >"$OUT/tiles.txt" 2>&1
	cat "$OUT/tiles.txt"
}

part_builds() {
	local name tile
	{
		while read -r name tile; do
			echo "== build $name, tile $tile"
			DMAVK_CM2_SPV=.gpu/cm2/$name.spv DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --warmup 300ms --profile 2>&1 |
				grep -E '^ *custom|attention_cm2|error'
			DMAVK_CM2_SPV=.gpu/cm2/$name.spv DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E '^ *custom|error'
		done <.gpu/cm2/list
		echo "== the committed default"
		timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --warmup 300ms --profile 2>&1 | grep -E '^ *custom|attention_cm2|error'
		timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E '^ *custom|error'
		timeout 60 $D bench --lengths 32K --h 4 --reps 5 2>&1 | grep -E '^ *custom|error'
		echo "== ggml Vulkan FLASH_ATTN_EXT (coopmat2), L 16K, H 8, D 128"
		tbo -o FLASH_ATTN_EXT -p 'hsk=128,hsv=128,nh=8,nr23=\[1,1\],kv=16384,nb=16384,.*prec=f32'
	} >"$OUT/builds.txt" 2>&1
	cat "$OUT/builds.txt"
}

part_quick() {
	{
		echo "=== kern (coopmat2, non-finite)"
		(cd internal/kern && DMAVK_REQUIRE_COOPMAT=1 timeout 300 /tmp/bin/kern.test -test.run 'CoopMat2|NonFinite|Attention' 2>&1 | grep -vE '^(=== RUN|    --- PASS|--- PASS)')
		echo "=== selftest"
		timeout 200 $D selftest
	} >"$OUT/quick.txt" 2>&1
	summary "$OUT/quick.txt" quick
	grep -E '^(ok|PASS|FAIL|---)|passed|failed' "$OUT/quick.txt" | head -20
}

part_long() {
	{
		$D bench --sweep long --configs >/tmp/long.json
		timeout 250 $D bench --sweep long --reps 3 --warmup 1s --profile
		echo "== 128K in a steady state: 20 runs back to back after 3 s of them"
		timeout 120 $D bench --lengths 128K --h 8 --reps 20 --warmup 3s --profile
		sdpa --configs /tmp/long.json --reps 5
	} >"$OUT/long.txt" 2>&1
	grep -vE '^bench: \[' "$OUT/long.txt" | tail -30
}

part_decode() {
	local args="--lengths 4K,64K,256K,1M --decode --h 32 --hkv 8 --d 128 --window 2048 --warmup 1s"
	{
		$D bench $args --configs >/tmp/decode.json
		timeout 200 $D bench $args --cache --reps 20 --profile
		for eq in 0 1; do
			echo "== steps back to back, equal weights=$eq"
			(cd dma && DMAVK_BENCH_EQUAL=$eq DMAVK_BENCH_LK=4096,65536,262144,1048576 timeout 250 /tmp/bin/dma.test \
				-test.run '^$' -test.bench KVCacheStep -test.benchtime 5x 2>&1 | grep -E '^Benchmark')
		done
		sdpa --configs /tmp/decode.json --reps 50
	} >"$OUT/decode.txt" 2>&1
	grep -vE '^bench: \[' "$OUT/decode.txt" | tail -30
}

part_backward() {
	local a8="--lengths 4K,16K --h 8 --d 128 --window 2048 --warmup 1s" a4="--lengths 32K --h 4 --d 128 --window 2048 --warmup 1s"
	{
		echo "== dmavk forward + backward, fast mode, every pass (GPU timestamps)"
		timeout 120 $D bench $a8 --backward --reps 5 --profile 2>&1 | grep -vE '^bench: \['
		timeout 90 $D bench $a4 --backward --reps 5 --profile 2>&1 | grep -vE '^bench: \['
		echo "== dmavk, deterministic mode"
		timeout 120 $D bench $a8 --backward --reps 5 --deterministic 2>&1 | grep -vE '^bench: \['
		timeout 90 $D bench $a4 --backward --reps 5 --deterministic 2>&1 | grep -vE '^bench: \['
		echo "== dmavk, bf16"
		timeout 120 $D bench $a8 --backward --reps 5 --dtype bfloat16 2>&1 | grep -vE '^bench: \['
		echo "== SDPA dense causal forward + backward, the same shapes"
		$D bench $a8 --configs >/tmp/bwd8.json
		$D bench $a4 --configs >/tmp/bwd4.json
		sdpa --configs /tmp/bwd8.json --backward --reps 10
		sdpa --configs /tmp/bwd4.json --backward --reps 10
		echo "== flash-dmattn Triton forward + backward with its exact mask (and SDPA), H 8"
		(cd .peers && PYTHONUNBUFFERED=1 timeout 200 python3 peers.py backward)
	} >"$OUT/backward.txt" 2>&1
	tail -40 "$OUT/backward.txt"
}

part_hostprof() {
	{
		timeout 120 $D bench --lengths 16K --h 8 --backward --reps 20 --warmup 1s --cpuprofile "$OUT/backward16k.pprof" 2>&1 | grep -E '^ *custom|error'
		timeout 120 $D bench --lengths 128K --h 8 --reps 10 --warmup 1s --cpuprofile "$OUT/forward128k.pprof" 2>&1 | grep -E '^ *custom|error'
	} >"$OUT/hostprof.txt" 2>&1
	cat "$OUT/hostprof.txt"
}

part_bwdcheck() {
	{
		echo "=== kern backward tests"
		(cd "$ROOT/internal/kern" && DMAVK_REQUIRE_COOPMAT=1 timeout 300 /tmp/bin/kern.test -test.timeout 290s -test.run 'Backward|NonFinite' 2>&1 |
			grep -vE '^(=== RUN|    --- PASS|--- PASS)')
		echo "=== forward + backward, every pass"
		timeout 120 $D bench --lengths 4K,16K --h 8 --backward --reps 5 --warmup 1s --profile 2>&1 | grep -vE '^bench: \['
		timeout 90 $D bench --lengths 32K --h 4 --backward --reps 5 --warmup 1s --profile 2>&1 | grep -vE '^bench: \['
	} >"$OUT/bwdcheck.txt" 2>&1
	cat "$OUT/bwdcheck.txt"
}

# The coopmat2 backward's tiles (BWD_TILES: row-pass rows x keys x key-pass keys x rows x
# invocations, DMAVK_CM2_BWD_TILE) side by side, forward + backward at 16K, H 8.
part_bwdtiles() {
	local t
	{
		for t in ${BWD_TILES:-64x64x64x64x256 64x64x64x64x128 64x128x64x128x256 64x64x64x128x256 64x32x64x32x256 64x64x32x64x256 64x64x64x32x256 64x32x64x32x128 32x64x32x64x128}; do
			echo "== DMAVK_CM2_BWD_TILE=$t"
			DMAVK_CM2_BWD_TILE=$t timeout 30 $D bench --lengths 16K --h 8 --backward --reps 3 --warmup 300ms --profile 2>&1 |
				grep -E '^ *custom|bwd-rows|error'
		done
	} >"$OUT/bwdtiles.txt" 2>&1
	cat "$OUT/bwdtiles.txt"
}

# The prefill targets' table in one call: ggml's Vulkan flash attention (coopmat2 and
# KHR), dmavk's defaults (coopmat2 and KHR), flash-dmattn's Triton kernel, SDPA.
part_targets() {
	local fa='hsk=128,hsv=128,nh=8,nr23=\[1,1\],kv=16384,nb=16384,.*prec=f32'
	{
		echo "== ggml Vulkan FLASH_ATTN_EXT (coopmat2), L 16K, H 8, D 128"
		tbo -o FLASH_ATTN_EXT -p "$fa"
		echo "== ggml Vulkan FLASH_ATTN_EXT, KHR cooperative matrix (coopmat2 off)"
		GGML_VK_DISABLE_COOPMAT2=1 tbo -o FLASH_ATTN_EXT -p "$fa"
		echo "== dmavk coopmat2: mode none (causal) 16K H 8, mode row 16K H 8, mode row 32K H 4"
		timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 10 --warmup 1s --profile 2>&1 | grep -vE '^bench: \['
		timeout 60 $D bench --lengths 16K --h 8 --reps 10 --warmup 1s --profile 2>&1 | grep -vE '^bench: \['
		timeout 60 $D bench --lengths 32K --h 4 --reps 10 --warmup 1s --profile 2>&1 | grep -vE '^bench: \['
		timeout 60 $D bench --lengths 16K --h 8 --reps 10 --warmup 1s --dtype bfloat16 2>&1 | grep -E '^ *custom'
		timeout 60 $D bench --lengths 16K --h 8 --mode shared --reps 10 --warmup 1s 2>&1 | grep -E '^ *custom'
		echo "== dmavk KHR (coopmat2 off): mode none 16K H 8, mode row 16K H 8"
		DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --warmup 1s 2>&1 | grep -E '^ *custom'
		DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --reps 5 --warmup 1s 2>&1 | grep -E '^ *custom'
		echo "== flash-dmattn Triton, SDPA, Flex: 4K-16K H 8, 32K H 4"
		(cd .peers && PYTHONUNBUFFERED=1 timeout 240 python3 peers.py prefill && PYTHONUNBUFFERED=1 timeout 120 python3 peers.py big)
	} >"$OUT/targets.txt" 2>&1
	cat "$OUT/targets.txt"
}

part_peers() {
	{
		echo "== ggml Vulkan FLASH_ATTN_EXT (coopmat2), causal and not, L 16K, H 8, D 128"
		tbo -o FLASH_ATTN_EXT -p 'hsk=128,hsv=128,nh=8,nr23=\[1,1\],kv=16384,nb=16384,.*prec=f32'
		echo "== ggml Vulkan FLASH_ATTN_EXT, KHR cooperative matrix (coopmat2 off)"
		GGML_VK_DISABLE_COOPMAT2=1 tbo -o FLASH_ATTN_EXT -p 'hsk=128,hsv=128,nh=8,nr23=\[1,1\],kv=16384,nb=16384,.*prec=f32'
		echo "== flash-dmattn Triton, SDPA, Flex"
		(cd .peers && PYTHONUNBUFFERED=1 timeout 400 python3 peers.py all)
	} >"$OUT/peers.txt" 2>&1
	tail -40 "$OUT/peers.txt"
}

part_khrtests() {
	local f="$OUT/khrtests.txt" run='TestAttentionCoopMat$|TestAttentionCoopMatBF16|TestAttentionCoopMatNonFinite|TestAttentionStorage'
	kt() { (cd "$ROOT/internal/kern" && DMAVK_REQUIRE_COOPMAT=1 timeout 300 /tmp/bin/kern.test -test.timeout 290s -test.run "$run" "$@" 2>&1); }
	{
		echo "=== internal/kern, the KHR attention's tests"
		kt -test.v | grep -E -- '--- (FAIL|SKIP)|^(ok|PASS|FAIL)|D=(64|128):|panic'
		echo "=== internal/kern, the same with the scalar P V build"
		DMAVK_CM_SPV="$ROOT/.gpu/cm/attention_cm_scalar_pv.spv" kt | grep -E -- '--- FAIL|^(ok|PASS|FAIL)|panic'
		echo "=== dma, coopmat2 off"
		DMAVK_DISABLE_COOPMAT2=1 tests dma dma.test | grep -E -- '--- FAIL|^(ok|PASS|FAIL)|panic'
		echo "=== selftest, coopmat2 off (failed rows and the count)"
		DMAVK_DISABLE_COOPMAT2=1 timeout 300 $D selftest 2>&1 | grep -E '\||passed' | grep -vE '\| +ok\||^ *path' | tail -20
	} >"$f" 2>&1
	summary "$f" khrtests
	tail -30 "$f"
}

# The KHR attention kernel's builds (.gpu/cm, bench/cm-builds.sh) and tiles (CM_TILES,
# BRxBC for DMAVK_CM_TILE) side by side, beside ggml's KHR flash attention (its figure
# for causal 16K is the target of mode none).
part_khr() {
	local b t
	khr_bench() { # label, then env assignments
		local label=$1
		shift
		echo "== $label"
		env "$@" DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --warmup 300ms --profile 2>&1 |
			grep -E '^ *custom|attention_cm_(f16|bf16):|error'
		env "$@" DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --mode row --reps 5 --warmup 300ms 2>&1 |
			grep -E '^ *custom *\||error'
	}
	{
		echo "== ggml Vulkan FLASH_ATTN_EXT, KHR cooperative matrix (coopmat2 off), L 16K, H 8, D 128"
		GGML_VK_DISABLE_COOPMAT2=1 tbo -o FLASH_ATTN_EXT -p 'hsk=128,hsv=128,nh=8,nr23=\[1,1\],kv=16384,nb=16384,.*prec=f32'
		for b in .gpu/cm/attention_cm_*.spv; do
			[[ $b == *scalar_pv* ]] && continue # a debugging build, slow by design
			khr_bench "build $(basename "$b" .spv)" DMAVK_CM_SPV="$ROOT/$b"
		done
		for t in ${CM_TILES:-32x48 64x32 16x48}; do
			khr_bench "default build, DMAVK_CM_TILE=$t" DMAVK_CM_TILE="$t"
		done
		echo "== the committed kernel, fp16 and bf16 (bf16 on the KHR path only where the device has bf16 cooperative matrices)"
		DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 5 --dtype bfloat16 2>&1 | grep -E '^ *custom *\||error'
		DMAVK_DISABLE_COOPMAT2=1 timeout 60 $D bench --lengths 16K --h 8 --mode shared --reps 5 2>&1 | grep -E '^ *custom *\||error'
	} >"$OUT/khr.txt" 2>&1
	cat "$OUT/khr.txt"
}

# smi_peak FILE CMD...: runs CMD while nvidia-smi samples the used GPU memory every 50 ms,
# and writes the peak above the level before it (MiB) to FILE.
smi_peak() {
	local file=$1 idle sampler rc
	shift
	idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
	nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$file.log" 2>/dev/null &
	sampler=$!
	"$@"
	rc=$?
	kill "$sampler" 2>/dev/null
	wait "$sampler" 2>/dev/null
	echo $(($(sort -n "$file.log" | tail -1) - idle)) >"$file"
	return $rc
}

part_doge() {
	local m=/tmp/doge160m dir=/tmp/doge L dm=() hf=()
	mkdir -p "$dir"
	{
		timeout 90 python3 bench/peers/doge.py --make "$m" --dtype "${DOGE_DTYPE:-float16}" ||
			echo "doge: transformers did not make the model"
		# One process per side and context: each peak is that context's own.
		[[ -f $m/config.json ]] && for L in ${DOGE_CONTEXTS:-2048 32768}; do
			echo "== context $L: dmavk"
			smi_peak "$dir/dmavk_$L.mib" timeout 100 $D generate --model "$m" --half --bench --contexts "$L" \
				--chunk "${DOGE_CHUNK:-0}" --steps "${DOGE_STEPS:-64}" --json >"$dir/dmavk_$L.json" && dm+=("$dir/dmavk_$L.json")
			echo "== context $L: transformers"
			smi_peak "$dir/hf_$L.mib" timeout 120 python3 bench/peers/doge.py --model "$m" --contexts "$L" \
				--steps 32 --json "$dir/hf_$L.json" && hf+=("$dir/hf_$L.json")
		done
		# The longest context's prompt in chunks of 4096, beside the default chunk above.
		L=${DOGE_CONTEXTS:-2048 32768}
		L=${L##* }
		echo "== dmavk, context $L in prefill chunks of 4096"
		[[ -f $m/config.json ]] && timeout 100 $D generate --model "$m" --half --bench --contexts "$L" --chunk 4096 --steps 16
		cat "$dir"/dmavk_*.json "$dir"/hf_*.json
		python3 bench/peers/doge.py --join "$(IFS=,; echo "${dm[*]}")" "$(IFS=,; echo "${hf[*]}")" --smi "$dir"
	} >"$OUT/doge.txt" 2>&1
	cat "$OUT/doge.txt"
}

for part in "$@"; do
	declare -F "part_$part" >/dev/null || { echo "gpu.sh: unknown part $part" >&2; continue; }
	echo "##### $part ($(date +%T))"
	"part_$part"
done
