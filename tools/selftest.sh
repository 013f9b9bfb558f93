#!/usr/bin/env bash
# The main job: `dmavk selftest` on the best Vulkan device this machine has. Where no
# Vulkan driver is found, Mesa's lavapipe (a software Vulkan device on the CPU) is set
# up first (Debian/Ubuntu, as root or with sudo), and the selftest runs on it.
#
#   tools/selftest.sh [selftest flags...]     e.g. --all-devices, --long, --seed N
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH
bin="$ROOT/.cache/bin/dmavk"
mkdir -p "$(dirname "$bin")"
go build -o "$bin" ./cmd/dmavk

if "$bin" devices >/dev/null 2>&1; then
	exec "$bin" selftest "$@"
fi
echo "selftest.sh: no usable Vulkan device found; setting up Mesa's lavapipe (software Vulkan)" >&2
tools/swvk.sh setup bookworm
exec tools/swvk.sh run bookworm -- "$bin" selftest "$@"
