#!/usr/bin/env bash
# Reproducible shader build: shaders/*.comp -> committed shaders/spv/*.spv,
# always with forky's glslc (tools/swvk.sh glslc) so every machine emits the
# same bytes.
#
#   tools/glslc.sh           rebuild shaders/spv (only changed files are rewritten,
#                            stale .spv without a source are removed)
#   tools/glslc.sh --check   build into a temp dir; exit 1 listing every .spv that
#                            differs, is missing, or is stale
#
# Per-source directives, read from the first 40 lines:
#   // variant: SUFFIX -DFOO=1 -DBAR=2   -> shaders/spv/NAME_SUFFIX.spv (one per line)
#   // target-env: vulkan1.1             (default vulkan1.3)
# A source with no variant line produces shaders/spv/NAME.spv.
# No -g: output carries no debug info and no paths, so it is deterministic.
set -euo pipefail

# Pinned compiler: a different version still builds, but warns loudly because
# the committed .spv will then likely differ (glslc --check fails).
GLSLC_EXPECTED="shaderc 2026.4-1; glslang 16.4.0-1"
DEFAULT_TARGET_ENV=vulkan1.3
HEADER_LINES=40

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWVK="$ROOT/tools/swvk.sh"
SRC_DIR=shaders
OUT_DIR=shaders/spv

die() { printf 'glslc.sh: error: %s\n' "$*" >&2; exit 1; }

check=0
case ${1:-} in
"") ;;
--check) check=1 ;;
*) die "usage: tools/glslc.sh [--check]" ;;
esac

cd "$ROOT"

ver=$("$SWVK" glslc --version | awk '/^(shaderc|glslang) [^ ]/ { printf "%s%s", sep, $0; sep = "; " }')
printf 'glslc.sh: using %s\n' "$ver" >&2
if [[ $ver != "$GLSLC_EXPECTED" ]]; then
	printf '\n*** glslc.sh: WARNING: glslc version "%s" != pinned "%s"\n*** SPIR-V output may differ from the committed files.\n\n' \
		"$ver" "$GLSLC_EXPECTED" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# compile SRC OUTNAME TARGET_ENV [-D...]
compile() {
	local src=$1 out=$2 env=$3
	shift 3
	# Relative paths from the repo root: nothing machine-specific can leak in.
	"$SWVK" glslc -fshader-stage=compute --target-env="$env" -O -I "$SRC_DIR" \
		"$@" -o "$tmp/$out.spv" "$src" || die "compiling $src ($out)"
}

shopt -s nullglob
declare -A produced=()
for src in "$SRC_DIR"/*.comp; do
	name=$(basename "$src" .comp)
	head=$(head -n "$HEADER_LINES" "$src")
	env=$(sed -n 's|^[[:space:]]*//[[:space:]]*target-env:[[:space:]]*\([^[:space:]]*\).*|\1|p' <<<"$head" | tail -n1)
	env=${env:-$DEFAULT_TARGET_ENV}
	variants=$(sed -n 's|^[[:space:]]*//[[:space:]]*variant:[[:space:]]*||p' <<<"$head")
	if [[ -z $variants ]]; then
		variants="-" # sentinel: plain NAME.spv
	fi
	while read -r suffix flags; do
		if [[ $suffix == "-" ]]; then
			out=$name
		else
			[[ $suffix =~ ^[A-Za-z0-9_]+$ ]] || die "$src: bad variant suffix '$suffix'"
			out=${name}_$suffix
		fi
		read -r -a defs <<<"${flags:-}"
		for d in "${defs[@]}"; do
			[[ $d == -D* ]] || die "$src: variant $suffix: only -DNAME[=VALUE] flags allowed, got '$d'"
		done
		[[ -z ${produced[$out]:-} ]] || die "$out.spv produced by both ${produced[$out]} and $src"
		produced[$out]=$src
		compile "$src" "$out" "$env" "${defs[@]}"
	done <<<"$variants"
done

# Compare the fresh build ($tmp) with the committed tree.
bad=()
for f in "$tmp"/*.spv; do
	b=$(basename "$f")
	if [[ ! -f $OUT_DIR/$b ]]; then
		bad+=("missing: $OUT_DIR/$b")
	elif ! cmp -s "$f" "$OUT_DIR/$b"; then
		bad+=("differs: $OUT_DIR/$b")
	fi
done
for f in "$OUT_DIR"/*.spv; do
	b=$(basename "$f")
	[[ -f $tmp/$b ]] || bad+=("stale:   $OUT_DIR/$b (no source)")
done

if ((check)); then
	# Debian testing moves on: a newer glslc may emit different bytes from the same
	# sources. Then "differs" proves nothing about staleness, so validate the committed
	# SPIR-V instead and let only missing or stale files fail.
	if [[ $ver != "$GLSLC_EXPECTED" ]]; then
		only_differs=1
		for b in "${bad[@]}"; do [[ $b == differs:* ]] || only_differs=0; done
		if ((only_differs)); then
			for f in "$OUT_DIR"/*.spv; do
				"$SWVK" run forky -- spirv-val --target-env vulkan1.3 "$f" || die "spirv-val rejects $f"
			done
			printf 'glslc.sh --check: compiler is not the pinned one; %d files differ in bytes, all committed SPIR-V validates\n' "${#bad[@]}" >&2
			exit 0
		fi
	fi
	if ((${#bad[@]})); then
		printf 'glslc.sh --check: committed SPIR-V is out of date (run tools/glslc.sh):\n' >&2
		printf '  %s\n' "${bad[@]}" >&2
		exit 1
	fi
	printf 'glslc.sh --check: %d SPIR-V files up to date\n' "${#produced[@]}" >&2
	exit 0
fi

mkdir -p "$OUT_DIR"
for line in "${bad[@]}"; do
	read -r kind f _ <<<"$line"
	case $kind in
	stale:) rm -f "$f" ;;
	*) cp "$tmp/$(basename "$f")" "$f" ;;
	esac
	printf 'glslc.sh: %s\n' "$line" >&2
done
printf 'glslc.sh: %d SPIR-V files, %d updated\n' "${#produced[@]}" "${#bad[@]}" >&2
