#!/usr/bin/env bash
# Device call: the coopmat2 attention with the next chunk's K loaded right after this
# chunk's S (PREFETCH_K) and/or V loaded before the softmax (EARLY_V), against the
# default build, at 16K/H8 (mode none, then row) and 32K/H4 (row). .gpu/cm2_*.spv are
# builds of shaders/attention_cm2.comp with those defines (workgroup scope).
set -uo pipefail
. bench/gpu_env.sh
for v in default pk ev pkev default; do
	spv=""; [[ $v != default ]] && spv=$PWD/.gpu/cm2_$v.spv
	echo "== $v"
	DMAVK_CM2_SPV=$spv timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3 2>&1 | grep -E "custom\||rror" | head -1
	DMAVK_CM2_SPV=$spv timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E "custom\||rror" | head -1
	DMAVK_CM2_SPV=$spv timeout 60 $D bench --lengths 32K --h 4 --reps 5 2>&1 | grep -E "custom\||rror" | head -1
done 2>&1 | sed 's/  */ /g'
