# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VMManager's failure paths and the options no other unit test runs, against libvirt's test driver.

A create that fails part way leaves nothing behind (domain, started VM, files); a wait that times
out says so with the serial console's last lines; extra drives, disk growth, autostart, starting an
inactive network, the qemu access check, and key, image and seed errors each name what went wrong.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess

import pytest

from test_vm import KeepOpen, base, manager  # pylint: disable=unused-import  # base is a fixture

from ansible_collections.rum.pool.plugins.module_utils import _ready as ready
from ansible_collections.rum.pool.plugins.module_utils import _seed as seed
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm

from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")


@pytest.fixture
def conn():
    gc.collect()  # the test driver keeps its state while anything refers to a connection
    c = libvirt.open("test:///default")
    yield KeepOpen(c)
    c.close()
    gc.collect()


def names(conn):
    return {"defined": sorted(conn.listDefinedDomains()),
            "running": sorted(d.name() for d in conn.listAllDomains() if d.isActive())}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def no_ssh(monkeypatch):
    """Waiting runs on a fake clock, and no SSH server ever answers."""
    clock = FakeClock()
    monkeypatch.setattr(vm.ready, "Waiter", functools.partial(
        ready.Waiter, clock=clock, sleep=clock.sleep, banner=lambda host, port: None))
    return clock


def test_a_failed_wait_rolls_a_new_vm_back_and_shows_the_serial_console(conn, base, tmp_path, no_ssh):
    serial = tmp_path / "vms" / "unit1" / "serial.log"
    before = names(conn)

    real_start = vm.lv.start

    def start_and_log(dom):
        real_start(dom)
        serial.write_text("".join(f"boot line {n}\r\n" for n in range(50)) + "login: timed out\n")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vm.lv, "start", start_and_log)
        with pytest.raises(vm.VMError) as info:
            manager(conn, base, tmp_path, wait_for="ssh", wait_timeout=30).run()
    text = str(info.value)
    assert text.startswith("rum_vm 'unit1': timed out after 30s waiting for ssh")
    assert f"last lines of the serial console ({serial})" in text
    assert text.rstrip().endswith("login: timed out") and "boot line 49" in text
    assert "boot line 10" not in text  # only the tail
    assert no_ssh.now >= 30
    # Rolled back: the started VM destroyed, the new definition undefined, its files gone.
    assert names(conn) == before
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_a_failed_wait_leaves_an_existing_vm_alone(conn, base, tmp_path, no_ssh):
    manager(conn, base, tmp_path).run()
    with pytest.raises(vm.VMError, match="timed out"):
        manager(conn, base, tmp_path, wait_for="ssh", wait_timeout=5, memory_mb=384,
                apply_changes="restart").run()
    assert "unit1" in names(conn)["running"]
    assert os.path.exists(tmp_path / "vms" / "unit1" / "disk.qcow2")


def test_a_seed_error_after_the_overlay_rolls_back_the_files(conn, base, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise seed.SeedError("the seed would be larger than a CD")

    monkeypatch.setattr(vm.seed, "make_seed", broken)
    before = names(conn)
    with pytest.raises(vm.VMError, match=r"^rum_vm 'unit1': seed: the seed would be larger than a CD$"):
        manager(conn, base, tmp_path).run()
    assert names(conn) == before
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_a_define_that_fails_after_the_start_of_another_step_undoes_both(conn, base, tmp_path, monkeypatch):
    """The guard after start fails: the new domain is destroyed and undefined."""
    def refuse(self, dom):
        raise vm.VMError("guard refused")

    monkeypatch.setattr(vm.VMManager, "_guard_guest", refuse)
    before = names(conn)
    with pytest.raises(vm.VMError, match="guard refused"):
        manager(conn, base, tmp_path).run()
    assert names(conn) == before


def test_ssh_keygen_failure_is_named(conn, base, tmp_path):
    def run(argv):
        if argv[0] == "ssh-keygen":
            return 1, "", "Saving key failed: disk full\n"
        return vm._run(argv)  # pylint: disable=protected-access

    m = vm.VMManager(vm.VMParams.from_dict({
        "name": "unit1", "uri": "test:///default", "domain_type": "qemu", "memory_mb": 256,
        "image": {"url": base["url"]}, "storage_dir": str(tmp_path / "vms")}),
        connect=lambda uri: conn, image_cache=base["cache"], run=run)
    with pytest.raises(vm.VMError) as info:
        m.run()
    assert str(info.value) == (f"rum_vm 'unit1': ssh-keygen failed for {tmp_path}/vms/unit1/id_ed25519: "
                               "Saving key failed: disk full")
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_a_private_key_without_its_public_half_is_refused(conn, base, tmp_path):
    vm_dir = tmp_path / "vms" / "unit1"
    vm_dir.mkdir(parents=True)
    (vm_dir / "id_ed25519").write_text("PRIVATE\n")
    with pytest.raises(vm.VMError, match=f"no public key next to {vm_dir}/id_ed25519$"):
        manager(conn, base, tmp_path).run()
    assert "unit1" not in names(conn)["defined"] + names(conn)["running"]


def test_an_image_that_cannot_be_had_is_named(conn, base, tmp_path):
    with pytest.raises(vm.VMError, match=r"^rum_vm 'unit1': image: .*nothing-here\.qcow2"):
        manager(conn, base, tmp_path, image={"url": f"file://{tmp_path}/nothing-here.qcow2"}).run()
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_extra_drives_are_made_once_and_attached_after_the_overlay(conn, base, tmp_path):
    drives = [{"name": "logs", "size": "8M"}, {"name": "data", "size": "16M"}]
    result = manager(conn, base, tmp_path, drives=drives).run()
    assert "create drive data" in result["changes"] and "create drive logs" in result["changes"]
    xml = conn.lookupByName("unit1").XMLDesc(0)
    # sorted by name: data is vdb, logs vdc
    assert f"{tmp_path}/vms/unit1/drive-data.qcow2" in xml and f"{tmp_path}/vms/unit1/drive-logs.qcow2" in xml
    assert xml.index("drive-data.qcow2") < xml.index("drive-logs.qcow2")
    assert "dev='vdb'" in xml and "dev='vdc'" in xml
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", f"{tmp_path}/vms/unit1/drive-data.qcow2"],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 16 * 1024 * 1024
    again = manager(conn, base, tmp_path, drives=drives).run()
    assert not again["changed"], again["changes"]


def test_a_drive_that_cannot_be_made_is_named_and_rolled_back(conn, base, tmp_path):
    before = names(conn)
    with pytest.raises(vm.VMError, match=r"^rum_vm 'unit1': drive data: "):
        manager(conn, base, tmp_path, drives=[{"name": "data", "size": "0"}]).run()
    assert names(conn) == before
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_the_disk_grows_but_never_shrinks(conn, base, tmp_path):
    overlay = f"{tmp_path}/vms/unit1/disk.qcow2"

    def size():
        out = subprocess.run(["qemu-img", "info", "--output=json", "-U", overlay], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)["virtual-size"]

    manager(conn, base, tmp_path, disk_size="128M").run()
    assert size() == 128 * 1024 * 1024
    grown = manager(conn, base, tmp_path, disk_size="256M").run()
    assert "grow disk to 256M" in grown["changes"]
    assert size() == 256 * 1024 * 1024
    smaller = manager(conn, base, tmp_path, disk_size="128M").run()
    assert not any(c.startswith("grow") for c in smaller["changes"])
    assert size() == 256 * 1024 * 1024
    checked = manager(conn, base, tmp_path, check_mode=True, disk_size="512M").run()
    assert "grow disk to 512M" in checked["changes"] and size() == 256 * 1024 * 1024


def test_autostart_follows_the_option(conn, base, tmp_path):
    made = manager(conn, base, tmp_path).run()
    assert not any(c.startswith("autostart") for c in made["changes"])
    assert conn.lookupByName("unit1").autostart() == 0
    on = manager(conn, base, tmp_path, autostart=True).run()
    assert "autostart on" in on["changes"] and conn.lookupByName("unit1").autostart() == 1
    assert not manager(conn, base, tmp_path, autostart=True).run()["changed"]
    off = manager(conn, base, tmp_path, autostart=False).run()
    assert "autostart off" in off["changes"] and conn.lookupByName("unit1").autostart() == 0


def test_an_inactive_network_is_started(conn, base, tmp_path):
    conn.networkDefineXML("<network><name>sleepy</name><bridge name='virbr-sleepy'/>"
                          "<ip address='10.77.0.1' netmask='255.255.255.0'/></network>")
    assert not conn.networkLookupByName("sleepy").isActive()
    checked = manager(conn, base, tmp_path, check_mode=True, interfaces=[{"network": "sleepy"}]).run()
    assert "start libvirt network sleepy" in checked["changes"]
    assert not conn.networkLookupByName("sleepy").isActive()
    result = manager(conn, base, tmp_path, interfaces=[{"network": "sleepy"}]).run()
    assert "start libvirt network sleepy" in result["changes"]
    assert conn.networkLookupByName("sleepy").isActive()


def test_a_missing_network_is_named_with_those_there(conn, base, tmp_path):
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, interfaces=[{"network": "nope"}]).run()
    assert "libvirt network 'nope' does not exist on test:///default (networks there: default" in str(info.value)


def test_qemu_must_reach_the_storage_on_a_system_uri(conn, base, tmp_path, monkeypatch):
    asked = []

    def access(path, *args, **kwargs):
        asked.append(path)
        return "/root is not searchable by libvirt-qemu" if path == str(tmp_path / "vms") else None

    monkeypatch.setattr(vm.storage, "is_system_uri", lambda uri: True)
    monkeypatch.setattr(vm.storage, "check_qemu_access", access)
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path).run()
    assert str(info.value) == (f"rum_vm 'unit1': storage_dir {tmp_path}/vms: "
                               "/root is not searchable by libvirt-qemu")
    assert asked == [str(tmp_path / "vms")]
    asked.clear()
    monkeypatch.setattr(vm.storage, "check_qemu_access",
                        lambda path, *a, **k: asked.append(path) or ("no" if "cache" in path else None))
    with pytest.raises(vm.VMError, match=r"^rum_vm 'unit1': image_cache_dir .*: no$"):
        manager(conn, base, tmp_path, image_cache_dir=str(tmp_path / "cache")).run()
    assert asked == [str(tmp_path / "vms"), str(tmp_path / "cache")]
    assert "unit1" not in names(conn)["defined"] + names(conn)["running"]
