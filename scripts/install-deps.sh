#!/usr/bin/env bash
# Installs what wgflow needs to build, test, benchmark and run the demo on Debian/Ubuntu.
# Idempotent and quiet when everything is already there. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# --no-install-recommends matters: wireguard-tools would otherwise pull a whole kernel image.
PACKAGES=(
  clang-14 llvm-14 libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config cmake make g++
  iproute2 wireguard-go wireguard-tools iputils-ping iperf3 tcpdump openssl procps
  nodejs npm
  prometheus nfdump libfixbuf-tools vagrant
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node from another source (nodesource, nvm) is fine: only install Debian's if there is none.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done; missing=("${tmp[@]}")
fi
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "wgflow needs Node.js >= 20 (found $(node --version)); install a newer nodejs package" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.wgflow-lock; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.wgflow-lock
fi
