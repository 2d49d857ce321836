#!/bin/sh
# Fills an empty directory with a Debian root filesystem that has Node.js.
#   $1                 the target directory (exists, empty)
#   $STOCKADE_MIRROR   the Debian mirror apt on this host uses (from /etc/apt/sources.list*)
#   $STOCKADE_SUITE    the suite, e.g. bookworm
# Needs root (mmdebstrap's root mode) and network access to the mirror only.
set -eu
t=$1
mirror=${STOCKADE_MIRROR:-http://deb.debian.org/debian}
suite=${STOCKADE_SUITE:-bookworm}

# Debian's Essential packages plus nodejs and the libraries it links, without recommends
# (so without npm and nodejs-doc); the same merged-/usr hook and dpkg exclusions as the
# python recipe.
mmdebstrap --mode=root --variant=essential --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=nodejs \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    "$suite" "$t" "$mirror"

# Nothing apt or dpkg leave behind is needed at run time.
rm -rf "$t/var/cache/apt/"* "$t/var/lib/apt/lists/"* "$t/var/log/"* \
       "$t/var/cache/debconf/"*-old "$t/var/lib/dpkg/"*-old \
       "$t/usr/share/info/"* "$t/usr/share/man/"* "$t/usr/share/locale/"*

# The sandbox's mount points (/dev, /proc, /sys, /tmp exist already).
mkdir -p "$t/workspace" "$t/input"
chmod 0755 "$t/workspace" "$t/input"
chmod 1777 "$t/tmp"
