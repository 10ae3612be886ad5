#!/usr/bin/env bash
# Prints where the VM image of the current recipe lives: $WGFLOW_VM_CACHE/<hash of the recipe>.
set -euo pipefail
cd "$(dirname "$0")"
hash=$(cat build-image.sh packages.txt guest-init.sh | sha256sum | cut -c1-16)
echo "${WGFLOW_VM_CACHE:-/var/cache/wgflow-vm}/$hash"
