#!/bin/sh
# PID 1 of the wgflow test VM (kernel command line: init=/sbin/wgflow-init). No systemd: mount
# what the tests need, mount the host's tree and the control share over virtio-9p, run the
# command the host left in the control share as root, write its exit status back, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -o remount,rw /
mkdir -p /run/netns /var/run/wireguard /vmctl /wgflow
echo wgflow-vm >/proc/sys/kernel/hostname
ip link set lo up
modprobe wireguard
modprobe 9pnet_virtio 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmctl /vmctl
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose wgflow /wgflow
out=/dev/ttyS0
[ -c /dev/hvc0 ] && out=/dev/hvc0
. /vmctl/env 2>/dev/null
echo "wgflow-vm: booted $(uname -r) in $(cut -d' ' -f1 /proc/uptime) s" >"$out"
cd /wgflow
setsid bash -c '. /vmctl/cmd' </dev/null >"$out" 2>&1
echo $? >/vmctl/rc.tmp
mv /vmctl/rc.tmp /vmctl/rc
sync
umount /wgflow /vmctl 2>/dev/null
echo o >/proc/sysrq-trigger
sleep 10
