#!/usr/bin/env bash
# Removes images of older recipes from $WGFLOW_VM_CACHE (default /var/cache/wgflow-vm), keeping
# the current test image and the current box image. Run by `make vm-image` and `make vm-box`.
set -euo pipefail
cd "$(dirname "$0")"
CACHE=${WGFLOW_VM_CACHE:-/var/cache/wgflow-vm}
[ -d "$CACHE" ] || exit 0
keep=("$(./image-dir.sh)" "$(./image-dir.sh box)")
for d in "$CACHE"/*; do
  [ -d "$d" ] || continue
  case "$(basename "$d")" in
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]|box-*) ;;
    *) continue ;;
  esac
  [[ " ${keep[*]} " == *" $d "* ]] && continue
  echo "vm: removing the image of an older recipe: $d" >&2
  rm -rf "$d"
done
