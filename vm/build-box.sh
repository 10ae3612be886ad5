#!/usr/bin/env bash
# Turns the box variant of the VM image (vm/build-image.sh --box) into a local Vagrant box for
# libvirt: a qcow2 disk, metadata.json and a box Vagrantfile that boots the image's own kernel and
# initrd directly (no bootloader in the image). Writes $WGFLOW_VM_CACHE/wgflow-trixie-libvirt.box,
# which the repository's Vagrantfile uses when it exists (`vagrant up --provider=libvirt`).
# Needs root and qemu-img (qemu-utils).
set -euo pipefail
cd "$(dirname "$0")"
CACHE=${WGFLOW_VM_CACHE:-/var/cache/wgflow-vm}
command -v qemu-img >/dev/null || {
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils >&2
}
dir=$(./build-image.sh --box)
box="$CACHE/wgflow-trixie-libvirt.box"
if [ -f "$dir/wgflow-trixie-libvirt.box" ] && [ "$(readlink -f "$box" 2>/dev/null)" = "$dir/wgflow-trixie-libvirt.box" ]; then
  echo "$box"
  exit 0
fi
stage=$(mktemp -d "$CACHE/box.XXXXXX")
trap 'rm -rf "$stage"' EXIT
qemu-img convert -O qcow2 "$dir/disk.img" "$stage/box.img"
cp "$dir/vmlinuz" "$dir/initrd.img" "$stage/"
size_gb=$(( ($(stat -c %s "$dir/disk.img") + (1 << 30) - 1) >> 30 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$size_gb" >"$stage/metadata.json"
cat >"$stage/Vagrantfile" <<'BOX'
# wgflow's local Debian 13 box: direct kernel boot of the image's own kernel (no bootloader).
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    here = File.dirname(__FILE__)
    lv.kernel = File.join(here, "vmlinuz")
    lv.initrd = File.join(here, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    lv.disk_bus = "virtio"
  end
end
BOX
tar -C "$stage" -czf "$dir/wgflow-trixie-libvirt.box" metadata.json Vagrantfile box.img vmlinuz initrd.img
ln -sfn "$dir/wgflow-trixie-libvirt.box" "$box"
echo "$box"
