# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Default-deny guest networking with one nftables ruleset per host (isolation engine ``nftables``).

Internal to the rum.pool collection: not a public API. The same policy as the nwfilter engine
(_nwfilter.py: what a guest may reach, what may reach it), held by two tables the whole host
shares instead of a libvirt filter per VM. libvirt instantiates a filter with dozens of firewall
commands at every start and stop of a guest; here a guest's start adds two set elements in one
nftables transaction (milliseconds), which is what a pool recycling a slot per job wants.

How a guest is held:

* its NIC's tap device has a name of ours, ``rum`` and 12 hex digits (``<target dev=.../>``), a
  hash of the VM's name, the NIC's MAC and the policy: so a tap name always means the same MAC and
  policy, and adding an element that is already there is a no-op;
* ``table bridge rum_isolation``, before anything else on the bridge: a frame from a ``rum*`` tap
  must carry that tap's own MAC (and an ARP packet that MAC as its sender), must be IPv4 or ARP,
  and is marked with its policy's number; no IPv4 frame is bridged to a ``rum*`` tap from another
  port (other guests), and the host sends it only packets of connections it is part of, SSH and
  DHCP answers: an IPv4 packet the host routes or sends that conntrack saw as new is dropped
  (the inet table marks those, the bridge family has no conntrack);
* ``table inet rum_isolation``: a packet with a policy's mark, forwarded or to the host, jumps to
  the policy's chain, the rules of _nwfilter.py in nftables' words (a reject there is final; an
  accept still meets the host's other rules, libvirt's own among them).

Fail closed: the persistent definition has the NIC's link down (``<link state='down'/>``) and
``start`` raises it only once the ruleset holds the guest, so a guest started by anything else
(``virsh start``, libvirt's autostart after a host reboot, when the tables are gone) has no
network. Only libvirt networks (the host routes the guests' traffic) are supported: a NIC on a
host bridge needs the nwfilter engine.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import typing as t
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nwfilter
from ansible_collections.rum.pool.plugins.module_utils._libvirt import _cause

try:
    import libvirt
except ImportError:  # pragma: no cover - the callers check HAS_LIBVIRT first
    libvirt = None

TABLE = "rum_isolation"
TAP_PREFIX = "rum"
META_KEY = "isolation"  # the domain's rum metadata: the policy chain the guest needs (JSON)
POLICY_BIT = 0x40000000  # every policy's mark has it; a packet from a rum tap without it is dropped
NEW_LOCAL = 0x80000000  # a new connection the host itself opens toward a guest's network
NEW_ROUTED = 0x20000000  # a new connection the host routes toward a guest's network
POLICY_KEY = 0xFFFFFFFF & ~(NEW_LOCAL | NEW_ROUTED)  # a mark without those: the policy's number
NFT = "nft"

Runner = t.Callable[[t.List[str], str], t.Tuple[int, str, str]]


class NftError(RuntimeError):
    """nft refused the ruleset, or a guest's definition cannot be held; the message says which."""


@dataclass(frozen=True)
class Hold:
    """One NIC of a guest under the ruleset: its tap, MAC, bridge and policy."""

    tap: str
    mac: str
    bridge: str
    policy: str  # the policy's id (chain pol_<id>)
    rules: tuple[str, ...]


def engine(option: t.Any) -> str:
    """The engine an enabled isolation option names (``nwfilter`` unless it says ``nftables``)."""
    value = option.get("engine") if isinstance(option, t.Mapping) else None
    return value or "nwfilter"


def uses_nftables(option: t.Any) -> bool:
    return nwfilter.enabled(option) and engine(option) == "nftables"


# --------------------------------------------------------------------------------------------
# The policy in nftables' words


def _nets(networks: t.Iterable[nwfilter.Network]) -> str:
    items = [str(net.network_address) if net.prefixlen == 32 else str(net) for net in networks]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _ports(ports: t.Sequence[nwfilter.PortRange]) -> str:
    items = [str(low) if low == high else f"{low}-{high}" for low, high in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _target(target: nwfilter.Target, verdict: str) -> str:
    words = [f"ip daddr {_nets([target.network])}"]
    if target.protocol == "any":
        if target.ports:
            words.append(f"meta l4proto {{ tcp, udp }} th dport {_ports(target.ports)}")
    else:
        words.append(f"{target.protocol} dport {_ports(target.ports)}" if target.ports
                     else f"meta l4proto {target.protocol}")
    return " ".join(words + [verdict])


def chain_rules(pol: nwfilter.Policy, around: nwfilter.Surroundings) -> list[str]:
    """The policy chain of a guest: what it may send (forwarded, or to the host), first match wins."""
    rules = ["ct state established,related accept", "udp sport 68 udp dport 67 accept"]
    if around.services:
        rules.append(f"ip daddr {_nets(ipaddress_nets(around.services))} meta l4proto {{ tcp, udp }} th dport 53 accept")
    rules += [_target(target, "reject") for target in pol.deny]
    rules += [_target(target, "accept") for target in pol.allow]
    rules.append(f"ip daddr {_nets(nwfilter.blocked_networks(around))} reject")
    if pol.public_ports:
        rules.append(f"tcp dport {_ports(pol.public_ports)} accept")
    rules.append("reject")
    return rules


def ipaddress_nets(addresses: t.Iterable) -> list[nwfilter.Network]:
    return [nwfilter.Network(str(addr)) for addr in addresses]


def policy_id(rules: t.Sequence[str]) -> str:
    """Seven hex digits naming a policy chain: the same rules, the same id (and mark)."""
    return hashlib.sha256("\n".join(rules).encode()).hexdigest()[:7]


def mark(pid: str) -> int:
    return POLICY_BIT | int(pid, 16)


def tap_name(vm_name: str, mac: str, pid: str) -> str:
    """The tap device of a guest's NIC under policy ``pid`` (15 characters, the kernel's limit)."""
    digest = hashlib.sha256(f"{vm_name}\n{mac.lower()}\n{pid}".encode()).hexdigest()
    return TAP_PREFIX + digest[:12]


def metadata(pid: str, rules: t.Sequence[str], bridges: t.Mapping[str, str]) -> str:
    """What the domain's metadata keeps for ``start`` and removal: the policy and each NIC's bridge."""
    return json.dumps({"engine": "nftables", "policy": pid, "rules": list(rules), "bridges": dict(bridges)},
                      sort_keys=True, separators=(",", ":"))


def holds(xml: str, meta: t.Mapping[str, t.Any] | None) -> list[Hold]:
    """The NICs of a domain definition the ruleset must hold: those with a tap name of ours."""
    raw = (meta or {}).get(META_KEY)
    taps = []
    for nic in ET.fromstring(xml).findall("devices/interface"):
        target = nic.find("target")
        dev = target.get("dev") if target is not None else None
        if dev and dev.startswith(TAP_PREFIX) and len(dev) == len(TAP_PREFIX) + 12:
            mac = nic.find("mac")
            taps.append((dev, (mac.get("address") if mac is not None else "").lower()))
    if not taps:
        return []
    try:
        info = json.loads(raw) if raw else None
        pid, rules, bridges = info["policy"], tuple(info["rules"]), info["bridges"]
    except (ValueError, TypeError, KeyError):
        raise NftError(f"the domain's NICs use tap names of the nftables engine ({', '.join(dev for dev, _mac in taps)}) "
                       f"but its metadata has no readable {META_KEY!r} entry: define it again with rum_vm") from None
    if policy_id(rules) != pid:
        raise NftError(f"the domain's {META_KEY!r} metadata does not match its policy id {pid}")
    return [Hold(dev, mac, bridges.get(mac, ""), pid, rules) for dev, mac in taps]


# --------------------------------------------------------------------------------------------
# The ruleset


def base_script() -> list[str]:
    """The two tables with their sets and base chains; idempotent (a chain's rules are flushed and
    written again in the same transaction, sets keep their elements)."""
    br, inet = f"bridge {TABLE}", f"inet {TABLE}"
    tap = f'"{TAP_PREFIX}*"'
    return [
        f"add table {br}",
        f"add set {br} bound {{ type ifname . ether_addr; }}",
        f"add map {br} polmark {{ type ifname : mark; }}",
        f"add chain {br} from_guest {{ type filter hook prerouting priority -300; policy accept; }}",
        f"add chain {br} across {{ type filter hook forward priority -300; policy accept; }}",
        f"add chain {br} to_guest {{ type filter hook output priority -300; policy accept; }}",
        f"flush chain {br} from_guest",
        f"add rule {br} from_guest iifname {tap} iifname . ether saddr != @bound drop",
        f"add rule {br} from_guest iifname {tap} ether type arp iifname . arp saddr ether != @bound drop",
        f"add rule {br} from_guest iifname {tap} ether type != {{ ip, arp }} drop",
        f"add rule {br} from_guest iifname {tap} meta mark set iifname map @polmark",
        f"add rule {br} from_guest iifname {tap} meta mark & {POLICY_BIT:#x} == 0 drop",
        f"flush chain {br} across",
        f"add rule {br} across oifname {tap} ether type != arp drop",
        f"flush chain {br} to_guest",
        f"add rule {br} to_guest oifname {tap} ether type arp accept",
        f"add rule {br} to_guest oifname {tap} ether type != ip drop",
        f"add rule {br} to_guest oifname {tap} meta mark & {NEW_ROUTED:#x} != 0 drop",
        f"add rule {br} to_guest oifname {tap} meta mark & {NEW_LOCAL:#x} == 0 accept",
        f"add rule {br} to_guest oifname {tap} tcp dport 22 accept",
        f"add rule {br} to_guest oifname {tap} udp sport 67 udp dport 68 accept",
        f"add rule {br} to_guest oifname {tap} drop",
        f"add table {inet}",
        f"add set {inet} bridges {{ type ifname; }}",
        f"add map {inet} policies {{ type mark : verdict; }}",
        f"add chain {inet} routed {{ type filter hook forward priority -10; policy accept; }}",
        f"add chain {inet} to_host {{ type filter hook input priority -10; policy accept; }}",
        f"add chain {inet} host_out {{ type filter hook output priority -10; policy accept; }}",
        f"flush chain {inet} routed",
        # marked first: a guest's new connection to another guest that its policy allows is still new
        # there (and dropped by to_guest, as anything new toward a guest but SSH from the host)
        f"add rule {inet} routed oifname @bridges ct state new meta mark set meta mark | {NEW_ROUTED:#x}",
        f"add rule {inet} routed meta mark & {POLICY_KEY:#x} vmap @policies",
        f"flush chain {inet} to_host",
        f"add rule {inet} to_host meta mark & {POLICY_KEY:#x} vmap @policies",
        f"flush chain {inet} host_out",
        f"add rule {inet} host_out oifname @bridges ct state new meta mark set meta mark | {NEW_LOCAL:#x}",
    ]


def _policy_script(pid: str, rules: t.Sequence[str]) -> list[str]:
    inet, chain = f"inet {TABLE}", f"pol_{pid}"
    return ([f"add chain {inet} {chain}", f"flush chain {inet} {chain}"]
            + [f"add rule {inet} {chain} {rule}" for rule in rules]
            + [f"add element {inet} policies {{ {mark(pid):#x} : jump {chain} }}"])


def _elements(nics: t.Sequence[Hold]) -> list[str]:
    br, inet = f"bridge {TABLE}", f"inet {TABLE}"
    out = [f'add element {br} bound {{ "{n.tap}" . {n.mac} }}' for n in nics]
    out += [f'add element {br} polmark {{ "{n.tap}" : {mark(n.policy):#x} }}' for n in nics]
    out += [f'add element {inet} bridges {{ "{bridge}" }}' for bridge in sorted({n.bridge for n in nics if n.bridge})]
    return out


def attach_script(nics: t.Sequence[Hold]) -> str:
    """One transaction: the tables, each policy the NICs use, and the NICs' elements."""
    lines = base_script()
    for pid, rules in sorted({(n.policy, n.rules) for n in nics}):
        lines += _policy_script(pid, rules)
    return "\n".join(lines + _elements(nics)) + "\n"


def detach_script(nics: t.Sequence[Hold]) -> str:
    """One transaction that leaves the NICs' elements out, whether or not they were there (each is
    added, which is a no-op for an element that is, then deleted). Policies and bridges stay."""
    br = f"bridge {TABLE}"
    lines = base_script()
    lines += [line for line in _elements(nics) if f" {br} " in line]
    lines += [f'delete element {br} bound {{ "{n.tap}" . {n.mac} }}' for n in nics]
    lines += [f'delete element {br} polmark {{ "{n.tap}" }}' for n in nics]
    return "\n".join(lines) + "\n"


def _run(argv: list[str], stdin: str) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return 127, "", (f"{argv[0]} not found: the nftables isolation engine needs the nft command "
                         "(Debian/Ubuntu: apt-get install nftables)")
    return proc.returncode, proc.stdout, proc.stderr


def _runner(run: Runner | None) -> Runner:
    """``run``, or this module's ``_run`` as it is when called (tests replace it)."""
    return run or _run


def apply(script: str, what: str, run: Runner | None = None) -> None:
    rc, out, err = _runner(run)([NFT, "-f", "-"], script)
    if rc != 0:
        raise NftError(f"nft refused the ruleset to {what}: {(err or out).strip() or f'exit status {rc}'}")


def available(run: Runner | None = None) -> str | None:
    """Why the nftables engine cannot work on this host, or None."""
    rc, out, err = _runner(run)([NFT, "--version"], "")
    if rc != 0:
        return (err or out).strip() or f"'nft --version' exited with status {rc}"
    return None


# --------------------------------------------------------------------------------------------
# libvirt


def start(dom, start_domain: t.Callable[[t.Any], None], read_meta: t.Callable[[str], dict],
          run: Runner | None = None) -> list[str]:
    """Start ``dom``: the ruleset holds its NICs first, their links go up after; the taps held.

    A domain without NICs of ours is simply started. When a link cannot be raised the guest is
    forced off again (it would run without network, a slot nobody uses).
    """
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    nics = holds(xml, read_meta(xml))
    if nics:
        apply(attach_script(nics), f"hold {dom.name()}", run)
    start_domain(dom)
    if nics:
        try:
            link_up(dom, {n.mac for n in nics})
        except NftError:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
            raise
    return [n.tap for n in nics]


def hold_running(dom, read_meta: t.Callable[[str], dict], run: Runner | None = None) -> list[str]:
    """A running guest of ours whose link is down (started by something else: ``virsh start``, libvirt's
    autostart after a reboot emptied the tables): the ruleset holds its NICs, then their links go
    up. The MACs raised ([] when every link was up already, or the guest is not ours)."""
    if not dom.isActive():
        return []
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    down = _links_down(dom)
    nics = [n for n in holds(xml, read_meta(xml)) if n.mac in down]
    if not nics:
        return []
    apply(attach_script(nics), f"hold {dom.name()}", run)
    return link_up(dom, {n.mac for n in nics}, down)


def _links_down(dom) -> dict[str, ET.Element]:
    """The running guest's NICs whose link is down, by MAC (each its live ``<interface>``)."""
    out = {}
    for nic in ET.fromstring(dom.XMLDesc(0)).findall("devices/interface"):
        mac_el, link = nic.find("mac"), nic.find("link")
        if mac_el is not None and link is not None and link.get("state") == "down":
            out[(mac_el.get("address") or "").lower()] = nic
    return out


def link_up(dom, macs: t.Collection[str], down: dict[str, ET.Element] | None = None) -> list[str]:
    """Raise the link of each NIC of the running guest with one of ``macs`` that is down (``down``:
    those NICs as ``_links_down`` read them, when the caller has)."""
    raised = []
    for mac, nic in (_links_down(dom) if down is None else down).items():
        if mac not in macs:
            continue
        nic.find("link").set("state", "up")
        try:
            dom.updateDeviceFlags(ET.tostring(nic, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise NftError(f"raise the link of NIC {mac} of {dom.name()}: {_cause(exc)}") from exc
        raised.append(mac)
    return raised


def release(xml: str, meta: t.Mapping[str, t.Any] | None, name: str, run: Runner | None = None) -> list[str]:
    """Leave a removed (or stopped) guest's NICs out of the ruleset; the taps released."""
    nics = holds(xml, meta)
    if nics:
        apply(detach_script(nics), f"release {name}", run)
    return [n.tap for n in nics]


def _listed(run: Runner | None, kind: str, name: str) -> list:
    """The elements of a set or map of the bridge table as nft's JSON gives them ([] without the table)."""
    rc, out, err = _runner(run)([NFT, "-j", "list", kind, "bridge", TABLE, name], "")
    if rc != 0:
        if rc == 127 or "No such file or directory" in err:  # no nft (nothing of ours), or no table
            return []
        raise NftError(f"nft cannot list {kind} {name} of table bridge {TABLE}: {(err or out).strip() or rc}")
    try:
        items = json.loads(out).get("nftables", [])
    except (ValueError, AttributeError):
        raise NftError(f"'nft -j list {kind} bridge {TABLE} {name}' printed no JSON") from None
    for item in items:
        body = item.get(kind) if isinstance(item, dict) else None
        if body:
            return body.get("elem") or []
    return []


def _strays(conn, run: Runner | None) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """The stray taps, with the ruleset's taps' MACs (set bound) and marks (map polmark). Read the
    elements first, then the domains: a VM is defined before its taps are added, so a tap being
    made now is never taken for a stray."""
    bound = {elem["concat"][0]: elem["concat"][1] for elem in _listed(run, "set", "bound")
             if isinstance(elem, dict) and len(elem.get("concat") or ()) == 2}
    marks = {elem[0]: elem[1] for elem in _listed(run, "map", "polmark") if isinstance(elem, list) and len(elem) == 2}
    if not bound and not marks:
        return [], bound, marks
    try:
        used = lv.named(conn, "target", "dev")
    except lv.LibvirtError as exc:
        raise NftError(f"the taps the domains name: {exc}") from exc
    return sorted((set(bound) | set(marks)) - used), bound, marks


def stray(conn, run: Runner | None = None) -> list[str]:
    """The taps the ruleset holds that no domain of the host names any more (a VM deleted behind
    rum.pool's back, or whose release failed)."""
    return _strays(conn, run)[0]


def prune(conn, run: Runner | None = None, *, check_mode: bool = False) -> list[str]:
    """Leave the stray taps' elements out of the ruleset; the taps pruned."""
    taps, bound, marks = _strays(conn, run)
    if not taps or check_mode:
        return taps
    br = f"bridge {TABLE}"
    lines = []
    for tap in taps:
        if tap in bound:
            lines += [f'add element {br} bound {{ "{tap}" . {bound[tap]} }}',
                      f'delete element {br} bound {{ "{tap}" . {bound[tap]} }}']
        if tap in marks:
            lines += [f'add element {br} polmark {{ "{tap}" : {int(marks[tap]):#x} }}',
                      f'delete element {br} polmark {{ "{tap}" }}']
    if lines:
        apply("\n".join(base_script() + lines) + "\n", f"prune {len(taps)} tap(s) no VM has", run)
    return taps
