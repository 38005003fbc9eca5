# Copy to my.pkrvars.hcl, fill in, and run: ./build.sh -var-file=my.pkrvars.hcl
#
# The runner release and the SHA-256 of actions-runner-linux-x64-<version>.tar.gz are on
# https://github.com/actions/runner/releases (each release's notes list the hashes). Use the newest
# release: GitHub stops sending jobs to a runner 30 days after a newer release is out, and JIT
# runners never update themselves, so rebuild the image at least every few weeks.
runner_version = "REPLACE-with-e.g.-2.330.0"
runner_sha256  = "REPLACE-with-the-64-hex-sha256-of-the-linux-x64-tarball"

# The base cloud image. Pin a dated build for reproducible images, for example
#   https://cloud-images.ubuntu.com/noble/<YYYYMMDD>/noble-server-cloudimg-amd64.img
# Debian 12 works too (the genericcloud image has a smaller kernel, generic has every driver):
#   iso_url      = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
#   iso_checksum = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
iso_url      = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
iso_checksum = "file:https://cloud-images.ubuntu.com/noble/current/SHA256SUMS"

# Optional recipes from scripts/extras/ (docker), and more apt packages.
extras         = ["docker"]
extra_packages = ["build-essential"]

# "tcg" where KVM is missing or broken (nested "kvm-pvm"): works, but takes far longer.
accelerator = "kvm"
