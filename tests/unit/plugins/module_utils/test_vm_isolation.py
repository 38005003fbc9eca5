# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum_vm's network_filter and seed_eject, against libvirt's in-process test driver (which has no
network filters and no device updates: those two are stood in for here)."""

from __future__ import annotations

import gc
import json
import os
import subprocess

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _nftables as nftables
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nwfilter
from ansible_collections.rum.pool.plugins.module_utils import _seed as seed
from ansible_collections.rum.pool.plugins.module_utils import _seed_eject as seed_eject
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from tests.unit.plugins.module_utils.test_vm import base  # noqa: F401  pylint: disable=unused-import  # the fixture
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")

IP_JSON = json.dumps([{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.51.100.7", "prefixlen": 24}]},
                      {"ifname": "virbr0", "addr_info": [{"family": "inet", "local": "192.168.122.1", "prefixlen": 24}]}])


class Conn:
    """The test driver's connection, kept open, with network filters held in a dict."""

    def __init__(self, conn):
        self._conn = conn
        self.filters: dict = {}

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def close(self):
        return 0

    def nwfilterLookupByName(self, name):  # noqa: N802 - libvirt's names
        if name not in self.filters:
            error = libvirt.libvirtError(f"no nwfilter with matching name '{name}'")
            error.get_error_code = lambda: libvirt.VIR_ERR_NO_NWFILTER
            raise error
        return self.filters[name]

    def listAllNWFilters(self, flags=0):  # noqa: N802
        return [type("Named", (), {"name": lambda self, n=name: n})() for name in self.filters]

    def nwfilterDefineXML(self, xml):  # noqa: N802
        conn = self

        class Filter:
            def XMLDesc(self, flags=0):  # noqa: N802
                return xml

            def undefine(self):
                del conn.filters[nwfilter.ET.fromstring(xml).get("name")]
        self.filters[nwfilter.ET.fromstring(xml).get("name")] = Filter()


@pytest.fixture
def conn():
    # The test driver's state lives while any object refers to its connection: collect the last
    # test's domains first, so that each test starts with a fresh driver.
    gc.collect()
    c = libvirt.open("test:///default")
    yield Conn(c)
    c.close()
    gc.collect()


@pytest.fixture
def live(monkeypatch):
    """The filter swaps and seed watches rum_vm asks for (the test driver cannot do them)."""
    calls: dict = {"apply_live": [], "watchers": []}
    monkeypatch.setattr(nwfilter, "apply_live", lambda dom, wanted: calls["apply_live"].append(dict(wanted)) or [])
    monkeypatch.setattr(nwfilter, "bridge_problem", lambda *a, **k: None)
    return calls


def run(conn, base, tmp_path, live, **options):
    values = {"name": "iso1", "uri": "test:///default", "domain_type": "qemu", "memory_mb": 256,
              "image": {"url": base["url"]}, "storage_dir": str(tmp_path / "vms"), "generate_ssh_key": False}
    values.update(options)
    check = values.pop("check_mode", False)

    def command(argv):
        if argv[:2] == ["ip", "-j"]:
            return 0, IP_JSON, ""
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    manager = vm.VMManager(vm.VMParams.from_dict(values), check_mode=check, connect=lambda uri: conn,
                           image_cache=base["cache"], run=command)
    manager.ensure_watcher = lambda storage, connect: live["watchers"].append(storage) or True
    return manager.run()


FILTER = {"allow": [{"address": "192.168.122.1", "ports": [8080]}]}


def test_the_filter_is_made_referenced_kept_and_removed(conn, base, tmp_path, live):
    checked = run(conn, base, tmp_path, live, network_filter=FILTER, check_mode=True)
    assert "define network filter rum-vm-iso1" in checked["changes"] and conn.filters == {}

    created = run(conn, base, tmp_path, live, network_filter=FILTER)
    assert created["changes"][:1] == ["define network filter rum-vm-iso1"]
    xml = conn.lookupByName("iso1").XMLDesc(0)
    assert "<filterref filter='rum-vm-iso1'/>" in xml
    rules = conn.filters["rum-vm-iso1"].XMLDesc()
    assert nwfilter.verdict(rules, "192.168.122.1", 8080)[0] == "accept"
    assert nwfilter.verdict(rules, "198.51.100.7", 443)[0] == "reject"  # the host's own address
    assert nwfilter.verdict(rules, "169.254.169.254", 80)[0] == "reject"

    assert not run(conn, base, tmp_path, live, network_filter=FILTER)["changed"]

    # a new hole: the filter changes in place, the domain does not
    wider = run(conn, base, tmp_path, live, network_filter={"allow": FILTER["allow"] + [{"address": "10.0.0.5"}]})
    assert wider["changes"] == ["update network filter rum-vm-iso1", "redefine domain"]  # the options' hash
    assert nwfilter.verdict(conn.filters["rum-vm-iso1"].XMLDesc(), "10.0.0.5", 22)[0] == "accept"

    # off: the running guest loses the filter at once, no restart; the filter goes
    off = run(conn, base, tmp_path, live, network_filter={"enabled": False})
    assert off["changes"] == ["redefine domain", "apply the network filter change to the running guest",
                              "remove network filter rum-vm-iso1"]
    assert live["apply_live"] == [{vm.domain.stable_mac("iso1", 0): None}]
    assert "filterref" not in conn.lookupByName("iso1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) and conn.filters == {}
    assert conn.lookupByName("iso1").isActive()

    # on again, then the VM goes and its filter with it
    on = run(conn, base, tmp_path, live, network_filter=FILTER)
    assert on["changes"][0] == "define network filter rum-vm-iso1" and "restart" not in on["changes"]
    planned = run(conn, base, tmp_path, live, state="absent", check_mode=True)
    assert planned["changes"][:2] == ["remove domain", "remove network filter rum-vm-iso1"]
    assert "rum-vm-iso1" in conn.filters and conn.lookupByName("iso1").isActive(), "check mode removes nothing"
    removed = run(conn, base, tmp_path, live, state="absent")
    assert "remove network filter rum-vm-iso1" in removed["changes"] and conn.filters == {}
    assert removed["changes"] == planned["changes"]


def test_absent_removes_the_filter_a_vm_deleted_by_hand_left_unless_a_domain_names_it(conn, base, tmp_path, live):
    run(conn, base, tmp_path, live, network_filter=FILTER)
    dom = conn.lookupByName("iso1")
    dom.destroy()
    dom.undefine()  # virsh undefine: libvirt keeps the filter
    assert list(conn.filters) == ["rum-vm-iso1"]
    checked = run(conn, base, tmp_path, live, state="absent", check_mode=True)
    assert checked["changed"] and "remove network filter rum-vm-iso1" in checked["changes"]
    assert list(conn.filters) == ["rum-vm-iso1"], "check mode removes nothing"
    # a domain of someone else's names it: kept
    other = conn.defineXML("<domain type='test'><name>other</name><memory>65536</memory><os><type>hvm</type></os>"
                           "<devices><interface type='network'><source network='default'/>"
                           "<filterref filter='rum-vm-iso1'/></interface></devices></domain>")
    kept = run(conn, base, tmp_path, live, state="absent")
    assert "remove network filter rum-vm-iso1" not in kept["changes"] and list(conn.filters) == ["rum-vm-iso1"]
    other.undefine()
    removed = run(conn, base, tmp_path, live, state="absent")
    assert removed["changes"] == ["remove network filter rum-vm-iso1"] and conn.filters == {}
    assert not run(conn, base, tmp_path, live, state="absent")["changed"]


def test_a_user_mode_nic_cannot_be_filtered(conn, base, tmp_path, live):
    with pytest.raises(vm.VMError, match=r"network_filter cannot filter interfaces\[0\], a user-mode interface"):
        run(conn, base, tmp_path, live, network_filter={}, interfaces=[{"user": True}])
    # switched off, a user-mode NIC is fine
    assert run(conn, base, tmp_path, live, network_filter={"enabled": False}, interfaces=[{"user": True}])["changed"]


def test_a_bad_entry_fails_before_anything_is_made(conn, base, tmp_path, live):
    with pytest.raises(vm.VMError, match=r"network_filter: network_filter.allow\[0\].ports: 70000 is not a port"):
        run(conn, base, tmp_path, live, network_filter={"allow": [{"address": "10.0.0.1", "ports": [70000]}]})
    assert conn.filters == {} and "iso1" not in [d.name() for d in conn.listAllDomains()]


def test_a_host_without_br_netfilter_is_refused(conn, base, tmp_path, live, monkeypatch):
    monkeypatch.setattr(nwfilter, "bridge_problem", lambda *a, **k: "bridge-nf-call-iptables is 0")
    with pytest.raises(vm.VMError, match="network_filter: bridge-nf-call-iptables is 0"):
        run(conn, base, tmp_path, live, network_filter={})


def test_a_failed_create_takes_its_new_filter_away(conn, base, tmp_path, live, monkeypatch):
    calls = iter([None, "sysctl missing after the start"])
    monkeypatch.setattr(nwfilter, "bridge_problem", lambda *a, **k: next(calls))
    with pytest.raises(vm.VMError, match="sysctl missing after the start"):
        run(conn, base, tmp_path, live, network_filter={})
    assert conn.filters == {} and "iso1" not in [d.name() for d in conn.listAllDomains()]


def test_seed_eject_adds_the_guest_signal_and_hands_the_vm_to_the_watcher(conn, base, tmp_path, live):
    created = run(conn, base, tmp_path, live, seed_eject=True, user_data={"runcmd": [["echo", "mine"]]})
    user_data = yaml.safe_load(seed.read_iso(created["vm"]["paths"]["seed"]).user_data)
    assert user_data["runcmd"][0] == [seed_eject.GUEST_PATH] and ["echo", "mine"] in user_data["runcmd"]
    assert seed_eject.GUEST_PATH in [f["path"] for f in user_data["write_files"]]
    assert live["watchers"] == [str(tmp_path / "vms")]
    [(_path, entry)] = seed_eject.registrations(seed_eject.registry(str(tmp_path / "vms")))
    assert entry["uuid"] == created["vm"]["uuid"] and entry["seed"] == created["vm"]["paths"]["seed"]
    assert entry["lock"] == str(tmp_path / "vms" / ".locks" / "iso1.lock")

    # without seed_eject the guest gets no tray script and nobody watches
    plain = run(conn, base, tmp_path, live, name="iso2", user_data={"runcmd": [["echo", "mine"]]})
    assert seed_eject.GUEST_PATH not in seed.read_iso(plain["vm"]["paths"]["seed"]).user_data
    assert live["watchers"] == [str(tmp_path / "vms")]

    run(conn, base, tmp_path, live, state="absent")
    assert seed_eject.registrations(seed_eject.registry(str(tmp_path / "vms"))) == []


def test_an_ejected_seed_stays_ejected_until_reset(conn, base, tmp_path, live):
    created = run(conn, base, tmp_path, live, seed_eject=True)
    path = created["vm"]["paths"]["seed"]
    # what the watcher does: the persistent definition's drive emptied, the ISO deleted
    dom = conn.lookupByName("iso1")
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    conn.defineXML(xml.replace(f"<source file='{path}'/>", ""))
    os.unlink(path)

    again = run(conn, base, tmp_path, live, seed_eject=True)
    assert not again["changed"], again["changes"]
    assert not os.path.exists(path)
    assert seed_eject.is_ejected(conn.lookupByName("iso1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    fresh = run(conn, base, tmp_path, live, seed_eject=True, reset=True)
    assert "write seed ISO" in fresh["changes"] and os.path.exists(path)
    assert not seed_eject.is_ejected(conn.lookupByName("iso1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def test_the_filter_alone_changes_on_an_existing_vm(conn, base, tmp_path, live, monkeypatch):
    """rum_vm without image, with network_filter: the filter of a running VM on and off, nothing else."""
    def swap(dom, wanted, live=True):  # what libvirt does with AFFECT_CONFIG (the test driver cannot)
        assert live is False
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        xml = xml.replace("<filterref filter='rum-vm-iso1'/>", "")
        name = next(iter(wanted.values()))
        if name:
            xml = xml.replace("</interface>", f"<filterref filter='{name}'/></interface>")
        conn.defineXML(xml)
        return list(wanted)
    monkeypatch.setattr(nwfilter, "swap", swap)
    created = run(conn, base, tmp_path, live)
    mac = created["vm"]["mac"]
    only = {"name": "iso1", "uri": "test:///default", "storage_dir": str(tmp_path / "vms")}

    def alone(**options):
        manager = vm.VMManager(vm.VMParams.from_dict(dict(only, **options)), connect=lambda uri: conn,
                               run=lambda argv: (0, IP_JSON, ""))
        return manager.run()

    on = alone(network_filter=FILTER)
    assert on["changes"] == ["define network filter rum-vm-iso1", "change the network filter in the definition",
                             "apply the network filter change to the running guest"]
    assert live["apply_live"] == [{mac: "rum-vm-iso1"}]
    assert "<filterref filter='rum-vm-iso1'/>" in conn.lookupByName("iso1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert not alone(network_filter=FILTER)["changed"]
    assert not alone()["changed"], "without network_filter the filter is left as it is"

    off = alone(network_filter={"enabled": False})
    assert off["changes"] == ["change the network filter in the definition",
                              "apply the network filter change to the running guest", "remove network filter rum-vm-iso1"]
    assert live["apply_live"][-1] == {mac: None} and conn.filters == {}
    # a full run afterwards agrees with what the filter-only runs did
    assert run(conn, base, tmp_path, live, network_filter={"enabled": False})["changes"] == ["redefine domain"]


def test_a_defined_vm_started_later_is_watched_too(conn, base, tmp_path, live):
    """A generation defined ahead (state=present) and started by rum_vm alone still gets its seed watched."""
    run(conn, base, tmp_path, live, seed_eject=True, state="present")
    assert live["watchers"] == [] and not conn.lookupByName("iso1").isActive()
    manager = vm.VMManager(vm.VMParams.from_dict({"name": "iso1", "uri": "test:///default",
                                                  "storage_dir": str(tmp_path / "vms")}), connect=lambda uri: conn)
    manager.ensure_watcher = lambda storage, connect: live["watchers"].append(storage) or True
    assert manager.run()["changes"] == ["start"]
    assert live["watchers"] == [str(tmp_path / "vms")]
    assert [e["name"] for _p, e in seed_eject.registrations(seed_eject.registry(str(tmp_path / "vms")))] == ["iso1"]


NFT = {"engine": "nftables", **FILTER}
REAL_NFT = nftables._run  # pylint: disable=protected-access  # before tests/unit/conftest.py's fake replaces it


@pytest.fixture
def nft(monkeypatch):
    """The nft commands rum_vm runs, the links it raises and the running guests it re-holds (the
    test driver has no kernel ruleset and cannot change a running NIC's link)."""
    calls: dict = {"nft": [], "link_up": [], "hold_running": 0}
    monkeypatch.setattr(vm.VMManager, "run_nft",
                        staticmethod(lambda argv, stdin: calls["nft"].append((argv, stdin)) or (0, "", "")))
    monkeypatch.setattr(nftables, "link_up", lambda dom, macs: calls["link_up"].append(sorted(macs)) or sorted(macs))

    def hold_running(dom, read_meta, run):
        calls["hold_running"] += 1
        return []
    monkeypatch.setattr(nftables, "hold_running", hold_running)
    return calls


def scripts(calls) -> list[str]:
    return [stdin for argv, stdin in calls["nft"] if argv == ["nft", "-f", "-"]]


def test_the_nftables_engine_names_the_taps_holds_them_at_start_and_releases_them(conn, base, tmp_path, live, nft):
    mac = vm.domain.stable_mac("iso1", 0)
    checked = run(conn, base, tmp_path, live, network_filter=NFT, check_mode=True)
    assert "start" in checked["changes"] and scripts(nft) == [] and nft["link_up"] == []

    created = run(conn, base, tmp_path, live, network_filter=NFT)
    assert conn.filters == {} and not [c for c in created["changes"] if "network filter" in c]
    xml = conn.lookupByName("iso1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    held = nftables.holds(xml, vm.read_meta(xml))
    assert [(h.mac, h.bridge) for h in held] == [(mac, conn.networkLookupByName("default").bridgeName())]
    assert f"<target dev='{held[0].tap}'/>" in xml and "<link state='down'/>" in xml and "filterref" not in xml
    assert len(scripts(nft)) == 1 and f'"{held[0].tap}" . {mac}' in scripts(nft)[0]  # held before the start
    assert nft["link_up"] == [[mac]] and nft["hold_running"] == 1

    assert not run(conn, base, tmp_path, live, network_filter=NFT)["changed"]
    assert len(scripts(nft)) == 1

    # another policy is another tap name: the definition changes, the running guest sees it at its next boot
    wider = run(conn, base, tmp_path, live, network_filter={**NFT, "allow": FILTER["allow"] + [{"address": "10.0.0.5"}]})
    assert wider["changes"] == ["redefine domain"] and len(scripts(nft)) == 1
    xml2 = conn.lookupByName("iso1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert nftables.holds(xml2, vm.read_meta(xml2))[0].tap != held[0].tap

    # without image: the same policy is a no-op, another one (or another engine) is refused by name
    same = run(conn, base, tmp_path, live, image=None, network_filter={**NFT, "allow": FILTER["allow"] + [
        {"address": "10.0.0.5"}]})
    assert not same["changed"]
    for option in (NFT, FILTER, {"enabled": False}):
        with pytest.raises(vm.VMError, match="engine nftables is part of the VM's definition"):
            run(conn, base, tmp_path, live, image=None, network_filter=option)

    planned = run(conn, base, tmp_path, live, state="absent", check_mode=True)
    assert planned["changes"] == ["remove domain", "release its NICs from the nftables ruleset",
                                  f"remove {tmp_path / 'vms' / 'iso1'}"]
    removed = run(conn, base, tmp_path, live, state="absent")
    assert removed["changes"] == planned["changes"]
    detach = scripts(nft)[-1]
    tap2 = nftables.holds(xml2, vm.read_meta(xml2))[0].tap
    assert f'delete element bridge rum_isolation bound {{ "{tap2}" . {mac} }}' in detach


def test_the_nftables_engine_refuses_a_host_bridge_and_a_host_without_nft(conn, base, tmp_path, live, nft, monkeypatch):
    with pytest.raises(vm.VMError, match=r"engine nftables holds NICs on libvirt networks, and interfaces\[0\] is "
                                         r"on the host bridge 'br0': use engine nwfilter"):
        run(conn, base, tmp_path, live, network_filter=NFT, interfaces=[{"bridge": "br0"}])
    monkeypatch.setattr(vm.VMManager, "run_nft", staticmethod(lambda argv, stdin: REAL_NFT(["/nonexistent/nft"], "")))
    with pytest.raises(vm.VMError, match="network_filter.engine nftables: .*apt-get install nftables"):
        run(conn, base, tmp_path, live, network_filter=NFT)
    assert conn.listAllDomains() == [] or "iso1" not in [d.name() for d in conn.listAllDomains()]
