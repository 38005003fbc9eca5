"""Isolated networks and DHCP reservations: the XML, the subnet choice, and against libvirt's test driver."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _network as network
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")


def test_isolated_network_xml():
    xml = network.network_xml("rum-1a2b3c4d-lab", ipaddress.IPv4Network("10.77.3.0/24"))
    info = network.parse(xml)
    assert info.name == "rum-1a2b3c4d-lab" and info.forward is None  # no <forward>: isolated
    assert info.subnets == (ipaddress.IPv4Network("10.77.3.0/24"),)
    assert info.bridge == network.bridge_name("rum-1a2b3c4d-lab") and len(info.bridge) <= 15
    assert "address=\"10.77.3.1\"" in xml and "start=\"10.77.3.100\"" in xml and "end=\"10.77.3.254\"" in xml
    assert network.is_ours(info)
    assert not network.is_ours(info._replace(bridge="virbr0"))


def test_subnet_from_the_address_or_from_the_name():
    assert network.pick_subnet("n", "192.168.50.10", []) == ipaddress.IPv4Network("192.168.50.0/24")
    with pytest.raises(network.NetworkError, match=r"192.168.122.0/24 \(from ip 192.168.122.9\) overlaps 192.168.122.0/24"):
        network.pick_subnet("n", "192.168.122.9", [ipaddress.IPv4Network("192.168.122.0/24")])
    first = network.pick_subnet("dev-net", None, [])
    assert first.prefixlen == 24 and str(first).startswith("192.168.")
    assert network.pick_subnet("dev-net", None, []) == first  # the same name, the same subnet
    taken = network.pick_subnet("dev-net", None, [first])
    assert taken != first and not taken.overlaps(first)


def test_host_routes(tmp_path):
    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "virbr0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    expected = [ipaddress.IPv4Network("10.0.0.0/24"), ipaddress.IPv4Network("192.168.122.0/24")]
    assert network.host_routes(str(routes)) == expected
    assert network.host_routes(str(tmp_path / "missing")) == []


@pytest.fixture
def conn():
    c = libvirt.open("test:///default")
    yield c
    c.close()


def test_create_reserve_modify_unreserve_remove(conn, monkeypatch):
    monkeypatch.setattr(network, "host_routes", lambda: [])
    net = network.create_isolated(conn, "rum-test-lab", "10.77.3.20")
    assert net.isActive() and net.autostart()
    assert network.info(net).subnets == (ipaddress.IPv4Network("10.77.3.0/24"),)
    mac = "52:54:00:aa:bb:01"
    assert network.reserve(net, mac, "10.77.3.20", "dev") == "add"
    assert network.reserve(net, mac, "10.77.3.20", "dev") is None
    assert network.reserve(net, mac, "10.77.3.21", "dev") == "modify"
    assert network.info(net).hosts == ((mac, "10.77.3.21"),)
    with pytest.raises(network.NetworkError, match="ip 10.77.3.21 is already reserved for MAC 52:54:00:aa:bb:01"):
        network.reserve(net, "52:54:00:aa:bb:02", "10.77.3.21")
    with pytest.raises(network.NetworkError, match=r"ip 10.9.9.9 is not in its subnet \(10.77.3.0/24\)"):
        network.reserve(net, "52:54:00:aa:bb:02", "10.9.9.9")
    assert network.unreserve(net, mac) and not network.unreserve(net, mac)
    assert network.users(conn, "rum-test-lab") == []
    network.remove(net)
    assert network.lookup(conn, "rum-test-lab") is None


def test_a_new_network_avoids_the_subnets_in_use(conn, monkeypatch):
    monkeypatch.setattr(network, "host_routes", lambda: [])
    default = network.info(conn.networkLookupByName("default")).subnets[0]
    with pytest.raises(network.NetworkError, match="overlaps"):
        network.create_isolated(conn, "clash", str(default.network_address + 7))
    assert network.lookup(conn, "clash") is None
    net = network.create_isolated(conn, "free", None)
    assert not network.info(net).subnets[0].overlaps(default)


def test_users_are_the_domains_with_a_nic_on_it(conn):
    assert network.users(conn, "default") == ["test"]  # the test driver's own domain
    assert network.users(conn, "default", skip="test") == []


class _NicDomain:  # pylint: disable=too-few-public-methods
    """A domain of listAllDomains with one NIC per definition (persistent, then live)."""

    def __init__(self, name, macs, error=None):
        self.name_, self.macs, self.error = name, macs, error

    def name(self):
        return self.name_

    def isActive(self):  # noqa: N802 - libvirt's name
        return len(self.macs) > 1

    def XMLDesc(self, flags):  # noqa: N802 - libvirt's name
        if self.error:
            raise self.error
        mac = self.macs[0 if flags else 1]
        return f"<domain><devices><interface type='network'><mac address='{mac}'/></interface></devices></domain>"


class _Host:  # pylint: disable=too-few-public-methods
    def __init__(self, *doms):
        self.doms = doms

    def listAllDomains(self, _flags):  # noqa: N802 - libvirt's name
        return list(self.doms)


def test_macs_in_use_reads_persistent_and_live_nics_of_every_domain():
    host = _Host(_NicDomain("a", ["52:54:00:AA:00:01"]), _NicDomain("b", ["52:54:00:00:00:02", "52:54:00:00:00:03"]))
    assert network.macs_in_use(host) == {"52:54:00:aa:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"}


def test_macs_in_use_names_the_domain_it_could_not_read():
    broken = libvirt.libvirtError("internal error: boom")
    with pytest.raises(network.NetworkError) as info:
        network.macs_in_use(_Host(_NicDomain("bad", ["52:54:00:00:00:01"], error=broken)))
    assert str(info.value).startswith("the MACs the domains use: read domain 'bad': ")
