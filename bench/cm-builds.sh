#!/usr/bin/env bash
# Builds of shaders/attention_cm.comp with its build switches, for DMAVK_CM_SPV (timing
# alternatives on a GPU in one run: bench/gpu.sh khr; debugging on any device). Same
# compiler and flags as tools/glslc.sh; the committed shaders/spv/attention_cm_f16.spv is the
# "default" build.
#
#   bench/cm-builds.sh OUTDIR     writes OUTDIR/attention_cm_NAME.spv for every NAME below
#
# NAME            switches
#   default       (none)
#   v_before_s    -DV_BEFORE_S        V rows requested before S = Q K^T instead of after it
#   k_late        -DK_LATE            the next chunk's K requested after P V, not before
#   s_serial      -DS_SERIAL          score tiles one after another (fewer live registers)
#   scalar_pv     -DDEBUG_SCALAR_PV   every chunk on the scalar P V route (exactness check)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(($# == 1)) || { echo "usage: bench/cm-builds.sh OUTDIR" >&2; exit 2; }
out=$1
mkdir -p "$out"
builds=(
	"default"
	"v_before_s -DV_BEFORE_S"
	"k_late -DK_LATE"
	"s_serial -DS_SERIAL"
	"scalar_pv -DDEBUG_SCALAR_PV"
)
cd "$ROOT"
for b in "${builds[@]}"; do
	read -r name defs <<<"$b"
	# shellcheck disable=SC2086 # defs is a list of -D flags
	tools/swvk.sh glslc -fshader-stage=compute --target-env=vulkan1.3 -O -I shaders $defs \
		-o "$out/attention_cm_$name.spv" shaders/attention_cm.comp
done
cmp -s "$out/attention_cm_default.spv" shaders/spv/attention_cm_f16.spv ||
	echo "cm-builds.sh: warning: the default build differs from shaders/spv/attention_cm_f16.spv (run tools/glslc.sh)" >&2
ls "$out"/attention_cm_*.spv
