#!/usr/bin/env bash
# Device call: which part of the coopmat2 attention's chunk loop costs what (16K, H=8;
# mode none, then mode row). Builds of shaders/attention_cm2.comp with parts compiled
# out (.gpu/abl_*.spv, see bench/NOTES.md): all = the two products and the P conversion
# only; each other build adds one part back to that.
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export DMAVK_CACHE_DIR=/tmp/dmavk-cache
D=.gpu/dmavk
for v in committed all red exp sum resc col score; do
	spv=""; [[ $v != committed ]] && spv=$PWD/.gpu/abl_$v.spv
	echo "== $v"
	DMAVK_CM2_SPV=$spv timeout 60 $D bench --lengths 16K --h 8 --mode none --reps 3 2>&1 | grep -E "custom\||rror" | head -1
	DMAVK_CM2_SPV=$spv timeout 60 $D bench --lengths 16K --h 8 --reps 3 2>&1 | grep -E "custom\||rror" | head -1
done 2>&1 | sed 's/  */ /g'
