# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Converge one rum VM: image, overlay, seed, domain definition, power state, readiness.

Internal to the rum.pool collection: not a public API. ``VMManager`` reads what exists, works out
what has to change, and (outside check mode) makes it so, rolling back what it created when a
create fails. The libvirt connection, the image cache and the clock are passed in for tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import typing as t
from dataclasses import asdict, dataclass

from ansible_collections.rum.pool.plugins.module_utils import _disk as disk
from ansible_collections.rum.pool.plugins.module_utils import _domain as domain
from ansible_collections.rum.pool.plugins.module_utils import _flock as flock
from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _names as names
from ansible_collections.rum.pool.plugins.module_utils import _network as network
from ansible_collections.rum.pool.plugins.module_utils import _nftables as nftables
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nwfilter
from ansible_collections.rum.pool.plugins.module_utils import _ready as ready
from ansible_collections.rum.pool.plugins.module_utils import _seed_eject as seed_eject
from ansible_collections.rum.pool.plugins.module_utils import _storage as storage
from ansible_collections.rum.pool.plugins.module_utils._vm_options import (
    DEFAULT_MOUNT_DRIVER,
    MULTI_DRIVE_FILESYSTEMS,
    RUN_ONLY,
    SEED_BUSES,
    STATES,
    VMParams,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.rum.pool.plugins.module_utils import _image as image


def _maker(name: str) -> t.Any:
    """The image cache, the seed ISO or the cloud-init helpers, imported at their first use.

    Only making a VM needs them; starting, stopping, renaming or removing one does not (a slot's
    recycle starts a staged VM), and their imports (pycdlib, PyYAML, Ansible's urls with
    cryptography) are a tenth of a second of every module start. Also this module's attributes
    ``image``, ``seed`` and ``cloudinit`` (PEP 562), as when they were imported at the top.
    """
    # pylint: disable=import-outside-toplevel
    if name == "image":
        from ansible_collections.rum.pool.plugins.module_utils import _image as made
    elif name == "seed":
        from ansible_collections.rum.pool.plugins.module_utils import _seed as made
    elif name == "cloudinit":
        from ansible_collections.rum.pool.plugins.module_utils import _cloudinit as made
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return made


__getattr__ = _maker

MANAGED_BY = "rum.pool"


class VMError(Exception):
    """rum_vm could not do what was asked; the message names the VM, the step and the cause."""


@dataclass
class Paths:
    storage: str
    vm_dir: str
    overlay: str
    seed: str
    serial_log: str
    nvram: str
    identity: str
    lock: str

    @classmethod
    def for_vm(cls, storage_dir: str, name: str) -> "Paths":
        vm_dir = storage.vm_dir(storage_dir, name)
        return cls(storage=storage_dir, vm_dir=vm_dir,
                   overlay=os.path.join(vm_dir, "disk.qcow2"),
                   seed=os.path.join(vm_dir, "seed.iso"),
                   serial_log=os.path.join(vm_dir, "serial.log"),
                   nvram=os.path.join(vm_dir, "nvram.fd"),
                   identity=os.path.join(vm_dir, "id_ed25519"),
                   lock=os.path.join(storage_dir, ".locks", f"{name}.lock"))

    def drive(self, name: str) -> str:
        return os.path.join(self.vm_dir, f"drive-{name}.qcow2")


def validate(p: VMParams) -> None:
    """Reject bad input before anything is made; messages name the option and the value."""
    where = f"rum_vm '{p.name}'"
    if not names.VM_NAME.ok(p.name):
        raise VMError(f"rum_vm: invalid name {p.name!r}: {names.VM_NAME.hint}")
    if p.state not in STATES:
        raise VMError(f"{where}: state must be one of {', '.join(STATES)}, got {p.state!r}")
    if p.state == "absent":
        return
    if p.vcpus < 1:
        raise VMError(f"{where}: vcpus must be at least 1, got {p.vcpus}")
    if p.memory_mb < 256:
        raise VMError(f"{where}: memory_mb must be at least 256, got {p.memory_mb}")
    if p.image is not None and not p.image.get("url"):
        raise VMError(f"{where}: image.url is required when image is given")
    hostname = default_hostname(p)
    if not names.is_hostname(hostname):
        raise VMError(f"{where}: invalid hostname {hostname!r}")
    if p.seed_bus not in SEED_BUSES:
        raise VMError(f"{where}: seed_bus must be one of {', '.join(SEED_BUSES)}, got {p.seed_bus!r}")
    if p.seed_bus == "ide" and "q35" in p.machine:
        raise VMError(f"{where}: seed_bus=ide needs machine 'pc' (q35 has no IDE controller)")
    if p.wait_for not in ready.WAIT_LEVELS:
        raise VMError(f"{where}: wait_for must be one of {', '.join(ready.WAIT_LEVELS)}")
    if len(p.drives) > 24:
        raise VMError(f"{where}: at most 24 drives, got {len(p.drives)}")
    drive_names = [d.get("name") for d in p.drives]
    for n in drive_names:
        if not names.VM_NAME.ok(n):
            raise VMError(f"{where}: drives[].name {n!r} is not a valid name")
    if len(set(drive_names)) != len(drive_names):
        raise VMError(f"{where}: drive names must be unique, got {drive_names}")
    targets = [m.get("target") for m in p.mounts]
    for tgt in targets:
        if not tgt or not tgt.startswith("/"):
            raise VMError(f"{where}: mounts[].target must be an absolute path, got {tgt!r}")
    targets += [d["mount"] for d in p.drives if d.get("mount")] + [f.get("mount") or "" for f in p.filesystems]
    norm = sorted(os.path.normpath(x) + "/" for x in targets)
    for a, b in zip(norm, norm[1:]):
        if b.startswith(a):
            raise VMError(f"{where}: mount targets must not repeat or nest: {a.rstrip('/')} and {b.rstrip('/')}")
    for index, m in enumerate(p.mounts):
        try:
            source = resolve_mount_source(m.get("source") or "", p.project_dir)
        except ValueError as exc:
            raise VMError(f"{where}: mounts[{index}].source: {exc}") from None
        if not os.path.isdir(source):
            raise VMError(f"{where}: mounts[].source {m.get('source')!r} is not an existing directory"
                          + (f" ({source})" if source != m.get("source") else ""))
        if m.get("readonly") and mount_driver(m) == "virtiofs":
            raise VMError(f"{where}: mounts[{index}] ({m['target']}): libvirt cannot share a directory read-only "
                          "with virtiofs; set driver: 9p (the guest kernel needs 9p, which Debian's cloud "
                          "kernels lack) or readonly: false")
    if p.ports and not any(i.get("user") for i in (p.interfaces or [])):
        raise VMError(f"{where}: ports need a user-mode interface (interfaces: [{{user: true}}])")
    seen = set()
    for port in p.ports:
        key = (port.get("host"), port.get("bind") or "127.0.0.1")
        if key in seen:
            raise VMError(f"{where}: ports: host port {key[0]} on {key[1]} is forwarded twice")
        seen.add(key)
    for iface in p.interfaces or []:
        kinds = [k for k in ("network", "bridge", "user") if iface.get(k)]
        if len(kinds) != 1:
            raise VMError(f"{where}: each interface needs exactly one of network, bridge or user=true, got {iface}")
    validate_filter(p, where)
    validate_parity(p, where)


def default_hostname(p: VMParams) -> str:
    """The hostname, defaulting to the VM name made host-name safe (no underscores)."""
    return p.hostname or p.name.replace("_", "-")


def mount_driver(m: dict) -> str:
    return m.get("driver") or DEFAULT_MOUNT_DRIVER


def _mount_tag(m: dict) -> str:
    return m.get("tag") or m["target"].strip("/").replace("/", "_") or "root"


# -- the options a rum.toml needs: project paths, addresses, isolated networks, multi-drive file systems --

def resolve_mount_source(source: str, project_dir: str | None,
                         run: t.Callable[[list], tuple[int, str, str]] | None = None) -> str:
    """A share's host directory as rum resolved it: ``.`` is ``project_dir``, ``git`` the top of the git
    work tree ``project_dir`` is in, a relative path is relative to ``project_dir``; raises ValueError."""
    if os.path.isabs(source):
        return os.path.normpath(source)
    if not project_dir:
        raise ValueError(f"{source!r} is relative: set project_dir (rum: the rum.toml's folder)")
    base = os.path.abspath(project_dir)
    if source == ".":
        return base
    if source != "git":
        return os.path.normpath(os.path.join(base, source))
    rc, out, err = (run or _run)(["git", "-C", base, "rev-parse", "--show-toplevel"])
    if rc != 0:
        raise ValueError(f"'git': the top of the git work tree of {base} is unknown: "
                         f"{(err or out).strip() or f'git exited {rc}'}")
    return os.path.normpath(out.strip())


def validate_parity(p: VMParams, where: str) -> None:
    """Checks of the options rum's fields became: fixed addresses, isolated networks, the SSH
    interface, the default mount and file systems over several drives."""
    networks = []
    for index, iface in enumerate(p.interfaces or []):
        what = f"{where}: interfaces[{index}]"
        if (iface.get("ip") or iface.get("isolated")) and not iface.get("network"):
            raise VMError(f"{what}: ip and isolated need a libvirt network (interfaces[].network)")
        if iface.get("ip"):
            try:
                ipaddress.IPv4Address(iface["ip"])
            except ValueError:
                raise VMError(f"{what}.ip {iface['ip']!r} is not an IPv4 address") from None
        if iface.get("network"):
            networks.append(iface["network"])
    if p.ssh_interface is not None and p.ssh_interface not in networks:
        raise VMError(f"{where}: ssh_interface {p.ssh_interface!r} is not the network of one of interfaces[] "
                      f"(networks: {', '.join(networks) or 'none'})")
    if sum(bool(m.get("default")) for m in p.mounts) > 1:
        raise VMError(f"{where}: at most one of mounts[] can be the default (working directory) mount")
    own_fs = {d.get("name") for d in p.drives if d.get("filesystem")}
    known = {d.get("name") for d in p.drives}
    used: dict[str, int] = {}
    for index, fs in enumerate(p.filesystems):
        what = f"{where}: filesystems[{index}]"
        if fs.get("type") not in MULTI_DRIVE_FILESYSTEMS:
            raise VMError(f"{what}.type must be one of {', '.join(MULTI_DRIVE_FILESYSTEMS)}, got {fs.get('type')!r}")
        if not fs.get("drives"):
            raise VMError(f"{what}.drives: name at least one of drives[]")
        for name in fs["drives"]:
            if name not in known:
                raise VMError(f"{what}.drives: {name!r} is not one of drives[] ({', '.join(sorted(known)) or 'none'})")
            if name in own_fs:
                raise VMError(f"{what}.drives: drive {name!r} already has a filesystem of its own (drives[].filesystem)")
            if name in used:
                raise VMError(f"{what}.drives: drive {name!r} is already used by filesystems[{used[name]}]")
            used[name] = index
        if not str(fs.get("mount") or "").startswith("/"):
            raise VMError(f"{what}.mount must be an absolute path, got {fs.get('mount')!r}")
        if fs.get("pool") is not None and fs["type"] != "zfs":
            raise VMError(f"{what}.pool is only for type zfs")


def guest_filesystems(p: VMParams, drives: list[dict]) -> list[dict]:
    """``filesystems`` for the cloud-config: drive names become the guest's devices (``drives`` as
    VMManager attaches them); a zfs pool is named after its first drive unless given (rum's rule)."""
    device = {d["name"]: f"/dev/{d['target']}" for d in drives}
    return [{"type": fs["type"], "devices": [device[name] for name in fs["drives"]], "target": fs["mount"],
             "mode": fs.get("mode"), "pool": (fs.get("pool") or fs["drives"][0]) if fs["type"] == "zfs" else None}
            for fs in p.filesystems]


def ssh_mac(p: VMParams, macs: list[str], interfaces: list[dict]) -> str | None:
    """The MAC of the NIC whose address SSH uses (``ssh_interface``), or None for the first NIC's."""
    if p.ssh_interface is None:
        return None
    return next(mac for mac, iface in zip(macs, interfaces) if iface.get("network") == p.ssh_interface)


def config_hash(p: VMParams) -> str:
    """Hash of everything that shapes the VM (not its power state or waiting)."""
    data = {k: v for k, v in asdict(p).items() if k not in RUN_ONLY}
    raw = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def ssh_config_snippet(name: str, host: str | None, port: int, user: str, identity: str | None) -> str:
    if not host:
        return ""
    lines = [f"Host {name}", f"  HostName {host}", f"  Port {port}", f"  User {user}"]
    if identity:
        lines += [f"  IdentityFile {identity}", "  IdentitiesOnly yes"]
    lines += ["  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  LogLevel ERROR"]
    return "\n".join(lines) + "\n"


def read_meta(xml: str) -> dict:
    """rum's domain metadata with its JSON-valued entries decoded ({} when not rum-managed)."""
    meta = domain.read_metadata(xml) or {}
    for key in ("ports", "paths", "reservations"):
        if isinstance(meta.get(key), str):
            try:
                meta[key] = json.loads(meta[key] or "null")
            except ValueError:
                meta[key] = None
    return meta


def ssh_forward(meta: dict) -> tuple[str, int] | None:
    """(bind, host port) forwarded to the guest's port 22 in user-mode networking, if any."""
    for port in meta.get("ports") or []:
        if int(port.get("guest", 0)) == 22:
            return port.get("bind") or "127.0.0.1", int(port["host"])
    return None


def describe(dom, *, meta: dict | None = None, with_ip: bool = True) -> dict:
    """What rum_vm, rum_vm_info and the inventory plugin report about one domain."""
    xml = lv.inactive_xml(dom)
    meta = meta if meta is not None else read_meta(xml)
    macs = domain.domain_macs(xml)
    st = lv.state_name(dom)
    ip, source = (lv.discover_ip(dom, macs, domain.domain_networks(xml)) if with_ip and st == "running"
                  else (None, None))
    fwd = ssh_forward(meta)
    host, port = (fwd if fwd else (ip, 22))
    if meta.get("ssh_mac"):  # ssh_interface: that NIC's address, whatever the first NIC has
        host, port = (lv.discover_ip(dom, [meta["ssh_mac"]], domain.domain_networks(xml))[0]
                      if with_ip and st == "running" else None), 22
    user = meta.get("ssh_user") or "rum"
    identity = meta.get("identity_file") or None
    name = dom.name()
    info = {
        "name": name,
        "uuid": dom.UUIDString(),
        "state": st,
        "domain_type": domain.domain_type(xml),
        "autostart": bool(dom.autostart()),
        "mac": macs[0] if macs else None,
        "macs": macs,
        "ip": ip,
        "ip_source": source,
        "labels": meta.get("labels") or {},
        "managed": bool(meta),
        "ssh": {"host": host, "port": port, "user": user, "identity_file": identity},
        "ssh_command": (" ".join([meta.get("ssh_client") or "ssh"] + ready.ssh_argv(host, port, user, identity, "")[1:-1])
                        if host else None),
        "ssh_config": ssh_config_snippet(name, host, port, user, identity),
        "paths": meta.get("paths") or {},
        "config_hash": meta.get("config_hash"),
    }
    return info


@contextlib.contextmanager
def vm_lock(path: str, check_mode: bool) -> t.Iterator[None]:
    """One converge per VM at a time on a host (two runs for the same slot must not interleave).

    The lock file is removed when the run ends (see ``_flock``); check mode makes no directory.
    """
    if check_mode and not os.path.isdir(os.path.dirname(path)):
        yield
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with flock.held(path):
        yield


class VMManager:
    # where libvirt's virtiofsd is (tests replace it)
    find_virtiofsd = staticmethod(lv.find_virtiofsd)
    # runs nft with a script on stdin (None: _nftables' own; tests replace it)
    run_nft: t.Callable[[list, str], tuple[int, str, str]] | None = None
    # network_filter with the nftables engine: (policy id, rules, bridge of each network)
    _hold: tuple[str, list[str], dict[str, str]] | None = None

    def __init__(self, params: VMParams, *, check_mode: bool = False,
                 connect: t.Callable[[str], t.Any] = lv.connect,
                 image_cache: t.Any = None,
                 log: t.Callable[[str], None] = lambda msg: None,
                 warn: t.Callable[[str], None] = lambda msg: None,
                 run: t.Callable[[list], tuple[int, str, str]] | None = None,
                 changes: list | None = None) -> None:
        validate(params)
        self.p = params
        self.check_mode = check_mode
        self.connect = connect
        self.log = log
        self.warn = warn
        self.run_cmd = run or _run
        self.storage_dir = params.storage_dir or storage.default_storage_dir(params.uri)
        self.cache_dir = params.image_cache_dir or storage.default_image_cache(params.uri)
        self.image_cache = image_cache
        self.paths = Paths.for_vm(self.storage_dir, params.name)
        self.changes: list[str] = changes if changes is not None else []
        self._undo: list[t.Callable[[], None]] = []
        self._made_networks: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"rum_vm '{self.p.name}'"

    def _changed(self, what: str) -> None:
        self.changes.append(what)
        self.log(f"{self.where}: {what}")

    def _fail(self, step: str, exc: Exception) -> VMError:
        return VMError(f"{self.where}: {step}: {exc}")

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> dict:
        conn = self.connect(self.p.uri)
        try:
            with vm_lock(self.paths.lock, self.check_mode):
                dom = lv.lookup(conn, self.p.name)
                if dom is not None and not domain.is_rum_managed(lv.inactive_xml(dom)):
                    raise VMError(f"{self.where}: a domain of that name exists on {self.p.uri} but was not "
                                  "created by rum.pool (no rum metadata); refusing to touch it")
                self._check_origin(dom)
                if self.p.state == "absent":
                    return self._absent(conn, dom)
                creating = dom is None
                try:
                    return self._present(conn, dom)
                except Exception:
                    if creating and not self.check_mode:
                        self._rollback()
                    raise
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _rollback(self) -> None:
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):
                undo()
        self._undo.clear()

    # -- absent ----------------------------------------------------------------------------
    def _absent(self, conn, dom) -> dict:
        before = "absent"
        folders = [self.paths.vm_dir]
        if dom is not None:
            before = lv.state_name(dom)
            xml = lv.inactive_xml(dom)
            folders += recorded_dir(xml, self.storage_dir)
            self._changed("remove domain")
            if not self.check_mode:
                lv.destroy(dom)
                self._release_leases(dom)
                lv.undefine(dom)
            named = own_filters(xml)  # by the persistent definition, read above
            self._forget(conn, named)
            if self._release_taps(xml):  # a filter the running guest kept when it switched engines
                self._forget(conn, [f for f in self._orphan_filter(conn) if f not in named], seed_watch=False)
            self._release_networks(conn, xml)
        else:
            self._forget(conn, self._orphan_filter(conn), seed_watch=False)
            self._prune_taps(conn)
            self._release_left(conn)
        for folder in dict.fromkeys(folders):
            link = os.path.islink(folder)  # rum_slots' link to a generation's folder, which has its own entry
            if link or os.path.isdir(folder):
                self._changed(f"remove {folder}")
                if not self.check_mode:
                    os.unlink(folder) if link else shutil.rmtree(folder)
        return self._result(None, diff={"before": f"state: {before}\n", "after": "state: absent\n"})

    # -- present / running / stopped / restarted ---------------------------------------------
    def _present(self, conn, dom) -> dict:
        p = self.p
        if not p.image:
            if dom is None:
                raise VMError(f"{self.where}: no such VM on {p.uri}, and image.url is required to create it")
            self._refilter(conn, dom)
            return self._power_only(dom)
        if storage.is_system_uri(p.uri):
            for option, path in (("storage_dir", self.storage_dir), ("image_cache_dir", self.cache_dir)):
                problem = storage.check_qemu_access(path)
                if problem:
                    raise VMError(f"{self.where}: {option} {path}: {problem}")
        self._check_networks(conn)
        self._network_filter(conn)
        self._check_virtiofsd()
        domain_type, why = lv.resolve_domain_type(p.domain_type, self._caps(conn))
        if p.domain_type == "auto":
            self.log(f"{self.where}: domain type {domain_type} ({why})")

        base = self._image()
        if p.reset and dom is not None:
            self._reset(dom)
        self._ensure_dir()
        identity = self._ssh_key()
        self._overlay(base)
        drives = self._drives()

        before_xml = lv.inactive_xml(dom) if dom is not None else None
        macs = self._macs(before_xml)
        reservations = self._reserve_addresses(conn, macs)
        self._seed_gone = seed_eject.is_ejected(before_xml) and not p.reset
        seed_result = {} if self._seed_gone else self._seed(identity, macs, drives)

        spec = self._spec(domain_type, macs, drives, identity,
                          uuid=domain.domain_uuid(before_xml) if before_xml else None, reservations=reservations)
        self._filter_and_seed(spec)
        try:
            xml = domain.build_xml(spec)
        except domain.DomainError as exc:
            raise self._fail("domain definition", exc) from exc
        after_c = domain.canonical(xml)
        before_c = domain.canonical(before_xml) if before_xml else None
        definition_changed = before_c != after_c
        if before_c is not None:  # apply_changes=fail refuses before the definition is touched
            self._refuse_change_to_running(dom, domain.restart_changes(before_c, after_c))
        if definition_changed:
            self._changed("define domain" if before_c is None else "redefine domain")
            if not self.check_mode:
                dom = lv.define(conn, xml, p.name)
                if before_c is None:
                    self._undo.append(lambda d=dom: lv.undefine(d))
            if before_xml:
                self._release_networks(conn, before_xml, keep={i.get("network") for i in self._interfaces()},
                                       keep_reservations={tuple(pair) for pair in reservations})
        autostart = f"autostart {'on' if p.autostart else 'off'}"
        if dom is not None and not self.check_mode:
            if lv.set_autostart(dom, p.autostart):
                self._changed(autostart)
        elif self.check_mode and bool(p.autostart) != bool(dom is not None and dom.autostart()):
            self._changed(autostart)  # what set_autostart would change

        self._filters_live(conn, dom, before_c, after_c)
        state_before = lv.state_name(dom) if dom is not None else "absent"
        self._power(dom, state_before, domain.restart_changes(before_c, after_c) if before_c else [])

        diff = _diff(before_c, after_c, state_before, self._expected_state(state_before))
        waited = {}
        if p.state in ("running", "restarted") and p.wait_for != "none" and not self.check_mode:
            waited = self._wait(dom, identity)
        self._guard_guest(dom)
        self._undo.clear()  # past this point a create succeeded; nothing to roll back
        return self._result(dom, diff=diff, seed=seed_result, base=base, waited=waited)

    def _power_only(self, dom) -> dict:
        """state=stopped/running/restarted on an existing VM without restating its definition."""
        before = lv.state_name(dom)
        self._power(dom, before, [])
        self._guard_guest(dom)
        waited = {}
        if self.p.state in ("running", "restarted") and self.p.wait_for != "none" and not self.check_mode:
            identity = self.paths.identity if os.path.exists(self.paths.identity) else None
            waited = self._wait(dom, identity)
        diff = {"before": f"state: {before}\n", "after": f"state: {self._expected_state(before)}\n"}
        return self._result(dom, diff=diff, waited=waited)

    def _caps(self, conn) -> str | None:
        try:
            return conn.getCapabilities()
        except Exception:  # capabilities are only a hint for 'auto'
            return None

    def _check_virtiofsd(self) -> None:
        """Refuse virtiofs shares up front where libvirt would find no virtiofsd to start them."""
        virtiofs = [m for m in self.p.mounts if mount_driver(m) == "virtiofs"]
        if not virtiofs or not lv.is_local_uri(self.p.uri) or self.find_virtiofsd():
            return
        raise VMError(f"{self.where}: mounts {', '.join(m['target'] for m in virtiofs)} use driver virtiofs, "
                      "but this host has no virtiofsd for libvirt (no vhost-user descriptor of type fs naming "
                      f"an existing binary in {', '.join(lv.VHOST_USER_DIRS)}); install it (Debian 12: "
                      "qemu-system-common ships /usr/lib/qemu/virtiofsd; Debian 13: apt-get install virtiofsd) "
                      "or set driver: 9p for guests whose kernel has 9p")

    def _check_networks(self, conn) -> None:
        for iface in self._interfaces():
            net = iface.get("network")
            if not net:
                continue
            exists, active = lv.network_exists(conn, net)
            if not exists and iface.get("isolated"):
                self._create_network(conn, net, iface.get("ip"))
                continue
            if not exists:
                known = sorted(conn.listNetworks() + conn.listDefinedNetworks())
                raise VMError(f"{self.where}: libvirt network {net!r} does not exist on {self.p.uri} "
                              f"(networks there: {', '.join(known) or 'none'})")
            if not active:
                self._changed(f"start libvirt network {net}")
                if not self.check_mode:
                    lv.ensure_network_active(conn, net)

    # -- isolated networks and fixed addresses (rum's [[network.interfaces]]) --------------------
    def _create_network(self, conn, name: str, ip: str | None) -> None:
        if name in self._made_networks:
            return
        self._made_networks.add(name)
        self._changed(f"create isolated network {name}")
        if self.check_mode:
            return
        try:
            net = network.create_isolated(conn, name, ip)
        except network.NetworkError as exc:
            raise self._fail("network", exc) from exc
        self._undo.append(lambda: network.remove(net))

    def _reserve_addresses(self, conn, macs: list[str]) -> list[list[str]]:
        """Each interface's fixed ``ip`` as a DHCP reservation of its MAC; returns [[network, MAC], ...]."""
        reserved = []
        for mac, iface in zip(macs, self._interfaces()):
            ip, name = iface.get("ip"), iface.get("network")
            if not ip:
                continue
            reserved.append([name, mac])
            net = network.lookup(conn, name)
            try:
                change = "add" if net is None else network.reservation_change(network.info(net), mac, ip)
                if change is None:
                    continue
                self._changed(f"reserve {ip} for {mac} on network {name}")
                if not self.check_mode:
                    network.reserve(net, mac, ip, default_hostname(self.p))
                    self._undo.append(lambda n=net, m=mac: network.unreserve(n, m))
            except network.NetworkError as exc:
                raise self._fail(f"interface ip {ip}", exc) from exc
        return reserved

    def _release_networks(self, conn, old_xml: str, keep: t.Collection[str] = (),
                          keep_reservations: t.Collection[tuple[str, str]] = ()) -> None:
        """After a VM went (or lost NICs): drop its reservations and remove the isolated networks
        this collection made that no domain uses any more."""
        try:
            for name, mac in read_meta(old_xml).get("reservations") or []:
                net = network.lookup(conn, name)
                if (name, mac) not in keep_reservations and net is not None:
                    self._drop_reservation(net, name, mac)
            self._remove_unused_networks(conn, sorted({name for _mac, name in domain.domain_networks(old_xml)} - set(keep)),
                                         skip=self.p.name if self.check_mode else None)
        except network.NetworkError as exc:
            raise self._fail("network", exc) from exc

    def _release_left(self, conn) -> None:
        """The VM is gone already (undefined by hand?): what its interfaces left on their networks.

        Its MACs are the ones it was made with (an interface's ``mac``, else the stable MAC of
        its name and index), so a DHCP reservation of one of them that no domain's NIC has is
        this VM's and is dropped; an isolated network this collection made for an interface
        (``isolated``) that no domain uses any more is removed.
        """
        try:
            left = [(index, iface, network.lookup(conn, iface["network"]))
                    for index, iface in enumerate(self._interfaces()) if iface.get("network")]
            left = [(index, iface, net) for index, iface, net in left if net is not None]
            if not left:
                return
            in_use = network.macs_in_use(conn)
            for index, iface, net in left:
                mac = (iface.get("mac") or domain.stable_mac(self.p.name, index)).lower()
                if mac not in in_use:
                    self._drop_reservation(net, iface["network"], mac, " (its VM is gone)")
            self._remove_unused_networks(conn, list(dict.fromkeys(
                iface["network"] for _index, iface, _net in left if iface.get("isolated"))))
        except network.NetworkError as exc:
            raise self._fail("network", exc) from exc

    def _drop_reservation(self, net, name: str, mac: str, why: str = "") -> None:
        """Drop the DHCP reservation of ``mac`` on network ``name`` when it has one."""
        if any(other == mac for other, _ip in network.info(net).hosts):
            self._changed(f"drop the reservation of {mac} on network {name}{why}")
            if not self.check_mode:
                network.unreserve(net, mac)

    def _remove_unused_networks(self, conn, names: t.Sequence[str], skip: str | None = None) -> None:
        """Remove the networks of ``names`` this collection made (isolated) that no domain but ``skip`` uses."""
        for name in names:
            net = network.lookup(conn, name)
            if net is None or not network.is_ours(network.info(net)) or network.users(conn, name, skip=skip):
                continue
            self._changed(f"remove isolated network {name} (no VM uses it)")
            if not self.check_mode:
                network.remove(net)

    def _check_origin(self, dom) -> None:
        """Two projects' ``dev.rum.toml`` both want a VM named dev: the second is refused, not merged."""
        if dom is None or not self.p.origin:
            return
        theirs = read_meta(lv.inactive_xml(dom)).get("origin")
        if theirs and theirs != self.p.origin:
            raise VMError(f"{self.where}: a VM of this name already exists for {theirs}, and this one is for "
                          f"{self.p.origin} (origin); two projects cannot share a VM name: rename one of them "
                          "(for a rum.toml, its file name) or remove the other VM")

    def _image(self) -> image.CachedImage | None:
        image = _maker("image")
        img = self.p.image or {}
        cache = self.image_cache or image.ImageCache(self.cache_dir, log=self.log)
        try:
            result = cache.ensure(img["url"], img.get("checksum"), check_mode=self.check_mode,
                                  progress=self._progress)
        except image.ImageError as exc:
            raise self._fail("image", exc) from exc
        if result.changed:
            self._changed(f"download image {img['url']}")
        for warning in result.warnings:
            self.warn(f"{self.where}: {warning}")
        return result

    def _progress(self, done: int, total: int | None) -> None:
        if total:
            self.log(f"{self.where}: image download {done * 100 // total}% ({done} of {total} bytes)")
        else:
            self.log(f"{self.where}: image download {done} bytes")

    def _reset(self, dom) -> None:
        self._changed("reset: fresh overlay and seed")
        if self.check_mode:
            return
        lv.destroy(dom)
        self._release_leases(dom)
        for path in (self.paths.overlay, self.paths.seed, self.paths.nvram):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _release_leases(self, dom) -> None:
        """The stopped incarnation's DHCP leases go back to the network (see lv.release_leases)."""
        released, problems = lv.release_leases(dom, domain.domain_networks(lv.inactive_xml(dom)))
        if released:
            self.log(f"{self.where}: released DHCP lease(s) {', '.join(released)}")
        for problem in problems:
            self.warn(f"{self.where}: {problem}")

    def _ensure_dir(self) -> None:
        if os.path.isdir(self.paths.vm_dir):
            return
        self._changed(f"create {self.paths.vm_dir}")
        if self.check_mode:
            return
        if os.path.islink(self.paths.vm_dir):
            os.unlink(self.paths.vm_dir)  # rum_slots' link to the folder of a generation that is gone
        os.makedirs(self.paths.storage, mode=0o755, exist_ok=True)
        os.mkdir(self.paths.vm_dir, 0o711)  # qemu must traverse it; nobody needs to list it
        os.chmod(self.paths.vm_dir, 0o711)
        self._undo.append(lambda: shutil.rmtree(self.paths.vm_dir, ignore_errors=True))

    def _ssh_key(self) -> str | None:
        if not self.p.generate_ssh_key:
            return None
        key = self.paths.identity
        if os.path.exists(key):
            return key
        self._changed("generate SSH key")
        if self.check_mode:
            return key
        rc, _out, err = self.run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                      f"rum@{self.p.name}", "-f", key])
        if rc != 0:
            raise VMError(f"{self.where}: ssh-keygen failed for {key}: {err.strip()}")
        os.chmod(key, 0o600)
        return key

    def _public_key(self, identity: str | None) -> list[str]:
        if not identity or not os.path.exists(identity + ".pub"):
            return []
        with open(identity + ".pub") as fh:
            return [fh.read().strip()]

    def _overlay(self, base) -> None:
        try:
            self._ensure_overlay(base)
        except disk.DiskError as exc:
            raise self._fail("disk", exc) from exc

    def _ensure_overlay(self, base) -> None:
        want = disk.parse_size(self.p.disk_size) if self.p.disk_size else None
        path = self.paths.overlay
        if os.path.exists(path):
            if want:
                current = disk.image_info(path, run=self.run_cmd).get("virtual-size", 0)
                if want > current:
                    self._changed(f"grow disk to {self.p.disk_size}")
                    if not self.check_mode:
                        disk.grow(path, want, run=self.run_cmd)
            return
        self._changed("create overlay disk")
        if self.check_mode or base is None or not os.path.exists(base.path):
            return
        fmt = disk.image_info(base.path, run=self.run_cmd).get("format", "qcow2")
        disk.create_overlay(base.path, path, base_format=fmt, size_bytes=want, run=self.run_cmd)
        self._undo.append(lambda: os.path.exists(path) and os.unlink(path))

    def _drives(self) -> list[dict]:
        out = []
        for index, d in enumerate(sorted(self.p.drives, key=lambda x: x["name"])):
            target = domain.target_name("virtio", index + 1)  # vda is the overlay
            path = self.paths.drive(d["name"])
            if not os.path.exists(path):
                self._changed(f"create drive {d['name']}")
                if not self.check_mode:
                    try:
                        disk.create_blank(path, disk.parse_size(d["size"]), run=self.run_cmd)
                    except disk.DiskError as exc:
                        raise self._fail(f"drive {d['name']}", exc) from exc
            out.append({"name": d["name"], "path": path, "target": target,
                        "filesystem": d.get("filesystem"), "mount": d.get("mount")})
        return out

    def _macs(self, before_xml: str | None) -> list[str]:
        existing = domain.domain_macs(before_xml) if before_xml else []
        macs = []
        for index, iface in enumerate(self._interfaces()):
            if iface.get("mac"):
                macs.append(iface["mac"].lower())
            elif index < len(existing):
                macs.append(existing[index])
            else:
                macs.append(domain.stable_mac(self.p.name, index))
        return macs

    def _interfaces(self) -> list[dict]:
        """The NICs asked for; none given is one on ``default``, an empty list is no NIC at all."""
        return [{"network": "default"}] if self.p.interfaces is None else self.p.interfaces

    def _seed(self, identity: str | None, macs: list[str], drives: list[dict]) -> dict:
        p = self.p
        hostname = default_hostname(p)
        keys = list(p.ssh_authorized_keys) + self._public_key(identity)
        if identity and not keys and not self.check_mode:
            raise VMError(f"{self.where}: no public key next to {identity}")
        seed, cloudinit = _maker("seed"), _maker("cloudinit")
        try:
            return self._write_seed(hostname, keys, macs, drives)
        except (seed.SeedError, cloudinit.CloudInitError) as exc:
            raise self._fail("seed", exc) from exc

    def _write_seed(self, hostname: str, keys: list[str], macs: list[str], drives: list[dict]) -> dict:
        p, seed, cloudinit = self.p, _maker("seed"), _maker("cloudinit")
        if isinstance(p.user_data, str):
            user_data = p.user_data
        else:
            user_data = cloudinit.vm_user_data(
                hostname=hostname, user=p.user, groups=p.user_groups, ssh_authorized_keys=keys,
                provision_script=p.provision_script, boot_script=p.boot_script,
                mounts=[{"tag": _mount_tag(m), "target": m["target"], "readonly": bool(m.get("readonly")),
                         "driver": mount_driver(m)} for m in p.mounts],
                drives=[{"device": f"/dev/{d['target']}", "filesystem": d["filesystem"], "target": d["mount"],
                         "label": d["name"]} for d in drives if d.get("filesystem")],
                autologin=p.autologin, packages=p.packages, extra=p.user_data,
                filesystems=guest_filesystems(p, drives),
                default_mount=next((m["target"] for m in p.mounts if m.get("default")), None))
        if p.seed_eject and isinstance(user_data, dict):
            user_data = seed_eject.guest_config(user_data)  # the guest opens the tray once it has read the seed
        meta = dict(cloudinit.vm_meta_data(hostname=hostname, instance_id=p.instance_id))
        meta.update(p.meta_data or {})
        if not p.instance_id and not (p.meta_data or {}).get("instance-id"):
            meta.pop("instance-id", None)  # let the seed derive it from the content
        user_mode = [mac for mac, iface in zip(macs, self._interfaces()) if iface.get("user")]
        network_config = (p.network_config if p.network_config is not None
                          else cloudinit.vm_network_config(macs, user_mode=user_mode))
        content = seed.make_seed(user_data, meta_data=meta, network_config=network_config,
                                 vendor_data=p.vendor_data, instance_id=p.instance_id)
        result = seed.ensure_seed(self.paths.seed, content, mode=0o600, check_mode=self.check_mode)
        if result.get("changed"):
            self._changed("write seed ISO")
        return result

    def _spec(self, domain_type: str, macs: list[str], drives: list[dict], identity: str | None,
              uuid: str | None, reservations: list[list[str]] = ()):
        p = self.p
        disks = [domain.Disk(path=self.paths.overlay, target="vda", bus="virtio", fmt="qcow2")]
        disks += [domain.Disk(path=d["path"], target=d["target"], bus="virtio", fmt="qcow2") for d in drives]
        bus, target = SEED_BUSES[p.seed_bus]
        disks.append(domain.Disk(path=self.paths.seed, target=target, bus=bus, fmt="raw",
                                 device="cdrom", readonly=True))
        interfaces = []
        for index, iface in enumerate(self._interfaces()):
            if iface.get("user"):
                ports = [domain.PortForward(host=int(x["host"]), guest=int(x["guest"]),
                                            bind=x.get("bind") or "127.0.0.1") for x in p.ports]
                interfaces.append(domain.Interface(kind="user", source=None, mac=macs[index],
                                                   model=iface.get("model") or "virtio", ports=ports))
                continue
            kind = "network" if iface.get("network") else "bridge"
            interfaces.append(domain.Interface(kind=kind, source=iface.get(kind), mac=macs[index],
                                               model=iface.get("model") or "virtio"))
        mounts = [domain.Mount(source=resolve_mount_source(m["source"], p.project_dir), tag=_mount_tag(m),
                               readonly=bool(m.get("readonly")), driver=mount_driver(m))
                  for m in p.mounts]
        metadata = {
            "managed_by": MANAGED_BY,
            "config_hash": config_hash(p),
            "ssh_user": p.user,
            "identity_file": identity or "",
            "labels": dict(p.labels or {}),
            "ports": json.dumps([{"host": int(x["host"]), "guest": int(x["guest"]),
                                  "bind": x.get("bind") or "127.0.0.1"} for x in p.ports], sort_keys=True),
            "paths": json.dumps({"dir": self.paths.vm_dir, "overlay": self.paths.overlay, "seed": self.paths.seed,
                                 "serial_log": self.paths.serial_log}, sort_keys=True),
        }
        metadata.update(self._parity_metadata(macs, reservations))
        return domain.DomainSpec(
            name=p.name, memory_mib=p.memory_mb, vcpus=p.vcpus, disks=disks, interfaces=interfaces,
            serial_log=self.paths.serial_log, domain_type=domain_type, arch=p.arch, machine=p.machine,
            firmware=p.firmware, nvram_path=self.paths.nvram if p.firmware == "uefi" else None,
            mounts=mounts, uuid=uuid, kernel=p.kernel, initrd=p.initrd, cmdline=p.kernel_args,
            metadata=metadata, description=f"rum.pool VM {p.name}")

    def _parity_metadata(self, macs: list[str], reservations: t.Sequence[list[str]]) -> dict[str, str]:
        """Metadata entries for rum's origin, SSH client and interface and the reservations made (only
        those set, so VMs that use none of them keep their metadata as it was)."""
        p = self.p
        entries = {"origin": p.origin or "", "ssh_client": "" if p.ssh_client == "ssh" else (p.ssh_client or ""),
                   "ssh_mac": ssh_mac(p, macs, self._interfaces()) or "",
                   "reservations": json.dumps(sorted(reservations)) if reservations else ""}
        return {key: value for key, value in entries.items() if value}

    def _expected_state(self, before: str) -> str:
        return {"running": "running", "restarted": "running", "stopped": "shutoff"}.get(
            self.p.state, "shutoff" if before == "absent" else before)

    def _power(self, dom, before: str, pending: list[str]) -> None:
        """Reach the wanted power state; ``pending`` lists the changes a running guest has not seen."""
        p = self.p
        active = before == "running" or before == "paused"
        if p.state == "running":
            if not active:
                self._start(dom)
            elif pending:  # apply_changes=fail was refused before (_refuse_change_to_running)
                what = "; ".join(pending)
                if p.apply_changes == "restart":
                    self._restart(dom)
                else:
                    self.warn(f"{self.where}: definition changed ({what}); it takes effect at the next boot "
                              "(apply_changes=next_boot)")
        elif p.state == "stopped" and active:
            self._changed("shut down")
            if not self.check_mode:
                how = lv.shutdown(dom, p.shutdown_timeout)
                if how == "forced":
                    self.warn(f"{self.where}: guest ignored ACPI shutdown for {p.shutdown_timeout}s; forced off")
        elif p.state == "restarted":
            if active:
                self._restart(dom)
            else:
                self._start(dom)

    def _refuse_change_to_running(self, dom, pending: list[str]) -> None:
        """apply_changes=fail: the changes a running guest has not seen are refused, definition untouched."""
        if (self.p.state == "running" and self.p.apply_changes == "fail" and pending
                and lv.state_name(dom) in ("running", "paused")):
            raise VMError(f"{self.where}: the definition changed while the VM is running ({'; '.join(pending)}); "
                          "set apply_changes=restart or next_boot, or stop it first")

    def _start(self, dom) -> None:
        self._changed("start")
        if not self.check_mode:
            self._boot(dom)
            self._undo.append(lambda: lv.destroy(dom))

    def _restart(self, dom) -> None:
        self._changed("restart")
        if not self.check_mode:
            lv.shutdown(dom, self.p.shutdown_timeout)
            self._boot(dom)

    def _boot(self, dom) -> None:
        """Start the domain; NICs of the nftables engine are held by the ruleset first (_nftables.py)."""
        try:
            nftables.start(dom, lv.start, read_meta, self.run_nft)
        except nftables.NftError as exc:
            raise self._fail("network_filter", exc) from exc

    def _wait(self, dom, identity: str | None) -> dict:
        xml = lv.inactive_xml(dom)
        macs = domain.domain_macs(xml)
        networks = domain.domain_networks(xml)
        meta = read_meta(xml)
        fwd = None if meta.get("ssh_mac") else ssh_forward(meta)
        if meta.get("ssh_mac"):  # ssh_interface: wait for that NIC's address
            macs = [meta["ssh_mac"]]

        def endpoint(ip):
            return fwd if fwd else ((ip, 22) if ip else None)

        def find_ip():
            return lv.discover_ip(dom, macs, networks)[0]

        waiter = ready.Waiter(find_ip=find_ip, ssh_endpoint=endpoint, ssh_user=self.p.user,
                              identity_file=identity)
        try:
            waited = waiter.wait(self.p.wait_for, self.p.wait_timeout)
            if self.p.wait_for == "cloud_init" and self.p.mounts:
                waited["mounts"] = self._check_mounts(waiter, waited["ssh_host"], waited["ssh_port"])
        except ready.NotReady as exc:
            raise VMError(f"{self.where}: {exc}\n--- last lines of the serial console "
                          f"({self.paths.serial_log}) ---\n{ready.tail(self.paths.serial_log)}") from exc
        return waited

    def _check_mounts(self, waiter: ready.Waiter, host: str, port: int) -> list[dict]:
        """Each share, looked at in the guest once cloud-init is done: a share that did not mount fails
        the run here (the guest's fstab entries have nofail, so nothing inside the guest stops)."""
        missing = waiter.unmounted(host, port, [m["target"] for m in self.p.mounts])
        report = [{"target": m["target"], "tag": _mount_tag(m), "driver": mount_driver(m),
                   "mounted": m["target"] not in missing} for m in self.p.mounts]
        if missing:
            failed = ", ".join(f"{r['target']} (tag {r['tag']}, {r['driver']})" for r in report if not r["mounted"])
            said = [line for line in ready.tail(self.paths.serial_log, lines=400).splitlines()
                    if "could not mount" in line or "mount: " in line]
            raise ready.NotReady(f"shared folders did not mount in the guest: {failed}; does the guest kernel "
                                 "have that driver (Debian's cloud kernels have virtiofs, not 9p)?"
                                 + (f" The guest said: {' | '.join(said[-5:])}" if said else ""))
        return report

    def _result(self, dom, *, diff: dict, seed: dict | None = None, base=None, waited: dict | None = None) -> dict:
        vm: dict = {"name": self.p.name, "state": "absent"}
        if dom is not None:
            vm = describe(dom, with_ip=self.p.state in ("running", "restarted"))
            if waited and waited.get("ip") and not vm.get("ip"):
                vm["ip"] = waited["ip"]
            if waited and waited.get("mounts"):
                vm["mounts"] = waited["mounts"]
        elif self.p.state != "absent":
            vm["state"] = self._expected_state("absent")
        if seed:
            vm["instance_id"] = seed.get("instance_id")
        if base is not None and getattr(base, "digest", None):
            vm["image"] = {"path": base.path, "digest": base.digest}
        if self.p.state != "absent":
            vm.setdefault("paths", {})
            vm["paths"].update({"dir": self.paths.vm_dir, "overlay": self.paths.overlay,
                                "seed": self.paths.seed, "serial_log": self.paths.serial_log})
            if self.p.generate_ssh_key:
                vm["paths"]["identity_file"] = self.paths.identity
        if waited:
            vm["cloud_init"] = waited.get("cloud_init")
        return {"changed": bool(self.changes), "changes": list(self.changes), "vm": vm, "diff": diff}

    # -- the guest's network filter and the seed's eject (_nwfilter.py, _seed_eject.py) ------------
    _seed_gone = False  # the domain's seed drive is empty and stays so (see seed_eject)
    # starts the seed watcher of a storage directory (tests replace it)
    ensure_watcher = staticmethod(seed_eject.ensure_watcher)

    def _network_filter(self, conn, interfaces: list[dict] | None = None) -> None:
        """Make or update the VM's filter before the domain names it (network_filter)."""
        p = self.p
        if not nwfilter.enabled(p.network_filter):
            return
        if not lv.is_local_uri(p.uri):
            raise VMError(f"{self.where}: network_filter needs the host's own addresses: run rum_vm on the "
                          f"hypervisor with a local URI, not {p.uri}")
        held = nftables.uses_nftables(p.network_filter)
        problem = nftables.available(self.run_nft) if held else nwfilter.bridge_problem()
        if problem:
            raise VMError(f"{self.where}: network_filter{'.engine nftables' if held else ''}: {problem}")
        name = nwfilter.filter_name(p.name)
        try:
            policy = nwfilter.policy(p.network_filter, where="network_filter")
            around = nwfilter.surroundings(interfaces or self._interfaces(), run=self.run_cmd,
                                           network_xml=lambda net: conn.networkLookupByName(net).XMLDesc(0))
            if held:  # the NICs get their tap names and the metadata the rules (_filter_and_seed)
                rules = nftables.chain_rules(policy, around)
                self._hold = (nftables.policy_id(rules), rules, self._bridges(conn, interfaces or self._interfaces()))
                return
            done = nwfilter.ensure(conn, nwfilter.filter_xml(name, policy, around), check_mode=self.check_mode)
        except nwfilter.FilterError as exc:
            raise self._fail("network_filter", exc) from exc
        if done:
            self._changed(f"{done} {name}")
            if done.startswith("define") and not self.check_mode:
                self._undo.append(lambda: nwfilter.remove(conn, name))

    def _refilter(self, conn, dom) -> None:
        """Without image: only the network filter changes, when network_filter is given (at once on a
        running guest, and in its persistent definition), nothing else of the definition."""
        if self.p.network_filter is None:
            return
        before_xml = lv.inactive_xml(dom)
        nics = [{nic["kind"]: nic["source"] or True} for nic in domain.canonical(before_xml)["interfaces"]]
        where = self.where
        if nwfilter.enabled(self.p.network_filter):
            for index, nic in enumerate(nics):
                if "user" in nic:
                    raise VMError(f"{where}: network_filter cannot filter interfaces[{index}], a user-mode interface")
        held = self._held(before_xml)
        if held and not nftables.uses_nftables(self.p.network_filter):
            raise self._redefine_only()
        self._network_filter(conn, nics)  # with the nftables engine: only works out the policy
        if held or self._hold:
            if held and self._hold and {n.policy for n in held} == {self._hold[0]}:
                return  # the same policy holds it already
            raise self._redefine_only()
        wanted = nwfilter.filter_name(self.p.name) if nwfilter.enabled(self.p.network_filter) else None
        before_c = domain.canonical(before_xml)
        after_c = dict(before_c, interfaces=[dict(nic, filter=wanted) if nic["kind"] != "user" else nic
                                             for nic in before_c["interfaces"]])
        if before_c != after_c:
            self._changed("change the network filter in the definition")
            if not self.check_mode:
                try:
                    nwfilter.swap(dom, {nic["mac"]: nic["filter"] for nic in after_c["interfaces"]}, live=False)
                except nwfilter.FilterError as exc:
                    raise self._fail("network_filter", exc) from exc
        self._filters_live(conn, dom, before_c, after_c)

    def _redefine_only(self) -> VMError:
        return VMError(f"{self.where}: network_filter with engine nftables is part of the VM's definition (its NICs' "
                       "tap names): give image and the other options to change it, or make the VM again")

    def _filter_and_seed(self, spec) -> None:
        """The NICs name the VM's filter (network_filter), or with the nftables engine have tap names of
        its own and start without link; an ejected seed stays out of the definition."""
        if self._hold:
            pid, rules, bridges = self._hold
            for nic in spec.interfaces:
                if nic.kind != "user":
                    nic.target, nic.link = nftables.tap_name(self.p.name, nic.mac, pid), "down"
            spec.metadata[nftables.META_KEY] = nftables.metadata(
                pid, rules, {nic.mac.lower(): bridges.get(str(nic.source), "") for nic in spec.interfaces
                             if nic.kind == "network"})
        elif nwfilter.enabled(self.p.network_filter):
            for nic in spec.interfaces:
                if nic.kind != "user":
                    nic.filter = nwfilter.filter_name(self.p.name)
        if self._seed_gone:
            for item in spec.disks:
                if item.device == "cdrom" and item.path == self.paths.seed:
                    item.path = None
        if self.p.seed_eject:  # so that a later start of this definition (state=running alone) watches too
            spec.metadata["seed_eject"] = "yes"

    def _filters_live(self, conn, dom, before_c: dict | None, after_c: dict) -> None:
        """A running guest gets its NICs' new filters at once; a filter of ours no NIC names is removed."""
        if before_c is None:
            return
        running = dom is not None and lv.state_name(dom) in ("running", "paused")
        if running and self._hold:
            return  # it keeps its libvirt filter until it boots with the nftables engine's taps
        if running and domain.filter_changed(before_c, after_c):
            self._changed("apply the network filter change to the running guest")
            if not self.check_mode:
                try:
                    nwfilter.apply_live(dom, {nic["mac"]: nic.get("filter") for nic in after_c["interfaces"]})
                except nwfilter.FilterError as exc:
                    raise self._fail("network_filter", exc) from exc
        gone = set(own_filters_of(before_c)) - set(own_filters_of(after_c))
        self._forget(conn, sorted(gone), seed_watch=False)

    def _bridges(self, conn, interfaces: t.Sequence[t.Mapping[str, t.Any]]) -> dict[str, str]:
        """The bridge device of each libvirt network the NICs are on (none yet in check mode: "")."""
        out = {}
        for iface in interfaces:
            if iface.get("network") and iface["network"] is not True:
                try:
                    out[iface["network"]] = conn.networkLookupByName(iface["network"]).bridgeName()
                except lv.libvirt.libvirtError:
                    out[iface["network"]] = ""
        return out

    def _held(self, xml: str) -> list:
        try:
            return nftables.holds(xml, read_meta(xml))
        except nftables.NftError as exc:
            raise self._fail("network_filter", exc) from exc

    def _release_taps(self, xml: str) -> bool:
        """A removed VM's NICs leave the nftables ruleset (a failure only warns: a tap name of a gone VM
        holds nothing); True when it had such NICs."""
        held = self._held(xml)
        if held:
            self._changed("release its NICs from the nftables ruleset")
            if not self.check_mode:
                try:
                    nftables.release(xml, read_meta(xml), self.p.name, self.run_nft)
                except nftables.NftError as exc:
                    self.warn(f"{self.where}: {exc}")
        return bool(held)

    def _prune_taps(self, conn) -> None:
        """The VM is gone already: the taps of the nftables engine no domain names leave its ruleset
        (this VM's among them; its names cannot be told without its definition)."""
        try:
            taps = nftables.prune(conn, self.run_nft, check_mode=self.check_mode)
        except nftables.NftError as exc:
            self.warn(f"{self.where}: {exc}")
            return
        if taps:
            self._changed(f"release {', '.join(taps)} from the nftables ruleset (no VM has them)")

    def _orphan_filter(self, conn) -> list[str]:
        """The VM is gone already (deleted by hand?): its filter, if one is left that no domain names."""
        name = nwfilter.filter_name(self.p.name)
        try:
            if name in nwfilter.names(conn) and name not in nwfilter.referenced(conn):
                return [name]
        except nwfilter.FilterError as exc:
            raise self._fail("network_filter", exc) from exc
        return []

    def _forget(self, conn, filters: t.Sequence[str], seed_watch: bool = True) -> None:
        """Remove the filters a removed (or unfiltered) VM leaves, and its seed watch."""
        for name in filters:
            self._changed(f"remove network filter {name}")
            if not self.check_mode:
                try:
                    nwfilter.remove(conn, name)
                except nwfilter.FilterError as exc:
                    raise self._fail("network_filter", exc) from exc
        if seed_watch and not self.check_mode:
            seed_eject.unregister(self.storage_dir, self.p.name)

    def _guard_guest(self, dom) -> None:
        """Once the guest runs: its filter must see its traffic, and its seed goes once read."""
        if self.check_mode or dom is None or lv.state_name(dom) != "running":
            return
        if nwfilter.enabled(self.p.network_filter) and not self._hold:
            problem = nwfilter.bridge_problem(missing_ok=False)
            if problem:
                raise VMError(f"{self.where}: network_filter: {problem}")
        try:
            if nftables.hold_running(dom, read_meta, self.run_nft):
                self._changed("hold the guest's NICs in the nftables ruleset and raise their links")
        except nftables.NftError as exc:
            raise self._fail("network_filter", exc) from exc
        if self.p.seed_eject or read_meta(lv.inactive_xml(dom)).get("seed_eject") == "yes":
            self._watch_seed(dom)

    def _watch_seed(self, dom) -> None:
        """Eject a seed whose tray the guest opened; otherwise hand the VM to the directory's watcher."""
        drive = seed_eject.seed_drive(dom.XMLDesc(0), self.paths.seed)
        if drive is None:
            return
        if drive["tray"] == "open":
            self._changed("eject the seed (the guest has read it) and delete it")
            seed_eject.eject(dom, drive, self.paths.seed)
            seed_eject.unregister(self.storage_dir, self.p.name)
            return
        seed_eject.register(self.storage_dir, name=self.p.name, uuid=dom.UUIDString(), uri=self.p.uri,
                            seed=self.paths.seed, lock=self.paths.lock)
        if self.ensure_watcher(self.storage_dir, lv.connect):
            self.log(f"{self.where}: started the seed watcher of {self.storage_dir}")


def recorded_dir(xml: str, storage_dir: str) -> list[str]:
    """The VM directory a domain's metadata records, when it is not its name's (the domain was renamed:
    a runner pool's staged generation keeps the directory it was made in) and lies in ``storage_dir``."""
    folder = (read_meta(xml).get("paths") or {}).get("dir")
    if not isinstance(folder, str) or not folder:
        return []
    folder = os.path.normpath(folder)
    inside = os.path.dirname(folder) == os.path.normpath(storage_dir) and names.VM_NAME.ok(os.path.basename(folder))
    return [folder] if inside else []


def validate_filter(p: VMParams, where: str) -> None:
    """network_filter filters libvirt NICs only: a user-mode NIC would be a way around it; the
    nftables engine holds NICs on libvirt networks only."""
    if not nwfilter.enabled(p.network_filter):
        return
    for index, iface in enumerate(p.interfaces or []):
        if iface.get("user"):
            raise VMError(f"{where}: network_filter cannot filter interfaces[{index}], a user-mode interface "
                          "(qemu's own NAT, outside libvirt); use a libvirt network or bridge, or leave "
                          "network_filter out")
        if iface.get("bridge") and nftables.uses_nftables(p.network_filter):
            raise VMError(f"{where}: network_filter.engine nftables holds NICs on libvirt networks, and "
                          f"interfaces[{index}] is on the host bridge {iface['bridge']!r}: use engine nwfilter "
                          "for it")
    if nftables.engine(p.network_filter) not in nwfilter.ENGINES:
        raise VMError(f"{where}: network_filter.engine {nftables.engine(p.network_filter)!r} is not one of "
                      f"{', '.join(nwfilter.ENGINES)}")


def own_filters(xml: str) -> list[str]:
    """The filters of ours a domain's NICs name."""
    return own_filters_of(domain.canonical(xml))


def own_filters_of(canonical: dict) -> list[str]:
    return sorted({nic["filter"] for nic in canonical.get("interfaces") or []
                   if (nic.get("filter") or "").startswith(nwfilter.FILTER_PREFIX)})


def _diff(before_c: dict | None, after_c: dict, state_before: str, state_after: str) -> dict:
    """--diff: the power state and the fields of the definition that change, nothing else."""
    before, after = domain.diff_sides(before_c, after_c)
    if state_before != state_after:
        before.insert(0, f"state: {state_before}")
        after.insert(0, f"state: {state_after}")
    return {"before": "".join(line + "\n" for line in before), "after": "".join(line + "\n" for line in after)}


def _run(argv: list) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        return 127, "", f"{argv[0]} not found: {exc}"
    return proc.returncode, proc.stdout, proc.stderr
