#!/usr/bin/env bash
# A current Khronos validation layer for a machine whose own is missing or too old
# (a GPU machine with an older glibc than the layer needs): Debian testing's loader
# and layer from the forky tree of tools/swvk.sh, with the few libraries they need
# (glibc, libstdc++), packed into one archive. Programs then start through that
# tree's ld.so, as tools/swvk.sh runs them on forky's lavapipe, but against the
# machine's own Vulkan driver.
#
# Usage:
#   tools/vvl.sh pack ARCHIVE.tgz          (here: needs tools/swvk.sh setup forky)
#   tools/vvl.sh run ARCHIVE.tgz -- CMD ARGS...
#                                          (there: validation and synchronization
#                                          validation on, DMAVK_VALIDATE=1)
# Environment for run: VVL_DIR (default /tmp/vvl) where the archive is unpacked;
# VK_DRIVER_FILES as the machine needs (e.g. the NVIDIA ICD manifest); VVL_SYNC=0
# leaves synchronization validation off.
set -euo pipefail

TRIPLET=x86_64-linux-gnu
log() { printf 'vvl: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# What the loader, the layer and glibc's own dlopen users need; everything else
# (the driver and its libraries) comes from the machine.
LIBS=(ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1
	libstdc++.so.6 libgcc_s.so.1 libvulkan.so.1 libVkLayer_khronos_validation.so)

cmd_pack() {
	local out=${1:-} root cache forky lib tmp f
	[[ -n $out ]] || die "usage: vvl.sh pack ARCHIVE.tgz"
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	"$root/tools/swvk.sh" setup forky
	cache="${DMAVK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmavk}"
	forky="$cache/forky"
	lib="$forky/usr/lib/$TRIPLET"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	mkdir -p "$tmp/lib" "$tmp/layers"
	for f in "${LIBS[@]}"; do
		[[ -e $lib/$f ]] || die "$lib/$f missing from the forky tree"
		cp -L "$lib/$f" "$tmp/lib/$f"
	done
	# The manifest names the layer library by its bare name: run rewrites it to an
	# absolute path where the archive is unpacked.
	cp "$forky/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json" "$tmp/layers/"
	dpkg-query --admindir="$forky/var/lib/dpkg" -W -f='${Package} ${Version}\n' \
		libvulkan1 vulkan-validationlayers libc6 >"$tmp/VERSIONS"
	mkdir -p "$(dirname "$out")"
	tar czf "$out" -C "$tmp" .
	log "packed $(tr '\n' ',' <"$tmp/VERSIONS" | sed 's/,$//') into $out ($(du -h "$out" | cut -f1))"
}

cmd_run() {
	local archive=${1:-} dir=${VVL_DIR:-/tmp/vvl} exe lp
	[[ -n $archive ]] || die "usage: vvl.sh run ARCHIVE.tgz -- CMD ARGS..."
	shift
	[[ ${1:-} == -- ]] && shift
	(($#)) || die "run: no command given"
	if [[ ! -f $dir/.unpacked ]]; then
		mkdir -p "$dir"
		tar xzf "$archive" -C "$dir"
		sed -i "s|\"library_path\"[[:space:]]*:[[:space:]]*\"[^\"]*\"|\"library_path\": \"$dir/lib/libVkLayer_khronos_validation.so\"|" \
			"$dir/layers/VkLayer_khronos_validation.json"
		touch "$dir/.unpacked"
	fi
	exe=$(command -v -- "$1") || die "command not found: $1"
	shift
	export VK_LAYER_PATH="$dir/layers" DMAVK_VALIDATE=1
	# Synchronization validation through the layer's settings.
	[[ ${VVL_SYNC:-1} == 1 ]] && export VK_KHRONOS_VALIDATION_VALIDATE_SYNC=true
	# The archive's libraries first; then the machine's own folders, where the driver
	# and its dependencies live (the ld.so cache is not read: --inhibit-cache).
	lp="$dir/lib"
	for f in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/$TRIPLET /lib/$TRIPLET /usr/lib64; do
		[[ -d $f ]] && lp="$lp:$f"
	done
	log "$(tr '\n' ' ' <"$dir/VERSIONS")driver=${VK_DRIVER_FILES:-loader default} sync=${VVL_SYNC:-1}"
	exec "$dir/lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$lp" --argv0 "$exe" "$exe" "$@"
}

case ${1:-} in
pack) shift; cmd_pack "$@" ;;
run) shift; cmd_run "$@" ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
