"""VMManager decisions, against libvirt's in-process test driver (no libvirtd, no guest)."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _domain as domain
from ansible_collections.rum.pool.plugins.module_utils import _image as image
from ansible_collections.rum.pool.plugins.module_utils import _inventory as inventory
from ansible_collections.rum.pool.plugins.module_utils import _ready as ready
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")


class KeepOpen:
    """The test driver forgets everything when its connection closes: keep one for the test."""

    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def close(self):
        return 0


@pytest.fixture
def conn():
    c = libvirt.open("test:///default")
    yield KeepOpen(c)
    c.close()


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    cache = image.ImageCache(str(tmp_path / "cache"))
    return {"url": f"file://{path}", "cache": cache}


def manager(conn, base, tmp_path, check_mode=False, **options):
    values = {"name": "unit1", "uri": "test:///default", "domain_type": "qemu", "memory_mb": 256,
              "image": {"url": base["url"]}, "storage_dir": str(tmp_path / "vms")}
    values.update(options)
    return vm.VMManager(vm.VMParams.from_dict(values), check_mode=check_mode, connect=lambda uri: conn,
                        image_cache=base["cache"])


def test_check_mode_leaves_no_lock_file(conn, base, tmp_path):
    (tmp_path / "vms" / ".locks").mkdir(parents=True)  # other VMs have run here before
    manager(conn, base, tmp_path, check_mode=True).run()
    manager(conn, base, tmp_path, check_mode=True, state="absent").run()
    assert os.listdir(tmp_path / "vms" / ".locks") == []
    assert os.listdir(tmp_path / "vms") == [".locks"]


def test_create_check_mode_makes_nothing(conn, base, tmp_path):
    result = manager(conn, base, tmp_path, check_mode=True).run()
    assert result["changed"]
    assert "define domain" in result["changes"] and "start" in result["changes"]
    assert "unit1" not in [d.name() for d in conn.listAllDomains()]
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_create_rerun_change_and_remove(conn, base, tmp_path):
    created = manager(conn, base, tmp_path).run()
    assert created["changed"] and created["vm"]["state"] == "running"
    uuid, mac = created["vm"]["uuid"], created["vm"]["mac"]
    assert mac == domain.stable_mac("unit1", 0)
    assert oct(os.stat(created["vm"]["paths"]["seed"]).st_mode & 0o777) == "0o600"
    assert oct(os.stat(created["vm"]["paths"]["identity_file"]).st_mode & 0o777) == "0o600"

    again = manager(conn, base, tmp_path).run()
    assert not again["changed"], again["changes"]

    bigger = manager(conn, base, tmp_path, memory_mb=512, apply_changes="restart").run()
    assert bigger["changes"] == ["redefine domain", "restart"]
    assert bigger["vm"]["uuid"] == uuid and bigger["vm"]["mac"] == mac
    # --diff names only what changed: the memory, and the config hash that records the options
    before, after = bigger["diff"]["before"].splitlines(), bigger["diff"]["after"].splitlines()
    assert before[0] == "memory: 262144 KiB" and after[0] == "memory: 524288 KiB"
    assert [line.split(":")[0] for line in before] == [line.split(":")[0] for line in after] == \
        ["memory", "metadata config_hash"]

    removed = manager(conn, base, tmp_path, state="absent").run()
    assert removed["changed"]
    assert os.listdir(tmp_path / "vms" / ".locks") == [], "lock files are removed when a run ends"
    assert "unit1" not in [d.name() for d in conn.listAllDomains()]
    assert not os.path.exists(tmp_path / "vms" / "unit1")
    assert not manager(conn, base, tmp_path, state="absent").run()["changed"]


def test_diff_of_a_new_vm_and_of_a_power_change(conn, base, tmp_path):
    created = manager(conn, base, tmp_path, check_mode=True).run()
    assert created["diff"]["before"] == "state: absent\n"
    after = created["diff"]["after"].splitlines()
    assert after[0] == "state: running" and "memory: 262144 KiB" in after and "vcpus: 2" in after
    manager(conn, base, tmp_path).run()
    stopped = manager(conn, base, tmp_path, state="stopped").run()
    assert stopped["diff"] == {"before": "state: running\n", "after": "state: shutoff\n"}


def test_info_reports_the_domain_type(conn, base, tmp_path):
    created = manager(conn, base, tmp_path, domain_type="qemu").run()
    assert created["vm"]["domain_type"] == "qemu"
    vms = inventory.list_vms("test:///default", name="unit1", connect=lambda uri: conn)
    assert [(v["name"], v["domain_type"]) for v in vms] == [("unit1", "qemu")]


def test_shares_default_to_virtiofs_with_shared_memory(conn, base, tmp_path):
    created = manager(conn, base, tmp_path, mounts=[{"source": str(tmp_path), "target": "/src"}]).run()
    xml = conn.lookupByName("unit1").XMLDesc(0)
    assert "<driver type='virtiofs'/>" in xml and "<access mode='shared'/>" in xml
    assert created["changed"]


def test_virtiofs_without_virtiofsd_is_refused_before_anything_is_made(conn, base, tmp_path):
    m = manager(conn, base, tmp_path, mounts=[{"source": str(tmp_path), "target": "/src"}])
    m.find_virtiofsd = lambda: None
    with pytest.raises(vm.VMError, match="mounts /src use driver virtiofs, but this host has no virtiofsd"):
        m.run()
    assert "unit1" not in [d.name() for d in conn.listAllDomains()]
    assert not os.path.exists(tmp_path / "vms" / "unit1")
    # 9p needs no virtiofsd
    m = manager(conn, base, tmp_path, mounts=[{"source": str(tmp_path), "target": "/src", "driver": "9p"}])
    m.find_virtiofsd = lambda: None
    assert m.run()["changed"]


class _Guest:
    """Stands in for ready.Waiter: answers unmounted() as a guest with some shares mounted."""

    def __init__(self, mounted):
        self.mounted = mounted

    def unmounted(self, host, port, targets):
        return [target for target in targets if target not in self.mounted]


def test_mount_check_reports_each_share_and_fails_on_a_missing_one(conn, base, tmp_path):
    shares = [{"source": str(tmp_path), "target": "/src"},
              {"source": str(tmp_path), "target": "/data", "driver": "9p", "tag": "d"}]
    m = manager(conn, base, tmp_path, mounts=shares)
    assert m._check_mounts(_Guest({"/src", "/data"}), "h", 22) == [
        {"target": "/src", "tag": "src", "driver": "virtiofs", "mounted": True},
        {"target": "/data", "tag": "d", "driver": "9p", "mounted": True}]
    with pytest.raises(ready.NotReady, match=r"did not mount in the guest: /data \(tag d, 9p\)"):
        m._check_mounts(_Guest({"/src"}), "h", 22)


def test_running_vm_with_changed_definition_and_fail_policy(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    with pytest.raises(vm.VMError, match=r"definition changed while the VM is running \(vcpus: 2 -> 1\)"):
        manager(conn, base, tmp_path, vcpus=1, apply_changes="fail").run()


def test_next_boot_policy_warns_and_keeps_running(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    warnings = []
    m = manager(conn, base, tmp_path, vcpus=1)
    m.warn = warnings.append
    result = m.run()
    assert result["changes"] == ["redefine domain"]
    assert result["vm"]["state"] == "running"
    assert any("definition changed (vcpus: 2 -> 1); it takes effect at the next boot" in w for w in warnings)


def test_seed_change_gives_new_instance_id(conn, base, tmp_path):
    first = manager(conn, base, tmp_path, state="present").run()
    second = manager(conn, base, tmp_path, state="present", packages=["curl"]).run()
    # the seed changes, and so does the config hash in the domain's metadata (no restart needed)
    assert second["changes"] == ["write seed ISO", "redefine domain"]
    assert second["vm"]["instance_id"] != first["vm"]["instance_id"]


def test_failed_create_rolls_back(conn, base, tmp_path):
    # A bad user-mode port set-up is only caught when the domain XML is built, after files exist.
    with pytest.raises(vm.VMError, match="rum_vm 'unit1'"):
        manager(conn, base, tmp_path, interfaces=[{"user": True}],
                ports=[{"host": 70000, "guest": 22}]).run()
    assert "unit1" not in [d.name() for d in conn.listAllDomains()]
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_refuses_foreign_domain(conn, base, tmp_path):
    conn.defineXML("<domain type='test'><name>foreign</name><memory>262144</memory>"
                   "<os><type>hvm</type></os></domain>")
    with pytest.raises(vm.VMError, match="not created by rum.pool"):
        manager(conn, base, tmp_path, name="foreign", state="absent").run()


def test_unknown_network_is_named(conn, base, tmp_path):
    with pytest.raises(vm.VMError, match=r"network 'nope' does not exist on test:///default \(networks there: default\)"):
        manager(conn, base, tmp_path, interfaces=[{"network": "nope"}]).run()


def test_power_only_without_image(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    stopped = manager(conn, base, tmp_path, image=None, state="stopped", shutdown_timeout=0).run()
    assert stopped["changes"] == ["shut down"] and stopped["vm"]["state"] == "shutoff"
    with pytest.raises(vm.VMError, match="image.url is required to create it"):
        manager(conn, base, tmp_path, name="other", image=None).run()


@pytest.mark.parametrize("options,message", [
    ({"name": "../evil"}, "invalid name '../evil'"),
    ({"name": "a" * 64}, "invalid name"),
    ({"memory_mb": 128}, "memory_mb must be at least 256"),
    ({"vcpus": 0}, "vcpus must be at least 1"),
    ({"hostname": "bad_host"}, "invalid hostname 'bad_host'"),
    ({"seed_bus": "ide"}, "seed_bus=ide needs machine 'pc'"),
    ({"ports": [{"host": 2222, "guest": 22}]}, "ports need a user-mode interface"),
    ({"interfaces": [{"network": "default", "bridge": "br0"}]}, "exactly one of network, bridge or user"),
    ({"drives": [{"name": "d", "size": "1G"}, {"name": "d", "size": "1G"}]}, "drive names must be unique"),
    ({"mounts": [{"source": "/tmp", "target": "/a"}, {"source": "/tmp", "target": "/a/b"}]}, "must not repeat or nest"),
    ({"mounts": [{"source": "/nonexistent-rum", "target": "/a"}]}, "is not an existing directory"),
    ({"mounts": [{"source": "/tmp", "target": "relative"}]}, "must be an absolute path"),
    ({"mounts": [{"source": "/tmp", "target": "/src", "readonly": True}]},
     "cannot share a directory read-only with virtiofs; set driver: 9p"),
])
def test_validate_rejects(options, message):
    values = {"name": "ok", "image": {"url": "file:///x"}}
    values.update(options)
    with pytest.raises(vm.VMError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        vm.validate(vm.VMParams.from_dict(values))


def test_default_hostname_replaces_underscores():
    assert vm.default_hostname(vm.VMParams(name="ci_pool-1")) == "ci-pool-1"


def test_config_hash_ignores_power_and_waiting():
    a = vm.VMParams(name="x", state="running", wait_for="ssh")
    b = vm.VMParams(name="x", state="stopped", wait_for="none")
    assert vm.config_hash(a) == vm.config_hash(b)
    assert vm.config_hash(a) != vm.config_hash(vm.VMParams(name="x", memory_mb=2048))


def test_ssh_forward_and_config_snippet():
    assert vm.ssh_forward({"ports": [{"host": 2222, "guest": 22, "bind": "127.0.0.1"}]}) == ("127.0.0.1", 2222)
    assert vm.ssh_forward({"ports": [{"host": 8080, "guest": 80}]}) is None
    snippet = vm.ssh_config_snippet("dev", "10.0.0.5", 22, "rum", "/k")
    assert snippet.splitlines()[:4] == ["Host dev", "  HostName 10.0.0.5", "  Port 22", "  User rum"]
    assert "IdentityFile /k" in snippet
    assert vm.ssh_config_snippet("dev", None, 22, "rum", None) == ""


def test_reset_gives_a_fresh_overlay_and_keeps_identity(conn, base, tmp_path):
    created = manager(conn, base, tmp_path).run()
    overlay = created["vm"]["paths"]["overlay"]
    with open(overlay, "ab") as fh:
        fh.write(b"\0" * 4096)  # the guest "wrote" to its disk
    grown = os.path.getsize(overlay)
    reset = manager(conn, base, tmp_path, reset=True).run()
    assert reset["changes"][0] == "reset: fresh overlay and seed"
    assert "create overlay disk" in reset["changes"] and "write seed ISO" in reset["changes"]
    assert os.path.getsize(overlay) < grown
    assert reset["vm"]["uuid"] == created["vm"]["uuid"] and reset["vm"]["mac"] == created["vm"]["mac"]
    assert reset["vm"]["state"] == "running"


def test_restarted_always_acts(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    first = manager(conn, base, tmp_path, state="restarted", shutdown_timeout=0).run()
    assert first["changes"] == ["restart"] and first["vm"]["state"] == "running"
    manager(conn, base, tmp_path, image=None, state="stopped", shutdown_timeout=0).run()
    assert manager(conn, base, tmp_path, state="restarted").run()["changes"] == ["start"]


def test_a_slot_link_to_a_generations_folder_is_removed_not_followed(conn, base, tmp_path):
    """rum_slots names a slot's folder <storage>/<slot> with a link to its generation's folder
    (<slot>.<suffix>): removing the slot's VM drops the link and the recorded folder; a link left to a
    folder that is gone makes way for a VM's own folder."""
    storage = tmp_path / "vms"
    made = manager(conn, base, tmp_path, name="unit1.abcdef", state="present").run()
    folder = made["vm"]["paths"]["dir"]
    dom = conn.lookupByName("unit1.abcdef")
    dom.rename("unit1", 0)  # what the batch does when it promotes a generation
    os.symlink("unit1.abcdef", storage / "unit1")
    planned = manager(conn, base, tmp_path, state="absent", check_mode=True).run()
    assert f"remove {storage / 'unit1'}" in planned["changes"] and f"remove {folder}" in planned["changes"]
    assert os.path.islink(storage / "unit1") and os.path.isdir(folder)
    removed = manager(conn, base, tmp_path, state="absent").run()
    assert removed["changed"] and not os.path.lexists(storage / "unit1") and not os.path.exists(folder)

    os.symlink("unit1.gone", storage / "unit1")  # a link to a folder removed behind rum's back
    again = manager(conn, base, tmp_path, state="present").run()
    assert again["vm"]["paths"]["dir"] == str(storage / "unit1")
    assert os.path.isdir(storage / "unit1") and not os.path.islink(storage / "unit1")
