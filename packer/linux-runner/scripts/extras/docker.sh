#!/usr/bin/env bash
# Docker Engine from the distribution (docker.io) for container jobs and `docker build`; the
# runner user may use it without sudo. Runs as root; RUNNER_USER comes from the build.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${RUNNER_USER:?}"
apt-get -o DPkg::Lock::Timeout=600 -y install --no-install-recommends docker.io containerd iptables
systemctl enable docker.service containerd.service
usermod --append --groups docker "$RUNNER_USER"
