# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guest network filter: the option, the filter XML and what it lets through, the host's side,
and a NIC's filter in the domain XML (no libvirt daemon needed)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _domain as d
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nf

GATEWAY = "192.168.122.1"
HOST_PUBLIC = "198.51.100.7"
SURROUNDINGS = nf.Surroundings(
    services=(ipaddress.IPv4Address(GATEWAY),),
    local_networks=(ipaddress.IPv4Network("192.168.122.0/24"),),
    host_addresses=(ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address(HOST_PUBLIC),
                    ipaddress.IPv4Address(GATEWAY)))
NETWORK_XML = """<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip>
  <ip family='ipv6' address='fd00::1' prefix='64'/>
  <ip address='10.9.0.1' prefix='16'/>
</network>"""
IP_JSON = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": HOST_PUBLIC, "prefixlen": 24}]},
    {"ifname": "br0", "addr_info": [{"family": "inet", "local": "203.0.113.9", "prefixlen": 25}]},
    {"ifname": "virbr0", "addr_info": [{"family": "inet", "local": GATEWAY, "prefixlen": 24}]},
])


def resolver(table: dict):
    def resolve(name: str) -> list[str]:
        if name not in table:
            raise OSError(f"[Errno -2] Name or service not known: {name}")
        return table[name]
    return resolve


def xml_for(option: dict, surroundings: nf.Surroundings = SURROUNDINGS) -> str:
    return nf.filter_xml("rum-vm-ci-hv1-1", nf.policy(option, resolve=resolver({})), surroundings)


# --------------------------------------------------------------------------------------------
# The option


def test_defaults_open_https_only():
    pol = nf.policy({})
    assert pol == nf.Policy(allow=(), deny=(), public_ports=((443, 443),))
    assert nf.enabled({}) and nf.enabled({"enabled": True}) and not nf.enabled({"enabled": False})
    assert not nf.enabled(None)


def test_entries_ports_and_names():
    pol = nf.policy({
        "allow": [{"address": "192.168.122.1", "ports": [8080, "9000-9010", "8080"]},
                  {"address": "registry.corp", "protocol": "any"}],
        "deny": [{"address": "203.0.113.0/24", "protocol": "udp", "ports": ["53"]}],
        "public_ports": [443, 80],
    }, resolve=resolver({"registry.corp": ["10.0.0.5", "10.0.0.6"]}))
    assert pol.allow == (
        nf.Target(ipaddress.IPv4Network("192.168.122.1/32"), "tcp", ((8080, 8080), (9000, 9010))),
        nf.Target(ipaddress.IPv4Network("10.0.0.5/32"), "any", ()),
        nf.Target(ipaddress.IPv4Network("10.0.0.6/32"), "any", ()),
    )
    assert pol.deny == (nf.Target(ipaddress.IPv4Network("203.0.113.0/24"), "udp", ((53, 53),)),)
    assert pol.public_ports == ((80, 80), (443, 443))
    assert nf.policy({"public_ports": []}).public_ports == ()


@pytest.mark.parametrize("option, message", [
    ({"allow": [{"ports": [1]}]}, "isolation.allow[0].address is required"),
    ({"allow": [{"address": "10.0.0.1", "ports": [0]}]}, "isolation.allow[0].ports: 0 is not a port"),
    ({"allow": [{"address": "10.0.0.1", "ports": ["9-3"]}]}, "'9-3' is not a port (1-65535) or a range"),
    ({"allow": [{"address": "10.0.0.1", "ports": 80}]}, "isolation.allow[0].ports must be a list"),
    ({"allow": [{"address": "10.0.0.1", "ports": [True]}]}, "True is not a port"),
    ({"deny": [{"address": "10.0.0.1", "protocol": "icmp"}]}, "isolation.deny[0].protocol 'icmp' is not one of"),
    ({"deny": [{"address": "10.0.0.1", "port": 1}]}, "isolation.deny[0]: unknown key(s) port"),
    ({"deny": ["10.0.0.1"]}, "isolation.deny[0] must be a dict"),
    ({"deny": {"address": "10.0.0.1"}}, "isolation.deny must be a list"),
    ({"allow": [{"address": "fd00::1"}]}, "only IPv4 is supported"),
    ({"allow": [{"address": "10.0.0.0/33"}]}, "is not an IPv4 address, network or host name"),
    ({"allow": [{"address": "ghes.corp"}]}, "'ghes.corp' does not resolve on this host"),
    ({"public_ports": ["https"]}, "isolation.public_ports: 'https' is not a port"),
    ({"egress": []}, "isolation: unknown key(s) egress"),
])
def test_bad_options_are_named(option, message):
    with pytest.raises(nf.FilterError) as err:
        nf.policy(option, resolve=resolver({}))
    assert message in str(err.value)


# --------------------------------------------------------------------------------------------
# What the filter lets through (each new connection the guest opens)


@pytest.mark.parametrize("address, port, protocol, action", [
    ("140.82.112.3", 443, "tcp", "accept"),     # GitHub (public HTTPS)
    ("140.82.112.3", 22, "tcp", "reject"),      # public, another port
    ("140.82.112.3", 443, "udp", "reject"),     # QUIC is not opened by public_ports
    ("169.254.169.254", 80, "tcp", "reject"),   # the cloud metadata address
    ("169.254.169.254", 443, "tcp", "reject"),
    ("10.1.2.3", 443, "tcp", "reject"),         # private ranges, HTTPS included
    ("172.16.5.5", 443, "tcp", "reject"),
    ("192.168.1.10", 443, "tcp", "reject"),
    ("100.64.0.1", 443, "tcp", "reject"),       # shared (carrier-grade NAT)
    ("127.0.0.1", 443, "tcp", "reject"),
    ("224.0.0.251", 5353, "udp", "reject"),     # multicast
    (HOST_PUBLIC, 443, "tcp", "reject"),        # the host's own public address
    (HOST_PUBLIC, 22, "tcp", "reject"),
    (GATEWAY, 22, "tcp", "reject"),             # the host, on the network
    (GATEWAY, 8080, "tcp", "accept"),           # ... except the allowed port (the fake GitHub)
    (GATEWAY, 53, "udp", "accept"),             # DNS
    (GATEWAY, 53, "tcp", "accept"),
    ("192.168.122.77", 22, "tcp", "reject"),    # another VM on the network
    ("192.168.122.77", 443, "tcp", "reject"),
    ("203.0.113.20", 443, "tcp", "reject"),     # denied although public HTTPS
    ("10.20.0.9", 5432, "tcp", "accept"),       # the allowed internal database
    ("10.20.0.9", 5433, "tcp", "reject"),
    ("10.20.0.66", 5432, "tcp", "reject"),      # denied inside the allowed network: deny wins
])
def test_filter_verdicts(address, port, protocol, action):
    xml = xml_for({"allow": [{"address": GATEWAY, "ports": [8080]}, {"address": "10.20.0.0/24", "ports": [5432]}],
                   "deny": [{"address": "203.0.113.0/24", "protocol": "any"},
                            {"address": "10.20.0.66", "protocol": "any"}]})
    got, rule = nf.verdict(xml, address, port, protocol)
    assert got == action, rule


def test_dhcp_dns_ssh_and_the_rest():
    xml = xml_for({})
    lines = xml.splitlines()
    assert lines[0] == '<filter name="rum-vm-ci-hv1-1" chain="root">' and lines[-1] == "</filter>"
    # no MAC but the VM's own, for every frame and for ARP's sender address, in the filter's own chain
    # (a referenced filter would be an ebtables chain of its own to make and remove at each start)
    assert lines[1] == '  <rule action="drop" direction="out" priority="-700"><mac match="no" srcmacaddr="$MAC" /></rule>'
    assert lines[2] == ('  <rule action="drop" direction="out" priority="-600"><arp match="no" '
                        'arpsrcmacaddr="$MAC" /></rule>')
    assert "filterref" not in xml
    # DHCP requests from port 68 to 67; the replies are the rule's mirror image (no state matching)
    dhcp = [line for line in lines if 'priority="100"' in line]
    assert dhcp == ['  <rule action="accept" direction="out" priority="100" statematch="false"><udp srcportstart="68" '
                    'dstportstart="67" /></rule>']
    # the host side may open SSH into the guest; the last rule refuses the rest both ways
    assert '<rule action="accept" direction="in" priority="120"><tcp srcipaddr="192.168.122.1" dstportstart="22" />' in xml
    assert [line for line in lines if 'priority="900"' in line] == [
        '  <rule action="reject" direction="out" priority="900"><all /></rule>']
    # IPv6 and every ethertype but ARP and IPv4 are dropped
    assert '<rule action="drop" direction="inout" priority="1000" />' in xml
    assert nf.verdict(xml, "8.8.8.8", 53, "udp")[0] == "reject"  # DNS only through the network's server


def test_bridge_nics_block_their_subnet():
    def run(argv):
        return 0, IP_JSON, ""
    s = nf.surroundings([{"bridge": "br0"}], network_xml=lambda name: pytest.fail("no network"), run=run)
    assert s.services == () and s.local_networks == (ipaddress.IPv4Network("203.0.113.0/25"),)
    xml = nf.filter_xml("rum-vm-b", nf.policy({}), s)
    assert "53" not in xml  # no DNS server known on a bare bridge: allow yours
    assert nf.verdict(xml, "203.0.113.50", 443)[0] == "reject"  # another machine on the bridge's public subnet
    assert nf.verdict(xml, "203.0.113.200", 443)[0] == "accept"


def test_same_inputs_same_bytes_and_blocked_ranges_are_merged():
    assert xml_for({}) == xml_for({})
    nets = nf.blocked_networks(SURROUNDINGS)
    assert ipaddress.IPv4Network("192.168.122.0/24") not in nets  # inside 192.168.0.0/16 already
    assert ipaddress.IPv4Network(f"{HOST_PUBLIC}/32") in nets
    assert ipaddress.IPv4Network("169.254.0.0/16") in nets


def test_filter_passes_virt_xml_validate(tmp_path):
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.fail("virt-xml-validate is missing: apt-get install libvirt-clients")
    path = tmp_path / "filter.xml"
    path.write_text(xml_for({"allow": [{"address": GATEWAY, "ports": ["8000-8100"], "protocol": "any"}],
                             "deny": [{"address": "198.51.100.0/24"}]}), encoding="utf-8")
    proc = subprocess.run([tool, str(path), "nwfilter"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_canonical_ignores_uuid_and_attribute_order():
    ours = xml_for({})
    theirs = ours.replace('<filter name="rum-vm-ci-hv1-1" chain="root">',
                          "<filter chain='root' name='rum-vm-ci-hv1-1'>\n  <uuid>0d5c2b7e-1111-2222-3333-444455556666</uuid>")
    theirs = theirs.replace('srcportstart="68" dstportstart="67"', 'dstportstart="67" srcportstart="68"')
    assert nf.canonical(theirs) == nf.canonical(ours)
    assert nf.canonical(xml_for({"public_ports": [80]})) != nf.canonical(ours)


# --------------------------------------------------------------------------------------------
# The host's side


def test_host_addresses_and_network_addresses():
    addresses, links = nf.host_addresses(lambda argv: (0, IP_JSON, ""))
    assert [str(a) for a in addresses] == ["127.0.0.1", "192.168.122.1", "198.51.100.7", "203.0.113.9"]
    assert links["br0"] == [ipaddress.IPv4Network("203.0.113.0/25")]
    assert [str(i) for i in nf.network_addresses(NETWORK_XML)] == ["192.168.122.1/24", "10.9.0.1/16"]
    with pytest.raises(nf.FilterError, match="cannot list the host's addresses .*: no such device"):
        nf.host_addresses(lambda argv: (1, "", "no such device"))


def test_surroundings_of_a_network_nic():
    s = nf.surroundings([{"network": "default"}], network_xml=lambda name: NETWORK_XML,
                        run=lambda argv: (0, IP_JSON, ""))
    assert [str(a) for a in s.services] == ["10.9.0.1", "192.168.122.1"]
    assert [str(n) for n in s.local_networks] == ["10.9.0.0/16", "192.168.122.0/24"]


def test_bridge_problem(tmp_path):
    path = tmp_path / "bridge-nf-call-iptables"
    assert nf.bridge_problem(str(path)) is None
    assert "br_netfilter is not loaded" in nf.bridge_problem(str(path), missing_ok=False)
    path.write_text("0\n")
    assert "is 0: the guest's network filter would not see" in nf.bridge_problem(str(path))
    path.write_text("1\n")
    assert nf.bridge_problem(str(path), missing_ok=False) is None


# --------------------------------------------------------------------------------------------
# libvirt (a fake connection: the test driver has no network filters)


UUID = "9e0b3a0e-0000-4000-8000-000000000001"


class FakeFilter:
    def __init__(self, conn, xml):
        self.conn, self.xml = conn, xml

    def XMLDesc(self, flags):  # noqa: N802 - libvirt's name
        return nf.with_uuid(self.xml, UUID) if "<uuid>" not in self.xml else self.xml

    def undefine(self):
        del self.conn.filters[nf.ET.fromstring(self.xml).get("name")]


class FakeConn:
    def __init__(self):
        self.filters: dict = {}
        self.defined = 0

    def nwfilterLookupByName(self, name):  # noqa: N802
        if name not in self.filters:
            raise nf.libvirt.libvirtError(f"no nwfilter with matching name '{name}'")
        return self.filters[name]

    def nwfilterDefineXML(self, xml):  # noqa: N802
        name, uuid = nf.ET.fromstring(xml).get("name"), nf.ET.fromstring(xml).findtext("uuid")
        if name in self.filters and uuid != UUID:  # as libvirt: a known name is redefined by its UUID
            raise nf.libvirt.libvirtError(f"operation failed: filter '{name}' already exists with uuid {UUID}")
        self.defined += 1
        self.filters[nf.ET.fromstring(xml).get("name")] = FakeFilter(self, xml)


@pytest.fixture
def no_filter_error(monkeypatch):
    monkeypatch.setattr(nf.libvirt.libvirtError, "get_error_code", lambda self: nf.libvirt.VIR_ERR_NO_NWFILTER)


def test_ensure_and_remove_are_idempotent(no_filter_error):
    conn = FakeConn()
    xml = xml_for({})
    assert nf.ensure(conn, xml, check_mode=True) == "define network filter" and conn.defined == 0
    assert nf.ensure(conn, xml) == "define network filter"
    assert nf.ensure(conn, xml) is None and conn.defined == 1
    assert nf.ensure(conn, xml_for({"public_ports": [443, 80]})) == "update network filter"
    assert f"<uuid>{UUID}</uuid>" in conn.filters["rum-vm-ci-hv1-1"].xml  # redefined under its own UUID
    assert nf.remove(conn, "rum-vm-ci-hv1-1", check_mode=True) and "rum-vm-ci-hv1-1" in conn.filters
    assert nf.remove(conn, "rum-vm-ci-hv1-1") and nf.remove(conn, "rum-vm-ci-hv1-1") is False
    assert nf.filter_name("ci-hv1-1") == "rum-vm-ci-hv1-1"


# --------------------------------------------------------------------------------------------
# A NIC's filter, and an ejected seed, in the domain XML


def spec(**nic) -> d.DomainSpec:
    return d.DomainSpec(
        name="ci-hv1-1", memory_mib=1024, vcpus=1,
        disks=[d.Disk("/var/lib/rum/ci-hv1-1/disk.qcow2", "vda"),
               d.Disk(None, "sda", bus="scsi", fmt="raw", device="cdrom", readonly=True)],
        interfaces=[d.Interface("network", "default", "52:54:00:aa:bb:01", **nic)],
        serial_log=None, metadata={"config_hash": "c0ffee"})


def test_domain_xml_with_a_filter_and_an_empty_cdrom(tmp_path):
    xml = d.build_xml(spec(filter="rum-vm-ci-hv1-1"))
    assert "<filterref filter=\"rum-vm-ci-hv1-1\" />" in xml
    canon = d.canonical(xml)
    assert canon["interfaces"][0]["filter"] == "rum-vm-ci-hv1-1"
    assert [disk["path"] for disk in canon["disks"]] == [None, "/var/lib/rum/ci-hv1-1/disk.qcow2"]  # sda, vda
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.fail("virt-xml-validate is missing: apt-get install libvirt-clients")
    path = tmp_path / "domain.xml"
    path.write_text(xml, encoding="utf-8")
    proc = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_filter_change_applies_live_anything_else_at_restart():
    bare, filtered = d.canonical(d.build_xml(spec())), d.canonical(d.build_xml(spec(filter="rum-vm-ci-hv1-1")))
    assert d.filter_changed(bare, filtered) and d.filter_changed(filtered, bare)
    assert d.restart_changes(bare, filtered) == []
    assert d.diff_canonical(bare, filtered) == ["interface 0: filter (none) -> rum-vm-ci-hv1-1"]
    bigger = d.canonical(d.build_xml(spec(filter="rum-vm-ci-hv1-1", model="e1000")))
    assert d.restart_changes(filtered, bigger) == ["interface 0: model virtio -> e1000"]
    assert not d.filter_changed(filtered, bigger)


@pytest.mark.parametrize("nic, disk_path, message", [
    ({"kind": "user", "source": None, "filter": "rum-vm-x"}, "/x.iso", "needs a libvirt network or bridge"),
    ({"filter": "bad name"}, "/x.iso", "interfaces[0].filter: 'bad name' is invalid"),
])
def test_bad_filter_names(nic, disk_path, message):
    s = spec()
    for key, value in nic.items():
        setattr(s.interfaces[0], key, value)
    with pytest.raises(d.DomainError) as err:
        d.build_xml(s)
    assert message in str(err.value)


def test_only_a_cdrom_may_be_empty():
    s = spec()
    s.disks[0].path = None
    with pytest.raises(d.DomainError, match="disks\\[0\\].path: must be a string"):
        d.build_xml(s)
