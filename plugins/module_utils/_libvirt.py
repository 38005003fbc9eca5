# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt lifecycle, domain-type detection and IP discovery.

Internal to the rum.pool collection: not a public API. Functions take a libvirt connection or
domain (and a clock/sleep where they wait) so unit tests can pass fakes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
import typing as t
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

try:
    import libvirt
    HAS_LIBVIRT = True
    LIBVIRT_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the host
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = exc


DEFAULT_URI = "qemu:///system"


def connection_argument_spec() -> dict:
    """The connection option every libvirt module of the collection takes (doc fragment
    ``rum.pool.libvirt``)."""
    return {"uri": {"type": "str", "default": DEFAULT_URI}}


class LibvirtError(Exception):
    """A libvirt operation failed; the message names the operation, the object and the cause."""


# libvirt's virDomainState numbers, named the way users read them in `virsh domstate`.
_STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}

# Kernel modules that provide a KVM known to run ordinary guests. Others (e.g. kvm_pvm, a nested
# "pvm" implementation found on some cloud machines) expose /dev/kvm but hang normal guest kernels.
GOOD_KVM_MODULES = ("kvm_intel", "kvm_amd")


def _cause(exc: Exception) -> str:
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


def _ignore(_context: t.Any, _error: t.Any) -> None:
    """An error handler for libvirt that prints nothing (see ``connect``)."""


def connect(uri: str):
    """Open a read-write connection, with a message that tells how to fix the common failures.

    libvirt's default error handler prints every error to stderr, also those this collection
    expects and handles (a domain not found, a guest without an agent, an ARP table lookup): users
    saw lines such as ``libvirt: error : internal error: wrong nlmsg len``. Each failure that
    matters reaches the user as a LibvirtError naming the operation, so the handler is silenced
    (it is per process: this also quiets the controller running the inventory plugin).
    """
    if not HAS_LIBVIRT:
        raise LibvirtError("the libvirt Python binding (libvirt-python) is not installed")
    libvirt.registerErrorHandler(_ignore, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        hint = ""
        if uri.startswith("qemu:///system"):
            hint = " (is libvirtd running? start it with 'libvirtd -d' or 'systemctl start libvirtd')"
        raise LibvirtError(f"cannot connect to libvirt at '{uri}': {_cause(exc)}{hint}") from exc


def find(lookup_by_name: t.Callable[[str], t.Any], name: str, not_found: int, what: str,
         error: type[Exception] = LibvirtError):
    """``lookup_by_name(name)``, or None when libvirt answers ``not_found`` (no such object)."""
    try:
        return lookup_by_name(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == not_found:
            return None
        raise error(f"look up {what} '{name}': {_cause(exc)}") from exc


def lookup(conn, name: str):
    """The domain called ``name``, or None."""
    return find(conn.lookupByName, name, libvirt.VIR_ERR_NO_DOMAIN, "domain")


def state_name(dom) -> str:
    state, _reason = dom.state()
    return _STATE_NAMES.get(state, str(state))


def definitions(conn) -> t.Iterator[tuple[str, list[str]]]:
    """``(name, [persistent XML, and the live XML when it runs])`` of each domain of the connection,
    any owner; a domain undefined meanwhile is left out. Other failures raise LibvirtError naming
    the domain."""
    for dom in conn.listAllDomains(0):
        try:
            xmls = [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
            if dom.isActive():
                xmls.append(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # gone meanwhile
            raise LibvirtError(f"read domain '{dom.name()}': {_cause(exc)}") from exc
        yield dom.name(), xmls


def named(conn, tag: str, attr: str) -> set[str]:
    """Every value of ``attr`` on ``tag`` elements in the host's domain definitions, persistent and
    live (the network filters the NICs name, the tap devices they have); LibvirtError as definitions."""
    found: set[str] = set()
    for _name, xmls in definitions(conn):
        for xml in xmls:
            found.update(el.get(attr) for el in ET.fromstring(xml).iter(tag) if el.get(attr))
    return found


def inactive_xml(dom) -> str:
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def define(conn, xml: str, name: str):
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"define domain '{name}': {_cause(exc)}") from exc


def start(dom) -> None:
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"start domain '{dom.name()}': {_cause(exc)}") from exc


def destroy(dom) -> None:
    """Force the domain off (no-op when it is not running)."""
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as exc:
        if dom.isActive():
            raise LibvirtError(f"force off domain '{dom.name()}': {_cause(exc)}") from exc


def shutdown(dom, timeout: float, *, clock: t.Callable[[], float] = time.monotonic,
             sleep: t.Callable[[float], None] = time.sleep, poll: float = 1.0) -> str:
    """ACPI shutdown, polling until off; force it off after ``timeout`` seconds.

    Returns ``"acpi"`` when the guest powered off by itself, ``"forced"`` otherwise.
    """
    if not dom.isActive():
        return "acpi"
    deadline = clock() + max(0.0, timeout)
    try:
        dom.shutdown()
    except libvirt.libvirtError:
        pass  # the guest may not react to ACPI at all; the deadline handles it
    while clock() < deadline:
        if not dom.isActive():
            return "acpi"
        sleep(poll)
        # A guest still booting can miss the first button press: press again now and then.
        try:
            if dom.isActive():
                dom.shutdown()
        except libvirt.libvirtError:
            pass
    destroy(dom)
    return "forced"


def undefine(dom) -> None:
    """Remove the definition with its NVRAM, managed save and snapshot metadata."""
    flags = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
             | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    flags |= getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0)
    name = dom.name()
    # Drivers that do not know a flag reject the call: retry with less (NVRAM first, then plain).
    attempts = [flags, libvirt.VIR_DOMAIN_UNDEFINE_NVRAM, 0]
    for index, attempt in enumerate(attempts):
        try:
            if attempt:
                dom.undefineFlags(attempt)
            else:
                dom.undefine()
            return
        except libvirt.libvirtError as exc:
            unsupported = exc.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)
            if not unsupported or index == len(attempts) - 1:
                raise LibvirtError(f"undefine domain '{name}': {_cause(exc)}") from exc


def set_autostart(dom, enabled: bool) -> bool:
    """Set autostart; return True when it changed."""
    if bool(dom.autostart()) == bool(enabled):
        return False
    dom.setAutostart(1 if enabled else 0)
    return True


def network_exists(conn, name: str) -> tuple[bool, bool]:
    """(exists, active) for a libvirt network."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return False, False
    return True, bool(net.isActive())


def ensure_network_active(conn, name: str) -> bool:
    """Start a defined but inactive network (rum did this for `default`); True when started."""
    net = conn.networkLookupByName(name)
    if net.isActive():
        return False
    try:
        net.create()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"start libvirt network '{name}': {_cause(exc)}") from exc
    return True


# --- domain type -------------------------------------------------------------------------------

def kvm_usable(modules_dir: str = "/sys/module", dev: str = "/dev/kvm") -> tuple[bool, str]:
    """Whether hardware virtualisation looks usable here, and why (for messages)."""
    if not os.path.exists(dev):
        return False, f"{dev} does not exist"
    if not os.access(dev, os.R_OK | os.W_OK):
        return False, f"{dev} is not accessible"
    try:
        loaded = set(os.listdir(modules_dir))
    except OSError:
        loaded = set()
    good = [m for m in GOOD_KVM_MODULES if m in loaded]
    if good:
        return True, f"{good[0]} is loaded"
    others = sorted(m for m in loaded if m.startswith("kvm_"))
    if others:
        return False, f"only {', '.join(others)} is loaded (known to hang ordinary guests)"
    return False, "no kvm_intel/kvm_amd module is loaded"


def resolve_domain_type(requested: str, caps_xml: str | None = None, *, probe=kvm_usable) -> tuple[str, str]:
    """Turn ``auto``/``kvm``/``qemu`` into the domain type to use, with the reason."""
    if requested in ("kvm", "qemu"):
        return requested, "requested"
    ok, why = probe()
    if ok and (caps_xml is None or "type='kvm'" in caps_xml or 'type="kvm"' in caps_xml):
        return "kvm", why
    return "qemu", f"KVM not used: {why}"


# --- virtiofs ------------------------------------------------------------------------------------

# Where libvirt looks for vhost-user descriptors (the JSON files that name a virtiofsd binary).
VHOST_USER_DIRS = ("/etc/qemu/vhost-user", "/usr/share/qemu/vhost-user", "/usr/local/share/qemu/vhost-user")


def is_local_uri(uri: str) -> bool:
    """True when the URI's libvirt runs on this machine (no host part: qemu:///system, ...)."""
    return not urlsplit(uri).netloc


def find_virtiofsd(dirs: t.Sequence[str] = VHOST_USER_DIRS) -> str | None:
    """The virtiofsd binary libvirt would start for a virtiofs share here, or None.

    libvirt finds it through vhost-user descriptors of type ``fs`` (Debian 12's qemu-system-common
    ships one for /usr/lib/qemu/virtiofsd; later releases have the ``virtiofsd`` package).
    """
    for directory in dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
            try:
                with open(path, encoding="utf-8") as fh:
                    desc = json.load(fh)
            except (OSError, ValueError):
                continue
            binary = desc.get("binary") if isinstance(desc, dict) and desc.get("type") == "fs" else None
            if isinstance(binary, str) and os.access(binary, os.X_OK):
                return binary
    return None


# --- IP discovery --------------------------------------------------------------------------------

def _norm_mac(mac: str | None) -> str:
    return (mac or "").strip().lower()


def select_ip(observations: t.Sequence[tuple[str, dict]], macs: t.Sequence[str],
              family: str = "ipv4") -> tuple[str | None, str | None]:
    """Pick the guest's address from libvirt interfaceAddresses() results.

    ``observations`` is an ordered list of (source, result) pairs, most trusted source first, each
    result shaped like libvirt's: ``{ifname: {'hwaddr': mac, 'addrs': [{'addr', 'prefix', 'type'}]}}``.
    Only interfaces whose MAC is one of ``macs`` count (so a stale lease of another VM never
    matches); the first MAC's address wins over later NICs. Loopback and link-local are skipped.
    Returns (address, source) or (None, None).
    """
    want = [_norm_mac(m) for m in macs if m]
    addr_type = 0 if family == "ipv4" else 1  # VIR_IP_ADDR_TYPE_IPV4 / _IPV6
    for mac in want:
        for source, result in observations:
            for _ifname, iface in sorted((result or {}).items()):
                if _norm_mac(iface.get("hwaddr")) != mac:
                    continue
                for entry in iface.get("addrs") or []:
                    addr = entry.get("addr") or ""
                    if entry.get("type", addr_type) != addr_type:
                        continue
                    if addr.startswith("127.") or addr.startswith("169.254.") or addr.lower().startswith("fe80"):
                        continue
                    return addr, source
    return None, None


def newest_leases(leases: t.Iterable[dict], mac: str) -> dict:
    """One interfaceAddresses()-shaped entry for ``mac`` from libvirt DHCPLeases() records.

    A guest that comes back under the same name keeps its MAC (``stable_mac``) but usually sends
    a new DHCP client id (systemd-networkd derives it from the fresh machine-id), so dnsmasq hands
    it a new address while the previous incarnation's lease stays listed until it expires. The
    newest lease is the live one; it comes first here, older ones after it.
    """
    want = _norm_mac(mac)
    mine = [lease for lease in leases if _norm_mac(lease.get("mac")) == want and lease.get("ipaddr")]
    mine.sort(key=lambda lease: int(lease.get("expirytime") or 0), reverse=True)
    return {"hwaddr": want, "addrs": [{"addr": lease["ipaddr"], "prefix": lease.get("prefix", 0),
                                       "type": lease.get("type", 0)} for lease in mine]}


def _network_leases(dom, networks: t.Sequence[tuple[str, str]]) -> dict:
    """The DHCP leases of the domain's NICs on libvirt networks, newest first, keyed by MAC."""
    conn = dom.connect()
    by_network: dict[str, list] = {}
    result = {}
    for mac, name in networks:
        if name not in by_network:
            by_network[name] = conn.networkLookupByName(name).DHCPLeases() or []
        result[mac] = newest_leases(by_network[name], mac)
    return result


def _run_quiet(argv: t.Sequence[str]) -> tuple[int, str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stderr or proc.stdout).strip()


def release_leases(dom, networks: t.Sequence[tuple[str, str]], *,
                   run: t.Callable[[t.Sequence[str]], tuple[int, str]] = _run_quiet,
                   which: t.Callable[[str], str | None] = shutil.which) -> tuple[list[str], list[str]]:
    """Hand the DHCP leases of a VM that is going away back to libvirt's dnsmasq.

    A recreated slot keeps its MAC but gets a new DHCP client id, so without this every
    incarnation holds an address of the network's range until the lease expires (an hour on
    libvirt's default network), and a busy pool runs the range dry. Uses ``dhcp_release``
    (Debian/Ubuntu ``dnsmasq-utils``, Red Hat ``dnsmasq-utils``) with each lease's client id.
    Best effort: returns (released addresses, problems), never raises.
    """
    if not networks:
        return [], []
    tool = which("dhcp_release")
    if not tool:
        return [], ["dhcp_release not found (install dnsmasq-utils): the VM's DHCP leases stay "
                    "until they expire"]
    released, problems = [], []
    conn = dom.connect()
    for mac, name in networks:
        try:
            net = conn.networkLookupByName(name)
            bridge = net.bridgeName()
            leases = net.DHCPLeases(mac) or []
        except libvirt.libvirtError as exc:
            problems.append(f"network {name}: {_cause(exc)}")
            continue
        for lease in leases:
            if lease.get("type", 0) != 0 or not lease.get("ipaddr"):
                continue  # dhcp_release speaks DHCPv4 only
            argv = [tool, bridge, lease["ipaddr"], lease.get("mac") or mac]
            if lease.get("clientid"):
                argv.append(lease["clientid"])
            rc, out = run(argv)
            if rc == 0:
                released.append(lease["ipaddr"])
            else:
                problems.append(f"dhcp_release {lease['ipaddr']} on {bridge} exited {rc}: {out}")
    return released, problems


def observe_addresses(dom, sources: t.Sequence[str] = ("lease", "agent", "arp"),
                      networks: t.Sequence[tuple[str, str]] | None = None) -> list[tuple[str, dict]]:
    """Ask libvirt for the domain's addresses from each source; sources that fail are skipped.

    With ``networks`` ((MAC, network) pairs), leases are read from those networks' lease tables
    so the newest lease of a MAC wins (see newest_leases); libvirt's own lease source, which
    lists a MAC's leases in table order, is the fallback.
    """
    flag = {
        "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        "arp": getattr(libvirt, "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP", None),
    }
    found = []
    for source in sources:
        if source == "lease" and networks:
            try:
                found.append((source, _network_leases(dom, networks)))
                continue
            except libvirt.libvirtError:
                pass  # network gone or lease table unreadable: ask the domain instead
        if flag.get(source) is None:
            continue
        try:
            found.append((source, dom.interfaceAddresses(flag[source], 0) or {}))
        except libvirt.libvirtError:
            continue  # no agent in the guest, no lease yet, ...
    return found


def discover_ip(dom, macs: t.Sequence[str], networks: t.Sequence[tuple[str, str]] | None = None
                ) -> tuple[str | None, str | None]:
    if not dom.isActive():
        return None, None
    return select_ip(observe_addresses(dom, networks=networks), macs)
