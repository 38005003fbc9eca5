# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a ``rum.toml`` and say what it means as rum_vm options.

Internal to the rum.pool collection: not a public API; the ``rum.pool.rum_toml`` filter is its
front. Every field rum knew is read with rum's rules (its defaults, its name and id, its
validation), and an unknown or invalid one fails with the file and the field named
(``dev.rum.toml: resources.memory_mb: must be at least 256, got 128``). rum's known bugs are not
carried over: the options ask rum_vm for what rum meant (scripts once or every boot, drives
formatted, ports forwarded, read-only shares read-only).

Runs on the controller. TOML is read with ``tomllib`` (Python 3.11 and later) or, on older
Pythons, the ``tomli`` package.
"""

from __future__ import annotations

import ipaddress
import os
import re
import typing as t

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

from ansible_collections.rum.pool.plugins.module_utils import _disk as disk
from ansible_collections.rum.pool.plugins.module_utils import _names as names
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm

# rum's own rule for the name derived from the file name (rum_vm then limits it to 63 characters).
RUM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# What each table may hold: field -> (type, required). Types are Python types or a tuple of them.
Field = t.Tuple[t.Any, bool]
SCHEMA: dict[str, dict[str, Field]] = {
    "image": {"base": (str, True)},
    "resources": {"cpus": (int, True), "memory_mb": (int, True), "disk": (str, False)},
    "network": {"nat": (bool, False), "hostname": (str, False), "wait_for_ip": (bool, False),
                "ip_wait_timeout_s": (int, False), "interfaces": (list, False)},
    "provision": {"system": (dict, False), "boot": (dict, False)},
    "advanced": {"libvirt_uri": (str, False), "domain_type": (str, False), "machine": (str, False),
                 "autologin": (bool, False)},
    "ssh": {"user": (str, False), "command": (str, False), "interface": (str, False),
            "authorized_keys": (list, False)},
    "user": {"name": (str, False), "groups": (list, False)},
}
TOP_LEVEL: dict[str, Field] = {**{name: (dict, name in ("image", "resources")) for name in SCHEMA},
                               "mounts": (list, False), "drives": (dict, False), "fs": (dict, False),
                               "ports": (list, False)}
INTERFACE: dict[str, Field] = {"network": (str, True), "ip": (str, False)}
SCRIPT: dict[str, Field] = {"script": (str, True)}
MOUNT: dict[str, Field] = {"source": (str, True), "target": (str, True), "readonly": (bool, False),
                           "tag": (str, False), "default": (bool, False)}
DRIVE: dict[str, Field] = {"size": (str, True)}
FS_ENTRY: dict[str, Field] = {"drive": (str, False), "drives": (list, False), "target": (str, True),
                              "mode": (str, False), "pool": (str, False)}
PORT: dict[str, Field] = {"host": (int, True), "guest": (int, True), "bind": (str, False)}
# The [[fs.<type>]] types rum_vm can make: one drive through cloud-init, several through a script.
SINGLE_DRIVE_FS = ("ext4", "xfs")
MULTI_DRIVE_FS = ("btrfs", "zfs")
MAX_DRIVES = 24


class RumTomlError(ValueError):
    """The file is unreadable or a field is wrong; the message starts with the file and the field."""


def _fail(where: str, problem: str) -> t.NoReturn:
    raise RumTomlError(f"{where}: {problem}")


def _kind(kind: t.Any) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "an array",
            dict: "a table"}.get(kind, str(kind))


def _table(where: str, value: t.Any, fields: dict[str, Field]) -> dict:
    """``value`` checked against ``fields``: no unknown key, each present key of its type, required ones there."""
    if not isinstance(value, dict):
        _fail(where, f"must be a table, got {type(value).__name__}")
    for key in value:
        if key not in fields:
            _fail(f"{where}.{key}" if where else key,
                  f"unknown field (known here: {', '.join(fields)})")
    for key, (kind, required) in fields.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            if required:
                _fail(name, "is required")
            continue
        item = value[key]
        # TOML booleans are not integers here, and integers not booleans.
        if isinstance(item, bool) != (kind is bool) or not isinstance(item, kind):
            _fail(name, f"must be {_kind(kind)}, got {item!r}")
    return value


def _items(where: str, value: t.Any, fields: dict[str, Field]) -> list[tuple[str, dict]]:
    return [(f"{where}[{index}]", _table(f"{where}[{index}]", item, fields)) for index, item in enumerate(value)]


def _strings(where: str, value: list) -> list[str]:
    for index, item in enumerate(value):
        if not isinstance(item, str):
            _fail(f"{where}[{index}]", f"must be a string, got {item!r}")
    return list(value)


# --- rum's name and id --------------------------------------------------------------------------------

def derive_name(path: str) -> str | None:
    """rum's name from the file name: ``dev.rum.toml`` is dev, ``rum.toml`` none, ``x.toml`` x."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "rum":
        return None
    return stem[:-len(".rum")] if stem.endswith(".rum") else stem


def config_id(canonical_path: str, name: str | None) -> str:
    """rum's id: FNV-1a (64 bit) over the file's real path and the name, its low 32 bits in hex."""
    value = 0xCBF29CE484222325
    for byte in canonical_path.encode("utf-8", "surrogateescape") + (name or "").encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value & 0xFFFFFFFF:08x}"


# --- reading ---------------------------------------------------------------------------------------

def read(path: str) -> dict:
    """The parsed TOML of ``path`` (RumTomlError naming the file for anything unreadable)."""
    label = os.path.basename(path) or path
    if tomllib is None:
        raise RumTomlError(f"{label}: reading TOML needs Python 3.11 or later on the controller, or the "
                           "tomli package (pip install tomli)")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise RumTomlError(f"{label}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RumTomlError(f"{label}: not valid TOML: {exc}") from None


def options(path: str, *, run: t.Callable[[list], tuple[int, str, str]] | None = None) -> dict:
    """rum_vm's options for the rum.toml at ``path`` (see the module docstring)."""
    label = os.path.basename(path) or path
    data = read(path)
    try:
        return _options(os.path.realpath(path), data, run)
    except RumTomlError as exc:
        raise RumTomlError(f"{label}: {exc}") from None


def _options(canonical: str, data: dict, run) -> dict:
    _table("", data, TOP_LEVEL)
    for section, fields in SCHEMA.items():
        _table(section, data.get(section, {}), fields)
    name = derive_name(canonical)
    if name is not None and not RUM_NAME.match(name):
        _fail("(file name)", f"the name {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]*")
    ident = config_id(canonical, name)
    vm_name = name or ident
    if not names.VM_NAME.ok(vm_name):
        _fail("(file name)", f"the name {vm_name!r} is too long for a VM: {names.VM_NAME.hint}")
    project = os.path.dirname(canonical)

    out: dict[str, t.Any] = {"name": vm_name, "origin": canonical, "project_dir": project}
    out["image"] = {"url": _image(data["image"]["base"], project)}
    out.update(_resources(data["resources"]))
    out.update(_network(data.get("network", {}), ident, bool(data.get("ports"))))
    out.update(_ssh_and_user(data.get("ssh", {}), data.get("user", {}), out, ident))
    out.update(_provision(data.get("provision", {})))
    out.update(_advanced(data.get("advanced", {})))
    out["mounts"] = _mounts(data.get("mounts", []), project, run)
    out["drives"], out["filesystems"] = _drives(data.get("drives", {}), data.get("fs", {}))
    _targets(out)
    out["ports"] = _ports(data.get("ports", []))
    return out


def _image(base: str, project: str) -> str:
    if not base.strip():
        _fail("image.base", "must not be empty")
    if re.match(r"^[a-z][a-z0-9+.-]*://", base):
        if not base.startswith(("http://", "https://", "file://")):
            _fail("image.base", f"{base!r}: an http(s) URL or a local path (file:// works too)")
        return base
    # rum read a relative path against its working directory; here against the file's folder.
    return os.path.normpath(os.path.join(project, os.path.expanduser(base)))


def _resources(res: dict) -> dict:
    if res["cpus"] < 1:
        _fail("resources.cpus", f"must be at least 1, got {res['cpus']}")
    if res["memory_mb"] < 256:
        _fail("resources.memory_mb", f"must be at least 256, got {res['memory_mb']}")
    size = res.get("disk", "20G")
    _size("resources.disk", size)
    return {"vcpus": res["cpus"], "memory_mb": res["memory_mb"], "disk_size": size}


def _size(where: str, size: str) -> None:
    try:
        disk.parse_size(size)
    except disk.DiskError as exc:
        _fail(where, str(exc))


def _network(net: dict, ident: str, ports: bool) -> dict:
    out: dict[str, t.Any] = {}
    hostname = net.get("hostname", "")
    if hostname:
        if not names.is_hostname(hostname):
            _fail("network.hostname", f"{hostname!r}: letters, digits, '-' and '.', at most 253 characters")
        out["hostname"] = hostname
    interfaces = [{"network": "default"}] if net.get("nat", True) else []
    for where, iface in _items("network.interfaces", net.get("interfaces", []), INTERFACE):
        if not iface["network"]:
            _fail(f"{where}.network", "must not be empty")
        if not re.match(r"^[A-Za-z0-9._-]+$", iface["network"]):
            _fail(f"{where}.network", f"{iface['network']!r}: letters, digits, '.', '_' and '-'")
        entry: dict[str, t.Any] = {"network": f"rum-{ident}-{iface['network']}", "isolated": True}
        if iface.get("ip"):
            try:
                ipaddress.IPv4Address(iface["ip"])
            except ValueError:
                _fail(f"{where}.ip", f"{iface['ip']!r} is not an IPv4 address")
            entry["ip"] = iface["ip"]
        interfaces.append(entry)
    if ports:
        interfaces.append({"user": True})  # the port forwards' NIC (no route in the guest)
    out["interfaces"] = interfaces
    out["wait_for"] = "cloud_init" if net.get("wait_for_ip", True) else "none"
    if "ip_wait_timeout_s" in net:
        if net["ip_wait_timeout_s"] < 1:
            _fail("network.ip_wait_timeout_s", f"must be at least 1, got {net['ip_wait_timeout_s']}")
        out["wait_timeout"] = net["ip_wait_timeout_s"]
    return out


def _ssh_and_user(ssh: dict, user: dict, so_far: dict, ident: str) -> dict:
    out: dict[str, t.Any] = {}
    login = user.get("name") or ssh.get("user") or "rum"
    if user.get("name") and ssh.get("user") and ssh["user"] != user["name"]:
        _fail("ssh.user", f"{ssh['user']!r} differs from user.name {user['name']!r}: the VM has one login user "
                          "(user.name), and SSH logs in as it")
    if not names.USER_NAME.ok(login) or login == "root":
        _fail("user.name" if user.get("name") else "ssh.user", f"{login!r}: {names.USER_NAME.hint}, not root")
    if login != "rum":
        out["user"] = login
    groups = _strings("user.groups", user.get("groups", []))
    if groups:
        out["user_groups"] = groups
    keys = _strings("ssh.authorized_keys", ssh.get("authorized_keys", []))
    if keys:
        out["ssh_authorized_keys"] = keys
    command = ssh.get("command", "ssh")
    if not command.strip() or "\n" in command:
        _fail("ssh.command", f"{command!r}: a command line such as 'ssh' or 'kitty +kitten ssh'")
    if command != "ssh":
        out["ssh_client"] = command
    if ssh.get("interface"):
        network = f"rum-{ident}-{ssh['interface']}"
        if network not in [i.get("network") for i in so_far["interfaces"]]:
            _fail("ssh.interface", f"{ssh['interface']!r} is not the network of one of [[network.interfaces]]")
        out["ssh_interface"] = network
    return out


def _provision(prov: dict) -> dict:
    out = {}
    for stage, option in (("system", "provision_script"), ("boot", "boot_script")):
        if stage in prov:
            out[option] = _table(f"provision.{stage}", prov[stage], SCRIPT)["script"]
    return out


def _advanced(adv: dict) -> dict:
    out: dict[str, t.Any] = {}
    for field, option in (("libvirt_uri", "uri"), ("domain_type", "domain_type"), ("machine", "machine")):
        if field in adv:
            out[option] = adv[field]
    if out.get("domain_type", "kvm") not in ("kvm", "qemu", "auto"):
        _fail("advanced.domain_type", f"{out['domain_type']!r}: kvm, qemu or auto")
    if adv.get("autologin"):
        out["autologin"] = True
    return out


def _mounts(mounts: list, project: str, run) -> list[dict]:
    out, tags = [], {}
    if sum(bool(m.get("default")) for m in mounts if isinstance(m, dict)) > 1:
        _fail("mounts", "at most one mount can have default = true")
    for where, mount in _items("mounts", mounts, MOUNT):
        target = mount["target"]
        if not target.startswith("/"):
            _fail(f"{where}.target", f"must be an absolute path, got {target!r}")
        try:
            source = vm.resolve_mount_source(mount["source"], project, run)
        except ValueError as exc:
            _fail(f"{where}.source", str(exc))
        if not os.path.isdir(source):
            _fail(f"{where}.source", f"{mount['source']!r} ({source}) is not an existing directory")
        tag = mount.get("tag") or target.replace("/", "_").lstrip("_")
        if tag in tags:
            _fail(f"{where}.tag", f"{tag!r} is already the tag of {tags[tag]}")
        tags[tag] = where
        entry: dict[str, t.Any] = {"source": mount["source"], "target": target}
        if mount.get("tag"):
            entry["tag"] = mount["tag"]
        if mount.get("readonly"):
            # A read-only share the host enforces: libvirt cannot make virtiofs read-only.
            entry.update(readonly=True, driver="9p")
        if mount.get("default"):
            entry["default"] = True
        out.append(entry)
    return out


def _drives(drives: dict, fs: dict) -> tuple[list[dict], list[dict]]:
    if len(drives) > MAX_DRIVES:
        _fail("drives", f"at most {MAX_DRIVES} drives, got {len(drives)}")
    out = {}
    for name in sorted(drives):
        where = f"drives.{name}"
        if not names.VM_NAME.ok(name):
            _fail(where, f"the drive name {name!r}: {names.VM_NAME.hint}")
        _size(f"{where}.size", _table(where, drives[name], DRIVE)["size"])
        out[name] = {"name": name, "size": drives[name]["size"]}
    used: dict[str, str] = {}
    multi = []
    for kind in fs:
        if not isinstance(fs[kind], list):
            _fail(f"fs.{kind}", "must be an array of tables ([[fs.<type>]])")
        if kind not in SINGLE_DRIVE_FS + MULTI_DRIVE_FS:
            _fail(f"fs.{kind}", f"file system type {kind!r} is not supported "
                                f"(one of {', '.join(SINGLE_DRIVE_FS + MULTI_DRIVE_FS)})")
        for where, entry in _items(f"fs.{kind}", fs[kind], FS_ENTRY):
            wanted = _fs_drives(where, kind, entry)
            for drive in wanted:
                if drive not in out:
                    _fail(f"{where}", f"drive {drive!r} is not in [drives]")
                if drive in used:
                    _fail(f"{where}", f"drive {drive!r} is already used by {used[drive]}")
                used[drive] = where
            if not entry["target"].startswith("/"):
                _fail(f"{where}.target", f"must be an absolute path, got {entry['target']!r}")
            if kind in MULTI_DRIVE_FS:
                item = {"type": kind, "drives": wanted, "mount": entry["target"]}
                item.update({key: entry[key] for key in ("mode", "pool") if entry.get(key)})
                multi.append(item)
            else:
                out[wanted[0]].update(filesystem=kind, mount=entry["target"])
    return list(out.values()), multi


def _fs_drives(where: str, kind: str, entry: dict) -> list[str]:
    """The drives an [[fs.<type>]] entry names, with rum's rules on drive/drives, mode and pool."""
    if kind in MULTI_DRIVE_FS:
        if entry.get("drive"):
            _fail(where, f"{kind} uses 'drives', not 'drive'")
        if not entry.get("drives"):
            _fail(where, f"{kind} needs 'drives' (a list of drive names)")
        if kind == "btrfs" and entry.get("pool"):
            _fail(f"{where}.pool", "'pool' is only for zfs")
        return _strings(f"{where}.drives", entry["drives"])
    if entry.get("drives"):
        _fail(where, f"{kind} uses 'drive', not 'drives'")
    if not entry.get("drive"):
        _fail(where, f"{kind} needs 'drive' (one drive name)")
    for key in ("mode", "pool"):
        if key in entry:
            _fail(f"{where}.{key}", f"'{key}' is only for " + ("zfs and btrfs" if key == "mode" else "zfs"))
    return [entry["drive"]]


def _targets(out: dict) -> None:
    """rum's rule: no two of the shares' and file systems' targets are the same or one inside the other."""
    seen = [(m["target"], "[[mounts]]") for m in out["mounts"]]
    seen += [(d["mount"], f"[[fs.{d['filesystem']}]]") for d in out["drives"] if d.get("mount")]
    seen += [(f["mount"], f"[[fs.{f['type']}]]") for f in out["filesystems"]]
    for index, (target, where) in enumerate(seen):
        for other, other_where in seen[index + 1:]:
            a, b = (os.path.normpath(x) + "/" for x in (target, other))
            if a.startswith(b) or b.startswith(a):
                _fail("mounts", f"target {target!r} ({where}) and {other!r} ({other_where}) "
                                + ("are the same" if a == b else "are nested"))


def _ports(ports: list) -> list[dict]:
    out, seen = [], set()
    for where, port in _items("ports", ports, PORT):
        for key in ("host", "guest"):
            if not 1 <= port[key] <= 65535:
                _fail(f"{where}.{key}", f"must be a port from 1 to 65535, got {port[key]}")
        bind = port.get("bind") or "127.0.0.1"
        try:
            ipaddress.IPv4Address(bind)
        except ValueError:
            _fail(f"{where}.bind", f"{bind!r} is not an IPv4 address")
        if (port["host"], bind) in seen:
            _fail(f"{where}.host", f"host port {port['host']} on {bind} is forwarded twice")
        seen.add((port["host"], bind))
        out.append({"host": port["host"], "guest": port["guest"], "bind": bind})
    return out
