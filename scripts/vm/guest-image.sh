#!/usr/bin/env bash
# Builds the VM lane's guest from Debian packages only: the kernel of the Debian cloud image
# (NVMe and ext4 built in, so it boots without an initramfs) and an ext4 root filesystem
# with containerd, runc, AppArmor and the kernel's own modules (overlayfs is a module there).
#
#   scripts/vm/guest-image.sh OUTDIR KERNEL_PACKAGE
#
# Writes OUTDIR/vmlinuz, OUTDIR/root.img and OUTDIR/kernel-release. vm-test.sh caches OUTDIR
# under a key that hashes this file, so every change here rebuilds the guest; what changes
# from run to run (stockade, the guest scripts, test binaries) is not in the image but in a
# payload the guest unpacks at boot.
set -euo pipefail

out=${1:?usage: guest-image.sh OUTDIR KERNEL_PACKAGE}
kpkg=${2:?usage: guest-image.sh OUTDIR KERNEL_PACKAGE}

# What runs in the guest and why:
#   containerd, runc          the runtime stockade drives
#   crun                      the other OCI runtime `--runc-binary crun` selects
#   apparmor                  apparmor_parser, to load stockade-default into the kernel
#   libseccomp2               stockade's seccomp filters (linked dynamically)
#   busybox-static            the busybox base image `stockade image build busybox` makes
#   kmod                      modprobe for overlayfs and loop, which the cloud kernel has as modules
#   e2fsprogs                 mkfs.ext4 for the bounded volumes of --disk (losetup is in mount)
#   iproute2                  network namespace tests
#   jq                        the checks read `stockade run --json` and `doctor --json`
#   procps, util-linux, mount ps/kill, mountpoint, mount in the guest init
#   python3                   the seccomp behaviour tests run the host's interpreter
packages=(containerd runc crun apparmor libseccomp2 busybox-static kmod iproute2 jq procps
          util-linux mount e2fsprogs python3)

work=$(mktemp -d "${TMPDIR:-/var/tmp}/stockade-vm-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The kernel package: vmlinuz and the module tree.
(cd "$work" && apt-get download -qq "$kpkg" 2>/dev/null && dpkg-deb -x ./*.deb kernel)
kver=$(ls "$work/kernel/lib/modules")
cfg="$work/kernel/boot/config-$kver"
for opt in SECURITY_APPARMOR MEMCG CGROUP_PIDS BLK_DEV_NVME EXT4_FS; do
  grep -q "^CONFIG_$opt=y" "$cfg" || { echo "guest-image: $kpkg lacks CONFIG_$opt=y" >&2; exit 1; }
done
grep -q '^CONFIG_OVERLAY_FS=[ym]' "$cfg" || { echo "guest-image: $kpkg lacks overlayfs" >&2; exit 1; }

rootfs="$work/rootfs"
mmdebstrap -q --variant=essential --mode=root --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$rootfs"

# Modules the guest may load: filesystems (overlay), networking (veth, bridge, netfilter),
# and the libraries they need. Drivers stay out: the devices the guest uses are built in.
mdir="$rootfs/lib/modules/$kver"
mkdir -p "$mdir/kernel"
cp -a "$work/kernel/lib/modules/$kver/kernel/"{fs,net,lib,crypto} "$mdir/kernel/"
# The loop driver (a module in the cloud kernel): --disk's bounded volumes are loop-mounted.
mkdir -p "$mdir/kernel/drivers/block"
cp -a "$work/kernel/lib/modules/$kver/kernel/drivers/block/"loop.ko* "$mdir/kernel/drivers/block/"
cp -a "$work/kernel/lib/modules/$kver/"modules.{order,builtin,builtin.modinfo} "$mdir/"
chroot "$rootfs" depmod -a "$kver"
chroot "$rootfs" modinfo -k "$kver" overlay >/dev/null
chroot "$rootfs" modinfo -k "$kver" loop >/dev/null

# containerd without the CRI plugin (no Kubernetes here), on its default socket.
printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' \
  >"$rootfs/etc/containerd/config.toml"
echo stockade-vm >"$rootfs/etc/hostname"
: >"$rootfs/etc/machine-id"

# The kernel runs this as PID 1. It unpacks the run's payload (a tar on the second NVMe
# namespace) over / and hands over to the payload's own init, so the image stays the same
# from run to run.
cat >"$rootfs/sbin/stockade-vm-init" <<'EOF'
#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
if tar -xf /dev/nvme0n2 -C / && [ -x /vm/init.sh ]; then
  exec /vm/init.sh
fi
echo "RESULT payload=fail cannot unpack /dev/nvme0n2"
echo "VM-DONE rc=1"
sync
busybox poweroff -f
EOF
chmod 0755 "$rootfs/sbin/stockade-vm-init"

# Free space for containerd's content store and snapshots. The file is sparse, and the VM
# writes to a throwaway overlay of it (QEMU snapshot=on), so the cached image never changes.
size=$(($(du -sm "$rootfs" | cut -f1) + 1536))
mkfs.ext4 -q -F -L stockade-root -d "$rootfs" "$work/root.img" "${size}M"

mkdir -p "$out"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
mv "$work/root.img" "$out/root.img"
echo "$kver" >"$out/kernel-release"
