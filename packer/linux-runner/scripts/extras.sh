#!/usr/bin/env bash
# Optional software (runs as root in the build VM). EXTRAS names recipes in EXTRAS_DIR/<name>.sh
# (an unknown name is an error, never a guess at a package name); EXTRA_PACKAGES are apt packages.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
EXTRAS_DIR=${EXTRAS_DIR:-/tmp/rum-extras}
read -r -a extras <<<"${EXTRAS:-}"
read -r -a packages <<<"${EXTRA_PACKAGES:-}"

available() {
  local f names=()
  for f in "$EXTRAS_DIR"/*.sh; do
    [[ -e "$f" ]] && names+=("$(basename "$f" .sh)")
  done
  echo "${names[*]:-none}"
}

for name in "${extras[@]}"; do
  if [[ ! "$name" =~ ^[a-z0-9][a-z0-9_-]*$ || ! -f "$EXTRAS_DIR/$name.sh" ]]; then
    echo "extras: no recipe '$name' in scripts/extras/ (available: $(available)); apt packages go in extra_packages" >&2
    exit 1
  fi
done
for name in "${packages[@]}"; do
  if [[ ! "$name" =~ ^[a-z0-9][a-z0-9.+:=~-]*$ ]]; then
    echo "extra_packages: '$name' is not an apt package name" >&2
    exit 1
  fi
done

for name in "${extras[@]}"; do
  echo ">> extra: $name"
  bash "$EXTRAS_DIR/$name.sh"
done
if ((${#packages[@]})); then
  echo ">> extra packages: ${packages[*]}"
  apt-get -o DPkg::Lock::Timeout=600 -y install --no-install-recommends "${packages[@]}"
fi
rm -rf "$EXTRAS_DIR"
