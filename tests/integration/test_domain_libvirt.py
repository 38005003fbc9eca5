# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The generated domain XML against the real libvirtd (qemu:///system, domain type qemu).

Each variant is defined, read back as libvirt's normalised inactive XML and compared in canonical
form; memory is then changed and the domain redefined with its UUID kept. The user-mode variants
are also started (no OS needed) to prove the qemu:commandline NIC slot works on q35 and pc and
the forwarded host port listens; the UEFI one is started to prove firmware autoselection.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from tests import needs

from ansible_collections.rum.pool.plugins.module_utils import _domain as d

libvirt = needs.module("libvirt", "pip install libvirt-python (needs libvirt-dev and pkg-config)")

URI = "qemu:///system"
STATE = os.environ.get("RUM_TEST_STATE", "/var/lib/rum-pool-test")
WORK = os.path.join(STATE, "domain-test")
PREFIX = "rumtest-domain-"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _undefine(conn, name: str) -> None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                      | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


@pytest.fixture(scope="module")
def conn():
    try:
        connection = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"cannot reach libvirtd at {URI} ({exc}); run 'make host' (tools/ensure-host.sh)")
    # Leftovers of an interrupted earlier run.
    for dom in connection.listAllDomains():
        if dom.name().startswith(PREFIX):
            _undefine(connection, dom.name())
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def files():
    """Small disks and files qemu (user libvirt-qemu) can read; removed after the module."""
    os.makedirs(WORK, exist_ok=True)
    for path in (STATE, WORK):
        os.chmod(path, 0o755)
    paths = {}
    for name in ("root", "data"):
        path = os.path.join(WORK, f"{name}.qcow2")
        if not os.path.exists(path):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"], check=True)
        paths[name] = path
    for name, size in (("seed.iso", 1 << 20), ("vmlinuz", 4096), ("initrd.img", 4096)):
        path = os.path.join(WORK, name)
        with open(path, "ab") as fh:
            fh.truncate(size)
        paths[name.split(".", maxsplit=1)[0]] = path
    share = os.path.join(WORK, "share")
    os.makedirs(share, exist_ok=True)
    paths["share"] = share
    for path in paths.values():
        os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
    yield paths
    shutil.rmtree(WORK, ignore_errors=True)


def _spec(variant: str, files: dict, port: int = 0) -> d.DomainSpec:
    name = PREFIX + variant
    seed_bus, seed_target, machine = "scsi", "sda", "q35"
    if variant == "seed-ide":
        seed_bus, seed_target, machine = "ide", "hdc", "pc"
    elif variant == "seed-sata":
        seed_bus = "sata"
    elif variant == "user-ports-pc":
        machine = "pc"
    disks = [
        d.Disk(files["root"], "vda"),
        d.Disk(files["seed"], seed_target, bus=seed_bus, fmt="raw", device="cdrom", readonly=True),
    ]
    nics = [d.Interface("network", "default", d.stable_mac(name, 0))]
    spec = d.DomainSpec(
        name=name, memory_mib=256, vcpus=1, disks=disks, interfaces=nics,
        serial_log=os.path.join(WORK, f"{variant}.serial.log"), machine=machine,
        metadata={"config_hash": "0" * 64, "ssh_user": "rum", "labels": {"test": "domain", "variant": variant}},
        description=f"rum.pool domain test: {variant}\nsecond line <&>",
    )
    if variant == "uefi":
        spec.firmware = "uefi"
        spec.nvram_path = os.path.join(WORK, f"{name}_VARS.fd")
    elif variant == "9p":
        spec.mounts = [d.Mount(files["share"], "share", readonly=True, driver="9p")]
    elif variant == "virtiofs":
        spec.mounts = [d.Mount(files["share"], "share")]
    elif variant.startswith("user-ports"):
        spec.interfaces = [d.Interface("user", None, d.stable_mac(name, 0),
                                       ports=[d.PortForward(port, 22), d.PortForward(port + 1, 80, proto="udp")])]
    elif variant == "bridge":
        spec.interfaces = [d.Interface("bridge", "rumtestbr0", d.stable_mac(name, 0), model="e1000e"),
                           d.Interface("network", "default", d.stable_mac(name, 1))]
    elif variant == "kvm":
        spec.domain_type = "kvm"  # defined only: KVM here hangs guests, so it is never started
    elif variant == "kernel":
        spec.kernel, spec.initrd = files["vmlinuz"], files["initrd"]
        spec.cmdline = "console=ttyS0,115200n8 root=LABEL=root ds=nocloud"
        spec.disks.append(d.Disk(files["data"], "vdb", readonly=True))
    return spec


VARIANTS = ["bios", "uefi", "9p", "virtiofs", "user-ports", "user-ports-pc", "bridge",
            "seed-ide", "seed-sata", "seed-scsi", "kernel", "kvm"]


def _define(conn, spec: d.DomainSpec):
    return conn.defineXML(d.build_xml(spec))


@pytest.mark.parametrize("variant", VARIANTS)
def test_define_read_back_and_redefine(conn, files, variant):
    spec = _spec(variant, files, _free_port())
    try:
        dom = _define(conn, spec)
        libvirt_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert d.canonical(d.build_xml(spec)) == d.canonical(libvirt_xml), \
            d.diff_canonical(d.canonical(d.build_xml(spec)), d.canonical(libvirt_xml))
        assert d.is_rum_managed(libvirt_xml)
        assert d.read_metadata(libvirt_xml)["labels"] == {"test": "domain", "variant": variant}
        assert d.domain_macs(libvirt_xml) == [nic.mac for nic in spec.interfaces]

        # Converge: more memory, same UUID, only the memory line differs.
        uuid = d.domain_uuid(libvirt_xml)
        assert uuid == dom.UUIDString()
        spec.uuid = uuid
        spec.memory_mib = 384
        dom2 = _define(conn, spec)
        new_xml = dom2.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert dom2.UUIDString() == uuid
        assert d.canonical(new_xml) == d.canonical(d.build_xml(spec))
        assert d.diff_canonical(d.canonical(libvirt_xml), d.canonical(new_xml)) == \
            ["memory: 262144 KiB -> 393216 KiB"]
        assert d.restart_changes(d.canonical(libvirt_xml), d.canonical(new_xml))
    finally:
        _undefine(conn, spec.name)


def _listening(port: int) -> bool:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return any(line.split()[3].endswith(f":{port}") for line in out.splitlines() if len(line.split()) > 3)


@pytest.mark.parametrize("variant", ["user-ports", "user-ports-pc"])
def test_user_mode_domain_starts_and_forwards(conn, files, variant):
    """The -device slot we chose does not clash with libvirt's own PCI allocation."""
    port = _free_port()
    spec = _spec(variant, files, port)
    try:
        dom = _define(conn, spec)
        dom.create()
        state, _reason = dom.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listening(port), f"forwarded host port 127.0.0.1:{port} is not listening"
        # The NIC is where we put it, with the MAC we gave it.
        pci = json.loads(conn_qmp(dom, "query-pci"))
        devices = [dev for bus in pci["return"] for dev in bus["devices"]]
        nic = [dev for dev in devices if dev.get("qdev_id") == "rumnic0"]
        assert nic and nic[0]["slot"] == d.USER_NIC_SLOTS[0]
        # The live XML still reads back as the same domain.
        assert d.canonical(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == d.canonical(d.build_xml(spec))
    finally:
        _undefine(conn, spec.name)
    assert not _listening(port)


def conn_qmp(dom, command: str) -> str:
    import libvirt_qemu  # shipped with libvirt-python

    return libvirt_qemu.qemuMonitorCommand(dom, json.dumps({"execute": command}), 0)


def test_uefi_firmware_is_autoselected_and_nvram_created(conn, files):
    descriptors = [p for p in glob.glob("/usr/share/qemu/firmware/*.json")
                   if "uefi" in open(p, encoding="utf-8").read()]
    if not descriptors:
        pytest.fail("no UEFI firmware descriptor in /usr/share/qemu/firmware: apt-get install ovmf")
    spec = _spec("uefi", files)
    if os.path.exists(spec.nvram_path):
        os.unlink(spec.nvram_path)
    try:
        dom = _define(conn, spec)
        dom.create()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        live = dom.XMLDesc(0)
        assert "OVMF" in live and "secboot" not in live.lower()
        assert os.path.exists(spec.nvram_path)
        assert d.canonical(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == d.canonical(d.build_xml(spec))
    finally:
        _undefine(conn, spec.name)
    assert not os.path.exists(spec.nvram_path), "undefine with the NVRAM flag leaves no NVRAM file"
