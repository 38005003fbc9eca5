#!/usr/bin/env bash
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# The Windows-side tests, run where what they need exists:
#   pester       Pester 5 tests of plugins/module_utils/_HyperV.psm1 with mocked Hyper-V cmdlets
#                (needs pwsh, or powershell.exe, with Pester 5.3 or later)
#   integration  tests/windows/integration/hyperv_vm.yml against a real Hyper-V host (needs an
#                inventory: $RUM_HYPERV_INVENTORY, default tests/windows/integration/inventory.yml)
#
# Usage: tools/windows-tests.sh [--if-available] pester|integration ...
# A missing prerequisite fails (exit 2) and says what to install; with --if-available (how
# `make test` calls it) the suite is reported as "NOT RUN" instead, never as passed, and does
# not fail. A suite that runs and fails always fails.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

optional=0
if [ "${1:-}" = "--if-available" ]; then
    optional=1
    shift
fi
[ "$#" -gt 0 ] || { echo "usage: $0 [--if-available] pester|integration ..." >&2; exit 2; }

missing() {  # suite, what is missing and how to get it
    if [ "$optional" = 1 ]; then
        echo "NOT RUN: $1: $2"
        return 0
    fi
    echo "windows-tests: cannot run $1: $2" >&2
    exit 2
}

run_pester() {
    local ps
    ps=$(command -v pwsh || command -v powershell.exe || true)
    if [ -z "$ps" ]; then
        missing pester "no PowerShell here (pwsh); install PowerShell 7 and Pester 5 (docs/hyperv.md, 'Tests')"
        return 0
    fi
    # shellcheck disable=SC2016  # PowerShell code: its $_ is PowerShell's, not the shell's
    if ! "$ps" -NoProfile -NonInteractive -Command \
        'if (Get-Module -ListAvailable -Name Pester | Where-Object { $_.Version -ge [version]"5.3" }) { exit 0 } else { exit 3 }'; then
        missing pester "Pester 5.3 or later is not installed for $ps (Install-Module -Name Pester -MinimumVersion 5.3)"
        return 0
    fi
    echo "windows-tests: pester with $ps"
    "$ps" -NoProfile -NonInteractive -File tests/windows/run-pester.ps1
}

run_integration() {
    local inventory="${RUM_HYPERV_INVENTORY:-tests/windows/integration/inventory.yml}"
    if [ ! -f "$inventory" ]; then
        missing windows-integration "no Hyper-V host inventory at $inventory (copy tests/windows/integration/inventory.example.yml; docs/hyperv.md, 'Tests')"
        return 0
    fi
    echo "windows-tests: windows-integration against $inventory"
    ansible-playbook -i "$inventory" tests/windows/integration/hyperv_vm.yml
}

for suite in "$@"; do
    case "$suite" in
        pester) run_pester ;;
        integration) run_integration ;;
        *) echo "windows-tests: unknown suite '$suite' (pester, integration)" >&2; exit 2 ;;
    esac
done
