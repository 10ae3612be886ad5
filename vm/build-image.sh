#!/usr/bin/env bash
# Builds the wgflow test VM image from Debian packages only: Debian 13 (trixie), its kernel 6.12
# with wireguard.ko, Node 20 and the build/test tools of vm/packages.txt. Needs root, mmdebstrap
# and e2fsprogs (no loop devices, no network but Debian's archive).
#
# The image is cached outside the repository, in $WGFLOW_VM_CACHE (default /var/cache/wgflow-vm),
# under a hash of its recipe (this script, vm/packages.txt, vm/guest-init.sh): a second run, or
# CI on the same machine, finds it and returns at once. Prints the image directory on stdout.
#   vm/build-image.sh            # build if missing, print the directory
#   vm/build-image.sh --force    # rebuild
#   vm/build-image.sh --box      # the Vagrant box's image instead (vm/build-box.sh): systemd, sshd,
#                                # the vagrant user with Vagrant's insecure key, DHCP on the NIC
set -euo pipefail
cd "$(dirname "$0")"
MIRROR=${WGFLOW_VM_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
CACHE=${WGFLOW_VM_CACHE:-/var/cache/wgflow-vm}
variant=test force=""
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --box) variant=box ;;
    *) echo "vm/build-image.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
dir=$(./image-dir.sh "$variant")

if [ -z "$force" ] && [ -f "$dir/disk.img" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
  echo "$dir"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "vm/build-image.sh: needs root (mmdebstrap, device nodes)" >&2; exit 1; }
for tool in mmdebstrap mke2fs qemu-system-x86_64; do
  command -v "$tool" >/dev/null || missing="${missing:-} $tool"
done
if [ -n "${missing:-}" ]; then
  echo "installing mmdebstrap, e2fsprogs, qemu-system-x86 (missing:${missing})" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap e2fsprogs qemu-system-x86 >&2
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir "$root"
start=$(date +%s)
# The time stamps of what the image holds come from this date (reproducible builds' convention).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}
lists=(packages.txt)
hooks=(--customize-hook='install -m 0755 guest-init.sh "$1/sbin/wgflow-init"')
if [ "$variant" = box ]; then
  lists+=(box-packages.txt)
  # Vagrant's well-known insecure key, from Debian's vagrant package (a box for local use only).
  key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n 1)
  [ -n "$key" ] || { echo "vm/build-image.sh --box: needs Debian's vagrant package (its insecure key)" >&2; exit 1; }
  cp "$key" "$work/vagrant.pub"
  hooks+=(
    --customize-hook='chroot "$1" useradd -m -s /bin/bash -G sudo vagrant'
    --customize-hook='echo "vagrant:vagrant" | chroot "$1" chpasswd'
    --customize-hook='echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/vagrant"; chmod 0440 "$1/etc/sudoers.d/vagrant"'
    --customize-hook="install -d -m 0700 -o 1000 -g 1000 \"\$1/home/vagrant/.ssh\"; install -m 0600 -o 1000 -g 1000 $work/vagrant.pub \"\$1/home/vagrant/.ssh/authorized_keys\""
    --customize-hook='printf "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/80-dhcp.network"'
    --customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-resolved ssh'
    --customize-hook='printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"'
    --customize-hook='echo wireguard > "$1/etc/modules-load.d/wireguard.conf"'
  )
fi
include=$(cat "${lists[@]}" | grep -vE '^\s*(#|$)' | tr '\n' ',' | sed 's/,$//')
echo "building the trixie image in $dir (takes 1-3 minutes)" >&2
mmdebstrap --mode=root --variant=apt --format=directory --components=main \
  --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --include="$include" \
  "${hooks[@]}" \
  --customize-hook='echo wgflow-vm > "$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1 localhost wgflow-vm\n::1 localhost\n" > "$1/etc/hosts"' \
  --customize-hook='mkdir -p "$1/wgflow" "$1/vmctl" "$1/var/run/wireguard"' \
  --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "$1/etc/wgflow-vm-packages"' \
  --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
  "$SUITE" "$root" "$MIRROR" >&2

vmlinuz=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n 1)
[ -f "$vmlinuz" ] && [ -f "$initrd" ] || { echo "no kernel or initrd in the image" >&2; exit 1; }
cp "$vmlinuz" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
cp "$root/etc/wgflow-vm-packages" "$work/packages.lock"
# The disk: the tree plus 2 GiB of room for the tests (spools, captures, node's caches).
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$((used_mb + 2048))
mke2fs -q -t ext4 -L wgflow-root -E root_owner=0:0 -d "$root" "$work/disk.img" "${size_mb}M" >&2
rm -rf "$root"
cat "${lists[@]}" > "$work/recipe-packages.txt"
echo "built in $(( $(date +%s) - start )) s: $(basename "$vmlinuz"), $(grep -E '^(nodejs|libbpf1|clang|wireguard-tools) ' "$work/packages.lock" | tr '\n' ' ')" >&2
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "$dir"
