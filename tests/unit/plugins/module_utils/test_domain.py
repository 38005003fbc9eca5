# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Domain XML: building, validation, canonical compare and helpers (no libvirt daemon needed)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _domain as d
from ansible_collections.rum.pool.plugins.module_utils._domain import (
    Disk, DomainError, DomainSpec, Interface, Mount, PortForward,
)

QEMU = "{http://libvirt.org/schemas/domain/qemu/1.0}"
RUM = "{https://rum-pool.dev/xmlns/vm/1}"
MAC0 = "52:54:00:aa:bb:01"
MAC1 = "52:54:00:aa:bb:02"


def base_spec(**overrides) -> DomainSpec:
    spec = DomainSpec(
        name="web1",
        memory_mib=1024,
        vcpus=2,
        disks=[
            Disk("/var/lib/rum/vms/web1/root.qcow2", "vda"),
            Disk("/var/lib/rum/vms/web1/seed.iso", "sda", bus="scsi", fmt="raw", device="cdrom", readonly=True),
        ],
        interfaces=[Interface("network", "default", MAC0)],
        serial_log="/var/lib/rum/vms/web1/serial.log",
        metadata={"config_hash": "c0ffee", "ssh_user": "rum", "labels": {"role": "web", "pool": "ci"}},
    )
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def variant(name: str) -> DomainSpec:
    """The XML variants that must pass virt-xml-validate and read back canonically."""
    spec = base_spec()
    if name == "uefi":
        spec.firmware = "uefi"
        spec.nvram_path = "/var/lib/rum/vms/web1/VARS.fd"
    elif name == "9p":
        spec.mounts = [Mount("/srv/data", "data", readonly=True, driver="9p")]
    elif name == "virtiofs":
        spec.mounts = [Mount("/srv/code", "code"), Mount("/srv/cache", "cache")]
    elif name == "user-ports":
        spec.interfaces = [Interface("user", None, MAC0, ports=[PortForward(2222, 22), PortForward(8080, 80)])]
    elif name == "user-ports-pc":
        spec.machine = "pc"
        spec.interfaces = [Interface("user", None, MAC0, ports=[PortForward(2222, 22)]),
                           Interface("user", None, MAC1, model="e1000")]
    elif name == "bridge":
        spec.interfaces = [Interface("bridge", "br0", MAC0), Interface("network", "default", MAC1, model="e1000e")]
    elif name == "seed-ide":
        spec.machine = "pc"
        spec.disks[1] = Disk("/var/lib/rum/vms/web1/seed.iso", "hdc", bus="ide", fmt="raw", device="cdrom")
    elif name == "seed-sata":
        spec.disks[1] = Disk("/var/lib/rum/vms/web1/seed.iso", "sdb", bus="sata", fmt="raw", device="cdrom")
    elif name == "kernel":
        spec.kernel = "/var/lib/rum/images/vmlinuz"
        spec.initrd = "/var/lib/rum/images/initrd.img"
        spec.cmdline = "console=ttyS0 root=LABEL=root"
    elif name == "kvm":
        spec.domain_type = "kvm"
    elif name != "bios":
        raise AssertionError(name)
    return spec


VARIANTS = ["bios", "uefi", "9p", "virtiofs", "user-ports", "user-ports-pc", "bridge", "seed-ide",
            "seed-sata", "kernel", "kvm"]


def root_of(spec: DomainSpec) -> ET.Element:
    return ET.fromstring(d.build_xml(spec))


# ---------------------------------------------------------------------------------------------
# Building


def test_same_spec_gives_same_bytes_and_dict_order_does_not_matter():
    a = base_spec()
    b = base_spec(metadata={"labels": {"pool": "ci", "role": "web"}, "ssh_user": "rum", "config_hash": "c0ffee"})
    assert d.build_xml(a) == d.build_xml(copy.deepcopy(a)) == d.build_xml(b)
    assert d.build_xml(a) != d.build_xml(base_spec(vcpus=3))


def test_base_xml_has_the_expected_devices():
    root = root_of(base_spec())
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "web1"
    assert root.find("uuid") is None
    assert root.find("memory").attrib == {"unit": "KiB"} and root.findtext("memory") == "1048576"
    assert root.findtext("currentMemory") == "1048576"
    assert root.findtext("vcpu") == "2"
    assert root.find("os/type").attrib == {"arch": "x86_64", "machine": "q35"}
    assert root.find("os").get("firmware") is None
    assert root.find("features/acpi") is not None
    assert root.find("cpu") is None  # TCG: libvirt's default model
    assert (root.findtext("on_poweroff"), root.findtext("on_reboot")) == ("destroy", "restart")
    assert root.find("memoryBacking") is None
    dev = root.find("devices")
    vda, seed = dev.findall("disk")
    assert vda.find("source").get("file") == "/var/lib/rum/vms/web1/root.qcow2"
    assert vda.find("driver").get("type") == "qcow2"
    assert vda.find("boot").get("order") == "1"
    assert vda.find("readonly") is None
    assert seed.get("device") == "cdrom" and seed.find("readonly") is not None
    assert seed.find("target").attrib == {"dev": "sda", "bus": "scsi"}
    assert seed.find("boot") is None
    assert [c.attrib for c in dev.findall("controller")] == [{"type": "scsi", "index": "0", "model": "virtio-scsi"}]
    nic = dev.find("interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == "default"
    assert nic.find("mac").get("address") == MAC0 and nic.find("model").get("type") == "virtio"
    serial = dev.find("serial")
    assert serial.get("type") == "pty"
    assert serial.find("log").attrib == {"file": "/var/lib/rum/vms/web1/serial.log", "append": "on"}
    assert dev.find("console/target").get("type") == "serial"
    assert dev.find("channel/target").get("name") == "org.qemu.guest_agent.0"
    assert dev.find("rng").get("model") == "virtio" and dev.findtext("rng/backend") == "/dev/urandom"
    assert dev.find("graphics") is None and dev.find("video") is None
    assert root.find(f"{QEMU}commandline") is None


def test_no_scsi_controller_without_scsi_disks():
    root = root_of(variant("seed-sata"))
    assert root.find("devices/controller") is None
    assert root.findall("devices/disk")[1].find("target").attrib == {"dev": "sdb", "bus": "sata"}


def test_cdrom_is_always_readonly():
    root = root_of(variant("seed-ide"))
    cdrom = root.findall("devices/disk")[1]
    assert cdrom.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    assert cdrom.find("readonly") is not None


def test_uefi_uses_firmware_autoselection_without_secure_boot():
    root = root_of(variant("uefi"))
    os_el = root.find("os")
    assert os_el.get("firmware") == "efi"
    assert os_el.find("firmware/feature").attrib == {"enabled": "no", "name": "secure-boot"}
    assert os_el.findtext("nvram") == "/var/lib/rum/vms/web1/VARS.fd"
    assert os_el.find("loader") is None


def test_kvm_passes_the_host_cpu_through():
    root = root_of(variant("kvm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_virtiofs_needs_shared_memory():
    root = root_of(variant("virtiofs"))
    assert root.find("memoryBacking/source").get("type") == "memfd"
    assert root.find("memoryBacking/access").get("mode") == "shared"
    fs = root.findall("devices/filesystem")
    assert [f.find("driver").get("type") for f in fs] == ["virtiofs", "virtiofs"]
    assert [f.find("target").get("dir") for f in fs] == ["code", "cache"]
    assert all(f.find("readonly") is None for f in fs)


def test_9p_is_mapped_and_readonly_without_shared_memory():
    root = root_of(variant("9p"))
    assert root.find("memoryBacking") is None
    fs = root.find("devices/filesystem")
    assert fs.get("accessmode") == "mapped"
    assert fs.find("driver") is None
    assert fs.find("source").get("dir") == "/srv/data"
    assert fs.find("readonly") is not None


def test_user_mode_ports_go_to_the_qemu_command_line():
    xml = d.build_xml(variant("user-ports"))
    assert 'xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"' in xml
    root = ET.fromstring(xml)
    assert root.find("devices/interface") is None
    args = [a.get("value") for a in root.findall(f"{QEMU}commandline/{QEMU}arg")]
    assert args == [
        "-netdev", "user,id=rumnet0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80",
        "-device", f"virtio-net-pci,netdev=rumnet0,id=rumnic0,mac={MAC0},bus=pcie.0,addr=0x1c",
    ]


def test_user_mode_on_pc_uses_pci0_and_one_slot_per_nic():
    args = d.user_nic_args(variant("user-ports-pc"))
    assert args[3] == f"virtio-net-pci,netdev=rumnet0,id=rumnic0,mac={MAC0},bus=pci.0,addr=0x1c"
    assert args[4:6] == ["-netdev", "user,id=rumnet1"]
    assert args[7] == f"e1000,netdev=rumnet1,id=rumnic1,mac={MAC1},bus=pci.0,addr=0x1a"


def test_bridge_interface():
    nics = root_of(variant("bridge")).findall("devices/interface")
    assert [n.get("type") for n in nics] == ["bridge", "network"]
    assert nics[0].find("source").attrib == {"bridge": "br0"}
    assert nics[1].find("model").get("type") == "e1000e"


def test_direct_kernel_boot_drops_disk_boot_order():
    root = root_of(variant("kernel"))
    assert root.findtext("os/kernel") == "/var/lib/rum/images/vmlinuz"
    assert root.findtext("os/initrd") == "/var/lib/rum/images/initrd.img"
    assert root.findtext("os/cmdline") == "console=ttyS0 root=LABEL=root"
    assert root.find("devices/disk/boot") is None


def test_uuid_and_description_are_kept():
    uuid = "8045fc5a-777e-4476-871f-98d988a7f466"
    root = root_of(base_spec(uuid=uuid, description="line 1\nline 2"))
    assert root.findtext("uuid") == uuid
    assert root.findtext("description") == "line 1\nline 2"


def test_metadata_marks_rum_ownership():
    xml = d.build_xml(base_spec())
    vm = ET.fromstring(xml).find(f"metadata/{RUM}vm")
    assert vm is not None
    assert vm.findtext(f"{RUM}config_hash") == "c0ffee"
    assert [lab.get("name") for lab in vm.findall(f"{RUM}labels/{RUM}label")] == ["pool", "role"]
    assert d.read_metadata(xml) == {"config_hash": "c0ffee", "ssh_user": "rum",
                                    "labels": {"role": "web", "pool": "ci"}}
    assert d.is_rum_managed(xml)


def test_empty_description_and_cmdline_are_left_out():
    spec = variant("kernel")
    spec.cmdline = ""
    spec.description = ""
    root = root_of(spec)
    assert root.find("description") is None and root.find("os/cmdline") is None
    with_none = variant("kernel")
    with_none.cmdline = None
    assert d.canonical(d.build_xml(spec)) == d.canonical(d.build_xml(with_none))
    assert d.canonical(d.build_xml(spec))["cmdline"] is None


def test_markup_in_values_stays_text():
    evil = "x</description><devices><disk/></devices><description>"
    spec = base_spec(description=evil, metadata={"labels": {"a'\"<&>": evil}, "note": "<rum:vm/>&amp;"})
    xml = d.build_xml(spec)
    root = ET.fromstring(xml)
    assert root.findtext("description") == evil
    assert len(root.findall("devices")) == 1
    assert d.read_metadata(xml) == {"labels": {"a'\"<&>": evil}, "note": "<rum:vm/>&amp;"}


# ---------------------------------------------------------------------------------------------
# Validation


def _mutate(fn):
    spec = base_spec()
    fn(spec)
    return spec


BAD = [
    (lambda s: setattr(s, "name", "../etc/passwd"), r"domain name '\.\./etc/passwd' is invalid"),
    (lambda s: setattr(s, "name", "a<b>"), r"domain name 'a<b>' is invalid"),
    (lambda s: setattr(s, "name", "-lead"), r"domain name '-lead' is invalid"),
    (lambda s: setattr(s, "name", "x" * 64), r"domain name 'x{64}' is invalid"),
    (lambda s: setattr(s, "name", ""), r"domain name '' is invalid"),
    (lambda s: setattr(s, "memory_mib", 255), r"domain 'web1': memory_mib: must be an integer >= 256, got 255"),
    (lambda s: setattr(s, "memory_mib", True), r"memory_mib: must be an integer"),
    (lambda s: setattr(s, "vcpus", 0), r"vcpus: must be an integer from 1"),
    (lambda s: setattr(s, "domain_type", "auto"), r"domain_type: 'auto' is not one of kvm, qemu"),
    (lambda s: setattr(s, "machine", "q35;rm"), r"machine: 'q35;rm' is invalid"),
    (lambda s: setattr(s, "firmware", "uefi"), r"nvram_path: firmware 'uefi' needs a per-VM NVRAM file path"),
    (lambda s: setattr(s, "nvram_path", "/x/VARS.fd"), r"nvram_path: is only used with firmware 'uefi'"),
    (lambda s: setattr(s, "uuid", "not-a-uuid"), r"uuid: 'not-a-uuid' is invalid"),
    (lambda s: setattr(s, "serial_log", "relative/serial.log"), r"serial_log: 'relative/serial.log' must be an absolute path"),
    (lambda s: setattr(s, "serial_log", "/var/../etc/shadow"), r"serial_log: .* must not contain '\.\.' components"),
    (lambda s: setattr(s, "cmdline", "quiet"), r"kernel: initrd and cmdline need a kernel"),
    (lambda s: setattr(s, "description", "bell\x07"), r"description: must not contain control characters"),
    (lambda s: setattr(s.disks[0], "path", "disk.qcow2"), r"disks\[0\]\.path: 'disk.qcow2' must be an absolute path"),
    (lambda s: setattr(s.disks[0], "path", "/x/a\nb"), r"disks\[0\]\.path: must not contain control characters"),
    (lambda s: setattr(s.disks[0], "bus", "usb"), r"disks\[0\]\.bus: 'usb' is not one of virtio, scsi, sata, ide"),
    (lambda s: setattr(s.disks[0], "fmt", "vmdk"), r"disks\[0\]\.fmt: 'vmdk' is not one of qcow2, raw"),
    (lambda s: setattr(s.disks[0], "device", "floppy"), r"disks\[0\]\.device: 'floppy'"),
    (lambda s: setattr(s.disks[0], "readonly", "yes"), r"disks\[0\]\.readonly: must be true or false"),
    (lambda s: setattr(s.disks[1], "target", "vdb"), r"disks\[1\]\.target: 'vdb' does not suit bus 'scsi': expected sda"),
    (lambda s: setattr(s.disks[0], "target", "hda"), r"disks\[0\]\.target: 'hda' does not suit bus 'virtio'"),
    (lambda s: s.disks.append(Disk("/x/b.qcow2", "vda")), r"disks\[2\]\.target: 'vda' is already used by disks\[0\]"),
    (lambda s: setattr(s.disks[1], "bus", "ide") or setattr(s.disks[1], "target", "hdc"),
     r"disks\[1\]\.bus: 'ide' needs machine 'pc'"),
    (lambda s: setattr(s.interfaces[0], "mac", "52:54:00:zz:00:01"), r"interfaces\[0\]\.mac: '52:54:00:zz:00:01' is not a MAC"),
    (lambda s: setattr(s.interfaces[0], "mac", "52-54-00-00-00-01"), r"interfaces\[0\]\.mac: .* is not a MAC"),
    (lambda s: setattr(s.interfaces[0], "mac", "01:00:5e:00:00:01"), r"interfaces\[0\]\.mac: .* multicast"),
    (lambda s: s.interfaces.append(Interface("network", "default", MAC0.upper())),
     r"interfaces\[1\]\.mac: .* is already used by interfaces\[0\]"),
    (lambda s: setattr(s.interfaces[0], "kind", "direct"), r"interfaces\[0\]\.kind: 'direct' is not one of"),
    (lambda s: setattr(s.interfaces[0], "source", None), r"interfaces\[0\]\.source: must be a string"),
    (lambda s: setattr(s.interfaces[0], "source", "def'ault"), r"interfaces\[0\]\.source: .* a libvirt network name"),
    (lambda s: s.interfaces.__setitem__(0, Interface("bridge", "a-very-long-bridge-name", MAC0)),
     r"interfaces\[0\]\.source: .* a host bridge name"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", "default", MAC0)),
     r"interfaces\[0\]\.source: must be empty for a user-mode interface"),
    (lambda s: setattr(s.interfaces[0], "ports", [PortForward(2222, 22)]),
     r"interfaces\[0\]\.ports: port forwards need a user-mode interface, not kind 'network'"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", None, MAC0, ports=[PortForward(0, 22)])),
     r"interfaces\[0\]\.ports\[0\]\.host: must be a port number from 1 to 65535, got 0"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", None, MAC0, ports=[PortForward(22, 65536)])),
     r"interfaces\[0\]\.ports\[0\]\.guest: must be a port number from 1 to 65535, got 65536"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", None, MAC0, ports=[PortForward(22, 22, proto="sctp")])),
     r"interfaces\[0\]\.ports\[0\]\.proto: 'sctp'"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", None, MAC0, ports=[PortForward(22, 22, bind="0.0.0.0,x=1")])),
     r"interfaces\[0\]\.ports\[0\]\.bind: '0.0.0.0,x=1' is not an IPv4 address"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", None, MAC0, ports=[PortForward(22, 22), PortForward(22, 80)])),
     r"interfaces\[0\]\.ports\[1\]\.host: tcp 127.0.0.1:22 is already forwarded by interfaces\[0\]\.ports\[0\]"),
    (lambda s: s.interfaces.__setitem__(0, Interface("user", None, MAC0, model="ne2k_pci")),
     r"interfaces\[0\]\.model: 'ne2k_pci' is not one of virtio, e1000"),
    (lambda s: setattr(s, "machine", "microvm") or s.interfaces.__setitem__(0, Interface("user", None, MAC0)),
     r"interfaces\[0\]\.kind: user-mode networking needs machine q35 or pc"),
    (lambda s: s.interfaces.extend(Interface("user", None, d.stable_mac("x", i)) for i in range(5)),
     r"interfaces\[5\]\.kind: at most 4 user-mode interfaces"),
    (lambda s: setattr(s, "mounts", [Mount("srv", "srv")]), r"mounts\[0\]\.source: 'srv' must be an absolute path"),
    (lambda s: setattr(s, "mounts", [Mount("/srv", "a b")]), r"mounts\[0\]\.tag: 'a b' is invalid"),
    (lambda s: setattr(s, "mounts", [Mount("/srv", "t" * 37)]), r"mounts\[0\]\.tag: 't{37}' is invalid"),
    (lambda s: setattr(s, "mounts", [Mount("/a", "t"), Mount("/b", "t", driver="9p")]),
     r"mounts\[1\]\.tag: 't' is already used by mounts\[0\]"),
    (lambda s: setattr(s, "mounts", [Mount("/a", "t", driver="nfs")]), r"mounts\[0\]\.driver: 'nfs'"),
    (lambda s: setattr(s, "mounts", [Mount("/a", "t", readonly=True)]),
     r"mounts\[0\]\.readonly: libvirt does not support read-only virtiofs"),
    (lambda s: setattr(s, "metadata", {"bad key": "x"}), r"metadata: key 'bad key' is invalid"),
    (lambda s: setattr(s, "metadata", {"n": 1}), r"metadata\.n: must be a string, got int"),
    (lambda s: setattr(s, "metadata", {"labels": ["a"]}), r"metadata\.labels: must be a dict of strings"),
    (lambda s: setattr(s, "metadata", {"labels": {"a": None}}), r"metadata\.labels\['a'\]: must be a string"),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[m for _f, m in BAD])
def test_validation_errors_name_the_field(mutate, message):
    spec = _mutate(mutate)
    with pytest.raises(DomainError, match=message):
        d.build_xml(spec)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_is_valid(name):
    d.validate(variant(name))


def test_uppercase_mac_is_accepted_and_written_lower_case():
    spec = base_spec(interfaces=[Interface("network", "default", "52:54:00:AB:CD:EF")])
    assert root_of(spec).find("devices/interface/mac").get("address") == "52:54:00:ab:cd:ef"


# ---------------------------------------------------------------------------------------------
# virt-xml-validate


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_passes_virt_xml_validate(name, tmp_path):
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.fail("virt-xml-validate is missing: apt-get install libvirt-clients")
    path = tmp_path / f"{name}.xml"
    path.write_text(d.build_xml(variant(name)), encoding="utf-8")
    proc = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# Canonical compare against libvirt-normalised XML (hand-written the way libvirt 9.0 writes it)

LIBVIRT_Q35 = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web1</name>
  <uuid>8045fc5a-777e-4476-871f-98d988a7f466</uuid>
  <metadata>
    <rum:vm xmlns:rum="https://rum-pool.dev/xmlns/vm/1">
      <rum:config_hash>c0ffee</rum:config_hash>
      <rum:labels>
        <rum:label name="pool">ci</rum:label>
        <rum:label name="role">web</rum:label>
      </rum:labels>
      <rum:ssh_user>rum</rum:ssh_user>
    </rum:vm>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>2</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <firmware>
      <feature enabled='no' name='secure-boot'/>
    </firmware>
    <nvram>/var/lib/rum/vms/web1/VARS.fd</nvram>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/rum/vms/web1/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/rum/vms/web1/seed.iso'/>
      <target dev='sda' bus='scsi'/>
      <readonly/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='usb' index='0' model='qemu-xhci'>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
    </controller>
    <controller type='sata' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='1' port='0x8'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0' multifunction='on'/>
    </controller>
    <controller type='virtio-serial' index='0'>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </controller>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <source dir='/srv/code'/>
      <target dir='code'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </filesystem>
    <serial type='pty'>
      <log file='/var/lib/rum/vms/web1/serial.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <log file='/var/lib/rum/vms/web1/serial.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'/>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=rumnet0,hostfwd=tcp:127.0.0.1:2222-:22'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=rumnet0,id=rumnic0,mac=52:54:00:aa:bb:01,bus=pcie.0,addr=0x1c'/>
  </qemu:commandline>
</domain>
"""

LIBVIRT_PC = """<domain type='qemu'>
  <name>web1</name>
  <uuid>e0002b9b-c187-4692-94e8-d8fd507be019</uuid>
  <metadata>
    <rum:vm xmlns:rum="https://rum-pool.dev/xmlns/vm/1">
      <rum:config_hash>c0ffee</rum:config_hash>
      <rum:labels>
        <rum:label name="pool">ci</rum:label>
        <rum:label name="role">web</rum:label>
      </rum:labels>
      <rum:ssh_user>rum</rum:ssh_user>
    </rum:vm>
    <other:thing xmlns:other="https://example.invalid/other">ignored</other:thing>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/rum/vms/web1/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/rum/vms/web1/seed.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
      <address type='drive' controller='0' bus='1' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <controller type='ide' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x1'/>
    </controller>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:01'/>
      <source bridge='br0'/>
      <model type='virtio'/>
      <alias name='ua-net0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:AA:BB:02'/>
      <source network='default'/>
      <model type='e1000e'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <serial type='pty'>
      <log file='/var/lib/rum/vms/web1/serial.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <log file='/var/lib/rum/vms/web1/serial.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </rng>
  </devices>
</domain>
"""


def q35_spec() -> DomainSpec:
    spec = variant("uefi")
    spec.mounts = [Mount("/srv/code", "code")]
    spec.interfaces = [Interface("user", None, MAC0, ports=[PortForward(2222, 22)])]
    return spec


def pc_spec() -> DomainSpec:
    spec = variant("seed-ide")
    spec.interfaces = [Interface("bridge", "br0", MAC0), Interface("network", "default", MAC1, model="e1000e")]
    return spec


@pytest.mark.parametrize("spec_fn,libvirt_xml", [(q35_spec, LIBVIRT_Q35), (pc_spec, LIBVIRT_PC)], ids=["q35", "pc"])
def test_canonical_of_generated_equals_canonical_of_libvirts(spec_fn, libvirt_xml):
    ours = d.canonical(d.build_xml(spec_fn()))
    theirs = d.canonical(libvirt_xml)
    assert ours == theirs, d.diff_canonical(theirs, ours)
    assert d.diff_canonical(theirs, ours) == []
    assert not d.restart_changes(theirs, ours)


def test_canonical_content():
    c = d.canonical(LIBVIRT_Q35)
    assert c["machine"] == "q35" and c["firmware"] == "uefi" and c["memory_kib"] == 1048576
    assert c["interfaces"] == [{"kind": "user", "source": None, "mac": MAC0, "model": "virtio",
                                "ports": [{"proto": "tcp", "bind": "127.0.0.1", "host": 2222, "guest": 22}]}]
    assert c["qemu_args"] == []
    assert c["mounts"] == [{"tag": "code", "source": "/srv/code", "driver": "virtiofs", "readonly": False}]
    assert [disk["target"] for disk in c["disks"]] == ["sda", "vda"]
    pc = d.canonical(LIBVIRT_PC)
    assert pc["machine"] == "pc" and pc["firmware"] == "bios"
    assert [n["mac"] for n in pc["interfaces"]] == [MAC0, MAC1]


def test_canonical_sees_a_real_difference():
    spec = q35_spec()
    spec.interfaces[0].ports.append(PortForward(8080, 80))
    ours = d.canonical(d.build_xml(spec))
    theirs = d.canonical(LIBVIRT_Q35)
    assert ours != theirs
    assert d.diff_canonical(theirs, ours) == [
        "interface 0: ports [tcp:127.0.0.1:2222->22] -> [tcp:127.0.0.1:2222->22, tcp:127.0.0.1:8080->80]"]


def test_port_order_does_not_matter():
    a = variant("user-ports")
    b = variant("user-ports")
    b.interfaces[0].ports.reverse()
    assert d.canonical(d.build_xml(a)) == d.canonical(d.build_xml(b))


def test_foreign_qemu_args_are_kept_for_compare():
    xml = LIBVIRT_PC.replace("</devices>", "</devices><qemu:commandline xmlns:qemu='http://libvirt.org/schemas/"
                                           "domain/qemu/1.0'><qemu:arg value='-no-hpet'/></qemu:commandline>")
    assert d.canonical(xml)["qemu_args"] == ["-no-hpet"]
    assert "qemu args: [] -> ['-no-hpet']" in d.diff_canonical(d.canonical(LIBVIRT_PC), d.canonical(xml))


@pytest.mark.parametrize("unit,amount,kib", [
    ("KiB", "1048576", 1048576), ("k", "1024", 1024), ("MiB", "1024", 1048576), ("M", "512", 524288),
    ("GiB", "2", 2097152), ("G", "1", 1048576), ("b", "1048576", 1024), ("bytes", "2048", 2),
    ("KB", "1024", 1000), ("MB", "1", 977), ("GB", "1", 976563), ("TiB", "1", 1024 ** 3),
])
def test_memory_units_are_normalised_to_kib(unit, amount, kib):
    xml = LIBVIRT_PC.replace("<memory unit='KiB'>1048576</memory>", f"<memory unit='{unit}'>{amount}</memory>")
    assert d.canonical(xml)["memory_kib"] == kib


def test_memory_without_unit_is_kib():
    xml = LIBVIRT_PC.replace("<memory unit='KiB'>1048576</memory>", "<memory>4096</memory>")
    assert d.canonical(xml)["memory_kib"] == 4096


def test_unknown_memory_unit_fails():
    xml = LIBVIRT_PC.replace("<memory unit='KiB'>", "<memory unit='parsec'>")
    with pytest.raises(DomainError, match="unknown memory unit 'parsec'"):
        d.canonical(xml)


@pytest.mark.parametrize("machine,family", [
    ("q35", "q35"), ("pc-q35-7.2", "q35"), ("pc", "pc"), ("pc-i440fx-7.2", "pc"), ("pc-1.0", "pc"),
    ("microvm", "microvm"), (None, None),
])
def test_machine_family(machine, family):
    assert d.machine_family(machine) == family


# ---------------------------------------------------------------------------------------------
# Diff lines and restart policy


def test_diff_lines_name_each_change():
    small = d.canonical(d.build_xml(base_spec()))
    spec = base_spec(memory_mib=2048, vcpus=4, serial_log=None, description="new")
    spec.disks[0].path = "/var/lib/rum/vms/web1/other.qcow2"
    spec.disks.append(Disk("/var/lib/rum/vms/web1/data.qcow2", "vdb"))
    spec.interfaces[0].source = "isolated"
    spec.interfaces.append(Interface("bridge", "br0", MAC1))
    spec.mounts = [Mount("/srv", "srv")]
    spec.metadata = {"config_hash": "beef", "labels": {"role": "db", "new": "x"}}
    big = d.canonical(d.build_xml(spec))
    lines = d.diff_canonical(small, big)
    assert lines == [
        "memory: 1048576 KiB -> 2097152 KiB",
        "vcpus: 2 -> 4",
        "serial log: /var/lib/rum/vms/web1/serial.log -> (none)",
        "description: (none) -> new",
        "disk vda: path /var/lib/rum/vms/web1/root.qcow2 -> /var/lib/rum/vms/web1/other.qcow2",
        "disk vdb: added (bus=virtio, device=disk, path=/var/lib/rum/vms/web1/data.qcow2, format=qcow2, readonly=no)",
        "interface 0: source default -> isolated",
        f"interface 1: added (kind=bridge, source=br0, mac={MAC1}, model=virtio, ports=[])",
        "mount srv: added (source=/srv, driver=virtiofs, readonly=no)",
        "metadata config_hash: c0ffee -> beef",
        "metadata ssh_user: rum -> (none)",
        "label new: added (x)",
        "label pool: removed (ci)",
        "label role: web -> db",
    ]
    assert d.restart_changes(small, big)
    back = d.diff_canonical(big, small)
    assert "disk vdb: removed (bus=virtio, device=disk, path=/var/lib/rum/vms/web1/data.qcow2, format=qcow2, " \
           "readonly=no)" in back
    assert "mount srv: removed (source=/srv, driver=virtiofs, readonly=no)" in back
    assert f"interface 1: removed (kind=bridge, source=br0, mac={MAC1}, model=virtio, ports=[])" in back


def test_diff_sides_list_only_the_changed_fields():
    small = d.canonical(d.build_xml(base_spec()))
    spec = base_spec(memory_mib=2048)
    spec.disks.append(Disk("/var/lib/rum/vms/web1/data.qcow2", "vdb"))
    spec.metadata = dict(spec.metadata, labels={"pool": "ci"})
    big = d.canonical(d.build_xml(spec))
    before, after = d.diff_sides(small, big)
    assert before == ["memory: 1048576 KiB", "label role: web"]
    assert after == ["memory: 2097152 KiB",
                     "disk vdb: bus=virtio, device=disk, path=/var/lib/rum/vms/web1/data.qcow2, format=qcow2, "
                     "readonly=no"]
    assert d.diff_sides(big, copy.deepcopy(big)) == ([], [])


def test_diff_sides_of_a_new_domain_list_what_it_will_be():
    after = d.canonical(d.build_xml(base_spec()))
    before, lines = d.diff_sides(None, after)
    assert before == []
    assert "memory: 1048576 KiB" in lines and "vcpus: 2" in lines and "name: web1" in lines
    assert not any("(none)" in line for line in lines)


def test_metadata_and_description_changes_need_no_restart():
    before = d.canonical(d.build_xml(base_spec()))
    after = d.canonical(d.build_xml(base_spec(description="x", metadata={"config_hash": "new"})))
    assert before != after
    assert not d.restart_changes(before, after)
    assert d.restart_changes(before, d.canonical(d.build_xml(base_spec(vcpus=1)))) == ["vcpus: 2 -> 1"]


def test_not_rum_managed_shows_in_diff():
    foreign = LIBVIRT_PC.replace(LIBVIRT_PC[LIBVIRT_PC.index("<metadata>"):LIBVIRT_PC.index("</metadata>") + 11], "")
    assert d.read_metadata(foreign) is None
    assert not d.is_rum_managed(foreign)
    assert "metadata: not rum-managed -> rum-managed" in d.diff_canonical(
        d.canonical(foreign), d.canonical(LIBVIRT_PC))


def test_diff_of_identical_is_empty():
    c = d.canonical(d.build_xml(variant("virtiofs")))
    assert d.diff_canonical(c, copy.deepcopy(c)) == []
    assert not d.restart_changes(c, copy.deepcopy(c))


# ---------------------------------------------------------------------------------------------
# Helpers


def test_stable_mac_is_deterministic_and_in_qemu_range():
    mac = d.stable_mac("web1", 0)
    assert mac == d.stable_mac("web1", 0)
    assert re.match(r"^52:54:00(:[0-9a-f]{2}){3}$", mac)
    assert len({d.stable_mac("web1", i) for i in range(16)}) == 16
    assert d.stable_mac("web2", 0) != mac
    with pytest.raises(DomainError, match="index must be an integer >= 0"):
        d.stable_mac("web1", -1)


def test_domain_macs_and_uuid():
    assert d.domain_macs(LIBVIRT_PC) == [MAC0, MAC1]
    assert d.domain_macs(LIBVIRT_Q35) == [MAC0]
    spec = variant("user-ports-pc")
    assert d.domain_macs(d.build_xml(spec)) == [MAC0, MAC1]
    assert d.domain_uuid(LIBVIRT_Q35) == "8045fc5a-777e-4476-871f-98d988a7f466"
    assert d.domain_uuid(d.build_xml(base_spec())) is None


def test_domain_networks_lists_only_nics_on_libvirt_networks():
    assert d.domain_networks(LIBVIRT_PC) == [(MAC1, "default")]  # the br0 bridge NIC has no lease table
    assert d.domain_networks(d.build_xml(base_spec())) == [(MAC0, "default")]
    assert d.domain_networks(d.build_xml(variant("user-ports-pc"))) == []


@pytest.mark.parametrize("bus,index,name", [("virtio", 0, "vda"), ("virtio", 25, "vdz"), ("virtio", 26, "vdaa"),
                                            ("scsi", 1, "sdb"), ("sata", 0, "sda"), ("ide", 2, "hdc")])
def test_target_name(bus, index, name):
    assert d.target_name(bus, index) == name


@pytest.mark.parametrize("xml,message", [
    ("", "domain XML is empty"),
    ("<domain><name>x</name>", "not well-formed"),
    ("<network/>", "root element <network>, expected <domain>"),
])
def test_bad_xml_raises_domain_error(xml, message):
    with pytest.raises(DomainError, match=message):
        d.canonical(xml)


def test_module_has_no_ansible_or_libvirt_import():
    path = d.__file__
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    assert not re.search(r"^\s*(import|from)\s+(ansible|libvirt)\b", source, re.M)
    # the collection's own pure helpers are fine
    assert re.findall(r"^from ansible_collections\S+ import (\w+)", source, re.M) == ["_names"]
    assert os.path.basename(path) == "_domain.py"
