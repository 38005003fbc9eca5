"""The hyperv backend's settings: its lock on the controller, its own defaults, what it needs, and the
argument spec that documents them."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _pool_settings as settings
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
SECRET = "ghp_do_not_show_0000000000000000000000"
VM = {"template": "D:\\rum\\templates\\windows-runner.vhdx", "path": "D:\\rum\\vms", "switch_name": "rum"}
HYPERV = {"name": "win", "backend": "hyperv", "github": {"organization": "acme", "token": SECRET}, "vm": VM}


def make(**values):
    return settings.pool_settings(dict(HYPERV, **values), "hv1.example.com")


def test_a_hyperv_host_holds_its_slot_locks_on_the_controller():
    assert settings.BACKENDS["hyperv"] == "controller"
    out = make()
    assert (out["lock_host"], out["host"], out["backend"]) == ("localhost", "hv1", "hyperv")


def test_a_windows_pool_gets_windows_defaults_and_no_image():
    out = make()
    assert out["labels"] == ["self-hosted", "windows", "x64"]
    assert out["runner_dir"] == "C:\\actions-runner" and out["runner_user"] == "runner"
    assert out["vm"] == dict(VM, vcpus=2, memory_mb=4096)
    assert out["image"] is None
    # what the user sets wins, and runner_pool_vm is merged over the backend's default
    out = make(labels=["self-hosted", "windows", "gpu"], runner_dir="D:\\runner", vm=dict(VM, memory_mb=8192))
    assert out["labels"] == ["self-hosted", "windows", "gpu"] and out["runner_dir"] == "D:\\runner"
    assert out["vm"]["memory_mb"] == 8192 and out["vm"]["vcpus"] == 2
    # the backend's defaults are never changed by a pool's values
    assert settings.BACKEND_DEFAULTS["hyperv"]["vm"] == {"vcpus": 2, "memory_mb": 4096}
    assert settings.BACKEND_DEFAULTS["hyperv"]["labels"] == ["self-hosted", "windows", "x64"]


def test_libvirt_keeps_its_defaults_and_needs_its_image():
    libvirt = dict(HYPERV, backend="libvirt", vm={})
    with pytest.raises(SlotError, match="runner_pool_image is required with runner_pool_backend libvirt"):
        settings.pool_settings(libvirt, "hv1")
    out = settings.pool_settings(dict(libvirt, image={"url": "file:///i.qcow2", "checksum": "sha256:00"}), "hv1")
    assert (out["labels"], out["runner_dir"], out["vm"]) == (
        ["self-hosted", "linux", "x64"], "/opt/actions-runner", {"vcpus": 2, "memory_mb": 2048})


@pytest.mark.parametrize("key, says", [
    ("template", "the template VHDX on the Hyper-V host"),
    ("path", "the folder on the Hyper-V host that holds the VMs and their seeds"),
    ("switch_name", "the virtual switch the VMs connect to"),
])
def test_each_setting_the_hyperv_backend_needs_is_named_when_missing(key, says):
    for vm in ({k: v for k, v in VM.items() if k != key}, dict(VM, **{key: " "})):
        with pytest.raises(SlotError) as err:
            make(vm=vm)
        assert str(err.value) == f"runner_pool_vm.{key} is required with runner_pool_backend hyperv ({says})"
        assert SECRET not in str(err.value)


def test_every_need_is_explained_and_every_backend_is_known():
    assert set(settings.BACKEND_NEEDS) <= set(settings.BACKENDS)
    assert set(settings.BACKEND_DEFAULTS) <= set(settings.BACKENDS)
    for needs in settings.BACKEND_NEEDS.values():
        for need in needs:
            key = need.partition(".")[0]
            assert key in settings.SETTINGS and need in settings._NEEDED_FOR  # pylint: disable=protected-access
    for defaults in settings.BACKEND_DEFAULTS.values():
        assert set(defaults) <= set(settings.SETTINGS)


def _unmark(value: str) -> str:
    """The text inside an Ansible V(...) markup: backslash escapes a backslash or a parenthesis."""
    return re.sub(r"\\(.)", r"\1", value)


def test_the_argument_spec_documents_each_backend_default():
    """roles/runner_pool/meta/argument_specs.yml says, for each setting a backend changes, the same default."""
    with open(os.path.join(ROOT, "roles", "runner_pool", "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    for backend, defaults in settings.BACKEND_DEFAULTS.items():
        for key, value in defaults.items():
            option = options[settings.PREFIX + key]
            text = " ".join(option["description"]) if isinstance(option["description"], list) else option["description"]
            found = re.search(r"With the V\(%s\) backend.*?the default is\s+V\(((?:\\.|[^\\)])*)\)" % backend, text, re.S)
            assert found, f"{settings.PREFIX}{key}: no default for the {backend} backend in its description"
            documented = _unmark(found.group(1))
            assert (yaml.safe_load(documented) if key in ("labels", "vm") else documented) == value, key
    # what a backend needs is said in the docs too
    assert "required with the V(libvirt) backend" in options["runner_pool_image"]["description"]
    vm_doc = " ".join(options["runner_pool_vm"]["description"])
    for need in settings.BACKEND_NEEDS["hyperv"]:
        assert f"C({need.partition('.')[2]})" in vm_doc
    assert "these three are required" in vm_doc
