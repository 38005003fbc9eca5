"""Helpers shared by the tests that boot real guests: domain state and bounded waiting."""

from __future__ import annotations

import subprocess
import time

import pytest

VIRSH = ["virsh", "-c", "qemu:///system"]


def domstate(name: str) -> str:
    """`virsh domstate` of a domain ('running', 'shut off', ...), or 'absent'."""
    proc = subprocess.run(VIRSH + ["domstate", name], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def wait_until(what: str, predicate, timeout: float, on_timeout=lambda: "", interval: float = 2.0):
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what`` on time-out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{on_timeout()}")
        time.sleep(interval)
