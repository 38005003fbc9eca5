# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Default-deny guest networking with libvirt's network filters (nwfilter).

Internal to the rum.pool collection: not a public API. rum_vm's ``isolation`` option becomes one
libvirt network filter per VM, ``rum-vm-<name>``, that every NIC of the VM on a libvirt network or
a host bridge references. Why a filter and not a network of its own: a filter is attached to the
VM's own tap device, so it holds on any network or bridge (libvirt's NAT ``default`` included),
also between two VMs on the same bridge, and it can be swapped on a running VM.

What the filter lets through, top to bottom (the first rule that matches decides):

* layer 2: ARP and IPv4 only, each frame (and each ARP sender address) with the VM's own MAC, as
  libvirt's ``no-mac-spoofing`` and ``no-arp-mac-spoofing`` say it, but as two rules of this filter's
  own chain (each referenced filter is an ebtables chain of its own, made, renamed and removed at
  every start and stop of the guest); IPv6 and every other ethertype are dropped;
* packets of a connection already allowed (conntrack ``ESTABLISHED,RELATED``);
* DHCP, DNS (udp and tcp 53) to the network's own addresses, and SSH
  *into* the guest from those addresses (the host side: debugging with ``generate_ssh_key``);
* the ``deny`` entries (rejected), then the ``allow`` entries (accepted): deny wins;
* every private, shared, loopback, link-local (so the cloud metadata address 169.254.169.254),
  multicast and reserved range, every address of the host itself and the subnets of the VM's own
  networks (so the other VMs there): rejected;
* TCP to ``public_ports`` (default 443) on any other address: accepted;
* anything else the guest sends is rejected, and so is anything else sent to it (libvirt puts each
  rule's mirror image on the traffic to the guest: the last rule refuses new connections both ways).

Every rule costs libvirt three iptables commands at each start of the guest (the chains of traffic
from the guest, to it and to the host), so no rule is here that another already covers.

libvirt applies the IP rules through iptables on bridged traffic, which needs the kernel's
``br_netfilter`` (libvirt's physdev rules load it; ``bridge-nf-call-iptables`` must be 1):
``bridge_problem`` says so when it is not. The rest is pure: the policy from the option, the
filter XML, and its canonical form to compare with what libvirt holds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import typing as t
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils._libvirt import _cause

try:
    import libvirt
except ImportError:  # pragma: no cover - the callers check HAS_LIBVIRT first
    libvirt = None

FILTER_PREFIX = "rum-vm-"
PROTOCOLS = ("tcp", "udp", "any")
ENGINES = ("nwfilter", "nftables")  # who holds the rules: libvirt's filters, or _nftables.py
DEFAULT_PUBLIC_PORTS = (443,)
METADATA_ADDRESS = "169.254.169.254"
# Never reached through public_ports: "this network", private (RFC 1918), shared (RFC 6598),
# loopback, link-local (the cloud metadata address is in it), IETF protocol assignments,
# benchmarking, multicast and reserved/broadcast (224/4 and 240/4 as one rule: every rule costs
# libvirt a few firewall commands at each start of the guest).
BLOCKED_RANGES = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                  "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/3")
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"

# Rule priorities (libvirt sorts a chain's rules by them, lowest first).
PRIO_MAC = -700
PRIO_ARP_MAC = -600
PRIO_ESTABLISHED = 10
PRIO_DHCP = 100
PRIO_DNS = 110
PRIO_SSH_IN = 120
PRIO_DENY = 200
PRIO_ALLOW = 300
PRIO_BLOCKED = 400
PRIO_PUBLIC = 500
PRIO_REST = 900

Network = ipaddress.IPv4Network
PortRange = t.Tuple[int, int]
# Every address of the host, and the subnets on each of its interfaces (by name).
HostAddresses = t.Tuple[t.List[ipaddress.IPv4Address], t.Dict[str, t.List[ipaddress.IPv4Network]]]


class FilterError(ValueError):
    """The isolation option or the host's network cannot make a filter; the message says which."""


@dataclass(frozen=True)
class Target:
    """One allow or deny entry: where, which protocol, which destination ports (none: all)."""

    network: Network
    protocol: str = "tcp"
    ports: tuple[PortRange, ...] = ()


@dataclass(frozen=True)
class Policy:
    """The isolation option, checked: what the pool opens and closes beyond the fixed rules."""

    allow: tuple[Target, ...] = ()
    deny: tuple[Target, ...] = ()
    public_ports: tuple[PortRange, ...] = ((443, 443),)


@dataclass(frozen=True)
class Surroundings:
    """What the host contributes: the networks' host-side addresses (DHCP, DNS, SSH in), the
    subnets the VM sits on, and every address of the host itself."""

    services: tuple[ipaddress.IPv4Address, ...] = ()
    local_networks: tuple[Network, ...] = ()
    host_addresses: tuple[ipaddress.IPv4Address, ...] = ()


# --------------------------------------------------------------------------------------------
# The option


def filter_name(vm_name: str) -> str:
    """The filter of VM ``vm_name``."""
    return FILTER_PREFIX + vm_name


def vm_of(name: str) -> str | None:
    """The VM a filter of ours was made for (``filter_name`` read back), or None."""
    return name[len(FILTER_PREFIX):] if name.startswith(FILTER_PREFIX) and len(name) > len(FILTER_PREFIX) else None


def enabled(option: t.Any) -> bool:
    """True when the option asks for isolation (a mapping without ``enabled: false``)."""
    return isinstance(option, t.Mapping) and option.get("enabled", True) is not False


def _ports(value: t.Any, where: str) -> tuple[PortRange, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int)) or not isinstance(value, (list, tuple)):
        raise FilterError(f"{where} must be a list of ports (443) or ranges ('8000-8100'), got {value!r}")
    out = []
    for item in value:
        text = str(item).strip() if not isinstance(item, bool) else ""
        first, sep, last = text.partition("-")
        try:
            low, high = int(first), int(last if sep else first)
        except ValueError:
            raise FilterError(f"{where}: {item!r} is not a port (1-65535) or a range like '8000-8100'") from None
        if not 1 <= low <= high <= 65535:
            raise FilterError(f"{where}: {item!r} is not a port (1-65535) or a range like '8000-8100'")
        out.append((low, high))
    return tuple(sorted(set(out)))


def _resolve(host: str) -> list[str]:
    """The IPv4 addresses of a host name (socket.getaddrinfo; the hypervisor's resolver)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)})


def _networks(address: t.Any, where: str, resolve: t.Callable[[str], list[str]]) -> list[Network]:
    if not isinstance(address, str) or not address.strip():
        raise FilterError(f"{where}.address is required: an IPv4 address, a network like 10.1.2.0/24, or a host name")
    text = address.strip()
    try:
        return [ipaddress.IPv4Network(text, strict=False)]
    except ValueError:
        pass
    if ":" in text:
        raise FilterError(f"{where}.address {text!r}: only IPv4 is supported (the filter drops IPv6)")
    if "/" in text or not all(part and part.replace("-", "").isalnum() for part in text.split(".")):
        raise FilterError(f"{where}.address {text!r} is not an IPv4 address, network or host name")
    try:
        found = resolve(text)
    except OSError as exc:
        raise FilterError(f"{where}.address {text!r} does not resolve on this host: {exc}") from None
    if not found:
        raise FilterError(f"{where}.address {text!r} has no IPv4 address")
    return [ipaddress.IPv4Network(addr) for addr in found]


def _targets(entries: t.Any, where: str, resolve: t.Callable[[str], list[str]]) -> tuple[Target, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, (list, tuple)):
        raise FilterError(f"{where} must be a list of {{address, ports, protocol}}, got {entries!r}")
    out: list[Target] = []
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if not isinstance(entry, t.Mapping):
            raise FilterError(f"{at} must be a dict with address, ports and protocol, got {entry!r}")
        unknown = sorted(set(entry) - {"address", "ports", "protocol"})
        if unknown:
            raise FilterError(f"{at}: unknown key(s) {', '.join(map(str, unknown))} (known: address, ports, protocol)")
        protocol = entry.get("protocol") or "tcp"
        if protocol not in PROTOCOLS:
            raise FilterError(f"{at}.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        ports = _ports(entry.get("ports"), f"{at}.ports")
        out += [Target(net, protocol, ports) for net in _networks(entry.get("address"), at, resolve)]
    return tuple(out)


def policy(option: t.Mapping[str, t.Any], *, resolve: t.Callable[[str], list[str]] = _resolve,
           where: str = "isolation") -> Policy:
    """The checked policy of an enabled isolation option; FilterError names the bad entry."""
    known = {"enabled", "engine", "allow", "deny", "public_ports"}
    unknown = sorted(set(option) - known)
    if unknown:
        raise FilterError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
    if option.get("engine") not in (None, *ENGINES):
        raise FilterError(f"{where}.engine {option.get('engine')!r} is not one of {', '.join(ENGINES)}")
    public = option.get("public_ports")
    return Policy(allow=_targets(option.get("allow"), f"{where}.allow", resolve),
                  deny=_targets(option.get("deny"), f"{where}.deny", resolve),
                  public_ports=_ports(list(DEFAULT_PUBLIC_PORTS) if public is None else public,
                                      f"{where}.public_ports"))


# --------------------------------------------------------------------------------------------
# The filter XML


def _net_attrs(network: Network, prefix: str = "dst") -> dict[str, str]:
    return {f"{prefix}ipaddr": str(network.network_address), f"{prefix}ipmask": str(network.prefixlen)}


def _port_attrs(ports: PortRange, prefix: str = "dst") -> dict[str, str]:
    low, high = ports
    out = {f"{prefix}portstart": str(low)}
    if high != low:
        out[f"{prefix}portend"] = str(high)
    return out


def _rule(parent: ET.Element, action: str, direction: str, priority: int, protocol: str | None = None,
          statematch: bool = True, **attrs: str) -> None:
    rule_attrs = {"action": action, "direction": direction, "priority": str(priority)}
    if not statematch:
        rule_attrs["statematch"] = "false"
    rule = ET.SubElement(parent, "rule", rule_attrs)
    if protocol is not None:
        ET.SubElement(rule, protocol, attrs)


def _target_rules(parent: ET.Element, action: str, priority: int, target: Target) -> None:
    """Outgoing rules for one entry: ``any`` with ports is tcp and udp; no ports is every port."""
    where = _net_attrs(target.network)
    if target.protocol == "any" and not target.ports:
        _rule(parent, action, "out", priority, "all", **where)
        return
    for protocol in (("tcp", "udp") if target.protocol == "any" else (target.protocol,)):
        for ports in target.ports or [None]:
            _rule(parent, action, "out", priority, protocol, **where, **(_port_attrs(ports) if ports else {}))


def blocked_networks(surroundings: Surroundings) -> list[Network]:
    """Everything public_ports never opens: the fixed ranges, the VM's own subnets, the host's addresses."""
    nets = [ipaddress.IPv4Network(text) for text in BLOCKED_RANGES]
    nets += list(surroundings.local_networks)
    nets += [ipaddress.IPv4Network(addr) for addr in surroundings.host_addresses]
    kept: list[Network] = []
    for net in sorted(set(nets), key=lambda n: (n.prefixlen, int(n.network_address))):
        if not any(net.subnet_of(wider) for wider in kept):
            kept.append(net)
    return sorted(kept, key=lambda n: (int(n.network_address), n.prefixlen))


def filter_xml(name: str, pol: Policy, surroundings: Surroundings) -> str:
    """The ``<filter>`` for a VM; the same inputs always give the same bytes."""
    root = ET.Element("filter", {"name": name, "chain": "root"})
    _rule(root, "drop", "out", PRIO_MAC, "mac", match="no", srcmacaddr="$MAC")
    _rule(root, "drop", "out", PRIO_ARP_MAC, "arp", match="no", arpsrcmacaddr="$MAC")
    _rule(root, "accept", "inout", -500, "mac", protocolid="arp")
    _rule(root, "accept", "inout", -400, "mac", protocolid="ipv4")
    _rule(root, "accept", "inout", PRIO_ESTABLISHED, "all", state="ESTABLISHED,RELATED")

    # DHCP: to the broadcast address or the server, from port 68 to 67 (no other guest listens there,
    # and each guest's filter refuses what comes in on 67 anyway). Without state matching libvirt
    # also accepts the mirror image, the answers from port 67 to 68.
    _rule(root, "accept", "out", PRIO_DHCP, "udp", statematch=False, srcportstart="68", dstportstart="67")
    for service in surroundings.services:
        for protocol in ("udp", "tcp"):
            _rule(root, "accept", "out", PRIO_DNS, protocol, dstipaddr=str(service), dstportstart="53")
        _rule(root, "accept", "in", PRIO_SSH_IN, "tcp", srcipaddr=str(service), dstportstart="22")

    for target in pol.deny:
        _target_rules(root, "reject", PRIO_DENY, target)
    for target in pol.allow:
        _target_rules(root, "accept", PRIO_ALLOW, target)
    for net in blocked_networks(surroundings):
        _rule(root, "reject", "out", PRIO_BLOCKED, "all", **_net_attrs(net))
    for ports in pol.public_ports:
        _rule(root, "accept", "out", PRIO_PUBLIC, "tcp", **_port_attrs(ports))

    _rule(root, "reject", "out", PRIO_REST, "all")  # and, mirrored, everything new to the guest
    ET.SubElement(root, "rule", {"action": "drop", "direction": "inout", "priority": "1000"})
    return "\n".join(_lines(root)) + "\n"


def _lines(root: ET.Element) -> list[str]:
    """One line per filterref or rule (ElementTree.indent needs Python 3.9)."""
    head = "<" + " ".join([root.tag] + [f"{key}={quoteattr(value)}" for key, value in root.attrib.items()]) + ">"
    return [head] + ["  " + ET.tostring(child, encoding="unicode").strip() for child in root] + [f"</{root.tag}>"]


def verdict(xml: str, address: str, port: int | None = None, protocol: str = "tcp") -> tuple[str, str]:
    """What a filter does with a new connection the guest opens to ``address:port``: (action, rule).

    Reads the filter's own IP rules in libvirt's order (priority, then document order), the way
    its iptables chain for the guest's outgoing traffic would see the first packet. So a test (or
    a curious user) can check a rule without sending anything anywhere.
    """
    dst = ipaddress.IPv4Address(address)
    rules = [(int(rule.get("priority", "500")), index, rule) for index, rule in enumerate(ET.fromstring(xml))
             if rule.tag == "rule" and rule.get("direction") in ("out", "inout")]
    for _prio, _index, rule in sorted(rules, key=lambda item: item[:2]):
        match = rule.find("*")
        if match is None or match.tag not in ("all", "tcp", "udp") or match.get("state"):
            continue  # layer 2, or only packets of established connections
        if match.tag != "all" and match.tag != protocol:
            continue
        if match.get("dstipaddr"):
            net = ipaddress.IPv4Network(f"{match.get('dstipaddr')}/{match.get('dstipmask', '32')}", strict=False)
            if dst not in net:
                continue
        if match.get("dstportstart"):
            low = int(match.get("dstportstart"))
            if port is None or not low <= port <= int(match.get("dstportend", low)):
                continue
        if match.get("srcportstart"):
            continue  # DHCP: the guest's source port, never a new connection of a job
        return rule.get("action", "accept"), ET.tostring(rule, encoding="unicode").strip()
    return "accept", "(no rule matches)"


def canonical(xml: str) -> list:
    """A filter's name, chain and rules without its UUID or attribute order (libvirt reorders them)."""
    root = ET.fromstring(xml)
    items: list = [("filter", root.get("name"), root.get("chain"), root.get("priority"))]
    for child in root:
        if child.tag == "filterref":
            items.append(("filterref", child.get("filter")))
        elif child.tag == "rule":
            inner = [(el.tag, sorted(el.attrib.items())) for el in child]
            items.append(("rule", sorted(child.attrib.items()), inner))
    return items


# --------------------------------------------------------------------------------------------
# The host's side


def host_addresses(run: t.Callable[[list], tuple[int, str, str]]) -> HostAddresses:
    """Every IPv4 address of this host, and the subnets on each interface (``ip -j -4 addr``)."""
    rc, out, err = run(["ip", "-j", "-4", "addr", "show"])
    if rc != 0:
        raise FilterError(f"cannot list the host's addresses with 'ip -j -4 addr show' (iproute2): "
                          f"{(err or out).strip() or f'exit status {rc}'}")
    try:
        links = json.loads(out or "[]")
    except ValueError as exc:
        raise FilterError(f"'ip -j -4 addr show' printed no JSON: {exc}") from None
    addresses: set[ipaddress.IPv4Address] = set()
    subnets: dict[str, list[Network]] = {}
    for link in links:
        for info in link.get("addr_info") or []:
            if info.get("family") != "inet" or not info.get("local"):
                continue
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info.get('prefixlen', 32)}")
            addresses.add(iface.ip)
            subnets.setdefault(str(link.get("ifname")), []).append(iface.network)
    return sorted(addresses), subnets


def network_addresses(network_xml: str) -> list[ipaddress.IPv4Interface]:
    """The host-side IPv4 addresses of a libvirt network (its ``<ip>`` elements)."""
    out = []
    for el in ET.fromstring(network_xml).findall("ip"):
        if (el.get("family") or "ipv4") != "ipv4" or not el.get("address"):
            continue
        mask = el.get("prefix") or el.get("netmask") or "24"
        out.append(ipaddress.IPv4Interface(f"{el.get('address')}/{mask}"))
    return out


def surroundings(interfaces: t.Sequence[t.Mapping[str, t.Any]], *, network_xml: t.Callable[[str], str],
                 run: t.Callable[[list], tuple[int, str, str]]) -> Surroundings:
    """What the host contributes for a VM with these NICs (each ``{network: ...}`` or ``{bridge: ...}``)."""
    addresses, by_link = host_addresses(run)
    services: list[ipaddress.IPv4Address] = []
    local: list[Network] = []
    for iface in interfaces:
        if iface.get("network"):
            for address in network_addresses(network_xml(iface["network"])):
                services.append(address.ip)
                local.append(address.network)
        elif iface.get("bridge"):
            local += by_link.get(iface["bridge"], [])
    return Surroundings(services=tuple(sorted(set(services))), local_networks=tuple(sorted(set(local))),
                        host_addresses=tuple(addresses))


def bridge_problem(path: str = BRIDGE_NF, *, missing_ok: bool = True) -> str | None:
    """Why libvirt's IP rules would not see the guests' bridged traffic here, or None.

    The sysctl appears when br_netfilter is loaded; libvirt's physdev rules load it, so before a
    filter is in use a missing file is fine (``missing_ok``) and afterwards it is not.
    """
    try:
        with open(path, encoding="ascii") as fh:
            value = fh.read().strip()
    except FileNotFoundError:
        if missing_ok:
            return None
        return (f"{path} does not exist: the kernel's br_netfilter is not loaded, so the guest's network "
                "filter cannot see its traffic (modprobe br_netfilter)")
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if value != "1":
        return (f"{path} is {value}: the guest's network filter would not see its bridged traffic "
                "(sysctl -w net.bridge.bridge-nf-call-iptables=1, and keep it in /etc/sysctl.d)")
    return None


# --------------------------------------------------------------------------------------------
# libvirt


def lookup(conn, name: str):
    """The filter called ``name``, or None."""
    return lv.find(conn.nwfilterLookupByName, name, libvirt.VIR_ERR_NO_NWFILTER, "network filter", FilterError)


def ensure(conn, xml: str, *, check_mode: bool = False) -> str | None:
    """Define the filter ``xml`` names unless libvirt holds it already; what was done, or None.

    A changed filter is redefined in place: libvirt applies it to running guests at once.
    """
    name = ET.fromstring(xml).get("name")
    current = lookup(conn, name)
    if current is not None:
        held = current.XMLDesc(0)
        if canonical(held) == canonical(xml):
            return None
        xml = with_uuid(xml, ET.fromstring(held).findtext("uuid"))  # libvirt redefines a filter by its UUID
    if not check_mode:
        try:
            conn.nwfilterDefineXML(xml)
        except libvirt.libvirtError as exc:
            raise FilterError(f"define network filter '{name}': {_cause(exc)}") from exc
    return "define network filter" if current is None else "update network filter"


def swap(dom, wanted: t.Mapping[str, str | None], *, live: bool = True) -> list[str]:
    """Give each NIC (by MAC) the filter ``wanted`` names (None: none); the MACs changed.

    ``live``: the running guest (libvirt swaps the filter at once), else the persistent
    definition. Each NIC is updated from its own XML with only its ``<filterref>`` changed.
    """
    xml = dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    changed = []
    for nic in ET.fromstring(xml).findall("devices/interface"):
        mac_el = nic.find("mac")
        mac = (mac_el.get("address") if mac_el is not None else "").lower()
        if mac not in wanted:
            continue
        ref = nic.find("filterref")
        if (ref.get("filter") if ref is not None else None) == wanted[mac]:
            continue
        if ref is not None:
            nic.remove(ref)
        if wanted[mac]:
            ET.SubElement(nic, "filterref", {"filter": wanted[mac]})
        try:
            dom.updateDeviceFlags(ET.tostring(nic, encoding="unicode"), flags)
        except libvirt.libvirtError as exc:
            where = "running" if live else "defined"
            raise FilterError(f"swap the network filter of the {where} NIC {mac}: {_cause(exc)}") from exc
        changed.append(mac)
    return changed


def with_uuid(xml: str, uuid: str | None) -> str:
    """The filter ``xml`` with ``<uuid>`` as its first child (libvirt refuses a new UUID for a known name)."""
    if not uuid:
        return xml
    head, sep, rest = xml.partition(">")
    return f"{head}{sep}\n  <uuid>{uuid.strip()}</uuid>{rest}"


def apply_live(dom, wanted: t.Mapping[str, str | None]) -> list[str]:
    """``swap`` on the running guest."""
    return swap(dom, wanted, live=True)


def names(conn) -> list[str]:
    """The names of every filter libvirt holds ([] on a host without libvirt's filter driver)."""
    try:
        return sorted(f.name() for f in conn.listAllNWFilters(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return []
        raise FilterError(f"list network filters: {_cause(exc)}") from exc


def referenced(conn) -> set[str]:
    """The filters the host's domains name on their NICs, in their persistent or live definitions."""
    try:
        return lv.named(conn, "filterref", "filter")
    except lv.LibvirtError as exc:
        raise FilterError(f"the network filters the domains name: {exc}") from exc


def remove(conn, name: str, *, check_mode: bool = False) -> bool:
    """Undefine filter ``name`` if it exists (the domains using it must be gone); True when it did."""
    current = lookup(conn, name)
    if current is None:
        return False
    if not check_mode:
        try:
            current.undefine()
        except libvirt.libvirtError as exc:
            with contextlib.suppress(FilterError):
                if lookup(conn, name) is None:
                    return True
            raise FilterError(f"remove network filter '{name}': {_cause(exc)}") from exc
    return True
