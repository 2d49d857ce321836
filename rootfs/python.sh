#!/bin/sh
# Fills an empty directory with a Debian root filesystem that has Python 3.
#   $1                 the target directory (exists, empty)
#   $STOCKADE_MIRROR   the Debian mirror apt on this host uses (from /etc/apt/sources.list*)
#   $STOCKADE_SUITE    the suite, e.g. bookworm
# Needs root (mmdebstrap's root mode) and network access to the mirror only.
set -eu
t=$1
mirror=${STOCKADE_MIRROR:-http://deb.debian.org/debian}
suite=${STOCKADE_SUITE:-bookworm}

# Debian's Essential packages plus python3 and its standard library, without recommends.
# The merged-/usr hook lays out /bin -> usr/bin itself and installs usr-is-merged, so apt
# does not pull in usrmerge and, through it, 46 MB of perl.
# dpkg is told never to unpack documentation, manuals or translations, so they cost no time.
mmdebstrap --mode=root --variant=essential --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3 \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    "$suite" "$t" "$mirror"

# Bytecode for the whole standard library, checked by hash instead of by source mtime: the
# layer writer fixes every mtime, and the root filesystem is read-only at run time, so
# timestamp-checked .pyc files would be recompiled (in memory) on every import.
chroot "$t" /usr/bin/python3 -m compileall -q -f -j 0 \
    --invalidation-mode unchecked-hash /usr/lib/python3 /usr/lib/python3.11 >/dev/null

# Nothing apt or dpkg leave behind is needed at run time, nor what maintainer scripts
# generate into the excluded documentation directories (install-info's info/dir).
rm -rf "$t/var/cache/apt/"* "$t/var/lib/apt/lists/"* "$t/var/log/"* \
       "$t/var/cache/debconf/"*-old "$t/var/lib/dpkg/"*-old \
       "$t/usr/share/info/"* "$t/usr/share/man/"* "$t/usr/share/locale/"*

# The sandbox's mount points (/dev, /proc, /sys, /tmp exist already).
mkdir -p "$t/workspace" "$t/input"
chmod 0755 "$t/workspace" "$t/input"
chmod 1777 "$t/tmp"
