"""IP selection and domain-type decisions (without libvirt), and libvirt's error printing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import needs

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv

MAC_A = "52:54:00:aa:aa:aa"
MAC_B = "52:54:00:bb:bb:bb"


def _iface(mac, *addrs, family=0):
    return {"hwaddr": mac, "addrs": [{"addr": a, "prefix": 24, "type": family} for a in addrs]}


def test_select_ip_matches_by_mac_and_ignores_other_vms():
    lease = {"vnet0": _iface("52:54:00:00:00:01", "192.168.122.9"), "vnet1": _iface(MAC_A, "192.168.122.50")}
    assert lv.select_ip([("lease", lease)], [MAC_A]) == ("192.168.122.50", "lease")


def test_select_ip_mac_case_insensitive():
    assert lv.select_ip([("lease", {"v": _iface(MAC_A.upper(), "10.0.0.5")})], [MAC_A]) == ("10.0.0.5", "lease")


def test_select_ip_prefers_first_source_then_falls_back():
    lease = {}
    agent = {"eth0": _iface(MAC_A, "127.0.0.1", "169.254.3.3", "192.168.122.77")}
    arp = {"x": _iface(MAC_A, "192.168.122.99")}
    assert lv.select_ip([("lease", lease), ("agent", agent), ("arp", arp)], [MAC_A]) == ("192.168.122.77", "agent")


def test_select_ip_first_mac_wins_over_later_nics():
    lease = {"v1": _iface(MAC_B, "10.1.1.1"), "v0": _iface(MAC_A, "10.0.0.1")}
    assert lv.select_ip([("lease", lease)], [MAC_A, MAC_B]) == ("10.0.0.1", "lease")
    assert lv.select_ip([("lease", {"v1": _iface(MAC_B, "10.1.1.1")})], [MAC_A, MAC_B]) == ("10.1.1.1", "lease")


def test_select_ip_skips_ipv6_for_ipv4_and_finds_none():
    lease = {"v": _iface(MAC_A, "fd00::5", family=1)}
    assert lv.select_ip([("lease", lease)], [MAC_A]) == (None, None)
    assert lv.select_ip([("lease", lease)], [MAC_A], family="ipv6") == ("fd00::5", "lease")
    assert lv.select_ip([], [MAC_A]) == (None, None)


def _modules(tmp_path, *names):
    d = tmp_path / "module"
    d.mkdir()
    for n in names:
        (d / n).mkdir()
    return str(d)


def test_kvm_usable_rejects_pvm(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    ok, why = lv.kvm_usable(_modules(tmp_path, "kvm", "kvm_pvm"), str(dev))
    assert not ok and "kvm_pvm" in why


def test_kvm_usable_accepts_intel(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    assert lv.kvm_usable(_modules(tmp_path, "kvm", "kvm_intel"), str(dev)) == (True, "kvm_intel is loaded")


def test_kvm_usable_without_device(tmp_path):
    ok, why = lv.kvm_usable(str(tmp_path), os.path.join(str(tmp_path), "missing"))
    assert not ok and "does not exist" in why


def test_resolve_domain_type():
    assert lv.resolve_domain_type("qemu", probe=lambda: (True, "x")) == ("qemu", "requested")
    assert lv.resolve_domain_type("kvm", probe=lambda: (False, "x")) == ("kvm", "requested")
    assert lv.resolve_domain_type("auto", "<domain type='kvm'/>", probe=lambda: (True, "kvm_amd is loaded"))[0] == "kvm"
    kind, why = lv.resolve_domain_type("auto", "<domain type='kvm'/>", probe=lambda: (False, "only kvm_pvm"))
    assert kind == "qemu" and "kvm_pvm" in why
    # usable module but libvirt offers no kvm domain type
    assert lv.resolve_domain_type("auto", "<domain type='qemu'/>", probe=lambda: (True, "ok"))[0] == "qemu"


class FakeDom:
    def __init__(self, stays_on_for):
        self.polls = 0
        self.stays_on_for = stays_on_for
        self.destroyed = False
        self.presses = 0

    def isActive(self):
        if self.destroyed:
            return False
        return self.polls < self.stays_on_for

    def shutdown(self):
        self.presses += 1

    def destroy(self):
        self.destroyed = True

    def name(self):
        return "fake"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_shutdown_acpi_then_forced():
    clock = Clock()
    polite = FakeDom(stays_on_for=3)

    def sleep(s, dom=polite):
        clock.now += s
        dom.polls += 1
    assert lv.shutdown(polite, 10, clock=clock, sleep=sleep) == "acpi"
    assert not polite.destroyed and polite.presses >= 1

    clock2 = Clock()
    stubborn = FakeDom(stays_on_for=10 ** 6)

    def sleep2(s):
        clock2.now += s
        stubborn.polls += 1
    assert lv.shutdown(stubborn, 5, clock=clock2, sleep=sleep2) == "forced"
    assert stubborn.destroyed
    assert clock2.now >= 5


# --- a recreated VM: same MAC, new DHCP client id, the old lease still listed ------------------------

def _lease(mac, ip, expiry, clientid="ff:00", kind=0):
    return {"mac": mac, "ipaddr": ip, "expirytime": expiry, "clientid": clientid, "type": kind, "prefix": 24}


def test_newest_lease_wins_over_an_earlier_incarnations_lease():
    table = [_lease(MAC_A, "192.168.122.146", 1000), _lease(MAC_B, "192.168.122.9", 5000),
             _lease(MAC_A.upper(), "192.168.122.145", 3000), _lease(MAC_A, "192.168.122.147", 2000)]
    entry = lv.newest_leases(table, MAC_A)
    assert [a["addr"] for a in entry["addrs"]] == ["192.168.122.145", "192.168.122.147", "192.168.122.146"]
    assert lv.select_ip([("lease", {MAC_A: entry})], [MAC_A]) == ("192.168.122.145", "lease")


def test_newest_leases_of_an_unknown_mac_is_empty():
    assert lv.newest_leases([_lease(MAC_B, "10.0.0.2", 1)], MAC_A) == {"hwaddr": MAC_A, "addrs": []}


class _Net:
    def __init__(self, leases, bridge="virbr0"):
        self.leases, self.bridge = leases, bridge

    def bridgeName(self):  # noqa: N802 - libvirt's name
        return self.bridge

    def DHCPLeases(self, mac=None):  # noqa: N802 - libvirt's name
        return [lease for lease in self.leases if mac is None or lease["mac"] == mac]


class _Conn:
    def __init__(self, nets):
        self.nets = nets

    def networkLookupByName(self, name):  # noqa: N802 - libvirt's name
        if name not in self.nets:
            raise lv.libvirt.libvirtError(f"Network not found: no network with matching name '{name}'")
        return self.nets[name]


class _Dom:
    def __init__(self, conn):
        self.conn = conn

    def connect(self):
        return self.conn


def test_release_leases_releases_every_ipv4_lease_of_the_vm_with_its_client_id():
    net = _Net([_lease(MAC_A, "192.168.122.10", 1, "ff:aa"), _lease(MAC_A, "192.168.122.11", 2, ""),
                _lease(MAC_A, "fd00::1", 3, "", kind=1), _lease(MAC_B, "192.168.122.12", 4)])
    calls = []

    def run(argv):
        calls.append(list(argv))
        return (1, "boom") if argv[2] == "192.168.122.11" else (0, "")

    released, problems = lv.release_leases(_Dom(_Conn({"default": net})), [(MAC_A, "default"), (MAC_B, "gone")],
                                           run=run, which=lambda name: f"/usr/bin/{name}")
    assert calls == [["/usr/bin/dhcp_release", "virbr0", "192.168.122.10", MAC_A, "ff:aa"],
                     ["/usr/bin/dhcp_release", "virbr0", "192.168.122.11", MAC_A]]
    assert released == ["192.168.122.10"]
    assert problems[0] == "dhcp_release 192.168.122.11 on virbr0 exited 1: boom"
    assert problems[1].startswith("network gone: ") and "no network with matching name 'gone'" in problems[1]


def test_release_leases_without_dhcp_release_says_what_to_install():
    released, problems = lv.release_leases(_Dom(_Conn({})), [(MAC_A, "default")], which=lambda name: None)
    assert released == [] and "install dnsmasq-utils" in problems[0]
    assert lv.release_leases(_Dom(_Conn({})), [], which=lambda name: None) == ([], [])


# -- libvirt's own error printing -------------------------------------------------------------------

_LOOKUP_MISSING = """
{setup}
try:
    conn.lookupByName("rum-no-such-domain")
except libvirt.libvirtError:
    pass
"""


def _stderr_of(setup: str) -> str:
    code = _LOOKUP_MISSING.format(setup=setup)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return proc.stderr


def test_connect_silences_libvirts_default_error_printing():
    """An error the collection handles prints nothing (it printed e.g. 'libvirt: error : internal
    error: wrong nlmsg len' under the inventory plugin); plain libvirt prints it."""
    needs.module("libvirt", "pip install libvirt-python")
    plain = _stderr_of("import libvirt\nconn = libvirt.open('test:///default')")
    assert "libvirt:" in plain and "Domain not found" in plain
    ours = _stderr_of("import libvirt\nfrom ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv\n"
                      "conn = lv.connect('test:///default')\nassert lv.lookup(conn, 'rum-no-such-domain') is None")
    assert ours == ""


# -- virtiofs ---------------------------------------------------------------------------------------

def test_find_virtiofsd_reads_fs_descriptors(tmp_path):
    binary = tmp_path / "virtiofsd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    etc, share = tmp_path / "etc", tmp_path / "share"
    etc.mkdir()
    share.mkdir()
    (etc / "10-gpu.json").write_text('{"type": "gpu", "binary": "%s"}' % binary)
    (etc / "20-broken.json").write_text("{not json")
    (etc / "30-gone.json").write_text('{"type": "fs", "binary": "/nonexistent/virtiofsd"}')
    assert lv.find_virtiofsd([str(etc), str(share)]) is None
    (share / "50-qemu-virtiofsd.json").write_text('{"type": "fs", "binary": "%s"}' % binary)
    assert lv.find_virtiofsd([str(etc), str(share)]) == str(binary)


def test_this_host_has_virtiofsd():
    """The integration tests boot guests with virtiofs shares (make setup installs qemu)."""
    assert lv.find_virtiofsd(), "no virtiofsd for libvirt: apt-get install qemu-system-x86 (or virtiofsd)"


def test_local_uris():
    assert lv.is_local_uri("qemu:///system") and lv.is_local_uri("qemu+unix:///session")
    assert lv.is_local_uri("test:///default")
    assert not lv.is_local_uri("qemu+ssh://root@h1/system")


class _Failing(lv.libvirt.libvirtError if lv.libvirt else Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code

    def get_error_code(self):
        return self.code


class _Defined:
    """A domain of listAllDomains: its XML per flag, or an error."""

    def __init__(self, name, active=False, error=None):
        self.name_, self.active, self.error = name, active, error

    def name(self):
        return self.name_

    def isActive(self):  # noqa: N802 - libvirt's name
        return self.active

    def XMLDesc(self, flags):  # noqa: N802 - libvirt's name
        if self.error:
            raise self.error
        return f"<domain><name>{self.name_}</name><live>{int(not flags)}</live></domain>"


class _Domains:
    def __init__(self, *doms):
        self.doms = doms

    def listAllDomains(self, flags):  # noqa: N802 - libvirt's name
        assert flags == 0
        return list(self.doms)


def test_definitions_gives_each_domain_its_persistent_and_live_xml_and_skips_one_gone_meanwhile():
    gone = _Failing(lv.libvirt.VIR_ERR_NO_DOMAIN, "Domain not found")
    found = list(lv.definitions(_Domains(_Defined("off"), _Defined("on", active=True), _Defined("gone", error=gone))))
    assert found == [("off", ["<domain><name>off</name><live>0</live></domain>"]),
                     ("on", ["<domain><name>on</name><live>0</live></domain>",
                             "<domain><name>on</name><live>1</live></domain>"])]


def test_definitions_names_the_domain_it_could_not_read():
    broken = _Failing(lv.libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: boom")
    with pytest.raises(lv.LibvirtError) as info:
        list(lv.definitions(_Domains(_Defined("ok"), _Defined("bad", error=broken))))
    assert str(info.value) == "read domain 'bad': internal error: boom"
