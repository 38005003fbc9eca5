#!/usr/bin/env bash
# Make this Debian machine able to run rum.pool's tests: the packages, libvirtd and its
# default network. Safe to run again; does only what is missing. Needs root (no systemd here:
# daemons are started by hand when they are not running).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$here/host-packages.txt"
if ((${#missing[@]})); then
  echo ">> installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Without udev, /dev/kvm stays root:root 0600; libvirt then probes KVM as present but unusable and
# every define stalls for minutes. Give it the group and mode udev would.
if [[ -c /dev/kvm ]] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo ">> starting virtlogd and libvirtd"
  pgrep -x virtlogd >/dev/null || virtlogd -d
  if ! pgrep -x libvirtd >/dev/null; then
    # libvirtd in the foreground under tini as a child subreaper: the qemu processes it starts (and
    # daemonizes) are reaped the moment they exit, as systemd reaps them on a real host. PID 1 here
    # reaps orphans late, and libvirt waits for a destroyed guest's process to be gone (a zombie
    # counts as alive): every destroy took 1.2-2 s instead of a quarter of one.
    mkdir -p /var/log/libvirt
    setsid tini -s -- libvirtd >>/var/log/libvirt/libvirtd-foreground.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -c qemu:///system version >/dev/null
fi

if ! virsh -c qemu:///system net-info default >/dev/null 2>&1; then
  echo ">> defining the libvirt default network"
  virsh -c qemu:///system net-define /usr/share/libvirt/networks/default.xml >/dev/null
fi
net_info=$(virsh -c qemu:///system net-info default)
if grep -q '^Active:.*no' <<<"$net_info"; then
  echo ">> starting the libvirt default network"
  virsh -c qemu:///system net-start default >/dev/null
fi
virsh -c qemu:///system net-autostart default >/dev/null 2>&1 || true
echo ">> libvirt ready ($(virsh -c qemu:///system version --daemon | sed -n 's/^Running against daemon: //p'))"
