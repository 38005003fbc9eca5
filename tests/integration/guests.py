"""Helpers shared by the tests that boot real guests: domain state and bounded waiting."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time

import pytest

VIRSH = ["virsh", "-c", "qemu:///system"]


def domstate(name: str) -> str:
    """`virsh domstate` of a domain ('running', 'shut off', ...), or 'absent'."""
    proc = subprocess.run(VIRSH + ["domstate", name], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def network_filters(prefix: str) -> list[str]:
    """The libvirt network filters whose names start with ``prefix`` (rum_vm's are ``rum-vm-<VM name>``)."""
    out = subprocess.run(VIRSH + ["nwfilter-list"], capture_output=True, text=True, check=True).stdout
    return sorted(fields[1] for fields in (line.split() for line in out.splitlines()[2:])
                  if len(fields) >= 2 and fields[1].startswith(prefix))


def stray_taps() -> list[str]:
    """The taps the nftables engine's ruleset holds that no domain of the host names."""
    from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv  # pylint: disable=import-outside-toplevel
    from ansible_collections.rum.pool.plugins.module_utils import _nftables as nftables  # pylint: disable=import-outside-toplevel
    conn = lv.connect("qemu:///system")
    try:
        return nftables.stray(conn)
    finally:
        conn.close()


def runner_label(name: str) -> str:
    """The ``runner_name`` label of a domain (the runner generation it holds), from its inactive XML."""
    xml = subprocess.run(VIRSH + ["dumpxml", "--inactive", name], capture_output=True, text=True, check=True).stdout
    found = re.search(r'name="runner_name">([^<]+)<', xml)
    assert found, f"domain {name} has no runner_name label"
    return found.group(1)


def serial_log(name: str) -> str | None:
    """The serial log file a domain's definition names (rum_vm's ``paths.serial_log``), or None."""
    proc = subprocess.run(VIRSH + ["dumpxml", "--inactive", name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    found = re.search(r"<serial type=['\"]pty['\"]>\s*<log file=['\"]([^'\"]+)['\"]", proc.stdout)
    return found.group(1) if found else None


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


def blank_image(folder: str, name: str = "blank.qcow2", size: str = "64M") -> dict:
    """A blank qcow2 (made once) as rum_vm's ``image``: VMs from it idle in their firmware."""
    os.makedirs(folder, mode=0o755, exist_ok=True)
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], check=True)
        os.chmod(path, 0o644)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"url": f"file://{path}", "checksum": f"sha256:{digest.hexdigest()}", "path": path}


def pool_inventory(path, *, pool: str, host: str, github: dict, labels: list, image: dict, vm: dict,
                   **more) -> str:
    """Write a one-host inventory (this machine, local connection) for the runner_pool role."""
    python = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          ".venv", "bin", "python")
    host_vars = {"ansible_connection": "local", "ansible_python_interpreter": python,
                 "runner_pool_name": pool, "runner_pool_labels": labels, "runner_pool_github": github,
                 "runner_pool_image": {"url": image["url"], "checksum": image["checksum"]},
                 "runner_pool_vm": vm}
    host_vars.update({f"runner_pool_{key}": value for key, value in more.items()})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"hypervisors": {"hosts": {host: host_vars}}}, fh)
    return str(path)
