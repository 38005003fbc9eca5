# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seed's eject: the guest's tray signal in the domain XML, registrations, the watcher's
decisions and its hand-over, against fake domains (no libvirtd, no guest)."""

from __future__ import annotations

import fcntl
import json
import os
import time

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _seed_eject as se
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")

UUID = "6f1c2b52-1111-4a4a-8b8b-000000000001"


def live_xml(seed: str | None, tray: str | None = None) -> str:
    source = f"<source file='{seed}'/>" if seed else ""
    tray_attr = f" tray='{tray}'" if tray else ""
    return f"""<domain type='qemu'><name>ci-hv1-1</name><devices>
  <disk type='file' device='disk'><source file='/vms/ci-hv1-1/disk.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>{source}<target dev='sda' bus='scsi'{tray_attr}/>
    <readonly/></disk>
</devices></domain>"""


class FakeDomain:
    def __init__(self, seed, uuid=UUID, tray=None, active=True):
        self.seed, self.uuid, self.tray, self.active = seed, uuid, tray, active
        self.updates = []

    def UUIDString(self):  # noqa: N802 - libvirt's names
        return self.uuid

    def isActive(self):  # noqa: N802
        return self.active

    def XMLDesc(self, flags=0):  # noqa: N802
        return live_xml(self.seed, self.tray)

    def updateDeviceFlags(self, xml, flags):  # noqa: N802
        self.updates.append((xml, flags))
        self.seed = None


class FakeConn:
    def __init__(self, domains):
        self.domains = domains

    def lookupByName(self, name):  # noqa: N802
        if name not in self.domains:
            error = libvirt.libvirtError(f"Domain not found: no domain with matching name '{name}'")
            error.get_error_code = lambda: libvirt.VIR_ERR_NO_DOMAIN
            raise error
        return self.domains[name]


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "ci-hv1-1").mkdir()
    (tmp_path / "ci-hv1-1" / "seed.iso").write_bytes(b"seed")
    return tmp_path


def register(storage, now=1000.0, **more):
    values = {"name": "ci-hv1-1", "uuid": UUID, "uri": "qemu:///system",
              "seed": str(storage / "ci-hv1-1" / "seed.iso"), "lock": str(storage / ".locks" / "ci-hv1-1.lock")}
    values.update(more)
    return se.register(str(storage), now=now, **values)


def watcher(storage, conn, clock=lambda: 1001.0):
    lines = []
    return se.Watcher(str(storage), lambda uri: conn, clock=clock, sleep=lambda s: None, log=lines.append), lines


# --------------------------------------------------------------------------------------------
# The domain XML and the guest's side


def test_seed_drive_tray_and_ejected():
    seed = "/vms/ci-hv1-1/seed.iso"
    assert se.seed_drive(live_xml(seed), seed) == {"target": "sda", "bus": "scsi", "tray": "closed"}
    assert se.seed_drive(live_xml(seed, "open"), seed)["tray"] == "open"
    assert se.seed_drive(live_xml(seed), "/other.iso") is None
    assert se.seed_drive(live_xml(None), seed) is None
    assert se.is_ejected(live_xml(None)) and not se.is_ejected(live_xml(seed)) and not se.is_ejected(None)
    # a running domain's empty drive keeps a <source index=.../> without a file
    assert se.is_ejected(live_xml(None).replace("<target dev='sda'", "<source index='4'/><target dev='sda'"))
    assert se.empty_drive_xml("sda", "scsi") == ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                                                 "<target dev='sda' bus='scsi'/><readonly/></disk>")


def test_guest_config_opens_the_tray_first_in_runcmd():
    merged = se.guest_config({"runcmd": [["echo", "provisioned"]], "write_files": [{"path": "/x", "content": "y"}]})
    assert merged["runcmd"] == [[se.GUEST_PATH], ["echo", "provisioned"]]
    assert merged["write_files"][-1] == {"path": se.GUEST_PATH, "owner": "root:root", "permissions": "0755",
                                         "content": se.GUEST_SCRIPT}
    assert se.guest_config({})["runcmd"] == [[se.GUEST_PATH]]
    yaml.safe_dump(merged)  # plain data


def test_guest_script_is_python3_that_opens_the_tray_of_the_seed_drive(tmp_path):
    """Not run here: it would turn off the host's CD-ROM autoclose. The booted guest of
    tests/integration/test_isolation.py runs it."""
    compile(se.GUEST_SCRIPT, "rum-seed-read", "exec")
    assert se.GUEST_SCRIPT.startswith("#!/usr/bin/python3\n")
    assert "LABEL=cidata" in se.GUEST_SCRIPT and "/proc/sys/dev/cdrom/autoclose" in se.GUEST_SCRIPT
    # unlock (udev's cdrom_id locks the drive), eject, and check the drive says its tray is open
    assert "CDROMEJECT, CDROM_LOCKDOOR, CDROM_DRIVE_STATUS, CDS_TRAY_OPEN = 0x5309, 0x5329, 0x5326, 2" in se.GUEST_SCRIPT


# --------------------------------------------------------------------------------------------
# The watcher


def test_an_open_tray_is_ejected_under_the_lock_and_the_seed_deleted(storage):
    dom = FakeDomain(str(storage / "ci-hv1-1" / "seed.iso"), tray="open")
    register(storage)
    w, lines = watcher(storage, FakeConn({"ci-hv1-1": dom}))
    assert w.run_once() == 0
    assert len(dom.updates) == 1
    xml, flags = dom.updates[0]
    assert "<source" not in xml and "dev='sda' bus='scsi'" in xml
    assert flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE | \
        libvirt.VIR_DOMAIN_AFFECT_LIVE
    assert not (storage / "ci-hv1-1" / "seed.iso").exists()
    assert lines == [f"ci-hv1-1: ejected the seed and deleted {storage}/ci-hv1-1/seed.iso"]
    assert se.registrations(se.registry(str(storage))) == []
    assert os.listdir(storage / ".locks") == [], "the VM's lock file is removed after use, as _flock does"


def test_a_closed_tray_waits_until_the_deadline(storage):
    dom = FakeDomain(str(storage / "ci-hv1-1" / "seed.iso"))
    register(storage, now=1000.0)
    w, lines = watcher(storage, FakeConn({"ci-hv1-1": dom}))
    assert w.run_once() == 1 and lines == []
    late, lines = watcher(storage, FakeConn({"ci-hv1-1": dom}), clock=lambda: 1000.0 + se.DEADLINE + 1)
    assert late.run_once() == 0
    assert lines == ["ci-hv1-1: gave up: the guest did not open the tray in time"]
    assert dom.updates == [] and (storage / "ci-hv1-1" / "seed.iso").exists()


@pytest.mark.parametrize("domains, said", [
    ({}, "the VM is gone"),
    ({"ci-hv1-1": FakeDomain("/x", uuid="0000")}, "the VM was made again (another UUID)"),
    ({"ci-hv1-1": FakeDomain("/x", active=False)}, "the VM is not running"),
    ({"ci-hv1-1": FakeDomain(None)}, "the seed is not in the VM any more"),
])
def test_a_registration_ends_with_its_vm(storage, domains, said):
    register(storage)
    w, lines = watcher(storage, FakeConn(domains))
    assert w.run_once() == 0
    assert lines == [f"ci-hv1-1: {said}"]
    assert (storage / "ci-hv1-1" / "seed.iso").exists(), "a seed that was not ejected is left to rum_vm"


def test_a_vm_being_worked_on_is_looked_at_again_next_round(storage):
    dom = FakeDomain(str(storage / "ci-hv1-1" / "seed.iso"), tray="open")
    register(storage)
    (storage / ".locks").mkdir()
    holder = os.open(storage / ".locks" / "ci-hv1-1.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    now = [1001.0]
    w, _lines = watcher(storage, FakeConn({"ci-hv1-1": dom}), clock=lambda: now[0])
    try:
        assert w.run_once() == 1 and dom.updates == []
    finally:
        os.close(holder)
    assert w.run_once() == 1 and dom.updates == [], "looked at again a second later, not at once"
    now[0] += 1
    assert w.run_once() == 0 and len(dom.updates) == 1


def test_libvirt_errors_are_retried_until_the_deadline(storage):
    class Broken:
        def lookupByName(self, name):  # noqa: N802
            error = libvirt.libvirtError("cannot connect")
            error.get_error_code = lambda: libvirt.VIR_ERR_SYSTEM_ERROR
            raise error
    register(storage)
    w, lines = watcher(storage, Broken())
    assert w.run_once() == 1 and lines == ["ci-hv1-1: cannot connect; trying again"]
    late, lines = watcher(storage, Broken(), clock=lambda: 1000.0 + se.DEADLINE + 1)
    assert late.run_once() == 0 and lines == ["ci-hv1-1: gave up: cannot connect"]


def test_registrations_are_private_and_broken_ones_dropped(storage):
    path = register(storage)
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    entry = json.loads(open(path, encoding="utf-8").read())
    assert entry["deadline"] == 1000.0 + se.DEADLINE and entry["uuid"] == UUID
    (storage / se.REGISTRY / "broken.json").write_text("{")
    assert [e["name"] for _p, e in se.registrations(se.registry(str(storage)))] == ["ci-hv1-1"]
    assert not (storage / se.REGISTRY / "broken.json").exists()
    assert se.unregister(str(storage), "ci-hv1-1") and not se.unregister(str(storage), "ci-hv1-1")


# --------------------------------------------------------------------------------------------
# One watcher per directory, and the hand-over


def test_one_watcher_at_a_time_and_it_stops_when_nothing_is_left(storage):
    dom = FakeDomain(str(storage / "ci-hv1-1" / "seed.iso"))
    conn = FakeConn({"ci-hv1-1": dom})
    register(storage)
    started = []

    def spawn(work, lock_fd):
        started.append(lock_fd)
        # while this one runs (it holds the lock), nobody starts another
        assert se.ensure_watcher(str(storage), lambda uri: conn, spawn=lambda *a: pytest.fail("a second watcher")) \
            is False
        dom.tray = "open"
        work(lock_fd)

    monkey_watcher = se.Watcher
    try:
        se.Watcher = lambda *a, **k: monkey_watcher(*a, **dict(k, sleep=lambda s: None))
        assert se.ensure_watcher(str(storage), lambda uri: conn, spawn=spawn) is True
    finally:
        se.Watcher = monkey_watcher
    assert len(started) == 1 and dom.updates and se.registrations(se.registry(str(storage))) == []
    log = (storage / se.REGISTRY / se.WATCHER_LOG).read_text()
    assert "ci-hv1-1: ejected the seed" in log
    # the lock is free again: the next registration starts a new watcher
    assert se.ensure_watcher(str(storage), lambda uri: conn, spawn=lambda work, fd: None) is True


def test_a_registration_written_while_the_watcher_stops_is_taken_over(storage):
    """The watcher lets go of its lock, then looks once more: it sees the late registration."""
    seed = str(storage / "ci-hv1-1" / "seed.iso")
    dom = FakeDomain(seed, tray="open")
    w, _lines = watcher(storage, FakeConn({"ci-hv1-1": dom}))
    fd = os.open(storage / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    original = se.registrations
    calls = []

    def late(folder):
        calls.append(folder)
        if len(calls) == 2:  # after the first empty round, while the lock is let go
            register(storage)
        return original(folder)

    se.registrations = late
    try:
        w.run(fd)
    finally:
        se.registrations = original
        os.close(fd)
    assert dom.updates, "the late registration was served by the same watcher"


def test_the_daemon_runs_detached(storage):
    """_daemon forks twice: the caller returns at once, the work runs in another session."""
    out = storage / "daemon.json"
    fd = os.open(storage / "lock", os.O_RDWR | os.O_CREAT)

    def work(lock_fd):
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "sid": os.getsid(0), "lock": lock_fd, "stdin": os.readlink("/proc/self/fd/0"),
                       "comm": open("/proc/self/comm", encoding="ascii").read().strip()}, fh)

    se._daemon(work, fd)  # pylint: disable=protected-access
    os.close(fd)
    for _attempt in range(100):
        if out.exists() and out.read_text():
            break
        time.sleep(0.05)
    info = json.loads(out.read_text())
    assert info["pid"] != os.getpid() and info["sid"] != os.getsid(0)
    assert info["lock"] == fd and info["stdin"] == "/dev/null"
    assert info["comm"] == se.WATCHER_NAME.decode()  # the name the webhook service spares at a run's end


def test_a_vm_is_looked_at_every_second_at_first_then_less_often(storage):
    dom = FakeDomain(str(storage / "ci-hv1-1" / "seed.iso"))
    looks = []
    original = dom.XMLDesc
    dom.XMLDesc = lambda flags=0: looks.append(1) or original(flags)
    register(storage, now=1000.0)
    now = [1000.0]
    w, _lines = watcher(storage, FakeConn({"ci-hv1-1": dom}), clock=lambda: now[0])
    for _second in range(10):  # 10 s, one look a second
        w.run_once()
        now[0] += 1.0
    assert len(looks) == 10
    now[0] = 1000.0 + se.FAST_FOR + 1
    looks.clear()
    for _second in range(10):  # later: one look every SLOW_POLL seconds
        w.run_once()
        now[0] += 1.0
    assert len(looks) == 10 // int(se.SLOW_POLL)
