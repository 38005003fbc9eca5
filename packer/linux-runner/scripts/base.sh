#!/usr/bin/env bash
# Base system of the runner image (runs as root in the build VM): wait for the build seed's
# cloud-init run to finish, switch off background package jobs that would fight a CI job for the
# dpkg lock, bring the system up to date and add what the runner and most jobs need.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

echo ">> waiting for cloud-init"
# Exit code 2 means "done, with recoverable errors" on newer cloud-init: still done.
cloud-init status --wait >/dev/null || [[ $? -eq 2 ]]
cloud-init status --long || true

. /etc/os-release
case "${ID}:${VERSION_ID}" in
  ubuntu:24.04 | debian:12) echo ">> base image: ${PRETTY_NAME}" ;;
  *) echo ">> WARNING: ${PRETTY_NAME} is not a tested base (Ubuntu 24.04, Debian 12)" >&2 ;;
esac

# A runner VM lives for one job and the image is rebuilt regularly: no background apt runs,
# no unattended upgrades holding the dpkg lock while a job wants it.
for unit in apt-daily.timer apt-daily-upgrade.timer; do
  systemctl disable --now "$unit" 2>/dev/null || true
  systemctl mask "$unit"
done
apt_get() {
  apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold -y "$@"
}
apt_get purge unattended-upgrades 2>/dev/null || true

echo ">> upgrading packages"
apt_get update
apt_get dist-upgrade
apt_get install --no-install-recommends \
  ca-certificates curl git jq tar unzip xz-utils zstd gnupg sudo
apt_get autoremove --purge
