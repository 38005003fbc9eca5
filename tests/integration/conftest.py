"""Shared fixtures for the integration tests: they drive real ``ansible-playbook`` runs."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = os.path.join(ROOT, "tests", "integration", "targets")
STATE = os.environ.get("RUM_TEST_STATE", "/var/lib/rum-pool-test")


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"rc={self.rc}\n--- stdout ---\n{self.stdout[-20000:]}\n--- stderr ---\n{self.stderr[-5000:]}"


def run_playbook(playbook: str, extra_vars: dict | None = None, *, inventory: str | None = None,
                 check: bool = False, diff: bool = False, env: dict | None = None,
                 timeout: int = 1500) -> PlaybookRun:
    """Run ``ansible-playbook`` from the repo root with the repo's ansible.cfg; return its output."""
    path = playbook if os.path.isabs(playbook) else os.path.join(TARGETS, playbook)
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), path]
    if inventory:
        cmd += ["-i", inventory]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    full_env = dict(os.environ)
    full_env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONPATH": os.path.join(ROOT, ".collections"),
    })
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def state_dir() -> str:
    os.makedirs(STATE, mode=0o755, exist_ok=True)
    return STATE


@pytest.fixture
def playbook():
    """``playbook("target/x.yml", {...})`` runs it and fails the test, with its output, if rc != 0."""
    def _run(path: str, extra_vars: dict | None = None, **kwargs) -> PlaybookRun:
        expect_rc = kwargs.pop("expect_rc", 0)
        run = run_playbook(path, extra_vars, **kwargs)
        if expect_rc is not None and run.rc != expect_rc:
            pytest.fail(f"ansible-playbook {path} exited {run.rc}, expected {expect_rc}\n{run}")
        return run
    return _run
