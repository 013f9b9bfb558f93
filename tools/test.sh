#!/usr/bin/env bash
# The project's test command (README, CI):
#   1. go test -race ./... natively (whatever Vulkan device the system loader
#      finds; on a GPU-less machine that is bookworm's lavapipe).
#   2. every package with tests, as a prebuilt test binary, on each software
#      device of tools/swvk.sh with validation on (DMAVK_VALIDATE=1).
# Ends with a line "N passed, N failed" (one count per suite run) and exits
# non-zero if anything failed.
#
# The software devices are set up first where they are missing, and the first
# lines printed say what that installs (tools/swvk.sh setup): with apt-get, Mesa's
# lavapipe, the Vulkan loader and the validation layers (about 60 MB); and Debian
# testing's Mesa 26 debootstrapped into ~/.cache/dmavk/forky (about 560 MB). It
# needs root or sudo for that, and refuses without them before changing anything.
#
#   tools/test.sh [-test.FLAG...]   extra flags go to every test run
# Environment:
#   DMAVK_SHORT=1              add -test.short
#   DMAVK_DEVICES="bookworm forky"   software devices to use (default both)
#   DMAVK_TEST_TIMEOUT=10m     per-run test timeout
#   DMAVK_NATIVE=0             skip step 1
#   DMAVK_FUZZTIME=800x        length of the fuzz run, executions or a duration (0 skips it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWVK="$ROOT/tools/swvk.sh"
cd "$ROOT"
command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH

args=("-test.timeout=${DMAVK_TEST_TIMEOUT:-10m}" "$@")
[[ ${DMAVK_SHORT:-0} == 1 ]] && args+=(-test.short)
read -r -a devices <<<"${DMAVK_DEVICES:-bookworm forky}"

# Set-up first, so that what it installs is said before anything else happens.
# The native run uses the host's lavapipe (bookworm) where there is no GPU driver.
setup=("${devices[@]}")
[[ ${DMAVK_NATIVE:-1} != 0 ]] && setup+=(bookworm)
"$SWVK" setup "${setup[@]}"

passed=0
failed=0
failures=()
record() { # rc label
	if [[ $1 -eq 0 ]]; then
		passed=$((passed + 1))
		printf '>>> ok   %s\n' "$2"
	else
		failed=$((failed + 1))
		failures+=("$2")
		printf '>>> FAIL %s (exit %s)\n' "$2" "$1"
	fi
}

tmp=$(mktemp -d)
xvfb=
trap 'rm -rf "$tmp"; if [[ -n $xvfb ]]; then kill "$xvfb" 2>/dev/null; fi' EXIT

# The viewer's tests (examples/viewer) need an X display: without one, start Xvfb
# (apt: xvfb). They skip without a display only outside CI.
if [[ -z ${DISPLAY:-} ]] && command -v Xvfb >/dev/null; then
	for n in $(seq 90 120); do
		[[ -e /tmp/.X11-unix/X$n || -e /tmp/.X$n-lock ]] && continue
		Xvfb ":$n" -screen 0 1280x1024x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
		xvfb=$!
		export DISPLAY=":$n"
		for _ in $(seq 50); do [[ -e /tmp/.X11-unix/X$n ]] && break; sleep 0.1; done
		printf '=== Xvfb on %s\n' "$DISPLAY"
		break
	done
fi

# Packages with tests: "importpath dir" per line.
pkgs=$(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' ./...)

# 1. Native, with the race detector (the go command accepts -test.X flags).
if [[ ${DMAVK_NATIVE:-1} != 0 ]]; then
	printf '=== native: go test -race ./...\n'
	rc=0
	go test -race -count=1 "${args[@]}" ./... || rc=$?
	record "$rc" "native go test -race ./..."
fi

# 1b. cgo pointer rules checked at every C call and pointer store (cgocheck2): the
# host layer and the packages that drive it.
if [[ ${DMAVK_NATIVE:-1} != 0 ]]; then
	printf '=== native: GOEXPERIMENT=cgocheck2 go test -short ./vk ./internal/matmul ./dma\n'
	rc=0
	GOEXPERIMENT=cgocheck2 go test -short -count=1 "${args[@]}" ./vk ./internal/matmul ./dma || rc=$?
	record "$rc" "native cgocheck2 vk, matmul, dma"
fi

# 2. Test binaries on the software devices. Built without -race to keep CI
# fast; run from the package directory, as go test does.
while read -r ip dir; do
	[[ -n $ip ]] || continue
	bin="$tmp/$(tr / _ <<<"${ip#github.com/dmavk/dmavk/}").test"
	rc=0
	go test -c -o "$bin" "$ip" || rc=$?
	if [[ $rc -ne 0 ]]; then
		record "$rc" "build $ip"
		continue
	fi
	for dev in "${devices[@]}"; do
		# The viewer links GLFW's X11 libraries, which forky's tree does not hold: it
		# runs natively and on bookworm.
		if [[ $ip == */examples/viewer && $dev == forky ]]; then
			printf '=== %s: %s skipped (no X11 libraries in the forky tree)\n' "$dev" "$ip"
			continue
		fi
		printf '=== %s: %s\n' "$dev" "$ip"
		rc=0
		# Mesa 26 has cooperative matrices: there, tests of those paths must run, not skip.
		require=0
		[[ $dev == forky ]] && require=1
		(cd "$dir" && DMAVK_REQUIRE_COOPMAT=$require "$SWVK" run "$dev" --validate -- "$bin" "${args[@]}") || rc=$?
		record "$rc" "$dev $ip"
	done
done <<<"$pkgs"

# 3. A brief fuzz run over shapes and options (natively: fuzz workers re-exec the
# test binary, which the forky runner cannot do). A count, not a duration: Go 1.26's
# fuzz coordinator can fail a duration run with "context deadline exceeded" at its
# end, having found nothing (go.dev/issue/75804, fixed in Go 1.27).
if [[ ${DMAVK_FUZZTIME:-800x} != 0 ]]; then
	printf '=== fuzz: FuzzForward for %s\n' "${DMAVK_FUZZTIME:-800x}"
	rc=0
	go test -run='^$' -fuzz='^FuzzForward$' -fuzztime="${DMAVK_FUZZTIME:-800x}" ./dma || rc=$?
	record "$rc" "fuzz FuzzForward ./dma"
fi

if ((failed)); then
	printf 'failed: %s\n' "${failures[@]}"
fi
printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
