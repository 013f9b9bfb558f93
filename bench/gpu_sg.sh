#!/usr/bin/env bash
# Device call: the coopmat2 attention with subgroup-scope matrices (one warp per 16-row
# tile: row reductions stay inside the warp) against the workgroup-scope default, 16K.
set -uo pipefail
. bench/gpu_env.sh
for cfg in "default:" "16x64x32xsg:" "16x32x32xsg:" "16x16x32xsg:"; do
	tile=${cfg%%:*}; v=${cfg#*:}
	spv=""; [[ -n $v ]] && spv=$PWD/.gpu/$v.spv
	[[ $tile == default ]] && tile=""
	echo "== tile=${tile:-default} spv=${v:-committed}"
	DMAVK_CM2_SPV=$spv DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --reps 5 2>&1 | grep -E "custom|rror" | head -2
	DMAVK_CM2_SPV=$spv DMAVK_CM2_TILE=$tile timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3 2>&1 | grep -E "custom|rror" | head -2
done 2>&1 | sed 's/  */ /g'
