"""The entry-point playbooks refuse what they cannot act on, instead of succeeding doing nothing."""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import ROOT


@pytest.mark.parametrize("name,extra", [("pool", {}), ("recreate", {"slot": "ci-hv1-1"}), ("teardown", {})])
def test_an_inventory_without_pool_hosts_is_an_error(playbook, tmp_path, name, extra):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    builder1:\n      ansible_connection: local\n")
    run = playbook(os.path.join(ROOT, "playbooks", f"{name}.yml"), extra, inventory=str(inventory), expect_rc=2)
    assert "no host in the inventory matches 'hypervisors'" in run.stdout, run
    assert "builder1" not in run.stdout, "nothing ran on the other host"


def test_recreate_needs_a_slot_name(playbook, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("hypervisors:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    run = playbook(os.path.join(ROOT, "playbooks", "recreate.yml"), {"slot": "Not A Slot"},
                   inventory=str(inventory), expect_rc=2)
    assert "pass the slot to recreate: -e slot=<pool>-<host>-<index> (got Not A Slot)" in run.stdout, run
