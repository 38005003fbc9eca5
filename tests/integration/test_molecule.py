"""The roles' molecule scenarios: `molecule test` for libvirt_host, runner_pool, runner_slot and webhook_service.

Each scenario uses molecule's delegated (default) driver against localhost over the local
connection, with nothing to create or destroy, no Galaxy dependencies and no prerun install, so it
runs offline. runner_pool and runner_slot start the fake GitHub in their prepare step and use a
blank qcow2 as the runner image: the VMs are real libvirt domains, but no guest boots.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The steps each scenario's test_sequence runs (roles/<role>/molecule/default/molecule.yml).
STEPS = {
    "libvirt_host": ["cleanup", "destroy", "syntax", "create", "converge", "idempotence", "verify"],
    "runner_pool": ["cleanup", "destroy", "syntax", "create", "prepare", "converge", "idempotence", "verify"],
    "runner_slot": ["cleanup", "destroy", "syntax", "create", "prepare", "converge", "verify", "side_effect",
                    "idempotence"],
    "webhook_service": ["cleanup", "destroy", "syntax", "create", "prepare", "converge", "idempotence", "verify",
                        "side_effect"],
}

# runner_slot's second converge leaves the slot alone (side_effect checks the same VM and runner),
# and reports no change: its Lock and Unlock tasks are bookkeeping (changed_when: false).


def run_molecule(role: str) -> tuple[int, str]:
    env = dict(os.environ)
    env.update({
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    })
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own ansible.cfg for the scenario
    proc = subprocess.run([os.path.join(BIN, "molecule"), "test"], cwd=os.path.join(ROOT, "roles", role),
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    return proc.returncode, ANSI.sub("", proc.stdout + proc.stderr)


def step_results(output: str) -> dict[str, str]:
    """{step: 'Successful' | 'Failed' | ...} from molecule's step lines (the first of each step).

    The lines read ``default ➜ converge: Executed: Successful`` or, without colour,
    ``[default > converge] Executed: Successful``.
    """
    found: dict[str, str] = {}
    for step, result in re.findall(r"default\s+\S+\s+(\w+)\]?:?\s+Executed: (\w+)", output):
        found.setdefault(step, result)
    return found


@pytest.fixture(scope="module")
def libvirt_host_ready():
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)


@pytest.mark.parametrize("role", sorted(STEPS))
def test_molecule_scenario(role, libvirt_host_ready, state_dir):  # pylint: disable=unused-argument,redefined-outer-name
    rc, output = run_molecule(role)
    results = step_results(output)
    assert rc == 0, f"molecule test of {role} exited {rc}:\n{output[-15000:]}"
    missing = [s for s in STEPS[role] if results.get(s) != "Successful"]
    assert not missing, f"{role}: steps not successful: {missing} (all: {results})\n{output[-8000:]}"
