#!/usr/bin/env bash
# Builds of shaders/attention_cm2.comp with parts switched by its build switches (see
# the shader's header), for measuring what each part costs on a GPU:
#
#   bench/cm2-builds.sh DIR      write DIR/NAME.spv and DIR/list ("NAME TILE" lines)
#
# bench/gpu.sh's part "builds" runs every line of .gpu/cm2/list through DMAVK_CM2_SPV
# and DMAVK_CM2_TILE (16K keys, H 8, D 128; modes none and row). The set below is
# edited to the question at hand; the results go to bench/NOTES.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:?usage: bench/cm2-builds.sh DIR}
mkdir -p "$dir"
: >"$dir/list"

# build NAME "TILE..." FLAGS...: from shaders/attention_cm2.comp, or from $SRC when set
build() {
	local name=$1 tiles=$2 t
	shift 2
	"$ROOT/tools/swvk.sh" glslc -fshader-stage=compute --target-env=vulkan1.3 -O -I "$ROOT/shaders" \
		-DSCOPE=gl_ScopeWorkgroup "$@" -o "$dir/$name.spv" "${SRC:-$ROOT/shaders/attention_cm2.comp}"
	for t in $tiles; do echo "$name $t" >>"$dir/list"; done
}

# The kernel before the weights' product (the per-element score on every chunk, the
# causal test per element), from its commit; it runs with today's bindings (a subset).
before=$(mktemp --suffix=.comp -p "$ROOT/shaders")
trap 'rm -f "$before"' EXIT
git -C "$ROOT" show 1108bfc:shaders/attention_cm2.comp >"$before"
SRC=$before build before "64x64x128" -DWIDE=1
build wide "64x64x128 64x64x256 64x128x256 128x64x256 32x64x128" -DWIDE=1
build wide_scoreop "64x64x128" -DWIDE=1 -DSCOREOP=1
build wide_noscore "64x64x128" -DWIDE=1 -DNOSCORE=1
cat "$dir/list"
