#!/usr/bin/env bash
# Make the image generic (runs as root, last): every VM made from it must provision itself from
# its own seed, with its own machine-id and SSH host keys. The build user is removed by Packer's
# shutdown command, because it is the one logged in now.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get -y autoremove --purge
apt-get clean
# Package lists go stale; jobs run `apt-get update` first (as on GitHub-hosted runners).
rm -rf /var/lib/apt/lists/*

# cloud-init: forget this instance, its logs and the machine-id, so the next boot is a first boot.
if cloud-init clean --help 2>&1 | grep -q -- '--machine-id'; then
  cloud-init clean --logs --machine-id
else
  cloud-init clean --logs
  truncate -s 0 /etc/machine-id
fi
# systemd makes a new machine-id at boot when the file is empty (or says "uninitialized").
[[ -e /etc/machine-id ]] || : > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# The build seed's network config is regenerated on the next boot.
rm -f /etc/netplan/50-cloud-init.yaml /etc/systemd/network/10-cloud-init-*.network

rm -f /etc/ssh/ssh_host_*
rm -rf /tmp/* /var/tmp/* /root/.bash_history /root/.cache
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' \) -delete
find /var/log -type f -exec truncate -s 0 {} +

# Hand unused blocks back so that the qcow2 compacts well (the disk is attached with discard).
fstrim --all --verbose || true
sync
