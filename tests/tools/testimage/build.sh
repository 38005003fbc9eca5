#!/usr/bin/env bash
# Build the rum.pool test guest image from Debian packages only (the apt mirror this machine
# already uses), so tests need nothing from the internet: a minimal bookworm with cloud-init,
# booted by extlinux from an MBR disk, as a qcow2.
#
#   build.sh OUT_DIR      (as root; OUT_DIR must be missing or empty)
#
# OUT_DIR then holds: disk.qcow2 (the image, 2 GiB virtual), vmlinuz, initrd.img and cmdline (for
# direct kernel boot: the same kernel command line extlinux uses), packages.lock (installed package versions), SHA256SUMS. Lines starting with
# ">> " are progress. Recipe: packages.txt, rootfs/, customize.sh, customize.d/ beside this file.
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR}
recipe=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
disk_size_mib=2048
part_start_mib=1
mbr=/usr/lib/EXTLINUX/mbr.bin
cmdline="root=LABEL=root ro console=tty0 console=ttyS0,115200n8"
# zlib-compressed qcow2: about a third of the size, and reading it back costs the guest ~nothing.
qcow2_opts=(-c -o compression_type=zlib)

step() { printf '>> %s [%ss]\n' "$*" "$SECONDS"; }
die() { echo "build.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (mmdebstrap --mode=root and a loop mount)"
missing=()
for pair in mmdebstrap:mmdebstrap extlinux:extlinux sfdisk:fdisk mkfs.ext4:e2fsprogs \
            qemu-img:qemu-utils losetup:mount; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[[ -r $mbr ]] || missing+=(extlinux)
((${#missing[@]} == 0)) || die "missing tools; install them with: apt-get install ${missing[*]}"

mkdir -p "$out"
out=$(cd "$out" && pwd)
[[ -z $(ls -A "$out") ]] || die "$out is not empty"
work="$out/.work"
mnt="$work/mnt"
root="$work/root"
umask 022
mkdir -p "$work"

cleanup() {
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
  # mmdebstrap unmounts /proc, /sys, /dev itself; this guards against a half-finished run.
  if [[ -d $root ]]; then
    awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l || true
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The Debian mirror(s) this machine's apt uses, for the same suite family. ($(...) in single
# quotes is apt's own format syntax, not the shell's.)
# shellcheck disable=SC2016
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
         | awk '$2 ~ /^[a-z]+$/ && $1 ~ /debian\/$/ {print $1; exit}')
# shellcheck disable=SC2016
security=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
           | awk '$2 ~ /-security$/ {print $1; exit}')
mirror=${RUM_TESTIMAGE_MIRROR:-${mirror:-http://deb.debian.org/debian/}}
security=${RUM_TESTIMAGE_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security/}}
sources=("deb ${mirror%/} $suite main" "deb ${mirror%/} $suite-updates main"
         "deb ${security%/} $suite-security main")

packages=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$recipe/packages.txt" | tr -s ' \n' ',,' | sed 's/,$//')

step "mmdebstrap $suite from ${mirror} (${packages})"
# The hooks are run by mmdebstrap's shell with the tree as $1: no expansion here.
# shellcheck disable=SC2016
mmdebstrap --variant=apt --mode=root --format=directory --verbose \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --include="$packages" \
  --customize-hook="'$recipe/customize.sh' \"\$1\"" \
  --customize-hook='chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" > "$1/.packages.lock"' \
  "$suite" "$root" "${sources[@]}"

shopt -s nullglob
kernels=("$root"/boot/vmlinuz-*)
((${#kernels[@]} == 1)) || die "expected one kernel in /boot, found ${#kernels[@]}"
kver=${kernels[0]##*/vmlinuz-}
[[ -f $root/boot/initrd.img-$kver ]] || die "no initrd for kernel $kver"
install -m 0644 "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
install -m 0644 "$root/boot/initrd.img-$kver" "$out/initrd.img"
mv "$root/.packages.lock" "$out/packages.lock"
echo "$cmdline" > "$out/cmdline"
chmod 0644 "$out/packages.lock" "$out/cmdline"

step "extlinux configuration for kernel $kver"
mkdir -p "$root/boot/extlinux"
cat > "$root/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND $cmdline
EOF

step "ext4 file system (-O ^64bit: extlinux cannot boot 64bit ext4)"
part_mib=$((disk_size_mib - part_start_mib))
truncate -s "${part_mib}M" "$work/part.raw"
mkfs.ext4 -q -F -L root -O ^64bit -E root_owner=0:0 -d "$root" "$work/part.raw"
rm -rf --one-file-system "$root"

step "MBR disk with one bootable partition"
truncate -s "${disk_size_mib}M" "$work/disk.raw"
printf 'label: dos\nstart=%dMiB, type=83, bootable\n' "$part_start_mib" | sfdisk -q "$work/disk.raw"
dd if="$work/part.raw" of="$work/disk.raw" bs=1M seek="$part_start_mib" conv=sparse,notrunc status=none
rm -f "$work/part.raw"
dd if="$mbr" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none

step "extlinux --install (loop mount of the partition)"
mkdir -p "$mnt"
mount -o "loop,offset=$((part_start_mib * 1024 * 1024))" "$work/disk.raw" "$mnt"
extlinux --install "$mnt/boot/extlinux" >/dev/null
umount "$mnt"

step "qemu-img convert -O qcow2 ${qcow2_opts[*]}"
qemu-img convert -O qcow2 "${qcow2_opts[@]}" "$work/disk.raw" "$out/disk.qcow2"
chmod 0644 "$out/disk.qcow2"

(cd "$out" && sha256sum disk.qcow2 vmlinuz initrd.img > SHA256SUMS && chmod 0644 SHA256SUMS)
step "done: $(du -h --apparent-size "$out/disk.qcow2" | cut -f1) disk.qcow2, kernel $kver"
