#!/bin/sh
# Fills an empty directory with the busybox root filesystem.
#   $1                 the target directory (exists, empty)
#   $STOCKADE_BUSYBOX  the statically linked busybox to copy (default /bin/busybox)
# Every file is written fresh; the layer writer fixes owners, times and order, so the
# same busybox binary always gives the same image digest.
set -eu
t=$1
bb=${STOCKADE_BUSYBOX:-/bin/busybox}

# The binary must be static: the image has no libc.
if ! "$bb" true 2>/dev/null; then echo "$bb is not runnable" >&2; exit 1; fi

# Directory skeleton: the usual FHS directories, plus the mount points the runtime uses
# (/dev, /proc, /sys), the sandbox's /workspace and /input, and world-writable scratch.
mkdir -p "$t/bin" "$t/sbin" "$t/usr/bin" "$t/usr/sbin" "$t/etc" "$t/root" "$t/var/tmp" \
         "$t/run" "$t/dev" "$t/proc" "$t/sys" "$t/tmp" "$t/workspace" "$t/input"
chmod 0755 "$t" "$t/bin" "$t/sbin" "$t/usr" "$t/usr/bin" "$t/usr/sbin" "$t/etc" "$t/var" \
           "$t/run" "$t/dev" "$t/proc" "$t/sys" "$t/workspace" "$t/input"
chmod 0700 "$t/root"
chmod 1777 "$t/tmp" "$t/var/tmp"

# busybox itself.
cp "$bb" "$t/bin/busybox"
chmod 0755 "$t/bin/busybox"

# One absolute symlink per applet, where busybox's own installer would put it. One perl
# process (perl-base is Essential on Debian) makes all ~270 links; a shell loop would
# fork `ln` for each.
"$bb" --list-full | T="$t" perl -ne '
    chomp;
    next if $_ eq "bin/busybox" || -e "$ENV{T}/$_" || -l "$ENV{T}/$_";
    symlink("/bin/busybox", "$ENV{T}/$_") or die "$_: $!\n";
'

# Users: root, and nobody (65534) that sandboxes run as. No passwords anywhere.
cat > "$t/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$t/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
chmod 0644 "$t/etc/passwd" "$t/etc/group"

# Name resolution: only the loopback names; files only, no DNS configured by default.
cat > "$t/etc/hosts" <<'H'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
H
cat > "$t/etc/nsswitch.conf" <<'N'
passwd: files
group: files
hosts: files dns
N
chmod 0644 "$t/etc/hosts" "$t/etc/nsswitch.conf"
