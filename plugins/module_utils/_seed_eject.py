# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seed leaves the VM once the guest has read it: rum_vm's ``seed_eject``.

Internal to the rum.pool collection: not a public API. A seed can carry a credential (a runner's
JIT config), so it should not stay attached, nor on the host's disk, for the VM's whole life.

How the host learns that the guest has read its seed, with no guest agent: the guest says so with
the only thing it can say through a CD-ROM drive. cloud-init's last stage runs ``GUEST_SCRIPT``
(first in ``runcmd``), which opens the tray of the drive labelled ``cidata``; qemu reports the open
tray to libvirt, which shows ``tray='open'`` on that disk in the live domain XML. Nothing else
gets out of the guest that way, and cloud-init is done with the seed by then.

The host side never waits in the boot path: rum_vm, after starting the VM, writes a small
registration (``<storage_dir>/.seed-eject/<vm>.json``: the domain's UUID, the seed's path, a
deadline) and makes sure one watcher process runs for that storage directory. The watcher looks at
each registered VM about once a second and, when the tray is open, under the VM's lock, removes
the medium from the running and the persistent definition (the drive stays, empty) and deletes
the ISO. It forgets a registration when the VM is gone, has another UUID (the slot was recreated),
is off, has no seed any more, or after the deadline; it exits when no registration is left. So
nothing is left behind when a slot is removed meanwhile: the registration dies with its domain.
Every rum_vm run also checks once, so a later converge ejects a seed whose watcher is gone.

One watcher per directory, never two: it holds ``.watcher.lock`` (flock) while it runs. A
registration is written before trying that lock; the watcher lets go of the lock before it looks
for registrations a last time, so a registration is always seen by one watcher or starts one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import typing as t
import xml.etree.ElementTree as ET

from ansible_collections.rum.pool.plugins.module_utils import _flock as flock

try:
    import libvirt
except ImportError:  # pragma: no cover - the callers check HAS_LIBVIRT first
    libvirt = None

REGISTRY = ".seed-eject"
WATCHER_LOCK = ".watcher.lock"
WATCHER_LOG = "watcher.log"
# The watcher's process name (/proc/<pid>/comm, at most 15 bytes). The webhook service kills what a
# playbook run leaves behind (every process carrying the run's marker in its environment, which a
# forked daemon keeps); it spares a process of this name, which outlives the run on purpose.
WATCHER_NAME = b"rum-seed-watch"
PR_SET_NAME = 15
DEADLINE = 3600  # seconds a guest may take to open the tray
POLL = 1.0
# A guest reads its seed within a minute or two of its start: look every POLL seconds for that
# long, then only every SLOW_POLL (a pool of many slots that never open the tray costs little).
FAST_FOR = 300
SLOW_POLL = 5.0
LOG_LIMIT = 1 << 20

GUEST_PATH = "/usr/local/libexec/rum-seed-read"
# Run as root by cloud-init (runcmd): open the tray of the seed's drive so the host removes it.
GUEST_SCRIPT = """#!/usr/bin/python3
# Written by rum.pool (cloud-init): tell the host the seed was read, by opening the tray of its
# drive (the CD-ROM labelled cidata). The host then removes the medium and deletes the seed.
import fcntl
import os
import subprocess
import time

CDROMEJECT, CDROM_LOCKDOOR, CDROM_DRIVE_STATUS, CDS_TRAY_OPEN = 0x5309, 0x5329, 0x5326, 2
# Nothing in the guest may close the tray again by opening the drive (the kernel's autoclose).
try:
    with open("/proc/sys/dev/cdrom/autoclose", "w") as knob:
        knob.write("0")
except OSError:
    pass
found = subprocess.run(["blkid", "-o", "device", "-t", "LABEL=cidata"], capture_output=True, text=True).stdout.split()
found += subprocess.run(["blkid", "-o", "device", "-t", "LABEL=CIDATA"], capture_output=True, text=True).stdout.split()
for device in sorted(set(d for d in found if os.path.basename(d).startswith("sr"))):
    status = None
    for attempt in range(10):
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, CDROM_LOCKDOOR, 0)  # udev's cdrom_id locks it: unlock, or the drive refuses
            fcntl.ioctl(fd, CDROMEJECT)
            status = fcntl.ioctl(fd, CDROM_DRIVE_STATUS, 0)
        except OSError as exc:
            status = exc
        finally:
            os.close(fd)
        if status == CDS_TRAY_OPEN:
            break
        time.sleep(1)
    if status == CDS_TRAY_OPEN:
        print("rum-seed-read: seed read, opened the tray of " + device, flush=True)
    else:
        print("rum-seed-read: cannot open the tray of %s (drive status %s)" % (device, status), flush=True)
"""


def guest_config(user_data: dict) -> dict:
    """``user_data`` (a cloud-config dict) with the tray opener written and run first in runcmd."""
    out = dict(user_data)
    out["write_files"] = list(out.get("write_files") or []) + [
        {"path": GUEST_PATH, "owner": "root:root", "permissions": "0755", "content": GUEST_SCRIPT}]
    out["runcmd"] = [[GUEST_PATH]] + list(out.get("runcmd") or [])
    return out


# --------------------------------------------------------------------------------------------
# The domain XML


def seed_drive(xml: str, seed: str) -> dict | None:
    """The CD-ROM whose medium is ``seed``: ``{target, bus, tray}``, or None when it holds none."""
    for disk in ET.fromstring(xml).findall("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        if disk.get("device") == "cdrom" and source is not None and source.get("file") == seed and target is not None:
            return {"target": target.get("dev"), "bus": target.get("bus"), "tray": target.get("tray") or "closed"}
    return None


def is_ejected(xml: str | None) -> bool:
    """True when a rum domain's seed drive is empty (its seed was ejected)."""
    if not xml:
        return False
    return any(disk.get("device") == "cdrom" and not _medium(disk) for disk in ET.fromstring(xml).findall("devices/disk"))


def _medium(disk: ET.Element) -> str | None:
    """The file (or device) in a drive; a running domain's empty drive still has ``<source index=...>``."""
    source = disk.find("source")
    return None if source is None else (source.get("file") or source.get("dev") or source.get("name"))


def empty_drive_xml(target: str, bus: str) -> str:
    """The CD-ROM ``target`` without a medium, for virDomainUpdateDeviceFlags."""
    return ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<target dev='{target}' bus='{bus}'/><readonly/></disk>")


def eject(dom, drive: dict, seed: str) -> None:
    """Take the medium out of the running and the persistent domain, then delete the ISO."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    dom.updateDeviceFlags(empty_drive_xml(drive["target"], drive["bus"]), flags)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(seed)


# --------------------------------------------------------------------------------------------
# Registrations


def registry(storage_dir: str) -> str:
    return os.path.join(storage_dir, REGISTRY)


def register(storage_dir: str, *, name: str, uuid: str, uri: str, seed: str, lock: str,
             now: float | None = None, deadline: float = DEADLINE) -> str:
    """Write VM ``name``'s registration (atomically); returns its path."""
    folder = registry(storage_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    entry = {"name": name, "uuid": uuid, "uri": uri, "seed": seed, "lock": lock,
             "deadline": (time.time() if now is None else now) + deadline}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        json.dump(entry, fh)
    os.replace(tmp, path)
    return path


def unregister(storage_dir: str, name: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(registry(storage_dir), f"{name}.json"))
        return True
    return False


def registrations(folder: str) -> list[tuple[str, dict]]:
    """(path, entry) of each registration; unreadable ones are dropped."""
    out = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for file_name in names:
        if not file_name.endswith(".json"):
            continue
        path = os.path.join(folder, file_name)
        try:
            with open(path, encoding="utf-8") as fh:
                out.append((path, json.load(fh)))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(path)
    return out


@contextlib.contextmanager
def try_lock(path: str) -> t.Iterator[bool]:
    """Hold ``path`` the way ``_flock.held`` does, without waiting: yields False when it is busy."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                yield False
                return
            raise
        if not flock.same_file(fd, path):
            yield False  # its holder removed it meanwhile; try again next round
            return
        try:
            yield True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The watcher


class Watcher:
    """Looks after the registrations of one storage directory until none is left."""

    def __init__(self, storage_dir: str, connect: t.Callable[[str], t.Any], *,
                 clock: t.Callable[[], float] = time.time, sleep: t.Callable[[float], None] = time.sleep,
                 log: t.Callable[[str], None] = lambda msg: None) -> None:
        self.folder = registry(storage_dir)
        self.connect = connect
        self.clock = clock
        self.sleep = sleep
        self.log = log
        self.conns: dict[str, t.Any] = {}
        self.next_look: dict[str, float] = {}  # registration path -> when to look at it again

    def _conn(self, uri: str):
        if uri not in self.conns:
            self.conns[uri] = self.connect(uri)
        return self.conns[uri]

    def step(self, path: str, entry: dict) -> str | None:
        """Look at one registration once: why it is done, or None to look again later."""
        name = entry.get("name", "?")
        try:
            conn = self._conn(entry["uri"])
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return "the VM is gone"
                raise
            if dom.UUIDString() != entry["uuid"]:
                return "the VM was made again (another UUID)"
            if not dom.isActive():
                return "the VM is not running"
            drive = seed_drive(dom.XMLDesc(0), entry["seed"])
            if drive is None:
                return "the seed is not in the VM any more"
            if drive["tray"] != "open":
                return "gave up: the guest did not open the tray in time" if self.clock() > entry["deadline"] else None
            with try_lock(entry["lock"]) as locked:
                if not locked:
                    return None  # rum_vm works on this VM now: next round
                dom = conn.lookupByName(name)
                if dom.UUIDString() != entry["uuid"]:
                    return "the VM was made again (another UUID)"
                drive = seed_drive(dom.XMLDesc(0), entry["seed"])
                if drive is None:
                    return "the seed is not in the VM any more"
                eject(dom, drive, entry["seed"])
            return f"ejected the seed and deleted {entry['seed']}"
        except (libvirt.libvirtError, OSError, KeyError) as exc:
            self.conns.pop(entry.get("uri"), None)
            if self.clock() > entry.get("deadline", 0):
                return f"gave up: {exc}"
            self.log(f"{name}: {exc}; trying again")
            return None

    def run_once(self) -> int:
        """One round over the registrations; how many are left."""
        left = 0
        now = self.clock()
        for path, entry in registrations(self.folder):
            if self.next_look.get(path, 0.0) > now:
                left += 1
                continue
            done = self.step(path, entry)
            if done is None:
                left += 1
                started = entry.get("deadline", now) - DEADLINE
                self.next_look[path] = now + (POLL if now - started < FAST_FOR else SLOW_POLL) - 0.05
                continue
            self.next_look.pop(path, None)
            self.log(f"{entry.get('name', '?')}: {done}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return left

    def run(self, lock_fd: int) -> None:
        """Until no registration is left (see the module docstring for the hand-over)."""
        while True:
            if self.run_once():
                self.sleep(POLL)
                continue
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            if not registrations(self.folder):
                return
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # a new watcher took over


def _name_process(name: bytes) -> None:
    """Set this process's name (prctl PR_SET_NAME); nothing happens where that is not possible."""
    with contextlib.suppress(Exception):
        import ctypes  # pylint: disable=import-outside-toplevel  # only the daemon needs it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def _daemon(work: t.Callable[[int], None], lock_fd: int) -> None:
    """Run ``work(lock_fd)`` in a detached process (double fork, new session, no inherited files)."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)  # pylint: disable=protected-access
        os.chdir("/")  # not the caller's directory (Ansible removes a module's temporary one)
        _name_process(WATCHER_NAME)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, lock_fd)
        os.closerange(lock_fd + 1, 1024)
        work(lock_fd)
    finally:
        os._exit(0)  # pylint: disable=protected-access


def ensure_watcher(storage_dir: str, connect: t.Callable[[str], t.Any], *,
                   spawn: t.Callable[[t.Callable[[int], None], int], None] = _daemon) -> bool:
    """Start the directory's watcher unless one runs; True when this call started it."""
    folder = registry(storage_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(folder, WATCHER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # it runs, and sees the new registration before it stops
        log_path = os.path.join(folder, WATCHER_LOG)

        def work(lock_fd: int) -> None:
            with contextlib.suppress(OSError):
                if os.path.getsize(log_path) > LOG_LIMIT:
                    os.unlink(log_path)

            def log(message: str) -> None:
                with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n")
            Watcher(storage_dir, connect, log=log).run(lock_fd)

        spawn(work, fd)
        return True
    finally:
        os.close(fd)
