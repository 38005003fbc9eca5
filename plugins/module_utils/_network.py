# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Isolated libvirt networks made on demand, and fixed addresses (DHCP reservations) on networks.

Internal to the rum.pool collection: not a public API. What rum did for ``[[network.interfaces]]``,
without its gaps: a missing network asked for as ``isolated`` is defined and started (no forwarding:
the host is ``.1`` of a /24, DHCP hands out ``.100``-``.254``), a fixed ``ip`` becomes a DHCP host
reservation for the NIC's MAC, and a network this module made is removed again once no domain uses
it.

How a network is known to be ours: libvirt 9.0 has no ``<metadata>`` on networks (it came with
9.7), so the bridge name carries the mark. A network made here always gets the bridge
``bridge_name(<network name>)``; a network with another bridge is somebody else's and is never
removed. The XML functions are pure; the rest take a libvirt connection, so unit tests use libvirt's
in-process test driver.
"""

from __future__ import annotations

import hashlib
import ipaddress
import typing as t
import xml.etree.ElementTree as ET

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv

try:
    import libvirt
except ImportError:  # pragma: no cover - rum_vm checks HAS_LIBVIRT before it gets here
    libvirt = None

BRIDGE_PREFIX = "rum-"
# The /24 of a network with no address given: 192.168.<2..254>.0, picked from the name (as rum
# did), then the next free one.
HASHED_BASE = "192.168"
ROUTES_FILE = "/proc/net/route"


class NetworkError(Exception):
    """A network could not be made or changed; the message names the network and the cause."""


class NetInfo(t.NamedTuple):
    """What rum_vm needs to know of a libvirt network's XML."""

    name: str
    bridge: str | None
    forward: str | None
    subnets: tuple[ipaddress.IPv4Network, ...]
    hosts: tuple[tuple[str, str], ...]  # (mac, ip) DHCP reservations


def bridge_name(network: str) -> str:
    """The bridge of a network rum.pool makes: ``rum-`` and 10 hex digits of the name's hash."""
    return BRIDGE_PREFIX + hashlib.sha256(network.encode("utf-8")).hexdigest()[:10]


def parse(xml: str) -> NetInfo:
    root = ET.fromstring(xml)
    subnets = []
    hosts = []
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        mask = ip.get("netmask") or ip.get("prefix") or "24"
        subnets.append(ipaddress.IPv4Network(f"{ip.get('address')}/{mask}", strict=False))
        for host in ip.findall("dhcp/host"):
            if host.get("mac") and host.get("ip"):
                hosts.append((host.get("mac").lower(), host.get("ip")))
    bridge = root.find("bridge")
    forward = root.find("forward")
    return NetInfo(name=root.findtext("name") or "", bridge=bridge.get("name") if bridge is not None else None,
                   forward=forward.get("mode", "nat") if forward is not None else None,
                   subnets=tuple(subnets), hosts=tuple(hosts))


def is_ours(info: NetInfo) -> bool:
    return info.bridge == bridge_name(info.name)


def _djb2_octet(name: str) -> int:
    value = 5381
    for byte in name.encode("utf-8"):
        value = (value * 33 + byte) & 0xFFFFFFFF
    return value % 253 + 2


def pick_subnet(name: str, ip: str | None, taken: t.Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The /24 for a new network: the one ``ip`` is in, or one derived from ``name`` that is free."""
    taken = list(taken)
    if ip:
        subnet = ipaddress.IPv4Network(f"{ip}/24", strict=False)
        clash = [str(other) for other in taken if other.overlaps(subnet)]
        if clash:
            raise NetworkError(f"network {name!r}: {subnet} (from ip {ip}) overlaps {', '.join(clash)}, "
                               "already used on this host")
        return subnet
    first = _djb2_octet(name)
    for step in range(253):
        octet = (first - 2 + step) % 253 + 2
        subnet = ipaddress.IPv4Network(f"{HASHED_BASE}.{octet}.0/24")
        if not any(other.overlaps(subnet) for other in taken):
            return subnet
    raise NetworkError(f"network {name!r}: no free /24 left in {HASHED_BASE}.0.0/16; give an interface ip")


def network_xml(name: str, subnet: ipaddress.IPv4Network) -> str:
    """An isolated network: no <forward>, the host at .1, DHCP from .100 to .254."""
    hosts = list(subnet.hosts())
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "bridge", {"name": bridge_name(name), "stp": "on", "delay": "0"})
    ip = ET.SubElement(root, "ip", {"address": str(hosts[0]), "netmask": str(subnet.netmask)})
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", {"start": str(subnet.network_address + 100), "end": str(hosts[-1])})
    return ET.tostring(root, encoding="unicode")


def host_xml(mac: str, ip: str, hostname: str | None = None) -> str:
    attrs = {"mac": mac.lower(), "ip": ip}
    if hostname:
        attrs["name"] = hostname
    return ET.tostring(ET.Element("host", attrs), encoding="unicode")


def host_routes(path: str = ROUTES_FILE) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this host routes to directly (from /proc/net/route), default route aside."""
    found = []
    try:
        with open(path, encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest, mask = (ipaddress.IPv4Address(int(x, 16).to_bytes(4, "little")) for x in (fields[1], fields[7]))
        if int(mask):
            found.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return found


# --- against libvirt ------------------------------------------------------------------------------

def _cause(exc: Exception) -> str:
    getter = getattr(exc, "get_error_message", None)
    return (getter() if getter else None) or str(exc)


def lookup(conn, name: str):
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return None


def info(net) -> NetInfo:
    return parse(net.XMLDesc(0))


def all_subnets(conn) -> list[ipaddress.IPv4Network]:
    """Subnets of every libvirt network on the connection, and those the host routes to."""
    subnets = []
    for net in conn.listAllNetworks():
        subnets.extend(info(net).subnets)
    return subnets + host_routes()


def create_isolated(conn, name: str, ip: str | None):
    """Define, start and autostart an isolated network; returns it."""
    subnet = pick_subnet(name, ip, all_subnets(conn))
    try:
        net = conn.networkDefineXML(network_xml(name, subnet))
    except libvirt.libvirtError as exc:
        raise NetworkError(f"define network {name!r} ({subnet}): {_cause(exc)}") from exc
    try:
        net.create()
        net.setAutostart(1)
    except libvirt.libvirtError as exc:
        remove(net)
        raise NetworkError(f"start network {name!r} ({subnet}): {_cause(exc)}") from exc
    return net


def _update(net, command: int, xml: str) -> None:
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)


def reservation_change(current: NetInfo, mac: str, ip: str) -> str | None:
    """What reserving ``ip`` for ``mac`` needs on this network: None (already so), 'add' or 'modify'.

    Raises NetworkError when ``ip`` is outside the network or reserved for another MAC.
    """
    address = ipaddress.IPv4Address(ip)
    if not any(address in subnet for subnet in current.subnets):
        where = ", ".join(map(str, current.subnets)) or "no IPv4 subnet"
        raise NetworkError(f"network {current.name!r}: ip {ip} is not in its subnet ({where})")
    for other_mac, other_ip in current.hosts:
        if other_ip == ip and other_mac != mac.lower():
            raise NetworkError(f"network {current.name!r}: ip {ip} is already reserved for MAC {other_mac}")
    mine = [other_ip for other_mac, other_ip in current.hosts if other_mac == mac.lower()]
    if not mine:
        return "add"
    return None if mine == [ip] else "modify"


def reserve(net, mac: str, ip: str, hostname: str | None = None) -> str | None:
    """Make ``ip`` the DHCP reservation of ``mac``; returns the change made (None when there was none)."""
    current = info(net)
    change = reservation_change(current, mac, ip)
    if change is None:
        return None
    try:
        if change == "modify":
            _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host_xml(mac, _reserved(current, mac)))
        _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, host_xml(mac, ip, hostname))
    except libvirt.libvirtError as exc:
        raise NetworkError(f"network {current.name!r}: reserve {ip} for {mac}: {_cause(exc)}") from exc
    return change


def _reserved(current: NetInfo, mac: str) -> str:
    return next(ip for other, ip in current.hosts if other == mac.lower())


def unreserve(net, mac: str) -> bool:
    """Drop the DHCP reservation of ``mac``; True when there was one."""
    current = info(net)
    if not any(other == mac.lower() for other, _ip in current.hosts):
        return False
    try:
        _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host_xml(mac, _reserved(current, mac)))
    except libvirt.libvirtError as exc:
        raise NetworkError(f"network {current.name!r}: drop the reservation of {mac}: {_cause(exc)}") from exc
    return True


def users(conn, name: str, *, skip: str | None = None) -> list[str]:
    """Names of the domains (defined or running, any owner) with a NIC on network ``name``."""
    found = []
    for dom in conn.listAllDomains(0):
        if skip and dom.name() == skip:
            continue
        root = ET.fromstring(dom.XMLDesc(0))
        for iface in root.findall("devices/interface[@type='network']/source"):
            if iface.get("network") == name:
                found.append(dom.name())
                break
    return found


def macs_in_use(conn) -> set[str]:
    """The MACs of every NIC of the host's domains (any owner), persistent and live definitions."""
    found: set[str] = set()
    try:
        for _name, xmls in lv.definitions(conn):
            for xml in xmls:
                found.update(mac.get("address", "").lower() for mac in ET.fromstring(xml).iter("mac")
                             if mac.get("address"))
    except lv.LibvirtError as exc:
        raise NetworkError(f"the MACs the domains use: {exc}") from exc
    return found


def remove(net) -> None:
    try:
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError as exc:
        raise NetworkError(f"remove network {net.name()!r}: {_cause(exc)}") from exc
