# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt domain XML for rum VMs: build it from a spec, read it back, compare canonical forms.

Internal to the rum.pool collection: not a public API. No Ansible and no libvirt imports here;
the callers pass XML strings in and get XML strings, dicts and line lists out.

Why canonical forms: libvirt rewrites what it is given (adds controllers, PCI addresses, aliases,
expands ``q35`` to ``pc-q35-7.2``, ...). Comparing our generated XML with libvirt's inactive XML
byte for byte would report a change on every run, so both sides are reduced to the settings rum
owns and those are compared.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import typing as t
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ansible_collections.rum.pool.plugins.module_utils import _names as names

RUM_NS = "https://rum-pool.dev/xmlns/vm/1"
RUM_PREFIX = "rum"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

# What each field of a spec may hold, with the hint its error message gives.
UUID = names.rule(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                  "expected a lower-case UUID like 8045fc5a-777e-4476-871f-98d988a7f466")
TAG = names.rule(r"[A-Za-z0-9][A-Za-z0-9._-]{0,35}",
                 "1-36 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit")
NETWORK = names.rule(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", "a libvirt network name (letters, digits, . _ -)")
BRIDGE = names.rule(r"[A-Za-z0-9_.:-]{1,15}", "a host bridge name (up to 15 characters: letters, digits, . _ : -)")
MODEL = names.rule(r"[a-z0-9][a-z0-9_-]{0,31}", "a libvirt NIC model such as virtio or e1000e")
ARCH = names.rule(r"[a-z0-9_]{1,32}", "lower-case letters, digits and _ (e.g. x86_64)")
MACHINE = names.rule(r"[a-z0-9][a-z0-9._-]{0,63}", "a machine type such as q35, pc or pc-q35-7.2")
META_KEY = names.rule(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", "use letters, digits, _ . - starting with a letter or _")
NWFILTER = names.rule(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", "a libvirt network filter name (letters, digits, . _ -)")
# XML 1.0 cannot carry most control characters; tab/newline are only fine in free text.
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

MIN_MEMORY_MIB = 256
MAX_VCPUS = 1024

BUSES = ("virtio", "scsi", "sata", "ide")
FORMATS = ("qcow2", "raw")
DEVICES = ("disk", "cdrom")
IF_KINDS = ("network", "bridge", "user")
MOUNT_DRIVERS = ("virtiofs", "9p")
DOMAIN_TYPES = ("kvm", "qemu")
FIRMWARES = ("bios", "uefi")
PROTOCOLS = ("tcp", "udp")

# Disk target names per bus: the guest-visible prefix libvirt expects.
TARGET_RE = {
    "virtio": re.compile(r"^vd[a-z]{1,2}$"),
    "scsi": re.compile(r"^sd[a-z]{1,2}$"),
    "sata": re.compile(r"^sd[a-z]{1,2}$"),
    "ide": re.compile(r"^hd[a-d]$"),
}
TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}

# User-mode NICs are plain qemu devices libvirt does not know about, so they get fixed slots on
# the root bus that libvirt never hands out by itself: it fills the root bus from the low slots
# up (q35: 0x01 root ports/video; pc: 0x02 on) and reserves 0x1b (ich9 sound), 0x1d (ich9 USB),
# 0x1e (dmi-to-pci bridge) and 0x1f (LPC/SATA/SMBus) on q35. Proven by
# tests/integration/test_domain_libvirt.py, which starts such a domain on both machine types.
USER_NIC_SLOTS = (0x1C, 0x1A, 0x19, 0x18)
ROOT_BUS = {"q35": "pcie.0", "pc": "pci.0"}
USER_MODELS = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
}
_DEVICE_MODELS = {v: k for k, v in USER_MODELS.items()}
USER_NETDEV_PREFIX = "rumnet"
USER_DEVICE_PREFIX = "rumnic"

# canonical() keys whose change applies without restarting the guest.
LIVE_KEYS = frozenset(("metadata", "description"))
# A NIC's network filter is swapped on a running guest (see filter_changed).
LIVE_NIC_ATTRS = frozenset(("filter",))
# The tap device names rum.pool gives NICs (the nftables isolation engine, _nftables.tap_name).
TAP_NAME = re.compile(r"rum[0-9a-f]{12}")


class DomainError(Exception):
    """A domain spec or a domain XML is not usable; the message names the field and the problem."""


@dataclass
class Disk:
    """A file-backed disk or cdrom."""

    path: str
    target: str
    bus: str = "virtio"
    fmt: str = "qcow2"
    device: str = "disk"
    readonly: bool = False


@dataclass
class PortForward:
    """A host port forwarded into a user-mode NIC."""

    host: int
    guest: int
    bind: str = "127.0.0.1"
    proto: str = "tcp"


@dataclass
class Interface:
    """A NIC: on a libvirt network, on a host bridge, or qemu user-mode networking."""

    kind: str
    source: str | None
    mac: str
    model: str = "virtio"
    ports: list[PortForward] = field(default_factory=list)
    filter: str | None = None  # a libvirt network filter (nwfilter) on this NIC
    target: str | None = None  # the tap device's name (the nftables isolation engine names it)
    link: str | None = None  # "down": the NIC starts without link (the nftables engine raises it)


@dataclass
class Mount:
    """A host directory shared with the guest under ``tag``."""

    source: str
    tag: str
    readonly: bool = False
    driver: str = "virtiofs"


@dataclass
class DomainSpec:
    """Everything rum sets in a domain definition."""

    name: str
    memory_mib: int
    vcpus: int
    disks: list[Disk]
    interfaces: list[Interface]
    serial_log: str | None
    domain_type: str = "qemu"
    arch: str = "x86_64"
    machine: str = "q35"
    firmware: str = "bios"
    nvram_path: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    uuid: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    metadata: dict[str, t.Any] = field(default_factory=dict)
    description: str | None = None


# --------------------------------------------------------------------------------------------
# Small helpers


def machine_family(machine: str | None) -> str | None:
    """``q35`` for any q35 machine (``pc-q35-7.2``), ``pc`` for i440fx ones, else the name itself."""
    if machine is None:
        return None
    if machine == "q35" or machine.startswith("pc-q35-"):
        return "q35"
    if machine == "pc" or machine.startswith("pc-i440fx-") or re.match(r"^pc-\d", machine):
        return "pc"
    return machine


def stable_mac(seed: str, index: int) -> str:
    """A MAC in qemu's 52:54:00 range derived from ``seed`` (the VM name) and the NIC index."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise DomainError(f"stable_mac: index must be an integer >= 0, got {index!r}")
    digest = hashlib.sha256(f"rum-mac\0{seed}\0{index}".encode("utf-8")).digest()
    return "52:54:00:%02x:%02x:%02x" % (digest[0], digest[1], digest[2])


def target_name(bus: str, index: int) -> str:
    """The ``index``-th target name on ``bus``: ``target_name('virtio', 1) == 'vdb'``."""
    if bus not in TARGET_PREFIX:
        raise DomainError(f"target_name: unknown bus {bus!r}; expected one of {', '.join(BUSES)}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0 or index >= 26 * 27:
        raise DomainError(f"target_name: index {index!r} out of range")
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            break
    return TARGET_PREFIX[bus] + letters


def _is_int(value: t.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ipv4(value: t.Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Collects the spec's name into every message so errors say which VM they are about."""

    def __init__(self, spec: DomainSpec) -> None:
        self.spec = spec
        self.where = f"domain {spec.name!r}"

    def fail(self, fieldname: str, problem: str) -> t.NoReturn:
        raise DomainError(f"{self.where}: {fieldname}: {problem}")

    def text(self, fieldname: str, value: t.Any, *, free: bool = False, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(fieldname, f"must be a string, got {type(value).__name__}")
        if not value and not allow_empty:
            self.fail(fieldname, "must not be empty")
        pattern = _TEXT_CTRL_RE if free else _CTRL_RE
        if pattern.search(value):
            self.fail(fieldname, "must not contain control characters")
        return value

    def path(self, fieldname: str, value: t.Any) -> str:
        self.text(fieldname, value)
        if not value.startswith("/"):
            self.fail(fieldname, f"{value!r} must be an absolute path")
        if ".." in value.split("/"):
            self.fail(fieldname, f"{value!r} must not contain '..' components")
        return value

    def opt_path(self, fieldname: str, value: t.Any) -> None:
        if value is not None:
            self.path(fieldname, value)

    def choice(self, fieldname: str, value: t.Any, choices: t.Sequence[str]) -> str:
        if value not in choices:
            self.fail(fieldname, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def pattern(self, fieldname: str, value: t.Any, rule: names.Rule) -> str:
        self.text(fieldname, value)
        if not rule.ok(value):
            self.fail(fieldname, f"{value!r} is invalid: {rule.hint}")
        return value

    def flag(self, fieldname: str, value: t.Any) -> None:
        if not isinstance(value, bool):
            self.fail(fieldname, f"must be true or false, got {value!r}")

    def items(self, fieldname: str, value: t.Any, kind: type) -> t.Iterator[tuple[str, t.Any]]:
        """(``fieldname[i]``, item) for each item of a list that must hold ``kind`` objects."""
        if not isinstance(value, list):
            self.fail(fieldname, "must be a list")
        for i, item in enumerate(value):
            where = f"{fieldname}[{i}]"
            if not isinstance(item, kind):
                article = "an" if kind.__name__[0] in "AEIOU" else "a"
                self.fail(where, f"must be {article} {kind.__name__}, got {type(item).__name__}")
            yield where, item


def validate(spec: DomainSpec) -> None:
    """Raise DomainError naming the first invalid field of ``spec``."""
    if not names.VM_NAME.ok(spec.name):
        raise DomainError(f"domain name {spec.name!r} is invalid: {names.VM_NAME.hint}")
    c = _Checker(spec)
    if not _is_int(spec.memory_mib) or spec.memory_mib < MIN_MEMORY_MIB:
        c.fail("memory_mib", f"must be an integer >= {MIN_MEMORY_MIB}, got {spec.memory_mib!r}")
    if not _is_int(spec.vcpus) or not 1 <= spec.vcpus <= MAX_VCPUS:
        c.fail("vcpus", f"must be an integer from 1 to {MAX_VCPUS}, got {spec.vcpus!r}")
    c.choice("domain_type", spec.domain_type, DOMAIN_TYPES)
    c.pattern("arch", spec.arch, ARCH)
    c.pattern("machine", spec.machine, MACHINE)
    family = machine_family(spec.machine)
    c.choice("firmware", spec.firmware, FIRMWARES)
    if spec.firmware == "uefi":
        if spec.nvram_path is None:
            c.fail("nvram_path", "firmware 'uefi' needs a per-VM NVRAM file path")
        c.path("nvram_path", spec.nvram_path)
    elif spec.nvram_path is not None:
        c.fail("nvram_path", "is only used with firmware 'uefi'")
    if spec.uuid is not None:
        c.pattern("uuid", spec.uuid, UUID)
    c.opt_path("serial_log", spec.serial_log)
    c.opt_path("kernel", spec.kernel)
    c.opt_path("initrd", spec.initrd)
    if spec.cmdline is not None:
        c.text("cmdline", spec.cmdline, allow_empty=True)
    if spec.kernel is None and (spec.initrd is not None or spec.cmdline is not None):
        c.fail("kernel", "initrd and cmdline need a kernel for direct kernel boot")
    if spec.description is not None:
        c.text("description", spec.description, free=True, allow_empty=True)

    targets: dict[str, str] = {}
    for f, disk in c.items("disks", spec.disks, Disk):
        if disk.path is not None or disk.device != "cdrom":  # a cdrom may be empty (its seed ejected)
            c.path(f"{f}.path", disk.path)
        c.choice(f"{f}.bus", disk.bus, BUSES)
        c.choice(f"{f}.fmt", disk.fmt, FORMATS)
        c.choice(f"{f}.device", disk.device, DEVICES)
        c.flag(f"{f}.readonly", disk.readonly)
        c.text(f"{f}.target", disk.target)
        if not TARGET_RE[disk.bus].match(disk.target):
            c.fail(f"{f}.target", f"{disk.target!r} does not suit bus {disk.bus!r}: expected "
                                  f"{TARGET_PREFIX[disk.bus]}a, {TARGET_PREFIX[disk.bus]}b, ...")
        if disk.target in targets:
            c.fail(f"{f}.target", f"{disk.target!r} is already used by {targets[disk.target]}")
        targets[disk.target] = f
        if disk.bus == "ide" and family != "pc":
            c.fail(f"{f}.bus", f"'ide' needs machine 'pc' (machine {spec.machine!r} has no IDE "
                               "controller); use 'scsi' for a cdrom on q35")

    macs: dict[str, str] = {}
    forwards: dict[tuple, str] = {}
    user_count = 0
    for f, nic in c.items("interfaces", spec.interfaces, Interface):
        c.choice(f"{f}.kind", nic.kind, IF_KINDS)
        if nic.kind == "network":
            c.pattern(f"{f}.source", nic.source, NETWORK)
        elif nic.kind == "bridge":
            c.pattern(f"{f}.source", nic.source, BRIDGE)
        elif nic.source is not None:
            c.fail(f"{f}.source", "must be empty for a user-mode interface")
        if not isinstance(nic.mac, str) or not names.MAC.ok(nic.mac.lower()):
            c.fail(f"{f}.mac", f"{nic.mac!r} is not {names.MAC.hint}")
        if int(nic.mac[:2], 16) & 1:
            c.fail(f"{f}.mac", f"{nic.mac!r} is a multicast address; the first octet must be even")
        mac = nic.mac.lower()
        if mac in macs:
            c.fail(f"{f}.mac", f"{nic.mac!r} is already used by {macs[mac]}")
        macs[mac] = f
        if nic.filter is not None:
            if nic.kind == "user":
                c.fail(f"{f}.filter", "a network filter needs a libvirt network or bridge, not user-mode networking")
            c.pattern(f"{f}.filter", nic.filter, NWFILTER)
        if nic.kind == "user":
            c.choice(f"{f}.model", nic.model, tuple(USER_MODELS))
            user_count += 1
            if family not in ROOT_BUS:
                c.fail(f"{f}.kind", f"user-mode networking needs machine q35 or pc, not {spec.machine!r}")
            if user_count > len(USER_NIC_SLOTS):
                c.fail(f"{f}.kind", f"at most {len(USER_NIC_SLOTS)} user-mode interfaces are supported")
        else:
            c.pattern(f"{f}.model", nic.model, MODEL)
        ports = list(c.items(f"{f}.ports", nic.ports, PortForward))
        if ports and nic.kind != "user":
            c.fail(f"{f}.ports", f"port forwards need a user-mode interface, not kind {nic.kind!r}")
        for pf, port in ports:
            for attr in ("host", "guest"):
                value = getattr(port, attr)
                if not _is_int(value) or not 1 <= value <= 65535:
                    c.fail(f"{pf}.{attr}", f"must be a port number from 1 to 65535, got {value!r}")
            c.choice(f"{pf}.proto", port.proto, PROTOCOLS)
            if not _is_ipv4(port.bind):
                c.fail(f"{pf}.bind", f"{port.bind!r} is not an IPv4 address")
            key = (port.proto, port.bind, port.host)
            if key in forwards:
                c.fail(f"{pf}.host", f"{port.proto} {port.bind}:{port.host} is already forwarded by {forwards[key]}")
            forwards[key] = pf

    tags: dict[str, str] = {}
    for f, mount in c.items("mounts", spec.mounts, Mount):
        c.path(f"{f}.source", mount.source)
        c.pattern(f"{f}.tag", mount.tag, TAG)
        if mount.tag in tags:
            c.fail(f"{f}.tag", f"{mount.tag!r} is already used by {tags[mount.tag]}")
        tags[mount.tag] = f
        c.choice(f"{f}.driver", mount.driver, MOUNT_DRIVERS)
        c.flag(f"{f}.readonly", mount.readonly)
        if mount.readonly and mount.driver == "virtiofs":
            c.fail(f"{f}.readonly", "libvirt does not support read-only virtiofs shares; use driver "
                                    "'9p' or mount the share read-only inside the guest")

    if not isinstance(spec.metadata, dict):
        c.fail("metadata", "must be a dict")
    for key, value in spec.metadata.items():
        f = f"metadata.{key}"
        if not META_KEY.ok(key):
            c.fail("metadata", f"key {key!r} is invalid: {META_KEY.hint}")
        if key == "labels":
            if not isinstance(value, dict):
                c.fail(f, "must be a dict of strings")
            for lkey, lvalue in value.items():
                c.text(f"{f} key {lkey!r}", lkey)
                c.text(f"{f}[{lkey!r}]", lvalue, allow_empty=True)
        else:
            c.text(f, value, allow_empty=True)


# --------------------------------------------------------------------------------------------
# Building


def _sub(parent: ET.Element, tag: str, attrib: dict | None = None, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib or {})
    if text is not None:
        el.text = text
    return el


def _indent(el: ET.Element, level: int = 0) -> None:
    """Two-space indentation (ElementTree.indent needs Python 3.9)."""
    pad = "\n" + "  " * level
    children = list(el)
    if children:
        if not (el.text or "").strip():
            el.text = pad + "  "
        for child in children:
            _indent(child, level + 1)
            if not (child.tail or "").strip():
                child.tail = pad + "  "
        children[-1].tail = pad
    if level == 0:
        el.tail = None


def _port_arg(port: PortForward) -> str:
    return f"hostfwd={port.proto}:{port.bind}:{port.host}-:{port.guest}"


def user_nic_args(spec: DomainSpec) -> list[str]:
    """The qemu arguments for the spec's user-mode NICs (``-netdev user,...`` + ``-device ...``)."""
    family = machine_family(spec.machine)
    args: list[str] = []
    users = [nic for nic in spec.interfaces if nic.kind == "user"]
    for n, nic in enumerate(users):
        netdev = f"{USER_NETDEV_PREFIX}{n}"
        parts = ["user", f"id={netdev}"] + [_port_arg(p) for p in nic.ports]
        args += ["-netdev", ",".join(parts)]
        device = [USER_MODELS[nic.model], f"netdev={netdev}", f"id={USER_DEVICE_PREFIX}{n}",
                  f"mac={nic.mac.lower()}", f"bus={ROOT_BUS[str(family)]}", f"addr={USER_NIC_SLOTS[n]:#04x}"]
        args += ["-device", ",".join(device)]
    return args


def build_xml(spec: DomainSpec) -> str:
    """The domain XML for ``spec``; the same spec always gives the same bytes."""
    validate(spec)
    qemu_args = user_nic_args(spec)
    root = ET.Element("domain", {"type": spec.domain_type})
    if qemu_args:
        root.set("xmlns:qemu", QEMU_NS)
    _sub(root, "name", text=spec.name)
    if spec.uuid:
        _sub(root, "uuid", text=spec.uuid)
    if spec.description:
        _sub(root, "description", text=spec.description)
    _build_metadata(_sub(root, "metadata"), spec.metadata)

    kib = str(spec.memory_mib * 1024)
    _sub(root, "memory", {"unit": "KiB"}, kib)
    _sub(root, "currentMemory", {"unit": "KiB"}, kib)
    if any(m.driver == "virtiofs" for m in spec.mounts):
        backing = _sub(root, "memoryBacking")
        _sub(backing, "source", {"type": "memfd"})
        _sub(backing, "access", {"mode": "shared"})
    _sub(root, "vcpu", {"placement": "static"}, str(spec.vcpus))

    os_el = _sub(root, "os", {"firmware": "efi"} if spec.firmware == "uefi" else None)
    _sub(os_el, "type", {"arch": spec.arch, "machine": spec.machine}, "hvm")
    if spec.firmware == "uefi":
        # Let libvirt pick the loader from the firmware descriptors, but never a Secure Boot one:
        # those need SMM and enrolled keys, and cloud images boot without them.
        fw = _sub(os_el, "firmware")
        _sub(fw, "feature", {"enabled": "no", "name": "secure-boot"})
        _sub(os_el, "nvram", text=spec.nvram_path)
    if spec.kernel:
        _sub(os_el, "kernel", text=spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", text=spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", text=spec.cmdline)

    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.domain_type == "kvm":
        _sub(root, "cpu", {"mode": "host-passthrough", "check": "none"})
    _sub(root, "clock", {"offset": "utc"})
    _sub(root, "on_poweroff", text="destroy")
    _sub(root, "on_reboot", text="restart")
    _sub(root, "on_crash", text="destroy")

    devices = _sub(root, "devices")
    boot_set = spec.kernel is not None
    for disk in spec.disks:
        el = _sub(devices, "disk", {"type": "file", "device": disk.device})
        driver = {"name": "qemu", "type": disk.fmt}
        if disk.device == "disk":
            driver["discard"] = "unmap"
        _sub(el, "driver", driver)
        if disk.path is not None:
            _sub(el, "source", {"file": disk.path})
        _sub(el, "target", {"dev": disk.target, "bus": disk.bus})
        if disk.readonly or disk.device == "cdrom":
            _sub(el, "readonly")
        if not boot_set and disk.device == "disk":
            _sub(el, "boot", {"order": "1"})
            boot_set = True
    if any(d.bus == "scsi" for d in spec.disks):
        _sub(devices, "controller", {"type": "scsi", "index": "0", "model": "virtio-scsi"})

    for nic in spec.interfaces:
        if nic.kind == "user":
            continue
        el = _sub(devices, "interface", {"type": nic.kind})
        _sub(el, "mac", {"address": nic.mac.lower()})
        _sub(el, "source", {nic.kind: str(nic.source)})
        _sub(el, "model", {"type": nic.model})
        if nic.target:
            _sub(el, "target", {"dev": nic.target})
        if nic.filter:
            _sub(el, "filterref", {"filter": nic.filter})
        if nic.link:
            _sub(el, "link", {"state": nic.link})

    for mount in spec.mounts:
        if mount.driver == "virtiofs":
            el = _sub(devices, "filesystem", {"type": "mount", "accessmode": "passthrough"})
            _sub(el, "driver", {"type": "virtiofs"})
        else:
            el = _sub(devices, "filesystem", {"type": "mount", "accessmode": "mapped"})
        _sub(el, "source", {"dir": mount.source})
        _sub(el, "target", {"dir": mount.tag})
        if mount.readonly:
            _sub(el, "readonly")

    serial = _sub(devices, "serial", {"type": "pty"})
    if spec.serial_log:
        _sub(serial, "log", {"file": spec.serial_log, "append": "on"})
    _sub(serial, "target", {"port": "0"})
    console = _sub(devices, "console", {"type": "pty"})
    _sub(console, "target", {"type": "serial", "port": "0"})
    channel = _sub(devices, "channel", {"type": "unix"})
    _sub(channel, "target", {"type": "virtio", "name": "org.qemu.guest_agent.0"})
    rng = _sub(devices, "rng", {"model": "virtio"})
    _sub(rng, "backend", {"model": "random"}, "/dev/urandom")

    if qemu_args:
        cmd = _sub(root, "qemu:commandline")
        for arg in qemu_args:
            _sub(cmd, "qemu:arg", {"value": arg})

    _indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _build_metadata(parent: ET.Element, metadata: dict, prefix: str = f"{RUM_PREFIX}:") -> ET.Element:
    vm = _sub(parent, f"{prefix}vm", {f"xmlns:{RUM_PREFIX}": RUM_NS} if prefix else None)
    for key in sorted(metadata):
        value = metadata[key]
        if key == "labels":
            labels = _sub(vm, f"{prefix}labels")
            for lkey in sorted(value):
                _sub(labels, f"{prefix}label", {"name": lkey}, value[lkey])
        else:
            _sub(vm, f"{prefix}{key}", text=value)
    return vm


def metadata_element(metadata: dict) -> str:
    """The rum metadata as libvirt's ``setMetadata`` takes it: without a namespace (libvirt adds
    ``RUM_NS`` under ``RUM_PREFIX``), the same elements ``build_xml`` writes."""
    return ET.tostring(_build_metadata(ET.Element("metadata"), metadata, prefix=""), encoding="unicode")


# --------------------------------------------------------------------------------------------
# Reading back


def _parse(xml: str) -> ET.Element:
    if not isinstance(xml, str) or not xml.strip():
        raise DomainError("domain XML is empty")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainError(f"domain XML is not well-formed: {exc}") from exc
    if root.tag != "domain":
        raise DomainError(f"domain XML has root element <{root.tag}>, expected <domain>")
    return root


def read_metadata(xml: str) -> dict | None:
    """rum's metadata (``{'config_hash': ..., 'labels': {...}, ...}``), or None if not rum-managed."""
    vm = _parse(xml).find(f"metadata/{{{RUM_NS}}}vm")
    if vm is None:
        return None
    out: dict[str, t.Any] = {}
    for child in vm:
        if not child.tag.startswith(f"{{{RUM_NS}}}"):
            continue
        key = child.tag[len(RUM_NS) + 2:]
        if key == "labels":
            out["labels"] = {lab.get("name", ""): lab.text or ""
                             for lab in child.findall(f"{{{RUM_NS}}}label")}
        else:
            out[key] = child.text or ""
    return out


def is_rum_managed(xml: str) -> bool:
    """True when the domain carries rum's metadata element."""
    return read_metadata(xml) is not None


def domain_type(xml: str) -> str | None:
    """The domain type (``kvm``, ``qemu``) of a domain XML."""
    return _parse(xml).get("type")


def domain_uuid(xml: str) -> str | None:
    el = _parse(xml).find("uuid")
    return el.text.strip().lower() if el is not None and el.text else None


def domain_macs(xml: str) -> list[str]:
    """MACs of all NICs, libvirt ones first, then user-mode ones from the qemu command line."""
    root = _parse(xml)
    return [nic["mac"] for nic in _interfaces(root)[0] if nic["mac"]]


def domain_networks(xml: str) -> list[tuple[str, str]]:
    """(MAC, libvirt network name) of each NIC attached to a libvirt network, in XML order."""
    root = _parse(xml)
    return [(nic["mac"], nic["source"]) for nic in _interfaces(root)[0]
            if nic["kind"] == "network" and nic["mac"] and nic["source"]]


_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000 ** 2, "m": 1024 ** 2, "mib": 1024 ** 2,
    "gb": 1000 ** 3, "g": 1024 ** 3, "gib": 1024 ** 3,
    "tb": 1000 ** 4, "t": 1024 ** 4, "tib": 1024 ** 4,
}


def _memory_kib(el: ET.Element | None) -> int | None:
    if el is None or not (el.text or "").strip():
        return None
    unit = (el.get("unit") or "KiB").lower()
    if unit not in _UNITS:
        raise DomainError(f"domain XML: unknown memory unit {el.get('unit')!r}")
    try:
        amount = int(el.text.strip())
    except ValueError as exc:
        raise DomainError(f"domain XML: memory {el.text!r} is not an integer") from exc
    return -(-amount * _UNITS[unit] // 1024)


def _text(el: ET.Element | None) -> str | None:
    """Element text; a missing or empty element is None (libvirt drops empty optional elements)."""
    if el is None:
        return None
    return el.text or None


def _split_opts(value: str) -> tuple[str, list[tuple[str, str]]]:
    head, _sep, rest = value.partition(",")
    pairs = []
    for item in rest.split(",") if rest else []:
        key, _eq, val = item.partition("=")
        pairs.append((key, val))
    return head, pairs


_HOSTFWD_RE = re.compile(r"^(tcp|udp):([^:]*):(\d+)-[^:]*:(\d+)$")


def _port_dict(proto: str, bind: str, host: int, guest: int) -> dict:
    return {"proto": proto, "bind": bind, "host": host, "guest": guest}


def _user_nics(args: list[str]) -> tuple[list[dict], list[str]]:
    """Pick rum's ``-netdev user`` / ``-device`` pairs out of qemu args; return (nics, other args)."""
    netdevs: dict[str, tuple[int, list[dict]]] = {}
    for i in range(len(args) - 1):
        if args[i] != "-netdev":
            continue
        head, pairs = _split_opts(args[i + 1])
        netdev_id = dict(pairs).get("id", "")
        if head == "user" and netdev_id.startswith(USER_NETDEV_PREFIX):
            ports = []
            for key, val in pairs:
                m = _HOSTFWD_RE.match(val) if key == "hostfwd" else None
                if m:
                    ports.append(_port_dict(m.group(1), m.group(2), int(m.group(3)), int(m.group(4))))
            netdevs[netdev_id] = (i, ports)
    nics = []
    used: set[int] = set()
    for i in range(len(args) - 1):
        if args[i] != "-device":
            continue
        head, pairs = _split_opts(args[i + 1])
        opts = dict(pairs)
        netdev_id = opts.get("netdev", "")
        if netdev_id not in netdevs or head not in _DEVICE_MODELS:
            continue
        at, ports = netdevs[netdev_id]
        used.update((at, at + 1, i, i + 1))
        nics.append({"kind": "user", "source": None, "mac": opts.get("mac", "").lower(),
                     "model": _DEVICE_MODELS[head],
                     "ports": sorted(ports, key=lambda p: (p["proto"], p["bind"], p["host"], p["guest"]))})
    return nics, [arg for i, arg in enumerate(args) if i not in used]


def _child_attr(el: ET.Element, child: str, attr: str) -> str | None:
    """An attribute of ``el``'s first ``child`` element (None when either is missing)."""
    found = el.find(child)
    return found.get(attr) if found is not None else None


def _interfaces(root: ET.Element) -> tuple[list[dict], list[str]]:
    nics = []
    for el in root.findall("devices/interface"):
        kind = el.get("type", "")
        nics.append({
            "kind": kind,
            "source": _child_attr(el, "source", kind) if kind in ("network", "bridge") else None,
            "mac": (_child_attr(el, "mac", "address") or "").lower(),
            "model": _child_attr(el, "model", "type"),
            "ports": [],
            "filter": _child_attr(el, "filterref", "filter"),
            **_tap_of(el),
        })
    args = [a.get("value", "") for a in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    user, rest = _user_nics(args)
    return nics + user, rest


def _tap_of(el: ET.Element) -> dict:
    """A NIC's tap name when it is one rum.pool gives (the nftables isolation engine's ``rum`` and 12
    hex digits; libvirt's own names, such as vnet0, are left out) and its link state when set, as
    keys only such NICs have."""
    out = {}
    dev = _child_attr(el, "target", "dev")
    if dev and TAP_NAME.fullmatch(dev):
        out["target"] = dev
    if _child_attr(el, "link", "state"):
        out["link"] = _child_attr(el, "link", "state")
    return out


def _disks(root: ET.Element) -> list[dict]:
    disks = []
    for el in root.findall("devices/disk"):
        device = el.get("device", "disk")
        disks.append({
            "target": _child_attr(el, "target", "dev"),
            "bus": _child_attr(el, "target", "bus"),
            "device": device,
            "path": next(filter(None, (_child_attr(el, "source", a) for a in ("file", "dev", "name"))), None),
            "format": _child_attr(el, "driver", "type"),
            "readonly": device == "cdrom" or el.find("readonly") is not None,
        })
    return sorted(disks, key=lambda d: str(d["target"]))


def _mounts(root: ET.Element) -> list[dict]:
    mounts = []
    for el in root.findall("devices/filesystem"):
        mounts.append({
            "tag": _child_attr(el, "target", "dir"),
            "source": _child_attr(el, "source", "dir"),
            "driver": "virtiofs" if _child_attr(el, "driver", "type") == "virtiofs" else "9p",
            "readonly": el.find("readonly") is not None,
        })
    return sorted(mounts, key=lambda m: str(m["tag"]))


def _firmware(os_el: ET.Element | None) -> str:
    if os_el is None:
        return "bios"
    if os_el.get("firmware") == "efi":
        return "uefi"
    loader = os_el.find("loader")
    if loader is not None and (loader.get("type") == "pflash" or "OVMF" in (loader.text or "")):
        return "uefi"
    return "bios"


def canonical(xml: str) -> dict:
    """The settings rum manages, read from our XML or from libvirt's normalised inactive XML.

    Controllers, PCI addresses, aliases, seclabels and devices libvirt adds by itself are left out,
    so ``canonical(build_xml(spec)) == canonical(libvirt's XML of that domain)``.
    """
    root = _parse(xml)
    os_el = root.find("os")
    type_el = os_el.find("type") if os_el is not None else None
    vcpu = root.find("vcpu")
    try:
        vcpus = int((vcpu.text or "").strip()) if vcpu is not None else None
    except ValueError as exc:
        raise DomainError(f"domain XML: vcpu {vcpu.text!r} is not an integer") from exc
    nvram = os_el.find("nvram") if os_el is not None else None
    interfaces, qemu_args = _interfaces(root)
    serial_log = None
    for log in root.findall("devices/serial/log"):
        serial_log = log.get("file")
        break
    return {
        "name": _text(root.find("name")),
        "type": root.get("type"),
        "memory_kib": _memory_kib(root.find("memory")),
        "vcpus": vcpus,
        "arch": type_el.get("arch") if type_el is not None else None,
        "machine": machine_family(type_el.get("machine")) if type_el is not None else None,
        "firmware": _firmware(os_el),
        "nvram": ((nvram.text or "").strip() or None) if nvram is not None else None,
        "kernel": _text(os_el.find("kernel")) if os_el is not None else None,
        "initrd": _text(os_el.find("initrd")) if os_el is not None else None,
        "cmdline": _text(os_el.find("cmdline")) if os_el is not None else None,
        "disks": _disks(root),
        "interfaces": interfaces,
        "mounts": _mounts(root),
        "serial_log": serial_log,
        "description": _text(root.find("description")),
        "metadata": read_metadata(xml),
        "qemu_args": qemu_args,
    }


_SCALARS = (
    ("name", "name", ""), ("type", "type", ""), ("memory_kib", "memory", " KiB"), ("vcpus", "vcpus", ""),
    ("arch", "arch", ""), ("machine", "machine", ""), ("firmware", "firmware", ""), ("nvram", "nvram", ""),
    ("kernel", "kernel", ""), ("initrd", "initrd", ""), ("cmdline", "cmdline", ""),
    ("serial_log", "serial log", ""), ("description", "description", ""),
)


def _show(value: t.Any, suffix: str = "") -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return repr(value) if (not value or any(ch in value for ch in " \n\t'\"")) else value
    if isinstance(value, list) and all(isinstance(p, dict) and "host" in p for p in value):
        return "[" + ", ".join(f"{p['proto']}:{p['bind']}:{p['host']}->{p['guest']}" for p in value) + "]"
    return f"{value}{suffix}"


def _summary(item: dict, skip: str) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in item.items()
                     if k != skip and not (k in LIVE_NIC_ATTRS and v is None))


class Change(t.NamedTuple):
    """One difference between two canonical forms, in words.

    ``before`` is None for something added, ``after`` None for something removed; ``attr`` names
    the attribute of a disk, interface or mount that changed.
    """

    what: str
    before: str | None
    after: str | None
    attr: str = ""

    def side(self, value: str | None) -> str | None:
        """``what: [attr ]value`` for one side of the change (None when that side has nothing)."""
        if value is None:
            return None
        return f"{self.what}: {self.attr + ' ' if self.attr else ''}{value}"

    def line(self) -> str:
        if self.before is None:
            return f"{self.what}: added ({self.after})"
        if self.after is None:
            return f"{self.what}: removed ({self.before})"
        return f"{self.side(self.before)} -> {self.after}"


def _keyed(label: str, old: dict, new: dict, skip: str) -> list[Change]:
    """Changes between two sets of items (disks, NICs, mounts) keyed by their name or index."""
    out = []
    for name in sorted(set(old) | set(new), key=lambda k: (len(str(k)), str(k))):
        what = f"{label} {name}"
        if name not in new:
            out.append(Change(what, _summary(old[name], skip), None))
        elif name not in old:
            out.append(Change(what, None, _summary(new[name], skip)))
        else:
            attrs = list(new[name]) + [attr for attr in old[name] if attr not in new[name]]
            out += [Change(what, _show(old[name].get(attr)), _show(new[name].get(attr)), attr)
                    for attr in attrs if old[name].get(attr) != new[name].get(attr)]
    return out


def _metadata_changes(before: dict | None, after: dict | None) -> list[Change]:
    if before is None or after is None:
        if before is after:
            return []
        managed = ("not rum-managed", "rum-managed")
        return [Change("metadata", *(managed if before is None else managed[::-1]))]
    out = [Change(f"metadata {key}", _show(before.get(key)), _show(after.get(key)))
           for key in sorted(set(before) | set(after)) if key != "labels" and before.get(key) != after.get(key)]
    old, new = before.get("labels") or {}, after.get("labels") or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(Change(f"label {key}", _show(old[key]) if key in old else None,
                              _show(new[key]) if key in new else None))
    return out


def changes(before: dict, after: dict) -> list[Change]:
    """What differs between two canonical forms, field by field (empty when nothing does)."""
    out = [Change(label, _show(before.get(key), suffix), _show(after.get(key), suffix))
           for key, label, suffix in _SCALARS if before.get(key) != after.get(key)]
    out += _keyed("disk", {str(d["target"]): d for d in before.get("disks") or []},
                  {str(d["target"]): d for d in after.get("disks") or []}, "target")
    out += _keyed("interface", dict(enumerate(before.get("interfaces") or [])),
                  dict(enumerate(after.get("interfaces") or [])), "")
    out += _keyed("mount", {str(m["tag"]): m for m in before.get("mounts") or []},
                  {str(m["tag"]): m for m in after.get("mounts") or []}, "tag")
    out += _metadata_changes(before.get("metadata"), after.get("metadata"))
    if (before.get("qemu_args") or []) != (after.get("qemu_args") or []):
        out.append(Change("qemu args", str(before.get("qemu_args") or []), str(after.get("qemu_args") or [])))
    return out


def diff_canonical(before: dict, after: dict) -> list[str]:
    """Readable lines such as ``memory: 1048576 KiB -> 2097152 KiB``; empty when nothing differs."""
    return [change.line() for change in changes(before, after)]


def diff_sides(before: dict | None, after: dict) -> tuple[list[str], list[str]]:
    """The changed fields only, as (before lines, after lines) for Ansible's --diff.

    A field that was added has no before line, one that was removed no after line; with no
    ``before`` (a new domain) every field of ``after`` is listed.
    """
    found = changes(before or {}, after)
    if before is None:
        found = [c._replace(before=None) for c in found if c.after is not None and c.after != "(none)"]
    old = [line for line in (c.side(c.before) for c in found) if line is not None]
    new = [line for line in (c.side(c.after) for c in found) if line is not None]
    return old, new


def restart_changes(before: dict, after: dict) -> list[str]:
    """The diff lines of the changes a running guest only sees after a restart (all but LIVE_KEYS
    and the NICs' network filters)."""
    kept = ({k: v for k, v in c.items() if k not in LIVE_KEYS} for c in (before, after))
    return [change.line() for change in changes(*kept) if change.attr not in LIVE_NIC_ATTRS]


def filter_changed(before: dict, after: dict) -> bool:
    """True when a NIC kept by both sides has another network filter (applied to a running guest live)."""
    return any(change.attr in LIVE_NIC_ATTRS for change in changes(before, after))
