"""rum_vm's options for rum.toml's fields, against libvirt's in-process test driver and in shell.

Isolated networks and reservations, origin, ssh_interface and ssh_client, mount sources resolved
against project_dir, the default mount, no NIC at all, and the guest's script for file systems
over several drives (run here with stand-in tools; the booted guest in
tests/integration/test_rum_toml_guest.py runs it for real with btrfs).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from test_vm import KeepOpen, base, manager  # pylint: disable=unused-import  # base is a fixture

from ansible_collections.rum.pool.plugins.module_utils import _cloudinit as ci
from ansible_collections.rum.pool.plugins.module_utils import _domain as domain
from ansible_collections.rum.pool.plugins.module_utils import _network as network
from ansible_collections.rum.pool.plugins.module_utils import _seed
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")

CLOUD_INIT = "/usr/bin/cloud-init"


@pytest.fixture
def conn(monkeypatch):
    """test_vm's connection, with no host routes in the way of the networks made here."""
    monkeypatch.setattr(network, "host_routes", lambda: [])
    c = libvirt.open("test:///default")
    yield KeepOpen(c)
    c.close()


LAB = [{"network": "default"}, {"network": "rum-x-lab", "isolated": True, "ip": "10.77.3.20"}]


def _meta(conn, name="unit1") -> dict:
    return vm.read_meta(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def test_isolated_network_made_reserved_kept_and_removed_with_the_vm(conn, base, tmp_path):
    planned = manager(conn, base, tmp_path, check_mode=True, interfaces=LAB).run()
    assert "create isolated network rum-x-lab" in planned["changes"]
    assert any(c.startswith("reserve 10.77.3.20 for ") for c in planned["changes"])
    assert network.lookup(conn, "rum-x-lab") is None

    created = manager(conn, base, tmp_path, interfaces=LAB).run()
    mac = created["vm"]["macs"][1]
    info = network.info(network.lookup(conn, "rum-x-lab"))
    assert network.is_ours(info) and info.forward is None and info.hosts == ((mac, "10.77.3.20"),)
    assert _meta(conn)["reservations"] == [["rum-x-lab", mac]]
    again = manager(conn, base, tmp_path, interfaces=LAB).run()
    assert not again["changed"], again["changes"]

    moved = [LAB[0], dict(LAB[1], ip="10.77.3.30")]
    assert f"reserve 10.77.3.30 for {mac} on network rum-x-lab" in manager(conn, base, tmp_path, interfaces=moved).run()["changes"]
    assert network.info(network.lookup(conn, "rum-x-lab")).hosts == ((mac, "10.77.3.30"),)

    check = manager(conn, base, tmp_path, check_mode=True, state="absent").run()
    assert "remove isolated network rum-x-lab (no VM uses it)" in check["changes"]
    assert network.lookup(conn, "rum-x-lab") is not None
    gone = manager(conn, base, tmp_path, state="absent").run()
    assert "remove isolated network rum-x-lab (no VM uses it)" in gone["changes"]
    assert network.lookup(conn, "rum-x-lab") is None


def test_an_isolated_network_stays_while_another_vm_uses_it(conn, base, tmp_path):
    manager(conn, base, tmp_path, interfaces=LAB).run()
    manager(conn, base, tmp_path, name="unit2", interfaces=[dict(LAB[1], ip="10.77.3.21")]).run()
    hosts = network.info(network.lookup(conn, "rum-x-lab")).hosts
    assert sorted(ip for _mac, ip in hosts) == ["10.77.3.20", "10.77.3.21"]
    first = manager(conn, base, tmp_path, state="absent").run()
    assert not any("remove isolated network" in c for c in first["changes"])
    assert [ip for _mac, ip in network.info(network.lookup(conn, "rum-x-lab")).hosts] == ["10.77.3.21"]
    last = manager(conn, base, tmp_path, name="unit2", state="absent").run()
    assert "remove isolated network rum-x-lab (no VM uses it)" in last["changes"]


def test_a_nic_removed_from_the_vm_takes_its_unused_network_along(conn, base, tmp_path):
    manager(conn, base, tmp_path, interfaces=LAB).run()
    # While the guest runs, it still has the NIC (until its next boot): the network stays.
    running = manager(conn, base, tmp_path, interfaces=LAB[:1]).run()
    assert not any("remove isolated network" in c for c in running["changes"])
    assert "reservations" not in _meta(conn)
    manager(conn, base, tmp_path, interfaces=LAB, state="stopped").run()
    stopped = manager(conn, base, tmp_path, interfaces=LAB[:1], state="stopped").run()
    assert "remove isolated network rum-x-lab (no VM uses it)" in stopped["changes"]


def test_a_network_that_is_not_ours_is_used_and_never_removed(conn, base, tmp_path):
    ours = [{"network": "default", "ip": "192.168.122.50", "isolated": True}]
    created = manager(conn, base, tmp_path, interfaces=ours).run()
    assert not any("create isolated network" in c for c in created["changes"])
    mac = created["vm"]["macs"][0]
    assert (mac, "192.168.122.50") in network.info(conn.networkLookupByName("default")).hosts
    gone = manager(conn, base, tmp_path, state="absent").run()
    assert f"drop the reservation of {mac} on network default" in gone["changes"]
    assert network.lookup(conn, "default") is not None
    assert (mac, "192.168.122.50") not in network.info(conn.networkLookupByName("default")).hosts


def _delete_by_hand(conn, name="unit1"):
    dom = conn.lookupByName(name)
    if dom.isActive():
        dom.destroy()
    dom.undefine()  # virsh undefine: the networks keep what the VM was given


def test_absent_for_a_vm_deleted_by_hand_drops_its_reservations_and_its_unused_network(conn, base, tmp_path):
    on_default = [{"network": "default", "ip": "192.168.122.51"}, dict(LAB[1], ip="10.77.3.22")]
    macs = manager(conn, base, tmp_path, interfaces=on_default).run()["vm"]["macs"]
    _delete_by_hand(conn)
    assert (macs[0], "192.168.122.51") in network.info(conn.networkLookupByName("default")).hosts
    checked = manager(conn, base, tmp_path, check_mode=True, state="absent", interfaces=on_default).run()
    assert checked["changed"]
    assert f"drop the reservation of {macs[0]} on network default (its VM is gone)" in checked["changes"]
    assert f"drop the reservation of {macs[1]} on network rum-x-lab (its VM is gone)" in checked["changes"]
    assert "remove isolated network rum-x-lab (no VM uses it)" in checked["changes"]
    assert network.lookup(conn, "rum-x-lab") is not None, "check mode changes nothing"
    gone = manager(conn, base, tmp_path, state="absent", interfaces=on_default).run()
    assert gone["changes"] == checked["changes"]
    assert network.lookup(conn, "rum-x-lab") is None
    assert macs[0] not in [mac for mac, _ip in network.info(conn.networkLookupByName("default")).hosts]
    assert network.lookup(conn, "default") is not None, "not ours: never removed"
    assert not manager(conn, base, tmp_path, state="absent", interfaces=on_default).run()["changed"]


def test_absent_for_a_vm_deleted_by_hand_leaves_what_another_domain_uses(conn, base, tmp_path):
    mac = manager(conn, base, tmp_path, interfaces=LAB).run()["vm"]["macs"][1]
    _delete_by_hand(conn)
    # another VM on the same network, with the gone VM's MAC (given by hand): both stay
    manager(conn, base, tmp_path, name="unit2", interfaces=[{"network": "rum-x-lab", "mac": mac}]).run()
    kept = manager(conn, base, tmp_path, state="absent", interfaces=LAB).run()
    assert not any("rum-x-lab" in change for change in kept["changes"]), kept["changes"]
    assert network.info(network.lookup(conn, "rum-x-lab")).hosts == ((mac, "10.77.3.20"),)
    # once that VM is gone too, the same call cleans up
    _delete_by_hand(conn, "unit2")
    cleaned = manager(conn, base, tmp_path, state="absent", interfaces=LAB).run()
    assert f"drop the reservation of {mac} on network rum-x-lab (its VM is gone)" in cleaned["changes"]
    assert "remove isolated network rum-x-lab (no VM uses it)" in cleaned["changes"]
    assert network.lookup(conn, "rum-x-lab") is None


def test_a_missing_network_that_is_not_isolated_stays_an_error(conn, base, tmp_path):
    with pytest.raises(vm.VMError, match="libvirt network 'nope' does not exist"):
        manager(conn, base, tmp_path, interfaces=[{"network": "nope", "ip": "10.1.1.1"}]).run()
    assert network.lookup(conn, "nope") is None


def test_a_failed_create_removes_the_network_it_made(conn, base, tmp_path):
    bad = [LAB[1], {"network": "default", "ip": "10.9.9.9"}]  # outside default's subnet
    with pytest.raises(vm.VMError, match=r"interface ip 10.9.9.9: network 'default': ip 10.9.9.9 is not in its subnet"):
        manager(conn, base, tmp_path, interfaces=bad).run()
    assert network.lookup(conn, "rum-x-lab") is None
    assert "unit1" not in [d.name() for d in conn.listAllDomains()]


def test_origin_keeps_two_projects_apart(conn, base, tmp_path):
    manager(conn, base, tmp_path, origin="/one/dev.rum.toml").run()
    assert _meta(conn)["origin"] == "/one/dev.rum.toml"
    for state in ("running", "absent"):
        with pytest.raises(vm.VMError, match="already exists for /one/dev.rum.toml, and this one is for "
                                             "/two/dev.rum.toml"):
            manager(conn, base, tmp_path, state=state, origin="/two/dev.rum.toml").run()
    assert not manager(conn, base, tmp_path, origin="/one/dev.rum.toml").run()["changed"]
    manager(conn, base, tmp_path, state="absent").run()  # by name alone: allowed


def test_ssh_interface_and_client(conn, base, tmp_path):
    created = manager(conn, base, tmp_path, interfaces=LAB, ssh_interface="rum-x-lab",
                      ssh_client="kitty +kitten ssh").run()
    meta = _meta(conn)
    assert meta["ssh_mac"] == created["vm"]["macs"][1] and meta["ssh_client"] == "kitty +kitten ssh"
    plain = manager(conn, base, tmp_path, name="unit2").run()
    assert "ssh_mac" not in _meta(conn, "unit2") and "ssh_client" not in _meta(conn, "unit2")
    for result in (created, plain):
        command = result["vm"].get("ssh_command")
        if command:  # the test driver's fake addresses, when it has one for that NIC
            assert command.startswith("kitty +kitten ssh -o " if result is created else "ssh -o ")


def test_no_interfaces_means_no_nic(conn, base, tmp_path):
    manager(conn, base, tmp_path, interfaces=[]).run()
    assert domain.domain_macs(conn.lookupByName("unit1").XMLDesc(0)) == []


def test_mount_sources_resolve_against_project_dir(conn, base, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    mounts = [{"source": ".", "target": "/work", "default": True}, {"source": "src", "target": "/src"}]
    manager(conn, base, tmp_path, mounts=mounts, project_dir=str(project)).run()
    sources = {m["tag"]: m["source"] for m in domain.canonical(conn.lookupByName("unit1").XMLDesc(0))["mounts"]}
    assert sources == {"work": str(project), "src": str(project / "src")}
    with pytest.raises(vm.VMError, match=r"mounts\[0\].source: '.' is relative: set project_dir"):
        manager(conn, base, tmp_path, name="unit2", mounts=mounts[:1]).run()


def test_git_source_is_the_work_tree_top(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert vm.resolve_mount_source("git", str(repo / "sub")) == str(repo)
    with pytest.raises(ValueError, match="'git': the top of the git work tree of .* is unknown"):
        vm.resolve_mount_source("git", str(tmp_path))


@pytest.mark.parametrize("options, message", [
    ({"interfaces": [{"bridge": "br0", "ip": "10.0.0.2"}]}, r"interfaces\[0\]: ip and isolated need a libvirt network"),
    ({"interfaces": [{"network": "n", "ip": "10.0.0"}]}, r"interfaces\[0\].ip '10.0.0' is not an IPv4 address"),
    ({"ssh_interface": "lab"}, "ssh_interface 'lab' is not the network of one of interfaces"),
    ({"mounts": [{"source": "/", "target": "/a", "default": True}, {"source": "/", "target": "/b", "default": True}]},
     "at most one of mounts"),
    ({"drives": [{"name": "a", "size": "1G"}], "filesystems": [{"type": "ext4", "drives": ["a"], "mount": "/d"}]},
     r"filesystems\[0\].type must be one of btrfs, zfs"),
    ({"drives": [{"name": "a", "size": "1G"}], "filesystems": [{"type": "btrfs", "drives": ["b"], "mount": "/d"}]},
     r"filesystems\[0\].drives: 'b' is not one of drives\[\] \(a\)"),
    ({"drives": [{"name": "a", "size": "1G", "filesystem": "ext4"}],
      "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "/d"}]}, "already has a filesystem of its own"),
    ({"drives": [{"name": "a", "size": "1G"}], "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "/d"},
                                                               {"type": "zfs", "drives": ["a"], "mount": "/e"}]},
     r"drive 'a' is already used by filesystems\[0\]"),
    ({"drives": [{"name": "a", "size": "1G"}], "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "/d",
                                                                "pool": "p"}]}, r"filesystems\[0\].pool is only for type zfs"),
    ({"drives": [{"name": "a", "size": "1G", "filesystem": "ext4", "mount": "/d/e"}],
      "filesystems": [], "mounts": [{"source": "/", "target": "/d"}]}, "mount targets must not repeat or nest: /d and /d/e"),
])
def test_parity_checks_name_the_option(options, message):
    with pytest.raises(vm.VMError, match=message):
        vm.validate(vm.VMParams.from_dict({"name": "x", **options}))


# ---------------------------------------------------------------------------------- the guest side


def test_file_systems_over_drives_in_the_cloud_config(tmp_path):
    p = vm.VMParams.from_dict({"name": "x", "drives": [{"name": n, "size": "1G"} for n in "abcd"], "filesystems": [
        {"type": "btrfs", "drives": ["a", "b"], "mount": "/data", "mode": "raid1"},
        {"type": "zfs", "drives": ["c", "d"], "mount": "/tank", "mode": "mirror"}]})
    drives = [{"name": n, "target": domain.target_name("virtio", i + 1)} for i, n in enumerate("abcd")]
    wanted = vm.guest_filesystems(p, drives)
    assert wanted == [
        {"type": "btrfs", "devices": ["/dev/vdb", "/dev/vdc"], "target": "/data", "mode": "raid1", "pool": None},
        {"type": "zfs", "devices": ["/dev/vdd", "/dev/vde"], "target": "/tank", "mode": "mirror", "pool": "c"}]
    config = ci.vm_user_data(hostname="x", filesystems=wanted, provision_script="echo p\n", default_mount="/work")
    files = {f["path"]: f for f in config["write_files"]}
    script = files[ci.FILESYSTEMS_PATH]["content"]
    assert script.endswith("btrfs_fs /data raid1 /dev/vdb /dev/vdc\nzfs_fs c /tank mirror /dev/vdd /dev/vde\n")
    # made before the provision script, which only runs when they were made
    assert config["runcmd"][0] == f"{ci.FILESYSTEMS_PATH} || exit 1"
    assert files[ci.DEFAULT_MOUNT_PROFILE]["content"].endswith("if [ -d /work ]; then cd /work; fi\n")
    if not os.path.exists(CLOUD_INIT):
        pytest.fail(f"{CLOUD_INIT} is missing: apt-get install cloud-init")
    path = tmp_path / "user-data"
    path.write_text(_seed.render_user_data(config))
    proc = subprocess.run([CLOUD_INIT, "schema", "--config-file", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("item, message", [
    ({"type": "btrfs", "devices": ["/dev/vdb"], "target": "/d", "mode": "mirror"}, "for btrfs one of single"),
    ({"type": "zfs", "devices": ["/dev/vdb"], "target": "/d", "mode": "raid1", "pool": "p"}, "for zfs one of mirror"),
    ({"type": "zfs", "devices": ["/dev/vdb"], "target": "/d", "pool": "mirror0"}, "a zfs pool name"),
    ({"type": "zfs", "devices": ["/dev/vdb; rm"], "target": "/d", "pool": "p"}, "not a device path"),
    ({"type": "btrfs", "devices": [], "target": "/d"}, "give at least one device"),
])
def test_file_system_entries_are_checked(item, message):
    with pytest.raises(ci.CloudInitError, match=message):
        ci.vm_user_data(hostname="x", filesystems=[item])


def _tools(folder, state):
    """Stand-ins for blkid, mkfs.btrfs, btrfs, mountpoint, mount, zpool, zfs and modprobe: they log
    their calls, and blkid and zpool answer from ``state`` (a folder of marker files)."""
    os.makedirs(folder, exist_ok=True)
    calls = os.path.join(folder, "calls")
    scripts = {
        "blkid": f'dev=$(eval echo \\${{$#}}); case "$*" in *TYPE*) cat "{state}/$(basename $dev).type" 2>/dev/null;; '
                 f'*UUID*) echo 1234-uuid;; esac; exit 0',
        "mkfs.btrfs": f'echo "mkfs.btrfs $*" >> {calls}; for d; do case $d in /*) echo btrfs > "{state}/$(basename $d).type";; '
                      'esac; done',
        "btrfs": f'echo "btrfs $*" >> {calls}',
        "mountpoint": "exit 1",
        "mount": f'echo "mount $*" >> {calls}',
        "zpool": f'echo "zpool $*" >> {calls}; case $1 in list) [ -e "{state}/pool" ];; import) exit 1;; '
                 f'create) touch "{state}/pool";; esac',
        "zfs": f'echo "zfs $*" >> {calls}',
        "modprobe": "exit 0",
    }
    for name, body in scripts.items():
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"#!/bin/sh\n{body}\n")
        os.chmod(path, 0o755)
    return calls


def _run_fs_script(tmp_path, wanted, fstab):
    config = ci.vm_user_data(hostname="x", filesystems=wanted)
    text = {f["path"]: f for f in config["write_files"]}[ci.FILESYSTEMS_PATH]["content"]
    # plain files stand in for the guest's drives; the fstab is ours
    text = text.replace('[ -b "$dev" ]', '[ -e "$dev" ]').replace("/etc/fstab", str(fstab))
    text = text.replace(" /dev/vd", f" {tmp_path}/vd")
    script = tmp_path / "filesystems"
    script.write_text(text)
    script.chmod(0o700)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False)


def _drives(tmp_path, names):
    """Stand-in tools, their state folder, their call log, and plain files for the drives ``names``."""
    state = tmp_path / "state"
    state.mkdir()
    calls = _tools(str(tmp_path / "bin"), str(state))
    devices = [str(tmp_path / name) for name in names]
    for dev in devices:
        open(dev, "w").close()
    return state, calls, devices


def test_the_btrfs_script_formats_once_and_never_over_data(tmp_path):
    state, calls, devices = _drives(tmp_path, ("vdb", "vdc"))
    fstab = tmp_path / "fstab"
    fstab.write_text("LABEL=root / ext4 defaults 0 1\n")
    wanted = [{"type": "btrfs", "devices": ["/dev/vdb", "/dev/vdc"], "target": str(tmp_path / "data"), "mode": "raid1"}]
    for _boot in range(2):
        proc = _run_fs_script(tmp_path, wanted, fstab)
        assert proc.returncode == 0, proc.stderr
    with open(calls, encoding="utf-8") as fh:
        made = [line for line in fh.read().splitlines() if line.startswith("mkfs")]
    assert made == [f"mkfs.btrfs -q -d raid1 {devices[0]} {devices[1]}"]
    assert fstab.read_text().splitlines()[1:] == [f"UUID=1234-uuid\t{tmp_path / 'data'}\tbtrfs\tdefaults,nofail\t0\t0"]
    # a drive that holds something else is never formatted
    (state / "vdb.type").write_text("ext4\n")
    proc = _run_fs_script(tmp_path, wanted, fstab)
    assert proc.returncode == 1 and "not formatting" in proc.stderr


def test_the_zfs_script_creates_the_pool_once(tmp_path):
    _state, calls, devices = _drives(tmp_path, ("vdd", "vde"))
    wanted = [{"type": "zfs", "devices": ["/dev/vdd", "/dev/vde"], "target": "/tank", "mode": "mirror", "pool": "tank"}]
    for _boot in range(2):
        proc = _run_fs_script(tmp_path, wanted, tmp_path / "fstab")
        assert proc.returncode == 0, proc.stderr
    with open(calls, encoding="utf-8") as fh:
        created = [line for line in fh.read().splitlines() if line.startswith("zpool create")]
    assert created == [f"zpool create -o ashift=12 -O mountpoint=/tank tank mirror {devices[0]} {devices[1]}"]


def test_a_missing_tool_is_named(tmp_path):
    (tmp_path / "bin").mkdir()
    for name in ("blkid", "mountpoint"):
        (tmp_path / "bin" / name).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / name).chmod(0o755)
    wanted = [{"type": "zfs", "devices": ["/dev/null"], "target": "/tank", "pool": "tank"}]
    config = ci.vm_user_data(hostname="x", filesystems=wanted)
    text = {f["path"]: f for f in config["write_files"]}[ci.FILESYSTEMS_PATH]["content"]
    script = tmp_path / "fs"
    # no package manager here: the script must say what is missing and stop
    script.write_text(text.replace("command -v apt-get", "false").replace("command -v dnf", "false")
                      .replace("command -v zypper", "false").replace("command -v apk", "false"))
    script.chmod(0o700)
    proc = subprocess.run([str(script)], env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "zpool is still missing: add zfsutils-linux to the image or to the VM's packages" in proc.stderr


def test_a_user_mode_nic_that_only_forwards_ports_gets_no_route():
    macs = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    config = ci.vm_network_config(macs, user_mode=[macs[1]])
    assert config["ethernets"]["nic0"] == {"match": {"macaddress": macs[0]}, "dhcp4": True}
    assert config["ethernets"]["nic1"] == {"match": {"macaddress": macs[1]}, "dhcp4": False,
                                           "addresses": ["10.0.2.15/24"]}
    # the only NIC: DHCP from qemu, with its route
    assert ci.vm_network_config(macs[:1], user_mode=macs[:1])["ethernets"]["nic0"]["dhcp4"] is True
    assert json.loads(json.dumps(yaml.safe_load(yaml.safe_dump(config)))) == config
