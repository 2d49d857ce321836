#!/bin/bash
# PID 1 of the VM lane's guest (after /sbin/stockade-vm-init unpacked the payload). Sets up
# a host as stockade expects one (pure cgroup v2 with nsdelegate, AppArmor's securityfs,
# overlayfs, containerd without CRI on its default socket), reports each step as a RESULT
# line on the serial console, runs /vm/checks.sh and the integration test binaries, then
# powers off. The host side (scripts/vm-test.sh) reads the console.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

# shellcheck source=/dev/null
. /vm/env

R() { # name pass|fail detail...
  local name=$1 verdict=$2
  shift 2
  echo "RESULT $name=$verdict $*"
}
up() { cut -d' ' -f1 /proc/uptime; }
finish() {
  echo "VM-DONE uptime=$(up)"
  sync
  busybox poweroff -f
}

mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts 2>/dev/null ||
  { mkdir -p /dev/pts && mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts; }
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
# A checkout under /tmp arrives in the payload at its host path (the source tree and the test
# binaries): a tmpfs there would hide it, so /tmp stays on the guest's disk in that case.
if [ -z "$(ls -A /tmp 2>/dev/null)" ]; then
  mount -t tmpfs -o mode=1777 tmpfs /tmp
else
  chmod 1777 /tmp
fi
mount -t securityfs securityfs /sys/kernel/security
# nsdelegate: cgroup namespaces are delegation boundaries, as systemd mounts it.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
# Keep kernel messages off the console (they would split RESULT lines); dmesg still has them.
dmesg -n 1
hostname stockade-vm
ip link set lo up

R boot pass "kernel=$(uname -r) init_uptime=$(up)s cpus=$(nproc) mem=$(awk '/MemTotal/{print $2"kB"}' /proc/meminfo)"

# cgroup v2 only: the unified hierarchy with the limit controllers delegated to children,
# and not one v1 hierarchy mounted.
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
fstype=$(stat -fc %T /sys/fs/cgroup)
subtree=$(cat /sys/fs/cgroup/cgroup.subtree_control)
v1=$(awk '$3 == "cgroup"' /proc/mounts | wc -l)
if [[ $fstype == cgroup2fs && $v1 == 0 && " $subtree " == *" memory "* &&
  " $subtree " == *" pids "* && " $subtree " == *" cpu "* ]]; then
  R cgroup2 pass "fs=$fstype subtree_control=[$subtree] v1_mounts=0"
else
  R cgroup2 fail "fs=$fstype subtree_control=[$subtree] v1_mounts=$v1"
fi

lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)
aa=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)
if [[ $aa == Y && ,$lsm, == *,apparmor,* && -e /sys/kernel/security/apparmor/profiles ]]; then
  R apparmor-kernel pass "enabled=$aa lsm=$lsm"
else
  R apparmor-kernel fail "enabled=${aa:-?} lsm=${lsm:-?}"
fi

if out=$(modprobe overlay 2>&1) && grep -qw overlay /proc/filesystems; then
  R overlay pass "overlay module $(modinfo -F vermagic overlay | cut -d' ' -f1) loaded"
else
  R overlay fail "modprobe overlay: $out"
fi

# Disk limits put a writable root's upper layer on a loop-mounted volume.
modprobe loop 2>/dev/null || true

containerd >/run/containerd.log 2>&1 &
for _ in $(seq 600); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
if v=$(ctr version 2>&1); then
  R containerd pass "ready at uptime $(up)s, server $(echo "$v" | awk '/Server:/{s=1} s && /Version:/{print $2; exit}'), runc $(runc --version | awk 'NR==1{print $3}')"
else
  R containerd fail "not ready after 60s: $(tail -n 3 /run/containerd.log | tr '\n' ' ')"
fi

if v=$(stockade --version 2>&1); then
  R stockade pass "$v"
else
  R stockade fail "$v"
fi

/vm/checks.sh

# The crate's integration tests, with the absolute paths they were built for. CI=true
# makes a test that would skip for lack of something fail instead.
# Each entry is NAME=EXECUTABLE[=ARG,ARG...].
for t in $VM_TESTS; do
  IFS== read -r name exe args <<<"$t"
  IFS=, read -ra args <<<"${args:-}"
  start=$(up)
  echo "---- cargo test --test $name ${args[*]} (in the guest)"
  (cd "$VM_REPO" && CI=${VM_CI:-true} RUST_BACKTRACE=1 timeout "$VM_TEST_TIMEOUT" "$exe" \
    --test-threads=2 "${args[@]}") >/run/test-$name.log 2>&1
  rc=$?
  sed 's/^/test| /' /run/test-$name.log
  summary=$(grep -a '^test result:' /run/test-$name.log | tail -n 1)
  took=$(awk -v a="$start" -v b="$(up)" 'BEGIN{printf "%.1f", b - a}')
  if ((rc == 0)); then
    R "test:$name" pass "${took}s ${summary:-no summary}"
  else
    R "test:$name" fail "exit $rc after ${took}s ${summary:-no summary}"
  fi
done

finish
