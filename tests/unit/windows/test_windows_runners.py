# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make pester` and `make windows-integration`: run where their tools exist, NOT RUN (never passed) elsewhere.

tools/windows-tests.sh is what the make targets call. These tests put stand-ins for pwsh and
ansible-playbook on PATH to see what it runs, and take pwsh away to see what it reports.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "windows-tests.sh"


def _run(tmp_path: Path, *args: str, tools: dict[str, str] | None = None, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (tools or {}).items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
                   "RUM_HYPERV_INVENTORY": str(tmp_path / "no-inventory.yml"), **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment,
                          cwd=tmp_path, check=False)


def test_without_powershell_or_a_host_make_test_reports_not_run(tmp_path: Path) -> None:
    result = _run(tmp_path, "--if-available", "pester", "integration")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NOT RUN: pester: no PowerShell here (pwsh)")
    assert lines[1].startswith("NOT RUN: windows-integration: no Hyper-V host inventory")
    assert "pass" not in result.stdout.lower()


@pytest.mark.parametrize(("suite", "message"), [
    ("pester", "cannot run pester: no PowerShell here (pwsh); install PowerShell 7 and Pester 5"),
    ("integration", "cannot run windows-integration: no Hyper-V host inventory"),
])
def test_asked_for_directly_a_missing_prerequisite_fails(tmp_path: Path, suite: str, message: str) -> None:
    result = _run(tmp_path, suite)
    assert result.returncode == 2
    assert message in result.stderr


def test_pester_runs_with_pwsh_and_its_failure_fails(tmp_path: Path) -> None:
    log = tmp_path / "pwsh.log"
    fake = f'echo "$@" >> {log}\ncase "$*" in *run-pester.ps1*) exit "${{PESTER_EXIT:-0}}";; esac\nexit 0\n'
    passed = _run(tmp_path, "--if-available", "pester", tools={"pwsh": fake})
    assert passed.returncode == 0, passed.stderr
    assert "windows-tests: pester with" in passed.stdout
    assert "-File tests/windows/run-pester.ps1" in log.read_text()
    failed = _run(tmp_path, "--if-available", "pester", tools={"pwsh": fake}, env={"PESTER_EXIT": "1"})
    assert failed.returncode == 1, "a Pester failure fails make test, even with --if-available"


def test_pester_without_the_pester_module_is_not_run(tmp_path: Path) -> None:
    fake = 'case "$*" in *Get-Module*) exit 3;; esac\nexit 0\n'
    result = _run(tmp_path, "--if-available", "pester", tools={"pwsh": fake})
    assert result.returncode == 0
    assert result.stdout.startswith("NOT RUN: pester: Pester 5.3 or later is not installed")


def test_integration_runs_the_playbook_against_the_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "hv.yml"
    inventory.write_text("hyperv: {hosts: {hv1: {}}}\n")
    log = tmp_path / "playbook.log"
    result = _run(tmp_path, "integration", tools={"ansible-playbook": f'echo "$@" > {log}\n'},
                  env={"RUM_HYPERV_INVENTORY": str(inventory)})
    assert result.returncode == 0, result.stderr
    assert log.read_text().split() == ["-i", str(inventory), "tests/windows/integration/hyperv_vm.yml"]


def test_make_targets_call_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^pester: .*\n\t@bash tools/windows-tests.sh pester$", makefile, re.MULTILINE)
    assert re.search(r"^windows-integration: .*\n\t@bash tools/windows-tests.sh integration$", makefile, re.MULTILINE)
    assert re.search(r"^test: .*\bwindows-report\b", makefile, re.MULTILINE)
    assert "tools/windows-tests.sh --if-available pester integration" in makefile
    assert os.access(SCRIPT, os.X_OK)
    assert "tests/windows/integration/inventory.yml" in (ROOT / ".gitignore").read_text()
