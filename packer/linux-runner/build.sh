#!/usr/bin/env bash
# Build the runner image: make a throw-away SSH key and the build VM's cloud-init seed, run
# `packer build` on this directory, and print the runner_pool_image settings for the result.
#
#   ./build.sh -var-file=my.pkrvars.hcl [more packer build options]
#   ./build.sh --prepare DIR        only write DIR/{key,key.pub,user-data,meta-data}
#
# Environment: IMAGE_NAME (default rum-runner-<UTC date and time>), OUTPUT_DIR (default
# output/<IMAGE_NAME>, must not exist), BUILD_USER (default packer), PACKER (default packer).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
packer=${PACKER:-packer}
build_user=${BUILD_USER:-packer}

die() { echo "build.sh: $*" >&2; exit 1; }

# Write the throw-away key pair and the seed into $1 (mode 0700; the key never leaves it).
prepare() {
  local dir=$1 pub instance
  [[ "$build_user" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "BUILD_USER '$build_user' is not a valid user name"
  command -v ssh-keygen >/dev/null || die "ssh-keygen is missing (apt-get install openssh-client)"
  install -d -m 0700 "$dir"
  rm -f "$dir/key" "$dir/key.pub"
  ssh-keygen -q -t ed25519 -N '' -C "rum-runner-build" -f "$dir/key"
  pub=$(cat "$dir/key.pub")
  instance="rum-runner-build-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  sed -e "s|@BUILD_USER@|$build_user|" -e "s|@SSH_PUBLIC_KEY@|$pub|" \
    "$here/seed/user-data.in" > "$dir/user-data"
  sed -e "s|@INSTANCE_ID@|$instance|" "$here/seed/meta-data.in" > "$dir/meta-data"
}

if [[ "${1:-}" == "--prepare" ]]; then
  [[ -n "${2:-}" ]] || die "usage: build.sh --prepare DIR"
  prepare "$2"
  exit 0
fi

command -v "$packer" >/dev/null || die "packer is missing: apt-get install packer (Debian), or https://developer.hashicorp.com/packer/install"
command -v xorriso >/dev/null || command -v mkisofs >/dev/null || command -v genisoimage >/dev/null \
  || die "Packer needs xorriso (or mkisofs) to write the seed CD: apt-get install xorriso"

# Packer 1.10 and later no longer carry the qemu builder: install the plugin once.
version=$("$packer" version | head -n1 | sed -E 's/^Packer v?([0-9]+)\.([0-9]+).*/\1 \2/')
read -r major minor <<<"$version"
if ((major > 1 || minor >= 10)); then
  if ! "$packer" plugins installed 2>/dev/null | grep -q 'hashicorp/qemu'; then
    echo ">> installing the Packer qemu plugin"
    "$packer" plugins install github.com/hashicorp/qemu
  fi
fi

image_name=${IMAGE_NAME:-rum-runner-$(date -u +%Y%m%d-%H%M)}
output_dir=${OUTPUT_DIR:-output/$image_name}
[[ ! -e "$output_dir" ]] || die "$output_dir exists already: remove it or set OUTPUT_DIR"

work=$(mktemp -d "${TMPDIR:-/tmp}/rum-runner-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
prepare "$work/seed"

"$packer" build \
  -var "seed_dir=$work/seed" \
  -var "ssh_private_key_file=$work/seed/key" \
  -var "ssh_username=$build_user" \
  -var "image_name=$image_name" \
  -var "output_directory=$output_dir" \
  "$@" "$here"

image="$output_dir/$image_name.qcow2"
[[ -f "$image" ]] || die "packer finished but $image is missing"
sums="$output_dir/SHA256SUMS"
if [[ ! -s "$sums" ]]; then
  (cd "$output_dir" && sha256sum "$image_name.qcow2" > SHA256SUMS)
fi
digest=$(sha256sum "$image" | cut -d' ' -f1)
grep -q "$digest" "$sums" || die "$sums does not list the digest of $image ($digest)"

cat <<EOT

Built $image
sha256 $digest

Publish the image where your hypervisor hosts can read it (HTTPS, or a file:// path on each host),
then in group_vars of the hypervisors group:

runner_pool_image:
  url: https://images.example.com/runners/$image_name.qcow2
  checksum: sha256:$digest
EOT
