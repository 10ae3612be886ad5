#!/usr/bin/env bash
# Prints where the VM image of the current recipe lives: $WGFLOW_VM_CACHE/<hash of the recipe>,
# or, with the argument "box", the Vagrant box's image ($WGFLOW_VM_CACHE/box-<hash>).
set -euo pipefail
cd "$(dirname "$0")"
variant=${1:-test}
files=(build-image.sh packages.txt guest-init.sh)
[ "$variant" = box ] && files+=(box-packages.txt)
hash=$( { cat "${files[@]}"; echo "$variant"; } | sha256sum | cut -c1-16)
prefix=""; [ "$variant" = box ] && prefix="box-"
echo "${WGFLOW_VM_CACHE:-/var/cache/wgflow-vm}/$prefix$hash"
