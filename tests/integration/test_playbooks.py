"""The entry-point playbooks refuse what they cannot act on, instead of succeeding doing nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT
from tests.integration.guests import VIRSH, blank_image


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
    assert "pass the slot to recreate: -e slot=<pool>-<host>-<index>" in run.stdout, run
    assert "(got slot Not A Slot)" in run.stdout, run


# --- the backend seam ---------------------------------------------------------------------------------
# A test-only backend, "fake": a folder of task files that keep each "VM" as a JSON file, and one entry in
# the list of known backends - exactly what a real new backend adds. The slot lifecycle (lock, observe,
# generation check, retire, mint the JIT runner at the fake GitHub, bootstrap, boot, report) runs
# unchanged on top of it, and the libvirt backend's tasks and modules are never reached.

FAKE_BACKEND = {
    "observe_slot.yml": """---
- name: Fake hypervisor - look at the slot's VM
  ansible.builtin.set_fact:
    runner_slot_observed:
      vms: "{{ [lookup('ansible.builtin.file', fake_hv ~ '/' ~ runner_slot_name ~ '.json') | from_json]
               if (fake_hv ~ '/' ~ runner_slot_name ~ '.json') is file else [] }}"
""",
    "observe_pool.yml": """---
- name: Fake hypervisor - list the pool's VMs on this host
  ansible.builtin.set_fact:
    runner_slot_observed_pool:
      vms: "{{ query('ansible.builtin.file', *query('ansible.builtin.fileglob', fake_hv ~ '/*.json'))
               | map('from_json') | selectattr('labels.pool', 'eq', runner_slot_pool.name) | list }}"
""",
    "retire.yml": """---
- name: Fake hypervisor - remove the slot's VM
  ansible.builtin.file:
    path: "{{ fake_hv }}/{{ runner_slot_name }}.json"
    state: absent
""",
    "boot.yml": """---
- name: Fake hypervisor - boot the slot's VM
  ansible.builtin.copy:
    dest: "{{ fake_hv }}/{{ runner_slot_name }}.json"
    content: "{{ {'name': runner_slot_name, 'state': 'running', 'labels': runner_slot_labels, 'hostname': runner_slot_new,
                  'bootstrap': runner_slot_credential | rum.pool.runner_user_data, 'vm': runner_slot_pool.vm} | to_json }}"
    mode: "0600"
  register: runner_slot_booted
  no_log: true
""",
}
LIBVIRT_MODULES = {"rum.pool.rum_vm", "rum.pool.rum_vm_info"}


def collection_with_a_fake_backend(tmp_path) -> str:
    """A copy of the collection with backends/fake/ and one more entry in BACKENDS; returns its collections path."""
    dest = tmp_path / "collections" / "ansible_collections" / "rum" / "pool"
    dest.mkdir(parents=True)
    for part in ("galaxy.yml", "meta", "plugins", "roles", "playbooks"):
        source = os.path.join(ROOT, part)
        if os.path.isdir(source):
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("molecule", "__pycache__"))
        else:
            shutil.copy(source, dest / part)
    folder = dest / "roles" / "runner_slot" / "tasks" / "backends" / "fake"
    folder.mkdir()
    for name, text in FAKE_BACKEND.items():
        (folder / name).write_text(text)
    settings = dest / "plugins" / "module_utils" / "_pool_settings.py"
    before = settings.read_text()
    after = before.replace('BACKENDS = {\n    "libvirt": "host",\n', 'BACKENDS = {\n    "libvirt": "host",\n    "fake": "controller",\n')
    assert len(after.splitlines()) == len(before.splitlines()) + 1, "BACKENDS is no longer a one-line-per-backend dict"
    settings.write_text(after)
    return str(tmp_path / "collections")


@pytest.fixture
def github():
    sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
    from fake_github import FakeGitHub  # pylint: disable=import-outside-toplevel

    fake = FakeGitHub()
    fake.url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    yield fake
    fake.stop()


PAT = "ghp_seamtoken00000000000000000000000000"
REPO = "acme/seam"


def seam_inventory(tmp_path, github, **more) -> str:
    hv = tmp_path / "hv"
    hv.mkdir(exist_ok=True)
    host = {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python"),
            "fake_hv": str(hv), "runner_pool_name": "seam", "runner_pool_size": 2,
            "runner_pool_github": {"api_url": github.url, "repository": REPO, "token": PAT},
            # a libvirt image and URI that would fail at once if the libvirt backend were reached
            "runner_pool_image": {"url": "file:///nonexistent/runner.qcow2", "checksum": "sha256:" + "0" * 64},
            "runner_pool_vm": {"domain_type": "qemu", "uri": "qemu:///nonexistent"}}
    host.update({f"runner_pool_{key}": value for key, value in more.items()})
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps({"hypervisors": {"hosts": {"hv1": host}}}))
    return str(path)


def run_traced(playbook_fixture, tmp_path, collections: str, name: str, extra=None, **kwargs):
    """Run a playbook of the copied collection; returns (run, [(action, path, status)])."""
    trace = tmp_path / f"trace-{name}-{len(list(tmp_path.glob('trace-*')))}.jsonl"
    env = {"ANSIBLE_COLLECTIONS_PATH": collections, "PYTHONPATH": collections,
           "ANSIBLE_CALLBACK_PLUGINS": os.path.join(ROOT, "bench", "callback_plugins"),
           "ANSIBLE_CALLBACKS_ENABLED": "rum_bench_timer", "RUM_BENCH_TIMER_FILE": str(trace),
           "ANSIBLE_SHOW_CUSTOM_STATS": "1"}
    path = os.path.join(collections, "ansible_collections", "rum", "pool", "playbooks", f"{name}.yml")
    run = playbook_fixture(path, extra, env=env, **kwargs)
    events = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
    starts = [(e["action"], e["path"]) for e in events if e["ev"] == "task_start"]
    ran = [e["action"] for e in events if e["ev"] == "result" and e["status"] != "skipped"]
    assert not [p for _a, p in starts if "/backends/libvirt/" in p], "the libvirt backend's tasks were reached"
    assert not LIBVIRT_MODULES & set(ran), f"a libvirt module ran: {sorted(LIBVIRT_MODULES & set(ran))}"
    return run, starts


def fake_vms(tmp_path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted((tmp_path / "hv").glob("*.json"))}


def outcome(run) -> dict:
    """The rum_pool_outcome recreate.yml published with set_stats (shown by ANSIBLE_SHOW_CUSTOM_STATS)."""
    match = re.search(r"CUSTOM STATS: \**\s*\n\s*RUN: (\{.*\})", run.stdout)
    assert match, run.stdout[-3000:]
    return json.loads(match.group(1))["rum_pool_outcome"]


def test_the_slot_lifecycle_runs_on_a_new_backend_without_reaching_libvirt(playbook, tmp_path, github):
    collections = collection_with_a_fake_backend(tmp_path)
    inv = seam_inventory(tmp_path, github, backend="fake")

    # check mode makes nothing: no VM, no runner record
    checked = run_traced(playbook, tmp_path, collections, "pool", inventory=inv, check=True)[0]
    assert "seam-hv1-1: create (no VM)" in checked.stdout and fake_vms(tmp_path) == {}
    assert github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"] == []

    # converge: two slots booted through the fake backend, with JIT runners minted at the fake GitHub
    first, starts = run_traced(playbook, tmp_path, collections, "pool", inventory=inv)
    assert any("/backends/fake/boot.yml" in p for _a, p in starts)
    vms = fake_vms(tmp_path)
    assert sorted(vms) == ["seam-hv1-1", "seam-hv1-2"], first
    runners = {r["name"]: r for r in github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}
    for name, vm in vms.items():
        labels = vm["labels"]
        assert {k: labels[k] for k in ("pool", "host", "slot", "backend")} == {
            "pool": "seam", "host": "hv1", "slot": name, "backend": "fake"}
        assert labels["runner_name"] == vm["hostname"] and labels["runner_name"] in runners
        assert labels["runner_id"] == str(runners[labels["runner_name"]]["id"]) and runners[labels["runner_name"]]["jit"]
        assert int(labels["created_at"]) > 0 and all(isinstance(v, str) for v in labels.values())
        # the credential the lifecycle hands the backend (its boot.yml makes it a cloud-config): this runner's JIT config
        assert "/etc/rum-runner/jitconfig" in json.dumps(vm["bootstrap"])
        # runner_pool_vm {domain_type: qemu} was merged over the defaults, not put in their place
        assert vm["vm"] == {"vcpus": 2, "memory_mb": 2048, "domain_type": "qemu", "uri": "qemu:///nonexistent"}
    assert "seam-hv1-1  running" in first.stdout and "2 slots (size 2): 0 create, 0 recreate, 2 keep" in first.stdout

    # a converge right away changes nothing (both runners are "booting")
    run_traced(playbook, tmp_path, collections, "pool", inventory=inv)
    assert fake_vms(tmp_path) == vms

    # recreate with a generation the slot no longer holds: skipped, said plainly, published as skipped
    old = vms["seam-hv1-1"]["labels"]["runner_name"]
    stale = old[:-6] + ("zzzzzz" if old[-6:] != "zzzzzz" else "yyyyyy")
    skipped = run_traced(playbook, tmp_path, collections, "recreate", {"slot": "seam-hv1-1", "runner_name": stale},
                         inventory=inv)[0]
    assert f"slot seam-hv1-1: skipped, it now holds runner {old}, not runner {stale}" in skipped.stdout
    assert outcome(skipped) == {"seam-hv1-1": {"outcome": "skipped", "reason": f"it now holds runner {old}, not runner {stale}"}}
    assert fake_vms(tmp_path) == vms

    # recreate with the generation it holds (the old -e runner= spelling still works, with a warning)
    done = run_traced(playbook, tmp_path, collections, "recreate", {"slot": "seam-hv1-1", "runner": old},
                      inventory=inv)[0]
    assert "DEPRECATED: -e runner=... is the old name of -e runner_name=..." in done.stdout
    assert outcome(done) == {"seam-hv1-1": {"outcome": "recreated", "reason": f"it held runner {old}"}}
    now = fake_vms(tmp_path)
    new = now["seam-hv1-1"]["labels"]["runner_name"]
    assert new != old and new.startswith("seam-hv1-1-") and now["seam-hv1-2"] == vms["seam-hv1-2"]
    names = {r["name"] for r in github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}
    assert old not in names and new in names
    assert f"slot seam-hv1-1: recreated, runner {new}" in done.stdout

    # a slot whose VM shut off (its job done) is recreated by the next converge
    path = tmp_path / "hv" / "seam-hv1-2.json"
    path.write_text(json.dumps(dict(now["seam-hv1-2"], state="shutoff")))
    healed = run_traced(playbook, tmp_path, collections, "pool", inventory=inv)[0]
    assert "seam-hv1-2: recreate (VM shut off" in healed.stdout
    assert fake_vms(tmp_path)["seam-hv1-2"]["labels"]["runner_name"] != now["seam-hv1-2"]["labels"]["runner_name"]

    # teardown removes every VM and deregisters every runner
    run_traced(playbook, tmp_path, collections, "teardown", inventory=inv)
    assert fake_vms(tmp_path) == {}
    assert github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"] == []


def test_an_unknown_backend_fails_before_anything_is_done(playbook, tmp_path, github):
    inv = seam_inventory(tmp_path, github, backend="xen")
    collections = os.path.join(ROOT, ".collections")
    run, starts = run_traced(playbook, tmp_path, collections, "pool", inventory=inv, expect_rc=2)
    assert "runner_pool_backend: 'xen' is not a known backend (known: libvirt, hyperv)" in run.stdout, run
    assert not [p for _a, p in starts if "/backends/" in p]
    assert github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"] == []


def test_runner_pool_vm_is_merged_over_the_documented_defaults(playbook, tmp_path, github, state_dir):
    """runner_pool_vm: {domain_type: qemu} keeps 2 vCPUs, 2048 MiB and the image's disk size, on the real libvirtd."""
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    storage = os.path.join(state_dir, "playbooks-vm-defaults")
    image = blank_image(os.path.join(state_dir, "fixtures"), "tiny.qcow2")  # 64 MiB, no boot disk: idles in BIOS
    inv = tmp_path / "hosts.json"
    inv.write_text(json.dumps({"hypervisors": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python"),
        "runner_pool_name": "vmdef", "runner_pool_size": 1, "runner_pool_online_timeout": 3600,
        "runner_pool_github": {"api_url": github.url, "repository": REPO, "token": PAT},
        "runner_pool_image": {"url": image["url"], "checksum": image["checksum"]},
        "runner_pool_vm": {"domain_type": "qemu", "storage_dir": storage, "image_cache_dir": os.path.join(storage, "images")},
    }}}}))
    slot = "vmdef-localhost-1"
    try:
        playbook(os.path.join(ROOT, "playbooks", "pool.yml"), inventory=str(inv))
        info = subprocess.run(VIRSH + ["dominfo", slot], capture_output=True, text=True, check=True).stdout
        assert re.search(r"^CPU\(s\):\s+2$", info, re.M) and re.search(r"^Max memory:\s+2097152 KiB$", info, re.M), info
        disk = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", os.path.join(storage, slot, "disk.qcow2")],
                                         capture_output=True, text=True, check=True).stdout)
        assert disk["virtual-size"] == 64 << 20
        labels = subprocess.run(VIRSH + ["dumpxml", slot], capture_output=True, text=True, check=True).stdout
        assert 'name="backend">libvirt<' in labels
    finally:
        playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory=str(inv), expect_rc=None)
        subprocess.run(VIRSH + ["destroy", slot], capture_output=True, check=False)
        subprocess.run(VIRSH + ["undefine", "--nvram", slot], capture_output=True, check=False)
