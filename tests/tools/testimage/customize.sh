#!/usr/bin/env bash
# mmdebstrap customize hook of the test image: ROOTFS is the finished tree (with /proc, /sys
# and /dev still mounted, so chroot works). Copies the rootfs/ overlay, applies the base
# settings, runs customize.d/*.sh (the place to extend the image), then removes everything that
# must be unique per guest (machine-id, SSH host keys) or is only build-time clutter.
set -euo pipefail
root=${1:?usage: customize.sh ROOTFS}
recipe=$(cd "$(dirname "$0")" && pwd)

# Overlay files: owned by root, modes as in git (0644 files, 0755 directories/scripts).
tar -C "$recipe/rootfs" --owner=0 --group=0 --no-same-owner -cf - . | tar -C "$root" -xf -

# No hostname baked in: cloud-init sets it from the seed.
echo localhost > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Networking by systemd-networkd, names by systemd-resolved (DNS servers from DHCP).
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
# Without a getty on tty1..6 nobody needs getty-static (it starts extra gettys when dbus is absent).
ln -sf /dev/null "$root/etc/systemd/system/getty-static.service"

# Extension point (e.g. a stand-in GitHub runner): every customize.d/*.sh gets ROOTFS as $1.
for script in "$recipe"/customize.d/*.sh; do
  [[ -e "$script" ]] || continue
  echo ">> customize.d/$(basename "$script")"
  bash "$script" "$root"
done

# Per-guest identity: generated on first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# Build-time clutter (resolv.conf stays the systemd-resolved stub link).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/var/log/*.log "$root"/var/log/apt/*
