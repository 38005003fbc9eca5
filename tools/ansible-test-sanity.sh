#!/usr/bin/env bash
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Run `ansible-test sanity` on this checkout, offline apart from PyPI.
#
# Why the detours:
# - ansible-test wants the collection at .../ansible_collections/<ns>/<name> as a real directory
#   (the .collections symlink is refused), so the tracked + untracked-not-ignored files are copied
#   to .sanity/ansible_collections/rum/pool. The copy gets its own `git init` so ansible-test lists
#   files from it rather than from this checkout, where .sanity/ is ignored.
# - Each sanity venv is bootstrapped with a get-pip script that ansible-test downloads from a host
#   that is unreachable here. It looks in ~/.ansible/test/cache/get_pip_<ver>.py first, so an
#   offline stand-in is written there: ensurepip, then pip==<ver> from PyPI.
# - There is no pwsh here: validate-modules cannot read a .ps1 argument spec and crashes. When .ps1
#   modules exist and pwsh is missing, validate-modules runs without them (and their .py doc
#   siblings) and a notice says so; every other test still sees them.
#
# Usage: bash tools/ansible-test-sanity.sh [extra ansible-test sanity args, e.g. --test pep8]
# Env:   ANSIBLE_TEST=path to ansible-test (default .venv/bin/ansible-test)
#        SANITY_PYTHON=python version to test (default 3.11)

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ANSIBLE_TEST="${ANSIBLE_TEST:-$ROOT/.venv/bin/ansible-test}"
SANITY_PYTHON="${SANITY_PYTHON:-3.11}"
DEST_BASE="$ROOT/.sanity/ansible_collections"
DEST="$DEST_BASE/rum/pool"
STANDIN_MARK='# rum.pool offline stand-in for the get-pip bootstrap script'

die() {
    echo "ansible-test-sanity: $*" >&2
    exit 1
}

[ -x "$ANSIBLE_TEST" ] || die "ansible-test not found at $ANSIBLE_TEST (run 'make venv' first)"
command -v git >/dev/null || die "git is required to list the checkout's files"

start=$(date +%s)

# One run at a time per checkout: the copy below is deleted and rebuilt on every run.
mkdir -p "$ROOT/.cache"
exec 9>"$ROOT/.cache/ansible-test-sanity.lock"
flock -w 900 9 || die "another sanity run still holds $ROOT/.cache/ansible-test-sanity.lock"

# --- 1. a real copy of the collection ------------------------------------------------------------
rm -rf "$ROOT/.sanity"
mkdir -p "$DEST"
# -c also lists tracked files deleted in the work tree; copy only what exists. .ansible/ is
# ansible-lint's scratch area (a full installed copy of this collection), never part of it.
git -C "$ROOT" ls-files -z -co --exclude-standard |
    while IFS= read -r -d '' f; do
        case "$f" in .ansible/*) continue ;; esac
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done |
    tar --null --no-recursion -T - -cf - | tar -xf - -C "$DEST"
nfiles=$(find "$DEST" -type f | wc -l)
[ "$nfiles" -gt 0 ] || die "no files were copied to $DEST"

# ansible-test takes its file list from the nearest git repository; give the copy its own.
git -C "$DEST" init -q

# --- 2. the offline get-pip stand-in ---------------------------------------------------------------
# The file name follows ansible-test's bootstrap(): ~/.ansible/test/cache/get_pip_<pip version, . -> _>.py
pip_version=$("$ROOT/.venv/bin/python" - <<'EOF'
import re
from ansible_test._internal import python_requirements as pr
src = open(pr.__file__, encoding="utf-8").read()
m = re.search(r"default_packages = dict\(\s*pip='([0-9.]+)'", src)
print(m.group(1) if m else "24.2")
EOF
)
cache_dir="$HOME/.ansible/test/cache"
standin="$cache_dir/get_pip_${pip_version//./_}.py"
# ansible-test runs pip with a scrubbed environment and PIP_CONFIG_FILE=/dev/null, so the pip that
# ensurepip brings (older than 24.2, not using the system trust store) needs the CA bundle given.
ca_bundle=""
for c in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$c" ] && [ -f "$c" ]; then ca_bundle="$c"; break; fi
done

mkdir -p "$cache_dir"
if [ ! -e "$standin" ] || grep -qF "$STANDIN_MARK" "$standin"; then
    tmp=$(mktemp "$cache_dir/.get_pip.XXXXXX")
    cat >"$tmp" <<EOF
$STANDIN_MARK (written by tools/ansible-test-sanity.sh).
# ansible-test runs this as get-pip: python <this> [pip options] <packages> --no-setuptools --no-wheel
import ensurepip
import subprocess
import sys

CA_BUNDLE = "$ca_bundle"

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
ensurepip.bootstrap(upgrade=True)
cmd = [sys.executable, "-m", "pip", "install"]
if CA_BUNDLE:
    cmd += ["--cert", CA_BUNDLE]
sys.exit(subprocess.call(cmd + args))
EOF
    mv -f "$tmp" "$standin"
fi

# --- 3. the sanity run ----------------------------------------------------------------------------
cd "$DEST"
args=(sanity --python "$SANITY_PYTHON" --color no)

mapfile -t ps1_files < <(find plugins -name '*.ps1' -type f 2>/dev/null | sort)
rc=0
if [ "${#ps1_files[@]}" -gt 0 ] && ! command -v pwsh >/dev/null; then
    echo "ansible-test-sanity: NOTICE: no pwsh here; validate-modules skips ${#ps1_files[@]} .ps1 file(s) and their doc files, pslint is skipped" >&2
    excl=()
    for f in "${ps1_files[@]}"; do
        excl+=(--exclude "$f")
        [ -e "${f%.ps1}.py" ] && excl+=(--exclude "${f%.ps1}.py")
        [ -e "${f%.ps1}.yml" ] && excl+=(--exclude "${f%.ps1}.yml")
    done
    "$ANSIBLE_TEST" "${args[@]}" --skip-test validate-modules "$@" || rc=$?
    vm_rc=0
    "$ANSIBLE_TEST" "${args[@]}" --test validate-modules "${excl[@]}" "$@" || vm_rc=$?
    [ "$rc" -ne 0 ] || rc=$vm_rc
else
    "$ANSIBLE_TEST" "${args[@]}" "$@" || rc=$?
fi

elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ]; then
    echo "ansible-test-sanity: FAILED (rc=$rc) after ${elapsed}s on $nfiles files copied to $DEST" >&2
    echo "ansible-test-sanity: paths above are relative to that copy, i.e. to the repository root" >&2
    exit "$rc"
fi
echo "ansible-test-sanity: OK after ${elapsed}s ($nfiles files)"
