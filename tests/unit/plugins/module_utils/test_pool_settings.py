# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pool's settings: defaults, checks, the merged vm mapping, the lookup, and the argument spec that documents them."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible.errors import AnsibleLookupError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.rum.pool.plugins.lookup.pool_settings import LookupModule
from ansible_collections.rum.pool.plugins.module_utils import _pool_settings as settings
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
SECRET = "ghp_do_not_show_0000000000000000000000"
REQUIRED = {"name": "ci", "github": {"repository": "acme/w", "token": SECRET},
            "image": {"url": "https://images.example.com/r.qcow2", "checksum": "sha256:00"}}


def make(**values):
    return settings.pool_settings(dict(REQUIRED, **values), "hv1.example.com")


def test_defaults():
    out = make()
    assert out == {
        "name": "ci", "size": 2, "labels": ["self-hosted", "linux", "x64"], "runner_group": "Default",
        "runner_group_id": None, "registration": "jit", "github": REQUIRED["github"], "github_delegate_to": "localhost",
        "image": REQUIRED["image"], "vm": {"vcpus": 2, "memory_mb": 2048}, "runner_dir": "/opt/actions-runner",
        "runner_user": "runner", "cache_url": None, "online_timeout": 600, "wait_online": False, "lock_timeout": 600,
        "batch": True, "concurrency": 8, "stage": True, "backend": "libvirt",
        "host": "hv1", "state": "present", "lock_host": "hv1.example.com",
        "isolation": {"enabled": True, "engine": "nftables", "allow": [], "deny": [], "public_ports": [443]},
    }


def test_the_batch_module_is_the_default_and_stages_only_jit_runners_of_libvirt_hosts_with_github_here():
    assert make()["batch"] is True and make()["stage"] is True, "a libvirt pool takes the batch path unless told"
    assert make(batch=False)["batch"] is False and make(batch=False)["stage"] is False
    hyperv = make(backend="hyperv", vm={"template": "C:/t.vhdx", "path": "C:/vms", "switch_name": "ci"})
    assert (hyperv["batch"], hyperv["stage"]) == (False, False), "a backend without a batch module goes slot by slot"
    assert make(batch=True)["batch"] is True and make(batch=True)["stage"] is True
    assert make(batch=True, stage=False)["stage"] is False
    assert make(batch=True, registration="token")["stage"] is False, "a registration token lasts one hour"
    assert make(batch=True, github_delegate_to="ctl1")["batch"] is False
    waits = make(wait_online=True)
    assert (waits["batch"], waits["stage"]) == (True, True), "the batch path waits for its runners online too"
    assert make(batch=False, stage=True)["stage"] is False, "staging needs the batch module"


def test_vm_is_merged_over_the_defaults():
    """docs/pool.md's advice to set {domain_type: qemu} or {generate_ssh_key: true} keeps vCPUs, memory and disk."""
    assert make(vm={"domain_type": "qemu"})["vm"] == {"vcpus": 2, "memory_mb": 2048, "domain_type": "qemu"}
    assert make(vm={"generate_ssh_key": True, "disk_size": "60G"})["vm"] == {
        "vcpus": 2, "memory_mb": 2048, "generate_ssh_key": True, "disk_size": "60G"}
    assert make(vm={"vcpus": 8, "memory_mb": 16384})["vm"] == {"vcpus": 8, "memory_mb": 16384}
    assert settings.SETTINGS["vm"].default == {"vcpus": 2, "memory_mb": 2048}  # the default is not changed by a merge
    assert "disk_size" not in make()["vm"]  # the disk is the image's size unless disk_size is set


def test_values_are_converted_as_role_arguments_are():
    out = make(size="4", wait_online="yes", online_timeout=90.0, runner_group_id="3", host="HV-7", state="absent")
    assert (out["size"], out["wait_online"], out["online_timeout"], out["runner_group_id"]) == (4, True, 90, 3)
    assert (out["host"], out["state"]) == ("hv-7", "absent")
    assert make(size=None)["size"] == 2  # null takes the default
    assert make(wait_online="off")["wait_online"] is False


@pytest.mark.parametrize("values, message", [
    ({"name": None}, "runner_pool_name is required"),
    ({"github": None}, "runner_pool_github is required"),
    ({"image": None}, "runner_pool_image is required"),
    ({"name": "CI"}, "runner pool name 'CI' is invalid"),
    ({"name": "p" * 21}, "use 1 to 20 characters"),
    ({"size": "two"}, "runner_pool_size must be an integer, got 'two'"),
    ({"size": -1}, "runner_pool_size must be at least 0"),
    ({"size": True}, "runner_pool_size must be an integer, got True"),
    ({"runner_group_id": 0}, "runner_pool_runner_group_id must be at least 1"),
    ({"labels": "self-hosted"}, "runner_pool_labels must be a list of non-empty strings"),
    ({"labels": ["ok", ""]}, "runner_pool_labels must be a list of non-empty strings"),
    ({"wait_online": "maybe"}, "runner_pool_wait_online must be true or false, got 'maybe'"),
    ({"registration": "pat"}, "runner_pool_registration must be one of jit, token, got 'pat'"),
    ({"state": "gone"}, "runner_pool_state must be one of present, absent"),
    ({"backend": "xen"}, "runner_pool_backend: 'xen' is not a known backend (known: libvirt, hyperv)"),
    ({"vm": [1]}, "runner_pool_vm must be a dict, got [1]"),
    ({"runner_dir": ""}, "runner_pool_runner_dir must be a non-empty string"),
    ({"host": "..."}, "host name '...' has no usable first label"),
    ({"github": {}}, "runner_pool_github must hold the GitHub scope and credentials"),
    ({"github": SECRET}, "runner_pool_github must be a dict, got a str"),
    ({"sise": 4}, "unknown pool setting: runner_pool_sise"),
])
def test_errors_name_the_variable(values, message):
    with pytest.raises(SlotError) as err:
        make(**values)
    assert message in str(err.value)
    assert SECRET not in str(err.value)


def test_the_lock_is_held_where_the_backend_says(monkeypatch):
    monkeypatch.setitem(settings.BACKENDS, "windowsish", "controller")
    monkeypatch.setitem(settings.SETTINGS, "backend", settings.SETTINGS["backend"]._replace(choices=tuple(settings.BACKENDS)))
    assert make(backend="windowsish")["lock_host"] == "localhost"
    assert make()["lock_host"] == "hv1.example.com"
    assert set(settings.BACKENDS.values()) <= {"host", "controller"}


def test_every_known_backend_has_its_task_files():
    """A backend is its folder of task files plus its entry in BACKENDS: both exist, and nothing else is needed."""
    folder = os.path.join(ROOT, "roles", "runner_slot", "tasks", "backends")
    assert sorted(os.listdir(folder)) == sorted(settings.BACKENDS)
    for backend in settings.BACKENDS:
        assert sorted(os.listdir(os.path.join(folder, backend))) == [
            "boot.yml", "observe_pool.yml", "observe_slot.yml", "retire.yml"]
    assert settings.SETTINGS["backend"].choices == tuple(settings.BACKENDS)


def test_the_common_tasks_name_no_backend_module():
    """The slot lifecycle and the pool tasks outside backends/ never call a hypervisor's own modules."""
    backend_modules = ("rum.pool.rum_vm", "rum.pool.hyperv_vm", "rum_vm:", "rum_vm_info", "hyperv_vm")
    for role in ("runner_pool", "runner_slot"):
        tasks = os.path.join(ROOT, "roles", role, "tasks")
        for name in os.listdir(tasks):
            if name.endswith(".yml"):
                with open(os.path.join(tasks, name), encoding="utf-8") as handle:
                    text = handle.read()
                assert not [m for m in backend_modules if m in text], f"roles/{role}/tasks/{name} names a backend module"


def test_the_argument_spec_documents_the_same_settings():
    """roles/runner_pool/meta/argument_specs.yml and SETTINGS agree: names, types, defaults, required, choices."""
    with open(os.path.join(ROOT, "roles", "runner_pool", "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    request = {"runner_pool_slot", "runner_pool_runner_name"}  # what one recreate asks for, not a setting
    assert set(options) - request == {settings.PREFIX + key for key in settings.SETTINGS}
    for key, spec in settings.SETTINGS.items():
        option = options[settings.PREFIX + key]
        assert option["type"] == spec.type, key
        assert option.get("default") == spec.default, key
        assert bool(option.get("required")) == spec.required, key
        if key == "backend":
            # the list of known backends lives in one place, BACKENDS; the spec points to it
            assert "choices" not in option and "_pool_settings.py" in " ".join(option["description"])
        else:
            assert tuple(option.get("choices", ())) == spec.choices, key
        if spec.type == "list":
            assert option["elements"] == "str"


def lookup(variables):
    plugin = LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader(), variables=variables))
    return plugin.run([], variables=variables)


def test_the_lookup_reads_and_templates_the_runner_pool_variables():
    variables = {"inventory_hostname": "hv2.example.com", "pool_size": 3,
                 "runner_pool_size": trust_as_template("{{ pool_size + 1 }}"),
                 "runner_pool_plan": trust_as_template("{{ undefined_thing }}"),  # a role fact: never read
                 "runner_pool_vm": {"domain_type": "qemu"}}
    variables.update({settings.PREFIX + key: value for key, value in REQUIRED.items()})
    [out] = lookup(variables)
    assert (out["size"], out["host"], out["lock_host"]) == (4, "hv2", "hv2.example.com")
    assert out["vm"] == {"vcpus": 2, "memory_mb": 2048, "domain_type": "qemu"}


def test_the_lookup_fails_naming_the_variable():
    variables = {"inventory_hostname": "hv1", "runner_pool_backend": "xen"}
    variables.update({settings.PREFIX + key: value for key, value in REQUIRED.items()})
    with pytest.raises(AnsibleLookupError, match=r"runner_pool_backend: 'xen' is not a known backend \(known: libvirt, hyperv\)"):
        lookup(variables)
    with pytest.raises(AnsibleLookupError, match="takes no terms"):
        LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader())).run(["x"], variables={})


def test_cache_url_is_checked_up_front():
    assert make(cache_url="http://cache.internal:3000/t0k/")["cache_url"] == "http://cache.internal:3000/t0k/"
    with pytest.raises(SlotError, match="runner_pool_cache_url 'http://cache.internal:3000': .*ending with '/'"):
        make(cache_url="http://cache.internal:3000")
