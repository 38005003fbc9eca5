# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VMManager's remaining edges exactly, against libvirt's test driver: what removal reports and
removes (a renamed domain's recorded folder too), the DHCP leases it hands back, a rollback that
goes on past an undo that fails, power-only runs and when they wait, restarts in check mode, the
SSH interface's address and the shares looked at in the guest, isolated networks made once and
removed only when ours and unused, the network filter of an existing VM, the seed's eject."""

from __future__ import annotations

import gc
import os

import pytest

from test_vm import KeepOpen, base, manager  # pylint: disable=unused-import  # base is a fixture
from test_vm_exact import FakeWaiter, waiter  # noqa: F401  pylint: disable=unused-import  # a fixture
from test_vm_failures import conn, names  # noqa: F401  pylint: disable=unused-import  # a fixture
from test_vm_isolation import FILTER, IP_JSON, Conn, live  # noqa: F401  pylint: disable=unused-import  # a fixture
from test_vm_isolation import run as iso_run

from ansible_collections.rum.pool.plugins.module_utils import _domain as domain
from ansible_collections.rum.pool.plugins.module_utils import _network as network
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nwfilter
from ansible_collections.rum.pool.plugins.module_utils import _ready as ready
from ansible_collections.rum.pool.plugins.module_utils import _seed_eject as seed_eject
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm

from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")

LAB_XML = ("<network><name>lab</name><bridge name='virbr-lab'/>"
           "<ip address='10.77.0.1' netmask='255.255.255.0'/></network>")


def power(conn, tmp_path, **options):
    """rum_vm without image: power state only."""
    values = {"name": "unit1", "uri": "test:///default", "storage_dir": str(tmp_path / "vms")}
    values.update(options)
    check = values.pop("check_mode", False)
    return vm.VMManager(vm.VMParams.from_dict(values), connect=lambda uri: conn, check_mode=check)


def recorder(monkeypatch, module, name):
    """Calls of ``module.name`` recorded (positional arguments), passed on to the real one."""
    calls = []
    real = getattr(module, name)

    def record(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, record)
    return calls


# ---------------------------------------------------------------- small helpers
def test_a_mount_tag_keeps_the_letters_around_it():
    assert vm._mount_tag({"target": "/Xdata/inX/"}) == "Xdata_inX"  # pylint: disable=protected-access


def test_the_default_runner_names_a_missing_command():
    rc, out, err = vm._run(["/nonexistent/rum-tool", "x"])  # pylint: disable=protected-access
    assert (rc, out) == (127, "")
    assert err.startswith("/nonexistent/rum-tool not found: ")


def _with_dir(folder):
    return (f"<domain><name>x</name><metadata><rum:vm xmlns:rum='{domain.RUM_NS}'>"
            f"<rum:paths>{folder}</rum:paths></rum:vm></metadata></domain>")


def test_the_recorded_folder_of_a_renamed_domain():
    def dir_of(value):
        return _with_dir(vm.json.dumps({"dir": value}))

    assert vm.recorded_dir(dir_of("/s/gen-2/"), "/s") == ["/s/gen-2"]
    assert vm.recorded_dir(dir_of("/s/gen-2"), "/s/") == ["/s/gen-2"]
    assert vm.recorded_dir(dir_of("/other/gen-2"), "/s") == []  # not in the storage directory
    assert vm.recorded_dir(dir_of("/s/a/gen-2"), "/s") == []  # deeper down
    assert vm.recorded_dir(dir_of("/s/.locks"), "/s") == []  # not a VM's folder name
    assert vm.recorded_dir(dir_of(""), "/s") == []
    assert vm.recorded_dir(dir_of(5), "/s") == []
    assert vm.recorded_dir(_with_dir("not json"), "/s") == []
    assert vm.recorded_dir("<domain><name>x</name></domain>", "/s") == []


# ---------------------------------------------------------------- removal
def test_removing_what_is_not_there_reports_absent_to_absent(conn, base, tmp_path):
    result = manager(conn, base, tmp_path, state="absent").run()
    assert result == {"changed": False, "changes": [], "vm": {"name": "unit1", "state": "absent"},
                      "diff": {"before": "state: absent\n", "after": "state: absent\n"}}


def test_removing_a_running_vm_reports_each_step_and_hands_its_leases_back(conn, base, tmp_path, monkeypatch):
    created = manager(conn, base, tmp_path).run()
    asked = []

    def release(dom, networks):
        asked.append((dom.name(), list(networks)))
        return ["192.168.122.7", "192.168.122.8"], ["network lab: gone"]
    monkeypatch.setattr(vm.lv, "release_leases", release)
    logs, warnings = [], []
    m = manager(conn, base, tmp_path, state="absent")
    m.log, m.warn = logs.append, warnings.append
    result = m.run()
    folder = f"{tmp_path}/vms/unit1"
    assert result == {"changed": True, "changes": ["remove domain", f"remove {folder}"],
                      "vm": {"name": "unit1", "state": "absent"},
                      "diff": {"before": "state: running\n", "after": "state: absent\n"}}
    assert asked == [("unit1", [(created["vm"]["mac"], "default")])]
    assert "rum_vm 'unit1': released DHCP lease(s) 192.168.122.7, 192.168.122.8" in logs
    assert warnings == ["rum_vm 'unit1': network lab: gone"]


def test_removing_a_renamed_domain_removes_both_folders(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    # a staged generation renamed: its domain is now gen-2, its files stay in unit1's folder
    xml = conn.lookupByName("unit1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    manager(conn, base, tmp_path, state="absent").run()
    os.makedirs(tmp_path / "vms" / "unit1")
    (tmp_path / "vms" / "unit1" / "disk.qcow2").write_bytes(b"")
    uuid = domain.domain_uuid(xml)
    conn.defineXML(xml.replace("<name>unit1</name>", "<name>gen-2</name>").replace(f"<uuid>{uuid}</uuid>", ""))
    os.makedirs(tmp_path / "vms" / "gen-2")
    removed = manager(conn, base, tmp_path, name="gen-2", state="absent").run()
    assert removed["changes"] == ["remove domain", f"remove {tmp_path}/vms/gen-2", f"remove {tmp_path}/vms/unit1"]
    assert sorted(os.listdir(tmp_path / "vms")) == [".locks"]
    assert removed["diff"] == {"before": "state: shutoff\n", "after": "state: absent\n"}


# ---------------------------------------------------------------- rollback
def test_an_undo_that_fails_does_not_stop_the_others_nor_hide_the_error(conn, base, tmp_path, monkeypatch):
    def refuse(self, dom):
        raise vm.VMError("guard refused")

    def broken_undefine(dom):
        raise vm.lv.LibvirtError("undefine failed")
    monkeypatch.setattr(vm.VMManager, "_guard_guest", refuse)
    monkeypatch.setattr(vm.lv, "undefine", broken_undefine)
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path).run()
    assert str(info.value) == "guard refused"
    assert names(conn)["running"] == ["test"]  # the new VM was destroyed before the undefine failed
    assert not os.path.exists(tmp_path / "vms" / "unit1")  # and its files went after it
    del info


# ---------------------------------------------------------------- power only, restarts
def test_power_only_waits_only_when_running_and_not_in_check_mode(conn, base, tmp_path, waiter):
    manager(conn, base, tmp_path, generate_ssh_key=False, wait_for="none").run()
    power(conn, tmp_path, state="stopped", wait_for="ip").run()
    power(conn, tmp_path, state="running", wait_for="ip", check_mode=True).run()
    assert waiter.made == []
    power(conn, tmp_path, state="running", wait_for="none").run()
    assert waiter.made == []
    result = power(conn, tmp_path, state="restarted", wait_for="ip", wait_timeout=4).run()
    (made,) = waiter.made
    assert made.asked == [("ip", 4)] and made.identity_file is None  # this VM has no key of rum's
    assert result["vm"]["cloud_init"] == "done"


def test_power_only_present_keeps_the_state_and_reports_the_domain(conn, base, tmp_path):
    manager(conn, base, tmp_path, state="stopped").run()
    result = power(conn, tmp_path, state="present").run()
    dom = conn.lookupByName("unit1")
    assert result["changed"] is False
    assert result["diff"] == {"before": "state: shutoff\n", "after": "state: shutoff\n"}
    assert (result["vm"]["uuid"], result["vm"]["state"], result["vm"]["macs"]) == (
        dom.UUIDString(), "shutoff", [domain.stable_mac("unit1", 0)])


def test_a_restart_shuts_down_then_starts_and_check_mode_does_neither(conn, base, tmp_path, monkeypatch):
    manager(conn, base, tmp_path).run()
    calls = []
    monkeypatch.setattr(vm.lv, "shutdown", lambda dom, timeout: calls.append(("shutdown", timeout)) or "acpi")
    monkeypatch.setattr(vm.lv, "start", lambda dom: calls.append(("start", dom.name())))
    checked = power(conn, tmp_path, state="restarted", check_mode=True, wait_for="none").run()
    assert checked["changes"] == ["restart"] and calls == []
    done = power(conn, tmp_path, state="restarted", wait_for="none", shutdown_timeout=7).run()
    assert done["changes"] == ["restart"] and calls == [("shutdown", 7), ("start", "unit1")]


# ---------------------------------------------------------------- addresses, waiting, shares
def _addresses(monkeypatch, by_mac):
    """lv.discover_ip answering from ``by_mac`` (the first MAC asked that has one), calls recorded."""
    calls = []

    def discover(dom, macs, networks=None):
        calls.append((list(macs), networks))
        if not dom.isActive():
            return None, None
        for mac in macs:
            if mac in by_mac:
                return by_mac[mac], "lease"
        return None, None
    monkeypatch.setattr(vm.lv, "discover_ip", discover)
    return calls


def test_describe_asks_for_the_addresses_of_the_vm_networks(conn, base, tmp_path, monkeypatch):
    manager(conn, base, tmp_path, wait_for="none").run()
    mac = domain.stable_mac("unit1", 0)
    calls = _addresses(monkeypatch, {mac: "192.168.122.9"})
    info = vm.describe(conn.lookupByName("unit1"))
    assert (info["ip"], info["ip_source"], info["ssh"]["host"]) == ("192.168.122.9", "lease", "192.168.122.9")
    assert calls == [([mac], [(mac, "default")])]


def test_describe_uses_the_meta_it_is_given(conn, base, tmp_path):
    made = manager(conn, base, tmp_path, wait_for="none", labels={"pool": "ci"}, autostart=True).run()
    assert made["vm"]["autostart"] is True and vm.describe(conn.lookupByName("unit1"))["autostart"] is True
    info = vm.describe(conn.lookupByName("unit1"), meta={"labels": {"given": "yes"}, "ssh_user": "ops"}, with_ip=False)
    assert (info["labels"], info["ssh"]["user"], info["managed"], info["paths"]) == ({"given": "yes"}, "ops", True, {})


def test_the_ssh_interface_address_is_used_for_ssh_and_waited_for(conn, base, tmp_path, monkeypatch, waiter):
    conn.networkCreateXML(LAB_XML)
    nics = [{"network": "default"}, {"network": "lab"}, {"user": True}]
    first, lab_mac = domain.stable_mac("unit1", 0), domain.stable_mac("unit1", 1)
    calls = _addresses(monkeypatch, {first: "192.168.122.9", lab_mac: "10.77.0.5"})
    result = manager(conn, base, tmp_path, interfaces=nics, ports=[{"host": 2222, "guest": 22}],
                     ssh_interface="lab", wait_for="ssh").run()
    (made,) = waiter.made
    # the forward of port 22 is not the way in: the lab NIC's address is
    assert made.ssh_endpoint("10.77.0.5") == ("10.77.0.5", 22) and made.ssh_endpoint(None) is None
    calls.clear()
    assert made.find_ip() == "10.77.0.5"
    assert calls == [([lab_mac], [(first, "default"), (lab_mac, "lab")])]
    assert result["vm"]["ip"] == "192.168.122.9"
    assert result["vm"]["ssh"] == {"host": "10.77.0.5", "port": 22, "user": "rum",
                                   "identity_file": f"{tmp_path}/vms/unit1/id_ed25519"}
    dom = conn.lookupByName("unit1")
    calls.clear()
    info = vm.describe(dom, with_ip=False)
    assert (info["ip"], info["ssh"]["host"], info["ssh"]["port"], info["ssh_command"]) == (None, None, 22, None)
    assert calls == []
    info = vm.describe(dom)
    assert (info["ssh"]["host"], info["ssh"]["port"]) == ("10.77.0.5", 22)
    assert calls[-1] == ([lab_mac], [(first, "default"), (lab_mac, "lab")])


def test_waiting_asks_for_the_addresses_of_the_vm_networks(conn, base, tmp_path, monkeypatch, waiter):
    mac = domain.stable_mac("unit1", 0)
    calls = _addresses(monkeypatch, {mac: "192.168.122.9"})
    manager(conn, base, tmp_path, wait_for="ip").run()
    calls.clear()
    assert waiter.made[0].find_ip() == "192.168.122.9"
    assert calls == [([mac], [(mac, "default")])]


def test_shares_are_not_looked_at_when_waiting_for_ssh_only(conn, base, tmp_path, waiter):
    share = tmp_path / "share"
    share.mkdir()
    result = manager(conn, base, tmp_path, wait_for="ssh", mounts=[{"source": str(share), "target": "/srv",
                                                                    "driver": "9p"}]).run()
    assert waiter.made[0].asked == [("ssh", 300)] and "mounts" not in result["vm"]


def test_shares_are_looked_at_on_the_address_waited_for(conn, base, tmp_path, monkeypatch, waiter):
    share = tmp_path / "share"
    share.mkdir()
    _addresses(monkeypatch, {domain.stable_mac("unit1", 0): "192.168.122.9"})
    manager(conn, base, tmp_path, wait_for="cloud_init", mounts=[{"source": str(share), "target": "/srv",
                                                                  "driver": "9p"}]).run()
    assert waiter.made[0].asked[-1] == ("mounts", "192.168.122.9", 22, ["/srv"])


class _Guest:
    """Stands in for ready.Waiter: no share mounted; records where it was asked."""

    def __init__(self):
        self.asked = []

    def unmounted(self, host, port, targets):
        self.asked.append((host, port))
        return list(targets)


def _unmounted(conn, base, tmp_path, serial):
    shares = [{"source": str(tmp_path), "target": "/a", "driver": "9p"},
              {"source": str(tmp_path), "target": "/b", "driver": "9p", "tag": "bee"}]
    m = manager(conn, base, tmp_path, mounts=shares)
    os.makedirs(tmp_path / "vms" / "unit1", exist_ok=True)
    (tmp_path / "vms" / "unit1" / "serial.log").write_text(serial)
    guest = _Guest()
    with pytest.raises(ready.NotReady) as info:
        m._check_mounts(guest, "10.0.0.5", 2200)  # pylint: disable=protected-access
    assert guest.asked == [("10.0.0.5", 2200)]
    return str(info.value)


def test_shares_that_did_not_mount_are_all_named(conn, base, tmp_path):
    assert _unmounted(conn, base, tmp_path, "boot\nlogin:\n") == (
        "shared folders did not mount in the guest: /a (tag a, 9p), /b (tag bee, 9p); does the guest kernel "
        "have that driver (Debian's cloud kernels have virtiofs, not 9p)?")


def test_what_the_guest_said_is_read_from_the_last_400_lines_and_shows_five(conn, base, tmp_path):
    early = "mount: early\n" + "noise\n" * 400
    assert _unmounted(conn, base, tmp_path, early).endswith("not 9p)?")
    later = "mount: early\n" + "noise\n" * 399
    assert _unmounted(conn, base, tmp_path, later).endswith("not 9p)? The guest said: mount: early")
    six = "".join(f"rum: could not mount s{n}\n" for n in range(6)) + "noise\n" * 40
    assert _unmounted(conn, base, tmp_path, six).endswith(
        "The guest said: " + " | ".join(f"rum: could not mount s{n}" for n in range(1, 6)))


# ---------------------------------------------------------------- networks
def test_an_isolated_network_two_nics_share_is_made_once(conn, base, tmp_path, monkeypatch):
    monkeypatch.setattr(network, "host_routes", lambda: [])
    nics = [{"network": "rum-x-lab", "isolated": True}, {"network": "rum-x-lab", "isolated": True}]
    planned = manager(conn, base, tmp_path, check_mode=True, interfaces=nics).run()
    assert planned["changes"].count("create isolated network rum-x-lab") == 1


def test_an_isolated_network_that_cannot_be_made_is_named(conn, base, tmp_path, monkeypatch):
    def refuse(conn, name, ip):
        raise network.NetworkError(f"no free subnet for {name}")
    monkeypatch.setattr(network, "create_isolated", refuse)
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, interfaces=[{"network": "rum-x-lab", "isolated": True}]).run()
    assert str(info.value) == "rum_vm 'unit1': network: no free subnet for rum-x-lab"
    del info


def test_a_network_that_is_not_ours_stays_when_no_vm_uses_it(conn, base, tmp_path):
    conn.networkCreateXML(LAB_XML)
    manager(conn, base, tmp_path, interfaces=[{"network": "lab"}]).run()
    gone = manager(conn, base, tmp_path, state="absent").run()
    assert not any("remove isolated network" in c for c in gone["changes"])
    assert network.lookup(conn, "lab") is not None


def test_each_unused_network_of_ours_goes_even_after_one_still_used(conn, base, tmp_path, monkeypatch):
    monkeypatch.setattr(network, "host_routes", lambda: [])
    both = [{"network": "rum-a", "isolated": True}, {"network": "rum-b", "isolated": True}]
    manager(conn, base, tmp_path, interfaces=both).run()
    manager(conn, base, tmp_path, name="unit2", interfaces=both[:1]).run()
    gone = manager(conn, base, tmp_path, state="absent").run()
    assert [c for c in gone["changes"] if "isolated network" in c] == ["remove isolated network rum-b (no VM uses it)"]
    assert network.lookup(conn, "rum-a") is not None and network.lookup(conn, "rum-b") is None


def test_a_reservation_dropped_after_one_that_is_kept(conn, base, tmp_path, monkeypatch):
    monkeypatch.setattr(network, "host_routes", lambda: [])
    fixed = [{"network": "rum-a", "isolated": True, "ip": "10.77.4.20"},
             {"network": "rum-b", "isolated": True, "ip": "10.77.5.20"}]
    made = manager(conn, base, tmp_path, interfaces=fixed, state="stopped").run()
    mac_b = made["vm"]["macs"][1]
    loose = [fixed[0], {"network": "rum-b", "isolated": True}]
    changed = manager(conn, base, tmp_path, interfaces=loose, state="stopped").run()
    assert f"drop the reservation of {mac_b} on network rum-b" in changed["changes"]
    assert network.info(network.lookup(conn, "rum-b")).hosts == ()
    assert [ip for _mac, ip in network.info(network.lookup(conn, "rum-a")).hosts] == ["10.77.4.20"]


def test_a_network_error_while_releasing_is_named(conn, base, tmp_path, monkeypatch):
    manager(conn, base, tmp_path).run()

    def broken(net):
        raise network.NetworkError("network 'default': unreadable")
    monkeypatch.setattr(network, "info", broken)
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, state="absent").run()
    assert str(info.value) == "rum_vm 'unit1': network: network 'default': unreadable"
    del info


# ---------------------------------------------------------------- network filter of an existing VM
@pytest.fixture
def fconn():
    """test_vm_isolation's connection (network filters kept in a dict), a fresh test driver."""
    gc.collect()
    c = libvirt.open("test:///default")
    yield Conn(c)
    c.close()
    gc.collect()


def alone(conn, tmp_path, **options):
    """rum_vm without image on test_vm_isolation's VM iso1."""
    values = {"name": "iso1", "uri": "test:///default", "storage_dir": str(tmp_path / "vms")}
    return vm.VMManager(vm.VMParams.from_dict(dict(values, **options)), connect=lambda uri: conn,
                        run=lambda argv: (0, IP_JSON, "")).run()


def test_a_filter_cannot_come_to_an_existing_user_mode_nic(fconn, base, tmp_path, live, monkeypatch):
    defined = recorder(monkeypatch, vm.lv, "define")
    iso_run(fconn, base, tmp_path, live, interfaces=[{"network": "default"}, {"user": True}],
            ports=[{"host": 2222, "guest": 22}])
    # the definition as libvirt's qemu driver keeps it (the test driver drops qemu's command line,
    # and with it the user-mode NIC)
    xml = defined[-1][1]
    monkeypatch.setattr(vm.lv, "inactive_xml", lambda dom: xml)
    with pytest.raises(vm.VMError) as info:
        alone(fconn, tmp_path, network_filter=FILTER)
    assert str(info.value) == "rum_vm 'iso1': network_filter cannot filter interfaces[1], a user-mode interface"
    assert fconn.filters == {}
    del info
    # switched off, the user-mode NIC is left as it is: nothing changes
    off = alone(fconn, tmp_path, network_filter={"enabled": False})
    assert off["changes"] == [], off["changes"]


def test_the_filter_of_an_existing_vm_is_made_for_its_own_networks(fconn, base, tmp_path, live, monkeypatch):
    fconn.networkCreateXML(LAB_XML)
    monkeypatch.setattr(nwfilter, "swap", lambda dom, wanted, live=True: list(wanted))
    iso_run(fconn, base, tmp_path, live, interfaces=[{"network": "lab"}])
    alone(fconn, tmp_path, network_filter=FILTER)
    rules = fconn.filters["rum-vm-iso1"].XMLDesc()
    assert "10.77.0.1" in rules and "192.168.122.1'" not in rules.replace("192.168.122.1'/>", "")


def test_a_filter_swap_that_fails_is_named(fconn, base, tmp_path, live, monkeypatch):
    iso_run(fconn, base, tmp_path, live)

    def refuse(dom, wanted, live=True):
        raise nwfilter.FilterError("update the NIC of iso1: refused")
    monkeypatch.setattr(nwfilter, "swap", refuse)
    with pytest.raises(vm.VMError) as info:
        alone(fconn, tmp_path, network_filter=FILTER)
    assert str(info.value) == "rum_vm 'iso1': network_filter: update the NIC of iso1: refused"
    del info


def test_a_filter_that_cannot_be_removed_is_named(fconn, base, tmp_path, live, monkeypatch):
    iso_run(fconn, base, tmp_path, live, network_filter=FILTER)

    def refuse(conn, name):
        raise nwfilter.FilterError(f"filter {name} is in use")
    monkeypatch.setattr(nwfilter, "remove", refuse)
    with pytest.raises(vm.VMError) as info:
        iso_run(fconn, base, tmp_path, live, state="absent")
    assert str(info.value) == "rum_vm 'iso1': network_filter: filter rum-vm-iso1 is in use"
    del info


# ---------------------------------------------------------------- the seed's eject
def _registered(tmp_path):
    return [entry for _path, entry in seed_eject.registrations(seed_eject.registry(str(tmp_path / "vms")))]


def test_the_watch_registration_and_the_watcher(conn, base, tmp_path):
    started, logs = [], []
    m = manager(conn, base, tmp_path, seed_eject=True, wait_for="none")
    m.ensure_watcher = lambda storage, connect: started.append((storage, connect)) or True
    m.log = logs.append
    m.run()
    assert started == [(str(tmp_path / "vms"), vm.lv.connect)]
    assert f"rum_vm 'unit1': started the seed watcher of {tmp_path}/vms" in logs
    (entry,) = _registered(tmp_path)
    assert (entry["name"], entry["uri"], entry["seed"]) == ("unit1", "test:///default", f"{tmp_path}/vms/unit1/seed.iso")
    # a check-mode removal leaves the registration alone; a removal drops it
    manager(conn, base, tmp_path, state="absent", check_mode=True).run()
    assert [e["name"] for e in _registered(tmp_path)] == ["unit1"]
    manager(conn, base, tmp_path, state="absent").run()
    assert _registered(tmp_path) == []


def test_a_seed_the_guest_has_read_is_ejected(conn, base, tmp_path, monkeypatch):
    m = manager(conn, base, tmp_path, seed_eject=True, wait_for="none")
    m.ensure_watcher = lambda storage, connect: False
    m.run()
    seed_path = f"{tmp_path}/vms/unit1/seed.iso"
    assert [e["name"] for e in _registered(tmp_path)] == ["unit1"]
    drives = []
    real_drive = seed_eject.seed_drive

    def opened(xml, seed):
        drive = real_drive(xml, seed)
        drives.append(dict(drive, tray="open"))
        return drives[-1]
    ejected = []
    monkeypatch.setattr(seed_eject, "seed_drive", opened)
    monkeypatch.setattr(seed_eject, "eject", lambda dom, drive, seed: ejected.append((dom.name(), drive, seed)))
    again = manager(conn, base, tmp_path, seed_eject=True, wait_for="none").run()
    assert again["changes"] == ["eject the seed (the guest has read it) and delete it"]
    assert ejected == [("unit1", {"target": "sda", "bus": "scsi", "tray": "open"}, seed_path)]
    assert _registered(tmp_path) == []


# ---------------------------------------------------------------- the domain and the seed, option by option
def test_every_option_reaches_the_domain_definition(conn, base, tmp_path, monkeypatch):
    share = tmp_path / "share"
    share.mkdir()
    specs = recorder(monkeypatch, vm.domain, "build_xml")
    m = manager(conn, base, tmp_path, check_mode=True, name="spec1", vcpus=3, memory_mb=512, machine="pc",
                firmware="uefi", seed_bus="sata", kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
                kernel_args="console=ttyS0", drives=[{"name": "data", "size": "8M"}], labels={"pool": "ci"},
                interfaces=[{"network": "default", "model": "e1000", "mac": "52:54:00:AA:BB:CC"},
                            {"bridge": "br0"}, {"user": True, "model": "rtl8139"}],
                ports=[{"host": 2222, "guest": 22}, {"host": 8080, "guest": 80, "bind": "0.0.0.0"}],
                mounts=[{"source": str(share), "target": "/srv/a", "driver": "9p", "readonly": True}],
                origin="/p/spec1.rum.toml", ssh_client="kitty +kitten ssh", ssh_interface="default")
    m.run()
    d = f"{tmp_path}/vms/spec1"
    ((spec,),) = specs
    ports = [{"bind": "127.0.0.1", "guest": 22, "host": 2222}, {"bind": "0.0.0.0", "guest": 80, "host": 8080}]
    assert spec == domain.DomainSpec(
        name="spec1", memory_mib=512, vcpus=3,
        disks=[domain.Disk(path=f"{d}/disk.qcow2", target="vda", bus="virtio", fmt="qcow2"),
               domain.Disk(path=f"{d}/drive-data.qcow2", target="vdb", bus="virtio", fmt="qcow2"),
               domain.Disk(path=f"{d}/seed.iso", target="sda", bus="sata", fmt="raw", device="cdrom", readonly=True)],
        interfaces=[domain.Interface(kind="network", source="default", mac="52:54:00:aa:bb:cc", model="e1000"),
                    domain.Interface(kind="bridge", source="br0", mac=domain.stable_mac("spec1", 1)),
                    domain.Interface(kind="user", source=None, mac=domain.stable_mac("spec1", 2), model="rtl8139",
                                     ports=[domain.PortForward(host=2222, guest=22, bind="127.0.0.1"),
                                            domain.PortForward(host=8080, guest=80, bind="0.0.0.0")])],
        serial_log=f"{d}/serial.log", domain_type="qemu", arch="x86_64", machine="pc", firmware="uefi",
        nvram_path=f"{d}/nvram.fd", mounts=[domain.Mount(source=str(share), tag="srv_a", readonly=True, driver="9p")],
        uuid=None, kernel="/boot/vmlinuz", initrd="/boot/initrd.img", cmdline="console=ttyS0",
        metadata={"managed_by": "rum.pool", "config_hash": vm.config_hash(m.p), "ssh_user": "rum",
                  "identity_file": f"{d}/id_ed25519", "labels": {"pool": "ci"},
                  "ports": vm.json.dumps(ports, sort_keys=True),
                  "paths": vm.json.dumps({"dir": d, "overlay": f"{d}/disk.qcow2", "seed": f"{d}/seed.iso",
                                          "serial_log": f"{d}/serial.log"}, sort_keys=True),
                  "origin": "/p/spec1.rum.toml", "ssh_client": "kitty +kitten ssh", "ssh_mac": "52:54:00:aa:bb:cc"},
        description="rum.pool VM spec1")


def test_a_bios_vm_has_no_nvram_and_its_seed_on_the_default_bus(conn, base, tmp_path, monkeypatch):
    specs = recorder(monkeypatch, vm.domain, "build_xml")
    manager(conn, base, tmp_path, check_mode=True, generate_ssh_key=False).run()
    ((spec,),) = specs
    assert (spec.firmware, spec.nvram_path, spec.disks[-1].bus, spec.disks[-1].target) == ("bios", None, "scsi", "sda")
    assert spec.metadata["identity_file"] == "" and spec.interfaces[0].model == "virtio"
    assert "origin" not in spec.metadata and "ssh_client" not in spec.metadata and "ssh_mac" not in spec.metadata


def made_seeds(monkeypatch) -> list:
    """The arguments of every seed made from now on (the seeds are still made)."""
    seeds = []
    real = vm.seed.make_seed

    def make_seed(user_data, **kwargs):
        seeds.append(dict(kwargs, user_data=user_data))
        return real(user_data, **kwargs)
    monkeypatch.setattr(vm.seed, "make_seed", make_seed)
    return seeds


def test_every_option_reaches_the_seed(conn, base, tmp_path, monkeypatch):
    share = tmp_path / "share"
    share.mkdir()
    seeds = made_seeds(monkeypatch)
    extra = {"write_files": [{"path": "/etc/mine", "content": "x"}]}
    made = manager(conn, base, tmp_path, name="seed1", hostname="box-1", user="ops", user_groups=["adm"],
                   ssh_authorized_keys=["ssh-ed25519 AAAAgiven me@there"], provision_script="echo p",
                   boot_script="echo b", autologin=True, packages=["curl"], user_data=extra,
                   mounts=[{"source": str(share), "target": "/srv/a", "driver": "9p", "readonly": True, "default": True},
                           {"source": str(share), "target": "/srv/b", "driver": "9p", "tag": "bee"}],
                   drives=[{"name": "logs", "size": "8M"}, {"name": "data", "size": "8M", "filesystem": "ext4",
                                                            "mount": "/data"}],
                   interfaces=[{"network": "default"}, {"user": True}], ports=[{"host": 2222, "guest": 22}],
                   meta_data={"extra-key": "v"}, vendor_data="#cloud-config\npackages: [jq]\n",
                   instance_id="iid-fixed").run()
    pub = open(f"{tmp_path}/vms/seed1/id_ed25519.pub", encoding="ascii").read().strip()
    assert pub.startswith("ssh-ed25519 ") and pub.endswith(" rum@seed1")
    macs = [domain.stable_mac("seed1", 0), domain.stable_mac("seed1", 1)]
    ((got,),) = [seeds]
    assert got == {
        "user_data": vm.cloudinit.vm_user_data(
            hostname="box-1", user="ops", groups=["adm"], ssh_authorized_keys=["ssh-ed25519 AAAAgiven me@there", pub],
            provision_script="echo p", boot_script="echo b",
            mounts=[{"tag": "srv_a", "target": "/srv/a", "readonly": True, "driver": "9p"},
                    {"tag": "bee", "target": "/srv/b", "readonly": False, "driver": "9p"}],
            drives=[{"device": "/dev/vdb", "filesystem": "ext4", "target": "/data", "label": "data"}],
            autologin=True, packages=["curl"], extra=extra, filesystems=[], default_mount="/srv/a"),
        "meta_data": {"instance-id": "iid-fixed", "local-hostname": "box-1", "extra-key": "v"},
        "network_config": vm.cloudinit.vm_network_config(macs, user_mode=[macs[1]]),
        "vendor_data": "#cloud-config\npackages: [jq]\n", "instance_id": "iid-fixed"}
    assert made["vm"]["instance_id"] == "iid-fixed"


def test_a_seed_given_as_text_is_taken_as_it_is(conn, base, tmp_path, monkeypatch):
    seeds = made_seeds(monkeypatch)
    text = "#cloud-config\nruncmd: []\n"
    net = {"version": 2, "ethernets": {"all": {"match": {"name": "e*"}, "dhcp4": True}}}
    manager(conn, base, tmp_path, check_mode=True, user_data=text, network_config=net, seed_eject=True).run()
    manager(conn, base, tmp_path, check_mode=True, name="unit2", meta_data={"instance-id": "from-meta"}).run()
    first, second = seeds
    assert first == {"user_data": text, "meta_data": {"local-hostname": "unit1"}, "network_config": net,
                     "vendor_data": None, "instance_id": None}
    assert second["meta_data"] == {"local-hostname": "unit2", "instance-id": "from-meta"}


# ---------------------------------------------------------------- image, folder, key, overlay
class _Cache:
    """Stands in for the image cache: hands out ``path`` and records what it was asked."""

    def __init__(self, path, changed=True, warnings=()):
        self.path, self.changed, self.warnings = path, changed, list(warnings)
        self.asked = []

    def ensure(self, url, checksum, *, check_mode, progress):
        self.asked.append((url, checksum, check_mode))
        progress(50, 200)
        progress(7, None)
        return vm.image.CachedImage(path=self.path, digest="sha256:ab", url=url, size=None,
                                    changed=self.changed, warnings=self.warnings)


def test_the_image_is_asked_for_with_its_checksum_and_its_news_passed_on(conn, base, tmp_path):
    path = base["url"][len("file://"):]
    cache = _Cache(path, warnings=["no checksum given: cached by URL"])
    logs, warnings = [], []
    m = vm.VMManager(vm.VMParams.from_dict({
        "name": "unit1", "uri": "test:///default", "domain_type": "qemu", "memory_mb": 256,
        "image": {"url": "https://example.org/debian.qcow2", "checksum": "sha256:ab"},
        "storage_dir": str(tmp_path / "vms")}), connect=lambda uri: conn, image_cache=cache,
        log=logs.append, warn=warnings.append)
    result = m.run()
    assert cache.asked == [("https://example.org/debian.qcow2", "sha256:ab", False)]
    assert result["changes"][0] == "download image https://example.org/debian.qcow2"
    assert warnings == ["rum_vm 'unit1': no checksum given: cached by URL"]
    assert "rum_vm 'unit1': image download 25% (50 of 200 bytes)" in logs
    assert "rum_vm 'unit1': image download 7 bytes" in logs
    assert result["vm"]["image"] == {"path": path, "digest": "sha256:ab"}
    again = vm.VMManager(m.p, connect=lambda uri: conn, image_cache=_Cache(path, changed=False)).run()
    assert not any(c.startswith("download") for c in again["changes"])


def test_the_vm_folder_is_made_traversable_only(conn, base, tmp_path):
    manager(conn, base, tmp_path, storage_dir=str(tmp_path / "new" / "vms")).run()
    assert oct(os.stat(tmp_path / "new" / "vms" / "unit1").st_mode & 0o777) == "0o711"
    assert oct(os.stat(tmp_path / "new" / "vms").st_mode & 0o777) == "0o755"


def test_check_mode_names_the_key_and_the_folder_it_would_make(conn, base, tmp_path):
    planned = manager(conn, base, tmp_path, check_mode=True).run()
    assert planned["changes"][:4] == [f"download image {base['url']}", f"create {tmp_path}/vms/unit1",
                                      "generate SSH key", "create overlay disk"]
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_an_overlay_over_a_raw_image_names_its_backing_format(conn, tmp_path):
    raw = tmp_path / "base.raw"
    raw.write_bytes(b"\0" * 1024 * 1024)
    cache = vm.image.ImageCache(str(tmp_path / "cache"))
    manager(conn, {"url": f"file://{raw}", "cache": cache}, tmp_path, generate_ssh_key=False).run()
    info = vm.disk.image_info(f"{tmp_path}/vms/unit1/disk.qcow2")
    assert info["format"] == "qcow2" and info["backing-filename-format"] == "raw"


# ---------------------------------------------------------------- host checks
def test_virtiofs_without_virtiofsd_is_refused_word_for_word(conn, base, tmp_path):
    shares = [{"source": str(tmp_path), "target": "/src"}, {"source": str(tmp_path), "target": "/data"},
              {"source": str(tmp_path), "target": "/p", "driver": "9p"}]
    m = manager(conn, base, tmp_path, mounts=shares)
    m.find_virtiofsd = lambda: None
    with pytest.raises(vm.VMError) as info:
        m.run()
    assert str(info.value) == (
        "rum_vm 'unit1': mounts /src, /data use driver virtiofs, but this host has no virtiofsd for libvirt "
        "(no vhost-user descriptor of type fs naming an existing binary in "
        f"{', '.join(vm.lv.VHOST_USER_DIRS)}); install it (Debian 12: qemu-system-common ships "
        "/usr/lib/qemu/virtiofsd; Debian 13: apt-get install virtiofsd) or set driver: 9p for guests whose "
        "kernel has 9p")
    del info


def test_a_remote_host_is_not_looked_at_for_virtiofsd(conn, base, tmp_path):
    m = manager(conn, base, tmp_path, mounts=[{"source": str(tmp_path), "target": "/src"}],
                uri="test+ssh://elsewhere/default")
    m.find_virtiofsd = lambda: pytest.fail("virtiofsd looked for on this host")
    m.run()
    assert "<driver type='virtiofs'/>" in conn.lookupByName("unit1").XMLDesc(0)


def test_a_missing_network_on_a_host_without_any(conn, base, tmp_path):
    default = conn.networkLookupByName("default")
    default.destroy()
    default.undefine()
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, interfaces=[{"network": "nope"}]).run()
    assert str(info.value) == "rum_vm 'unit1': libvirt network 'nope' does not exist on test:///default " \
                              "(networks there: none)"
    del info


# ---------------------------------------------------------------- the result
def test_check_mode_reports_the_vm_it_would_make(conn, base, tmp_path):
    d = f"{tmp_path}/vms/unit1"
    paths = {"dir": d, "overlay": f"{d}/disk.qcow2", "seed": f"{d}/seed.iso", "serial_log": f"{d}/serial.log",
             "identity_file": f"{d}/id_ed25519"}
    running = manager(conn, base, tmp_path, check_mode=True).run()["vm"]
    assert running.pop("instance_id").startswith("iid-")
    assert running == {"name": "unit1", "state": "running", "paths": paths}  # no image digest before the download
    present = manager(conn, base, tmp_path, check_mode=True, state="present", generate_ssh_key=False).run()["vm"]
    paths.pop("identity_file")
    assert (present["state"], present["paths"]) == ("shutoff", paths)


def test_an_address_is_looked_for_only_when_the_vm_should_run(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    present = manager(conn, base, tmp_path, state="present").run()
    assert (present["vm"]["state"], present["vm"]["ip"], present["vm"]["ip_source"]) == ("running", None, None)
    restarted = power(conn, tmp_path, state="restarted").run()
    assert restarted["vm"]["ip"] and restarted["vm"]["ip_source"] == "lease"


class _AddressWaiter(FakeWaiter):
    """Reaches every level at once and reports the address 10.0.0.99 whatever libvirt says."""

    def wait(self, level, timeout):
        self.asked.append((level, timeout))
        return {"ip": "10.0.0.99", "ssh_host": "10.0.0.99", "ssh_port": 22, "cloud_init": "done"}


def test_the_address_waited_for_fills_in_only_what_libvirt_did_not_say(conn, base, tmp_path, monkeypatch, waiter):
    monkeypatch.setattr(vm.ready, "Waiter", _AddressWaiter)
    mac = domain.stable_mac("unit1", 0)
    _addresses(monkeypatch, {mac: "192.168.122.9"})
    assert manager(conn, base, tmp_path, wait_for="ip").run()["vm"]["ip"] == "192.168.122.9"
    _addresses(monkeypatch, {})
    unknown = manager(conn, base, tmp_path, wait_for="ip").run()["vm"]
    assert (unknown["ip"], unknown["ip_source"]) == ("10.0.0.99", None)


def test_check_mode_neither_watches_nor_ejects_the_seed(conn, base, tmp_path):
    m = manager(conn, base, tmp_path, seed_eject=True, wait_for="none")
    m.ensure_watcher = lambda storage, connect: False
    m.run()
    seed_eject.unregister(str(tmp_path / "vms"), "unit1")
    checked = manager(conn, base, tmp_path, seed_eject=True, check_mode=True)
    checked.ensure_watcher = lambda storage, connect: pytest.fail("a watcher started in check mode")
    assert checked.run()["changes"] == []
    assert _registered(tmp_path) == []


def test_stopping_a_vm_leaves_its_seed_watch_to_the_watcher(conn, base, tmp_path):
    m = manager(conn, base, tmp_path, seed_eject=True, wait_for="none")
    m.ensure_watcher = lambda storage, connect: False
    m.run()
    stopped = manager(conn, base, tmp_path, seed_eject=True, state="stopped", shutdown_timeout=0).run()
    assert stopped["changes"] == ["shut down"]
    assert [e["name"] for e in _registered(tmp_path)] == ["unit1"]


def test_a_forward_without_a_guest_port_is_not_ssh():
    assert vm.ssh_forward({"ports": [{"host": 80}, {"host": 2222, "guest": 22}]}) == ("127.0.0.1", 2222)


def test_once_the_guest_runs_its_filter_needs_br_netfilter_loaded(fconn, base, tmp_path, live, monkeypatch):
    """Before the first filter a missing sysctl is fine (libvirt loads the module); after the start it is not."""
    def bridge_problem(path="/proc/sys/net/bridge/bridge-nf-call-iptables", *, missing_ok=True):
        return None if missing_ok else "br_netfilter is not loaded"
    monkeypatch.setattr(nwfilter, "bridge_problem", bridge_problem)
    with pytest.raises(vm.VMError) as info:
        iso_run(fconn, base, tmp_path, live, network_filter=FILTER)
    assert str(info.value) == "rum_vm 'iso1': network_filter: br_netfilter is not loaded"
    assert fconn.filters == {} and "iso1" not in [d.name() for d in fconn.listAllDomains()]
    del info


# ---------------------------------------------------------------- bad input, word for word
SHARE = os.path.dirname(os.path.abspath(__file__))  # a directory that exists
FS_DRIVES = [{"name": "a", "size": "1G"}, {"name": "b", "size": "1G"}]


@pytest.mark.parametrize("options, message", [
    ({"state": "gone"}, "state must be one of running, present, stopped, restarted, absent, got 'gone'"),
    ({"vcpus": 0}, "vcpus must be at least 1, got 0"),
    ({"memory_mb": 255}, "memory_mb must be at least 256, got 255"),
    ({"image": {"checksum": "sha256:ab"}}, "image.url is required when image is given"),
    ({"hostname": "bad_host"}, "invalid hostname 'bad_host'"),
    ({"seed_bus": "floppy"}, "seed_bus must be one of virtio-scsi, sata, ide, got 'floppy'"),
    ({"seed_bus": "ide", "machine": "pc-q35-8.2"}, "seed_bus=ide needs machine 'pc' (q35 has no IDE controller)"),
    ({"wait_for": "soon"}, "wait_for must be one of " + ", ".join(ready.WAIT_LEVELS)),
    ({"drives": [{"name": f"d{n}", "size": "1G"} for n in range(25)]}, "at most 24 drives, got 25"),
    ({"drives": [{"name": "ok", "size": "1G"}, {"name": "a b", "size": "1G"}]}, "drives[].name 'a b' is not a valid name"),
    ({"drives": [{"name": "d", "size": "1G"}, {"name": "d", "size": "1G"}]}, "drive names must be unique, got ['d', 'd']"),
    ({"mounts": [{"source": SHARE, "target": "/a"}, {"source": SHARE, "target": ""}]},
     "mounts[].target must be an absolute path, got ''"),
    ({"mounts": [{"source": SHARE, "target": "/a/b/"}, {"source": SHARE, "target": "/a"}]},
     "mount targets must not repeat or nest: /a and /a/b"),
    ({"mounts": [{"source": SHARE, "target": "/a"}], "drives": [{"name": "d", "size": "1G", "mount": "/a"}]},
     "mount targets must not repeat or nest: /a and /a"),
    ({"mounts": [{"source": SHARE, "target": "/a"}, {"source": "rel", "target": "/b"}]},
     "mounts[1].source: 'rel' is relative: set project_dir (rum: the rum.toml's folder)"),
    ({"mounts": [{"source": "/nonexistent-rum", "target": "/a"}]},
     "mounts[].source '/nonexistent-rum' is not an existing directory"),
    ({"mounts": [{"source": "nothing-here", "target": "/a"}], "project_dir": "/nonexistent-rum"},
     "mounts[].source 'nothing-here' is not an existing directory (/nonexistent-rum/nothing-here)"),
    ({"mounts": [{"source": SHARE, "target": "/a", "driver": "9p", "readonly": True},
                 {"source": SHARE, "target": "/src", "readonly": True}]},
     "mounts[1] (/src): libvirt cannot share a directory read-only with virtiofs; set driver: 9p (the guest kernel "
     "needs 9p, which Debian's cloud kernels lack) or readonly: false"),
    ({"ports": [{"host": 2222, "guest": 22}], "interfaces": [{"network": "default"}]},
     "ports need a user-mode interface (interfaces: [{user: true}])"),
    ({"ports": [{"host": 2222, "guest": 22}, {"host": 2222, "guest": 80, "bind": "127.0.0.1"}],
      "interfaces": [{"user": True}]}, "ports: host port 2222 on 127.0.0.1 is forwarded twice"),
    ({"interfaces": [{"network": "default"}, {}]}, "each interface needs exactly one of network, bridge or user=true, got {}"),
    ({"interfaces": [{"network": "default"}, {"user": True}], "network_filter": {}},
     "network_filter cannot filter interfaces[1], a user-mode interface (qemu's own NAT, outside libvirt); use a "
     "libvirt network or bridge, or leave network_filter out"),
    ({"interfaces": [{"network": "default"}, {"bridge": "br0", "isolated": True}]},
     "interfaces[1]: ip and isolated need a libvirt network (interfaces[].network)"),
    ({"interfaces": [{"network": "default"}, {"network": "n", "ip": "10.0.0"}]},
     "interfaces[1].ip '10.0.0' is not an IPv4 address"),
    ({"ssh_interface": "lab", "interfaces": [{"network": "default"}, {"network": "wan"}]},
     "ssh_interface 'lab' is not the network of one of interfaces[] (networks: default, wan)"),
    ({"ssh_interface": "lab", "interfaces": [{"bridge": "br0"}]},
     "ssh_interface 'lab' is not the network of one of interfaces[] (networks: none)"),
    ({"mounts": [{"source": SHARE, "target": "/a", "default": True}, {"source": SHARE, "target": "/b", "default": True}]},
     "at most one of mounts[] can be the default (working directory) mount"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "ext4", "drives": ["a"], "mount": "/d"}]},
     "filesystems[0].type must be one of btrfs, zfs, got 'ext4'"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "/d"},
                                           {"type": "zfs", "drives": [], "mount": "/e"}]},
     "filesystems[1].drives: name at least one of drives[]"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "btrfs", "drives": ["c"], "mount": "/d"}]},
     "filesystems[0].drives: 'c' is not one of drives[] (a, b)"),
    ({"filesystems": [{"type": "btrfs", "drives": ["c"], "mount": "/d"}]},
     "filesystems[0].drives: 'c' is not one of drives[] (none)"),
    ({"drives": [FS_DRIVES[0], dict(FS_DRIVES[1], filesystem="ext4")],
      "filesystems": [{"type": "btrfs", "drives": ["a", "b"], "mount": "/d"}]},
     "filesystems[0].drives: drive 'b' already has a filesystem of its own (drives[].filesystem)"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "/d"},
                                           {"type": "zfs", "drives": ["b", "a"], "mount": "/e"}]},
     "filesystems[1].drives: drive 'a' is already used by filesystems[0]"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "d"}]},
     "filesystems[0].mount must be an absolute path, got 'd'"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "btrfs", "drives": ["a"]}]},
     "filesystems[0].mount must be an absolute path, got None"),
    ({"drives": FS_DRIVES, "filesystems": [{"type": "btrfs", "drives": ["a"], "mount": "/d", "pool": "p"}]},
     "filesystems[0].pool is only for type zfs"),
])
def test_bad_input_is_refused_word_for_word(options, message):
    with pytest.raises(vm.VMError) as info:
        vm.validate(vm.VMParams.from_dict({"name": "x", **options}))
    assert str(info.value) == f"rum_vm 'x': {message}"


def test_an_invalid_name_is_refused_with_the_rule():
    with pytest.raises(vm.VMError) as info:
        vm.validate(vm.VMParams(name="../evil"))
    assert str(info.value) == f"rum_vm: invalid name '../evil': {vm.names.VM_NAME.hint}"


@pytest.mark.parametrize("options", [
    {"state": "absent", "vcpus": 0, "memory_mb": 1, "seed_bus": "floppy"},  # removal checks nothing else
    {"vcpus": 1, "memory_mb": 256},
    {"seed_bus": "ide", "machine": "pc"},
    {"drives": [{"name": f"d{n}", "size": "1G"} for n in range(24)]},
    {"mounts": [{"source": SHARE, "target": "/a"}, {"source": SHARE, "target": "/ab"}]},
    {"mounts": [{"source": SHARE, "target": "/src", "readonly": True, "driver": "9p"}]},
    {"ports": [{"host": 2222, "guest": 22}, {"host": 2222, "guest": 22, "bind": "127.0.0.2"}], "interfaces": [{"user": True}]},
    {"interfaces": [{"network": "n", "ip": "10.0.0.2", "isolated": True}], "ssh_interface": "n"},
    {"drives": FS_DRIVES, "filesystems": [{"type": "zfs", "drives": ["a", "b"], "mount": "/d", "pool": "tank"}]},
    {"interfaces": [{"user": True}], "network_filter": {"enabled": False}},
])
def test_good_input_passes(options):
    vm.validate(vm.VMParams.from_dict({"name": "x", **options}))


def test_the_state_after_in_the_diff_of_power_only_runs(conn, base, tmp_path):
    manager(conn, base, tmp_path, state="stopped").run()
    restarted = power(conn, tmp_path, state="restarted", check_mode=True).run()
    assert restarted["diff"] == {"before": "state: shutoff\n", "after": "state: running\n"}
    manager(conn, base, tmp_path).run()
    present = power(conn, tmp_path, state="present").run()
    assert present["diff"] == {"before": "state: running\n", "after": "state: running\n"}
    again = power(conn, tmp_path, state="restarted", check_mode=True).run()
    assert again["diff"] == {"before": "state: running\n", "after": "state: running\n"}


def test_check_mode_names_the_autostart_change_a_run_would_make(conn, base, tmp_path):
    assert "autostart on" in manager(conn, base, tmp_path, autostart=True, check_mode=True).run()["changes"]
    assert not any(c.startswith("autostart") for c in manager(conn, base, tmp_path, check_mode=True).run()["changes"])
    manager(conn, base, tmp_path).run()
    planned = manager(conn, base, tmp_path, autostart=True, check_mode=True).run()
    done = manager(conn, base, tmp_path, autostart=True).run()
    assert planned["changes"] == done["changes"] == ["redefine domain", "autostart on"]
    assert manager(conn, base, tmp_path, autostart=True, check_mode=True).run()["changes"] == []
    assert manager(conn, base, tmp_path, autostart=False, check_mode=True).run()["changes"] == [
        "redefine domain", "autostart off"]
    assert conn.lookupByName("unit1").autostart() == 1


# ---------------------------------------------------------------- the run around it
class _Counted(KeepOpen):
    """The test driver's connection, counting close() calls; getCapabilities may fail."""

    def __init__(self, conn, caps=True):
        super().__init__(conn)
        self.closed = 0
        self.caps = caps

    def close(self):
        self.closed += 1
        return 0

    def getCapabilities(self):  # noqa: N802 - libvirt's name
        if not self.caps:
            raise libvirt.libvirtError("no capabilities here")
        return self._conn.getCapabilities()


def test_defaults_and_a_shared_list_of_changes(tmp_path):
    changes = ["earlier"]
    m = vm.VMManager(vm.VMParams.from_dict({"name": "unit1", "uri": "qemu:///session"}), changes=changes)
    assert (m.storage_dir, m.cache_dir) == (vm.storage.default_storage_dir("qemu:///session"),
                                            vm.storage.default_image_cache("qemu:///session"))
    m._changed("more")  # pylint: disable=protected-access
    assert changes == ["earlier", "more"] and m.changes is changes
    assert vm.VMManager(vm.VMParams(name="unit2")).changes == []


def test_the_connection_is_closed_after_a_run_and_after_a_failure(conn, base, tmp_path):
    counted = _Counted(conn)
    vm.VMManager(vm.VMParams.from_dict({"name": "unit1", "uri": "test:///default", "state": "absent",
                                        "storage_dir": str(tmp_path / "vms")}), connect=lambda uri: counted).run()
    assert counted.closed == 1
    conn.defineXML("<domain type='test'><name>foreign</name><memory>262144</memory>"
                   "<os><type>hvm</type></os></domain>")
    with pytest.raises(vm.VMError) as info:
        vm.VMManager(vm.VMParams.from_dict({"name": "foreign", "uri": "test:///default",
                                            "storage_dir": str(tmp_path / "vms")}), connect=lambda uri: counted).run()
    assert str(info.value) == ("rum_vm 'foreign': a domain of that name exists on test:///default but was not "
                               "created by rum.pool (no rum metadata); refusing to touch it")
    assert counted.closed == 2
    del info


def test_the_domain_type_chosen_for_auto_is_logged_with_its_reason(conn, base, tmp_path, monkeypatch):
    asked = []

    def resolve(requested, caps):
        asked.append((requested, caps))
        return "qemu", "KVM not used: no /dev/kvm"
    monkeypatch.setattr(vm.lv, "resolve_domain_type", resolve)
    logs = []
    m = manager(conn, base, tmp_path, check_mode=True, domain_type="auto")
    m.log, m.connect = logs.append, lambda uri: _Counted(conn, caps=False)
    m.run()
    assert asked == [("auto", None)]  # capabilities are only a hint
    assert "rum_vm 'unit1': domain type qemu (KVM not used: no /dev/kvm)" in logs
    m = manager(conn, base, tmp_path, check_mode=True, domain_type="auto")
    m.log = logs.append
    m.run()
    assert asked[-1] == ("auto", conn.getCapabilities())
    logs.clear()
    m = manager(conn, base, tmp_path, check_mode=True, domain_type="qemu")
    m.log = logs.append
    m.run()
    assert asked[-1] == ("qemu", conn.getCapabilities()) and not any("domain type" in line for line in logs)


def test_reset_of_a_vm_not_made_yet_is_a_plain_create(conn, base, tmp_path):
    made = manager(conn, base, tmp_path, reset=True).run()
    assert not any(c.startswith("reset") for c in made["changes"]) and made["vm"]["state"] == "running"


def test_check_mode_reset_touches_nothing(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    d = tmp_path / "vms" / "unit1"
    before = {name: os.stat(d / name).st_mtime_ns for name in ("disk.qcow2", "seed.iso")}
    planned = manager(conn, base, tmp_path, reset=True, check_mode=True).run()
    assert planned["changes"][0] == "reset: fresh overlay and seed"
    assert conn.lookupByName("unit1").isActive()
    assert {name: os.stat(d / name).st_mtime_ns for name in before} == before


def test_a_uefi_reset_removes_the_nvram_too(conn, base, tmp_path, monkeypatch):
    manager(conn, base, tmp_path).run()
    nvram = tmp_path / "vms" / "unit1" / "nvram.fd"
    nvram.write_bytes(b"vars")
    manager(conn, base, tmp_path, reset=True).run()
    assert not nvram.exists()


# ---------------------------------------------------------------- power
def test_waiting_happens_only_for_a_vm_that_should_run_outside_check_mode(conn, base, tmp_path, waiter):
    manager(conn, base, tmp_path, state="present", wait_for="ip").run()
    manager(conn, base, tmp_path, state="stopped", wait_for="ip").run()
    manager(conn, base, tmp_path, wait_for="ip", check_mode=True).run()
    manager(conn, base, tmp_path, wait_for="none").run()
    assert waiter.made == []
    manager(conn, base, tmp_path, state="restarted", wait_for="ip", wait_timeout=3).run()
    assert [made.asked for made in waiter.made] == [[("ip", 3)]]


def test_a_paused_vm_counts_as_running(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    conn.lookupByName("unit1").suspend()
    assert manager(conn, base, tmp_path).run()["changes"] == []
    assert manager(conn, base, tmp_path, state="stopped", shutdown_timeout=0).run()["changes"] == ["shut down"]


def test_changes_to_a_running_vm_word_for_word(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, vcpus=1, memory_mb=512, apply_changes="fail").run()
    assert str(info.value) == ("rum_vm 'unit1': the definition changed while the VM is running (memory: 262144 KiB -> "
                               "524288 KiB; vcpus: 2 -> 1); set apply_changes=restart or next_boot, or stop "
                               "it first"), str(info.value)
    del info
    # refused before anything was redefined: the same run fails again, check mode too
    assert vm.domain.canonical(conn.lookupByName("unit1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))["vcpus"] == 2
    for check_mode in (False, True):
        with pytest.raises(vm.VMError, match="the definition changed while the VM is running"):
            manager(conn, base, tmp_path, vcpus=1, memory_mb=512, apply_changes="fail", check_mode=check_mode).run()
    # state=present asks nothing of the power state: the definition changes for the next boot, as before
    assert manager(conn, base, tmp_path, vcpus=1, apply_changes="fail", state="present").run()["changes"] == [
        "redefine domain"]
    manager(conn, base, tmp_path).run()
    warnings = []
    m = manager(conn, base, tmp_path, vcpus=1, memory_mb=512)
    m.warn = warnings.append
    m.run()
    assert [w for w in warnings if "definition" in w] == [
        "rum_vm 'unit1': definition changed (memory: 262144 KiB -> 524288 KiB; vcpus: 2 -> 1); it takes effect at "
        "the next boot (apply_changes=next_boot)"], warnings


def test_a_guest_that_ignores_acpi_is_forced_off_with_a_warning(conn, base, tmp_path, monkeypatch):
    manager(conn, base, tmp_path).run()
    asked = []
    monkeypatch.setattr(vm.lv, "shutdown", lambda dom, timeout: asked.append(timeout) or "forced")
    warnings = []
    m = power(conn, tmp_path, state="stopped", shutdown_timeout=9)
    m.warn = warnings.append
    assert m.run()["changes"] == ["shut down"]
    assert asked == [9] and warnings == ["rum_vm 'unit1': guest ignored ACPI shutdown for 9s; forced off"]
    monkeypatch.setattr(vm.lv, "shutdown", lambda dom, timeout: asked.append(timeout) or "acpi")
    m = power(conn, tmp_path, state="stopped")
    m.warn = warnings.append
    m.run()
    assert warnings == ["rum_vm 'unit1': guest ignored ACPI shutdown for 9s; forced off"]


# ---------------------------------------------------------------- addresses, origin, disks, filter, lock
def test_a_new_address_for_the_second_nic_after_an_unchanged_first(conn, base, tmp_path, monkeypatch):
    monkeypatch.setattr(network, "host_routes", lambda: [])
    fixed = [{"network": "rum-a", "isolated": True, "ip": "10.77.4.20"},
             {"network": "rum-b", "isolated": True, "ip": "10.77.5.20"}]
    made = manager(conn, base, tmp_path, interfaces=fixed, state="stopped", hostname="box-1").run()
    mac_a, mac_b = made["vm"]["macs"]
    assert f"reserve 10.77.4.20 for {mac_a} on network rum-a" in made["changes"]
    assert f"<host mac='{mac_b}' name='box-1' ip='10.77.5.20'/>" in conn.networkLookupByName("rum-b").XMLDesc(0)
    moved = manager(conn, base, tmp_path, interfaces=[fixed[0], dict(fixed[1], ip="10.77.5.30")], state="stopped",
                    hostname="box-1").run()
    assert [c for c in moved["changes"] if c.startswith("reserve")] == [f"reserve 10.77.5.30 for {mac_b} on network rum-b"]
    assert network.info(network.lookup(conn, "rum-b")).hosts == ((mac_b, "10.77.5.30"),)


def test_a_failed_create_gives_its_reservation_back(conn, base, tmp_path, monkeypatch):
    def refuse(self, dom):
        raise vm.VMError("guard refused")
    monkeypatch.setattr(vm.VMManager, "_guard_guest", refuse)
    with pytest.raises(vm.VMError, match="guard refused"):
        manager(conn, base, tmp_path, interfaces=[{"network": "default", "ip": "192.168.122.50"}]).run()
    assert network.info(conn.networkLookupByName("default")).hosts == ()


def test_two_projects_wanting_one_name_word_for_word(conn, base, tmp_path):
    manager(conn, base, tmp_path, origin="/one/dev.rum.toml").run()
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, origin="/two/dev.rum.toml").run()
    assert str(info.value) == (
        "rum_vm 'unit1': a VM of this name already exists for /one/dev.rum.toml, and this one is for "
        "/two/dev.rum.toml (origin); two projects cannot share a VM name: rename one of them (for a rum.toml, its "
        "file name) or remove the other VM")
    del info
    plain = manager(conn, base, tmp_path, name="unit2").run()
    assert manager(conn, base, tmp_path, name="unit2", origin="/two/dev.rum.toml").run()["changes"] == [
        "redefine domain"]  # a VM of no origin is taken over
    assert plain["changed"]


def test_a_disk_of_the_size_asked_for_is_not_grown(conn, base, tmp_path, monkeypatch):
    manager(conn, base, tmp_path, disk_size="128M").run()
    grown = recorder(monkeypatch, vm.disk, "grow")
    same = manager(conn, base, tmp_path, disk_size="128M").run()
    assert not same["changed"] and grown == []


def test_the_filter_needs_a_local_uri(fconn, base, tmp_path, live):
    with pytest.raises(vm.VMError) as info:
        iso_run(fconn, base, tmp_path, live, network_filter=FILTER, uri="test+ssh://elsewhere/default")
    assert str(info.value) == ("rum_vm 'iso1': network_filter needs the host's own addresses: run rum_vm on the "
                               "hypervisor with a local URI, not test+ssh://elsewhere/default")
    assert fconn.filters == {}
    del info


def test_a_live_filter_change_that_fails_is_named(fconn, base, tmp_path, live, monkeypatch):
    iso_run(fconn, base, tmp_path, live, network_filter=FILTER)

    def refuse(dom, wanted):
        raise nwfilter.FilterError("update the running NIC: refused")
    monkeypatch.setattr(nwfilter, "apply_live", refuse)
    with pytest.raises(vm.VMError) as info:
        iso_run(fconn, base, tmp_path, live, network_filter={"enabled": False})
    assert str(info.value) == "rum_vm 'iso1': network_filter: update the running NIC: refused"
    del info


def test_a_stopped_vm_gets_no_live_filter_change(fconn, base, tmp_path, live):
    iso_run(fconn, base, tmp_path, live, network_filter=FILTER, state="stopped")
    off = iso_run(fconn, base, tmp_path, live, network_filter={"enabled": False}, state="stopped")
    assert off["changes"] == ["redefine domain", "remove network filter rum-vm-iso1"]
    assert live["apply_live"] == []


def test_the_lock_folder_is_private(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    assert oct(os.stat(tmp_path / "vms" / ".locks").st_mode & 0o777) == "0o700"


def test_a_nic_keeps_its_mac_when_its_option_goes_and_a_new_nic_gets_a_stable_one(conn, base, tmp_path):
    manager(conn, base, tmp_path, state="stopped", interfaces=[{"network": "default", "mac": "52:54:00:00:00:01"}]).run()
    again = manager(conn, base, tmp_path, state="stopped", interfaces=[{"network": "default"}, {"network": "default"}]).run()
    assert again["vm"]["macs"] == ["52:54:00:00:00:01", domain.stable_mac("unit1", 1)]


def test_check_mode_names_the_drives_it_would_make(conn, base, tmp_path):
    drives = [{"name": "b", "size": "8M"}, {"name": "a", "size": "8M"}]
    planned = manager(conn, base, tmp_path, check_mode=True, drives=drives).run()
    assert [c for c in planned["changes"] if c.startswith("create drive")] == ["create drive a", "create drive b"]
    assert not os.path.exists(tmp_path / "vms" / "unit1")


def test_the_diff_names_the_power_state_first(conn, base, tmp_path):
    manager(conn, base, tmp_path, state="stopped").run()
    started = manager(conn, base, tmp_path, memory_mb=512).run()
    assert started["diff"]["before"].startswith("state: shutoff\nmemory: 262144 KiB\n")
    assert started["diff"]["after"].startswith("state: running\nmemory: 524288 KiB\n")


def test_apply_changes_fail_refuses_a_paused_vm_too(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()
    conn.lookupByName("unit1").suspend()
    with pytest.raises(vm.VMError, match=r"^rum_vm 'unit1': the definition changed while the VM is running \(vcpus"):
        manager(conn, base, tmp_path, vcpus=1, apply_changes="fail").run()
    manager(conn, base, tmp_path, state="stopped", shutdown_timeout=0).run()
    assert manager(conn, base, tmp_path, vcpus=1, apply_changes="fail", state="stopped").run()["changes"] == [
        "redefine domain"]


def test_a_user_mode_nic_first_and_a_libvirt_one_after_it(conn, base, tmp_path, monkeypatch):
    specs = recorder(monkeypatch, vm.domain, "build_xml")
    manager(conn, base, tmp_path, check_mode=True, interfaces=[{"user": True}, {"network": "default"}]).run()
    ((spec,),) = specs
    assert [(nic.kind, nic.source, nic.mac) for nic in spec.interfaces] == [
        ("user", None, domain.stable_mac("unit1", 0)), ("network", "default", domain.stable_mac("unit1", 1))]


def test_a_paused_guest_gets_its_filter_change_at_once(fconn, base, tmp_path, live, monkeypatch):
    iso_run(fconn, base, tmp_path, live, network_filter=FILTER)
    fconn.lookupByName("iso1").suspend()
    applied = []
    monkeypatch.setattr(nwfilter, "apply_live", lambda dom, wanted: applied.append((dom.name(), dict(wanted))) or [])
    off = iso_run(fconn, base, tmp_path, live, network_filter={"enabled": False})
    assert "apply the network filter change to the running guest" in off["changes"]
    assert applied == [("iso1", {domain.stable_mac("iso1", 0): None})]
