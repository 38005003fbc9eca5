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
# getty-static starts extra gettys when dbus is absent; not wanted on a cloud guest.
# Periodic jobs would compete with tests for the (emulated) CPU: apt's daily runs, e2scrub.
masked=(getty-static.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service)
chroot "$root" systemctl disable --quiet "${masked[@]}" 2>/dev/null || true
chroot "$root" systemctl mask --quiet "${masked[@]}"

# Extension point (e.g. a stand-in GitHub runner): every customize.d/*.sh gets ROOTFS as $1.
for script in "$recipe"/customize.d/*.sh; do
  [[ -e "$script" ]] || continue
  echo ">> customize.d/$(basename "$script")"
  bash "$script" "$root"
done

# Per-guest identity, generated on first boot: an empty machine-id (mmdebstrap also removes
# /var/lib/dbus/machine-id; dbus then reads /etc/machine-id) and no SSH host keys.
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# Build-time logs. (mmdebstrap itself cleans the apt cache and lists after this hook, using
# its own files under /tmp: leave /tmp alone. resolv.conf stays the systemd-resolved stub link.)
rm -f "$root"/var/log/*.log "$root"/var/log/apt/*.log
