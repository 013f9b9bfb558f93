#!/usr/bin/env bash
# Software Vulkan devices for dmavk tests (no GPU needed):
#   bookworm  Debian 12's lavapipe (Mesa 22.3), installed on the host with apt.
#   forky     Debian testing's lavapipe (Mesa 26, cooperative matrix), glslc and
#             Khronos validation layers, debootstrapped into a cache folder
#             outside the repo and used WITHOUT chroot: host-built binaries are
#             started through forky's own ld.so so that every library (libc,
#             libvulkan, lavapipe, LLVM, validation layer) comes from forky.
#
# Usage:
#   tools/swvk.sh setup [bookworm|forky|all]...     (default: all; says first what it
#                                                   installs, and where)
#   tools/swvk.sh run bookworm|forky [--validate] -- CMD ARGS...
#   tools/swvk.sh env bookworm|forky                (prints export lines)
#   tools/swvk.sh glslc ARGS...                     (forky's glslc)
#
# Environment: DMAVK_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/dmavk),
# DMAVK_DEBIAN_MIRROR (default: read from this machine's apt sources).
set -euo pipefail

CACHE="${DMAVK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmavk}"
FORKY="$CACHE/forky"
ARCH_TRIPLET=x86_64-linux-gnu
# Forky's own files; paths avoid the /lib64 -> usr/lib64 symlink chain.
FORKY_LIB="$FORKY/usr/lib/$ARCH_TRIPLET"
FORKY_LDSO="$FORKY_LIB/ld-linux-x86-64.so.2"
# Rewritten manifests (library_path made absolute into $FORKY) live here.
FORKY_MANIFESTS="$FORKY/.dmavk"
FORKY_PKGS=mesa-vulkan-drivers,libvulkan1,glslc,vulkan-validationlayers,vulkan-tools,spirv-tools
# The viewer (examples/viewer, GLFW through cgo) needs X11's headers to build and Xvfb
# to run its tests.
HOST_PKGS=(mesa-vulkan-drivers libvulkan1 vulkan-validationlayers vulkan-tools
	xvfb x11-apps libx11-dev libxrandr-dev libxinerama-dev libxcursor-dev libxi-dev libxxf86vm-dev libgl-dev)
HOST_ICD=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json

log() { printf 'swvk: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Installing needs root: as root, or through sudo. Refuse up front, saying what
# would have been installed, rather than fail half-way.
need_root() { # what-for
	[[ $(id -u) -eq 0 ]] && return
	command -v sudo >/dev/null ||
		die "$1 needs root: run as root or with sudo installed (sudo was not found)"
}

missing_host_pkgs() {
	local p
	for p in "${HOST_PKGS[@]}"; do
		dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || echo "$p"
	done
}

# Says, before anything is changed, what setup of the given devices will install
# and where; silent when everything is in place.
announce() { # bookworm|forky ...
	[[ -n ${ANNOUNCED:-} ]] && return 0
	ANNOUNCED=1
	local d pkgs=() plan=()
	for d in "$@"; do
		case $d in
		bookworm)
			mapfile -t pkgs < <(missing_host_pkgs)
			((${#pkgs[@]})) && plan+=("apt-get install on this machine: ${pkgs[*]} (Mesa 22 lavapipe, Vulkan loader, validation layers; Xvfb and X11 headers for the viewer; about 100 MB)")
			;;
		forky)
			[[ -f $FORKY/.complete ]] ||
				plan+=("debootstrap of Debian testing (Mesa 26 lavapipe, its Vulkan loader, validation layers, glslc) into $FORKY: about 560 MB, no change outside that folder")
			;;
		esac
	done
	((${#plan[@]})) || return 0
	log "setting up the software Vulkan devices; this installs:"
	for d in "${plan[@]}"; do log "  - $d"; done
	need_root "installing them"
	[[ $(id -u) -eq 0 ]] || log "  (through sudo)"
}

# --- setup -----------------------------------------------------------------

setup_bookworm() {
	local missing=()
	# dpkg -s first, so a second run costs nothing (no apt at all).
	mapfile -t missing < <(missing_host_pkgs)
	if ((${#missing[@]})); then
		announce bookworm
		log "installing on host: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		# Retry after apt-get update only if the package lists are stale/absent.
		as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
			{ as_root apt-get update >&2 && as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
	fi
	[[ -f $HOST_ICD ]] || die "host lavapipe manifest $HOST_ICD missing after install"
}

# The Debian mirror comes from this machine's apt sources (never hard-coded):
# first deb entry whose suite is the host's own release codename.
debian_mirror() {
	if [[ -n ${DMAVK_DEBIAN_MIRROR:-} ]]; then
		echo "$DMAVK_DEBIAN_MIRROR"
		return
	fi
	local cn f uri=""
	cn=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[[ -n $cn ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		uri=$(awk -v cn="$cn" 'BEGIN { RS = "" } {
			types = ""; uri = ""; ok = 0
			n = split($0, L, "\n")
			for (i = 1; i <= n; i++) {
				if (L[i] ~ /^[[:space:]]*#/) continue
				m = split(L[i], w, /[[:space:]]+/); k = tolower(w[1])
				if (k == "types:") types = " " L[i] " "
				else if (k == "uris:") uri = w[2]
				else if (k == "suites:") { for (j = 2; j <= m; j++) if (w[j] == cn) ok = 1 }
				else if (k == "enabled:" && tolower(w[2]) == "no") ok = -1
			}
			if (types ~ /[[:space:]]deb[[:space:]]/ && ok == 1 && uri != "") { print uri; exit }
		}' "$f")
		[[ -n $uri ]] && break
	done
	if [[ -z $uri ]]; then
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -r $f ]] || continue
			uri=$(awk -v cn="$cn" '$1 == "deb" {
				i = 2; if ($i ~ /^\[/) while ($i !~ /\]$/) i++
				if ($i ~ /\]$/ && $2 ~ /^\[/) i++
				if ($(i + 1) == cn) { print $i; exit } }' "$f")
			[[ -n $uri ]] && break
		done
	fi
	[[ -n $uri ]] || die "no '$cn' deb source in /etc/apt; set DMAVK_DEBIAN_MIRROR"
	echo "${uri%/}"
}

# Copy a Vulkan manifest with its library_path made absolute inside $FORKY:
# the originals say /usr/lib/... (or a bare soname) which would load the
# host's library or nothing.
rewrite_manifest() { # src dst
	local src=$1 dst=$2 lp abs
	lp=$(sed -n 's/.*"library_path"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$src" | head -n1)
	[[ -n $lp ]] || die "no library_path in $src"
	case $lp in
	/*) abs="$FORKY$lp" ;;
	*) abs="$FORKY_LIB/$(basename "$lp")" ;;
	esac
	[[ -e $abs ]] || die "$src: library $abs not found in forky tree"
	mkdir -p "$(dirname "$dst")"
	sed "s|\"library_path\"[[:space:]]*:[[:space:]]*\"[^\"]*\"|\"library_path\": \"$abs\"|" "$src" >"$dst.tmp"
	mv -f "$dst.tmp" "$dst"
}

# (Re)generate manifests when missing or when the cache folder was moved.
forky_manifests() {
	local icd="$FORKY_MANIFESTS/icd.d/lvp_icd.json"
	local layer="$FORKY_MANIFESTS/explicit_layer.d/VkLayer_khronos_validation.json"
	if [[ -f $icd && -f $layer ]] && grep -qF "\"$FORKY/" "$icd" && grep -qF "\"$FORKY/" "$layer"; then
		return
	fi
	local src=$FORKY/usr/share/vulkan/icd.d/lvp_icd.json # Mesa 26 name
	[[ -f $src ]] || src=$FORKY/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
	rewrite_manifest "$src" "$icd"
	rewrite_manifest "$FORKY/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json" "$layer"
}

setup_forky() {
	if [[ -f $FORKY/.complete ]]; then
		forky_manifests
		return
	fi
	mkdir -p "$CACHE"
	# One setup at a time (parallel test runs may all ask for it).
	exec 9>"$CACHE/.lock"
	flock 9
	if [[ ! -f $FORKY/.complete ]]; then
		announce forky
		command -v debootstrap >/dev/null ||
			{ DEBIAN_FRONTEND=noninteractive as_root apt-get install -y debootstrap >&2 ||
				{ as_root apt-get update >&2 && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y debootstrap >&2; }; }
		local mirror tmp="$FORKY.tmp"
		mirror=$(debian_mirror)
		log "debootstrap forky from $mirror into $FORKY (about 1 min)"
		# Atomic: build in .tmp, mark complete, then rename into place.
		as_root rm -rf "$tmp"
		if ! as_root debootstrap --variant=minbase --include="$FORKY_PKGS" \
			forky "$tmp" "$mirror" /usr/share/debootstrap/scripts/sid >"$CACHE/debootstrap.log" 2>&1; then
			tail -n 30 "$CACHE/debootstrap.log" >&2
			die "debootstrap failed (log: $CACHE/debootstrap.log)"
		fi
		as_root find "$tmp/var/cache/apt/archives" -name '*.deb' -delete
		as_root touch "$tmp/.complete"
		as_root rm -rf "$FORKY"
		as_root mv "$tmp" "$FORKY"
	fi
	forky_manifests
	exec 9>&-
}

# --- environment -------------------------------------------------------------

mesa_version() { # dpkg admindir
	dpkg-query --admindir="$1" -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo unknown
}

# Sets ENV_VARS (NAME=VALUE) for a device; used by both run and env.
device_env() {
	local dev=$1 validate=$2
	ENV_VARS=()
	case $dev in
	bookworm)
		setup_bookworm
		ENV_VARS+=("VK_DRIVER_FILES=$HOST_ICD" "VK_ICD_FILENAMES=$HOST_ICD")
		;;
	forky)
		setup_forky
		local icd="$FORKY_MANIFESTS/icd.d/lvp_icd.json"
		ENV_VARS+=("VK_DRIVER_FILES=$icd" "VK_ICD_FILENAMES=$icd"
			# Only forky's validation layer; host implicit layers (e.g. Mesa's
			# device_select from the bookworm install) must not leak in.
			"VK_LAYER_PATH=$FORKY_MANIFESTS/explicit_layer.d"
			"VK_LOADER_LAYERS_DISABLE=~implicit~")
		;;
	*) die "unknown device '$dev' (want bookworm or forky)" ;;
	esac
	# Mesa: never pick a real GPU driver by accident.
	ENV_VARS+=("LIBGL_ALWAYS_SOFTWARE=1")
	if [[ $validate == 1 ]]; then
		ENV_VARS+=("DMAVK_VALIDATE=1")
	fi
}

# Is $1 a dynamically linked ELF (has PT_INTERP)? Static (pure-Go) binaries
# and scripts are exec'd directly: they cannot dlopen anything anyway.
is_dynamic_elf() {
	[[ $(head -c4 "$1" 2>/dev/null | od -An -c | tr -d ' ') == '177ELF' ]] || return 1
	LC_ALL=C readelf -lW "$1" 2>/dev/null | grep -q 'INTERP'
}

forky_exec() { # CMD ARGS... (never returns)
	local cmd=$1 exe
	shift
	# Bare names prefer forky's own tools (vulkaninfo, spirv-val, ...).
	if [[ $cmd != */* && -x $FORKY/usr/bin/$cmd ]]; then
		exe="$FORKY/usr/bin/$cmd"
	else
		exe=$(command -v -- "$cmd") || die "command not found: $cmd"
	fi
	if is_dynamic_elf "$exe"; then
		# --library-path is ld.so's LD_LIBRARY_PATH: searched first by every
		# later dlopen too ("libvulkan.so.1", lavapipe's LLVM, ...). It is not
		# exported, so children fall back to the host's normal loader.
		# --inhibit-cache keeps the host's /etc/ld.so.cache out of it.
		exec "$FORKY_LDSO" --inhibit-cache --library-path "$FORKY_LIB" --argv0 "$cmd" "$exe" "$@"
	fi
	exec "$exe" "$@"
}

cmd_run() {
	local dev=${1:-} validate=0
	[[ -n $dev ]] || die "usage: swvk.sh run bookworm|forky [--validate] -- CMD ARGS..."
	shift
	while (($#)); do
		case $1 in
		--validate) validate=1 ;;
		--) shift; break ;;
		*) die "unknown run option '$1' (did you forget --?)" ;;
		esac
		shift
	done
	(($#)) || die "run: no command given"
	device_env "$dev" "$validate"
	export "${ENV_VARS[@]}"
	case $dev in
	bookworm)
		log "device=bookworm driver=lavapipe mesa=$(mesa_version /var/lib/dpkg) loader=host icd=$HOST_ICD validate=$validate"
		exec "$@"
		;;
	forky)
		log "device=forky driver=lavapipe mesa=$(mesa_version "$FORKY/var/lib/dpkg") loader=$FORKY_LDSO icd=$VK_DRIVER_FILES validate=$validate"
		forky_exec "$@"
		;;
	esac
}

cmd_env() {
	local dev=${1:-} v
	[[ -n $dev ]] || die "usage: swvk.sh env bookworm|forky"
	device_env "$dev" 0
	for v in "${ENV_VARS[@]}"; do
		printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
	done
	if [[ $dev == forky ]]; then
		# Binaries must start through forky's ld.so; a shell function does it.
		printf 'export DMAVK_FORKY_LDSO=%q DMAVK_FORKY_LIB=%q\n' "$FORKY_LDSO" "$FORKY_LIB"
		printf '# run host-built binaries on forky with: forky_run CMD ARGS...\n'
		printf 'forky_run() { "$DMAVK_FORKY_LDSO" --inhibit-cache --library-path "$DMAVK_FORKY_LIB" "$(command -v "$1")" "${@:2}"; }\n'
	fi
}

cmd_glslc() {
	setup_forky
	exec "$FORKY_LDSO" --inhibit-cache --library-path "$FORKY_LIB" --argv0 glslc "$FORKY/usr/bin/glslc" "$@"
}

main() {
	local sub=${1:-}
	(($#)) && shift
	case $sub in
	setup)
		local d devs=()
		(($#)) || set -- all
		for d in "$@"; do
			case $d in
			bookworm | forky) devs+=("$d") ;;
			all) devs+=(bookworm forky) ;;
			*) die "setup: want bookworm, forky or all" ;;
			esac
		done
		# The whole plan first, then the work.
		announce "${devs[@]}"
		for d in "${devs[@]}"; do "setup_$d"; done
		;;
	run) cmd_run "$@" ;;
	env) cmd_env "$@" ;;
	glslc) cmd_glslc "$@" ;;
	*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
}

main "$@"
