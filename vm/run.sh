#!/usr/bin/env bash
# Boots the wgflow test VM (vm/build-image.sh) with QEMU, runs one command in it as root in the
# repository (mounted read-write over virtio-9p at /wgflow), prints its output and exits with its
# exit status. No network device at all: the tests only talk between namespaces inside the guest.
#   vm/run.sh [--timeout SECONDS] [--cpus N] [--mem MB] [--env NAME=VALUE]... CMD [ARG...]
#   vm/run.sh uname -r
#   vm/run.sh --timeout 3600 node scripts/run-tests.mjs
# The guest gets WGFLOW_WG=kernel, and CI when the host has it. Accel: KVM when a quick probe shows
# that it runs this kernel (result cached per host kernel), else TCG with one host thread for all
# vCPUs (-accel tcg,thread=single). With thread=multi one CI run panicked the guest in
# netif_rx_internal with RIP one byte past a static-branch site, which reads as an int3 left by
# kernel text patching (TC attach/detach toggles static keys) and run from a stale translation on
# the other vCPU; it never showed here in some 20 runs, so single-threaded TCG is the cautious choice.
# QEMU is always ended by its PID (timeout, Ctrl-C, error); only one VM runs at a time (a lock).
# Exit status: the command's; 124 on timeout; 125 when the VM could not start or finish.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
timeout=1800 cpus=2 mem=4096 envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) echo "vm/run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: vm/run.sh [--timeout S] [--cpus N] [--mem MB] [--env K=V] CMD [ARG...]" >&2; exit 2; }

die() { echo "vm/run.sh: $*" >&2; exit 125; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
img=$("$here/image-dir.sh")
for f in disk.img vmlinuz initrd.img; do
  [ -f "$img/$f" ] || die "no VM image at $img (build it: make vm-image)"
done
cache=$(dirname "$img")

ctl=$(mktemp -d /tmp/wgflow-vm.XXXXXX)
chmod 0755 "$ctl"
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.3; done
    kill -KILL "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
  fi
  rm -rf "$ctl"
}
trap cleanup EXIT
trap 'echo "vm/run.sh: interrupted" >&2; exit 130' INT TERM HUP

# One VM at a time on this machine (2 vCPUs): wait for the lock.
exec 9>"$cache/vm.lock"
if ! flock -n 9; then
  echo "vm/run.sh: another VM is running; waiting for it" >&2
  flock 9
fi

# boot ACCEL TIMEOUT LOGFILE: start qemu in the background, wait for it; sets qpid while it runs.
boot() {
  local accel=$1 limit=$2 log=$3 cpu
  if [ "$accel" = kvm ]; then accel="kvm"; cpu=host; else accel="tcg,thread=single"; cpu=max; fi
  rm -f "$ctl/rc"
  qemu-system-x86_64 -name wgflow-vm -accel "$accel" -cpu "$cpu" -smp "$cpus" -m "$mem" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial stdio -monitor none \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet loglevel=1 init=/sbin/wgflow-init panic=-1 mitigations=off" \
    -drive "file=$img/disk.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
    -virtfs "local,path=$repo,mount_tag=wgflow,security_model=none,id=wgflow" \
    -virtfs "local,path=$ctl,mount_tag=vmctl,security_model=none,id=vmctl" \
    -nic none </dev/null > >(sed -u 's/\r$//' | tee "$log") 2>&1 &
  qpid=$!
  local t=0
  while kill -0 "$qpid" 2>/dev/null; do
    if [ "$t" -ge "$limit" ]; then
      echo "vm/run.sh: timed out after $limit s: killing qemu (pid $qpid)" >&2
      kill -KILL "$qpid" 2>/dev/null
      wait "$qpid" 2>/dev/null
      qpid=""
      return 124
    fi
    sleep 1; t=$((t + 1))
  done
  wait "$qpid"
  local qrc=$?
  qpid=""
  sleep 0.2 # let tee finish
  if [ ! -f "$ctl/rc" ]; then
    echo "vm/run.sh: qemu exited ($qrc) without the command's exit status" >&2
    # A guest oops scrolls its first lines away in a tail of the log: repeat them.
    if grep -q -E 'Kernel panic|Oops|BUG:' "$log" 2>/dev/null; then
      echo "vm/run.sh: the guest kernel crashed; its first report lines:" >&2
      grep -m 8 -E 'Oops|BUG:|RIP:|Comm:|int3|invalid opcode|Kernel panic' "$log" | sed 's/^/vm\/run.sh:   /' >&2
    fi
    return 125
  fi
  return "$(cat "$ctl/rc")"
}

# Which accelerator: KVM only if a probe boot with it finishes (nested KVM here cannot run a stock
# kernel); the answer is kept per host kernel so that the probe runs once.
accel=${WGFLOW_VM_ACCEL:-}
if [ -z "$accel" ]; then
  probe_file="$cache/accel-$(uname -r)"
  if [ -f "$probe_file" ]; then
    accel=$(cat "$probe_file")
  elif [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    echo "vm/run.sh: probing KVM (one boot, at most 60 s)" >&2
    printf 'true\n' >"$ctl/cmd"; : >"$ctl/env"
    if boot kvm 60 "$ctl/probe.log" >/dev/null 2>&1; then accel=kvm; else accel=tcg; fi
    echo "$accel" >"$probe_file"
  else
    accel=tcg
  fi
fi

# The command and its environment, for the guest's init. Its output goes through a pipe, not the
# guest's serial tty: programs then print as they would in CI (no colours, no cursor codes).
{
  printf '{ '; printf '%q ' "$@"; printf '; } 2>&1 | cat\nexit "${PIPESTATUS[0]}"\n'
} >"$ctl/cmd"
{
  echo "export WGFLOW_WG=kernel"
  [ -n "${CI:-}" ] && printf 'export CI=%q\n' "$CI"
  for e in "${envs[@]}"; do printf 'export %q\n' "$e"; done
} >"$ctl/env"

start=$(date +%s)
echo "vm/run.sh: booting $(basename "$img") with $accel, $cpus CPUs, $mem MB; running: $*" >&2
boot "$accel" "$timeout" "$ctl/console.log"
rc=$?
echo "vm/run.sh: exit status $rc after $(( $(date +%s) - start )) s ($accel)" >&2
exit "$rc"
