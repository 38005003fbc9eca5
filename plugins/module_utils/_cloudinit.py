# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cloud-config, meta-data and network-config a rum VM gets on its seed.

Internal to the rum.pool collection; not a public API. Pure functions: they build plain dicts
that ``_seed.make_seed`` renders; nothing here touches the host.

Choices worth knowing (each fixes a problem the ``rum`` tool had or would have had):

* One user, password locked (``lock_passwd``), SSH keys only, passwordless sudo. No password
  equal to the user name.
* Scripts are written verbatim with ``write_files`` and executed as files, so multi-line
  scripts, any interpreter (``#!``) and any quoting survive; they never pass through a
  ``runcmd`` shell line.
* ``provision_script`` runs once per instance (cloud-init ``runcmd``); ``boot_script`` on every
  boot through ``/var/lib/cloud/scripts/per-boot/``. On an instance's first boot the boot script
  runs *after* the provision script succeeded, never before it.
* Shared folders (virtiofs/9p) are added to ``/etc/fstab`` by a small script rather than the
  cloud-init ``mounts`` module: cloud-init 22.4 (Debian 12) silently drops fstab entries whose
  device is not a block device, which is every virtiofs/9p tag.
* Data drives use ``fs_setup`` (never overwrites an existing file system) and ``mounts``.
"""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
import typing as t

from ansible_collections.rum.pool.plugins.module_utils import _names as names
from ansible_collections.rum.pool.plugins.module_utils import _script_logs as script_logs
from ansible_collections.rum.pool.plugins.module_utils._domain import MOUNT_DRIVERS

SCRIPT_DIR = "/var/lib/rum/scripts"
PROVISION_PATH = SCRIPT_DIR + "/provision"
BOOT_PATH = SCRIPT_DIR + "/boot"
SHARES_PATH = SCRIPT_DIR + "/mount-shares"
FILESYSTEMS_PATH = SCRIPT_DIR + "/filesystems"
# qemu user-mode networking's guest address: where its port forwards go by default.
USER_MODE_ADDRESS = "10.0.2.15/24"
DEFAULT_MOUNT_PROFILE = "/etc/profile.d/rum-default-mount.sh"
PER_BOOT_PATH = "/var/lib/cloud/scripts/per-boot/rum-boot"
# Lives in the per-instance directory: a new instance-id (a changed seed) provisions again.
PROVISIONED_MARKER = "/var/lib/cloud/instance/rum-provisioned"
SUDO_NOPASSWD = "ALL=(ALL) NOPASSWD:ALL"
AUTOLOGIN_UNITS = {
    # unit -> the agetty arguments Debian's unit uses, with --autologin added by us.
    "serial-getty@ttyS0.service": "--keep-baud 115200,57600,38400,9600 %I $TERM",
    "getty@tty1.service": "--noclear %I $TERM",
}
FILESYSTEMS = ("ext4", "xfs", "btrfs")
# Longest label each mkfs accepts.
LABEL_MAX = {"ext4": 16, "xfs": 12, "btrfs": 255}

_GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_NO_SPACE = re.compile(r"^\S+$")


class CloudInitError(ValueError):
    """An option for the guest's cloud-init data is invalid; the message names it."""


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _hostname(hostname: t.Any) -> str:
    if not isinstance(hostname, str) or not hostname:
        raise CloudInitError(f"hostname {hostname!r}: must be a non-empty string")
    name = hostname.rstrip(".")
    if not names.is_hostname(name):
        raise CloudInitError(f"hostname {hostname!r}: not a valid host name ({names.HOST_LABEL.hint})")
    return name


def _user(user: t.Any) -> str:
    if not names.USER_NAME.ok(user):
        raise CloudInitError(f"user {user!r}: not a valid user name ({names.USER_NAME.hint})")
    if user == "root":
        raise CloudInitError("user 'root': give a normal user; it gets passwordless sudo")
    return user


def _strings(values: t.Any, what: str) -> list:
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, t.Iterable):
        raise CloudInitError(f"{what}: must be a list of strings, got {type(values).__name__}")
    out = []
    for value in values:
        if not isinstance(value, str):
            raise CloudInitError(f"{what}: {value!r} is not a string")
        out.append(str(value))
    return out


def _groups(groups: t.Any) -> list:
    out = _strings(groups, "groups")
    for group in out:
        if not _GROUP_NAME.match(group):
            raise CloudInitError(f"groups: {group!r} is not a valid group name")
    return out


def _keys(keys: t.Any) -> list:
    out = []
    for key in _strings(keys, "ssh_authorized_keys"):
        key = key.strip()
        if not key:
            raise CloudInitError("ssh_authorized_keys: an empty key was given")
        if "\n" in key or "\r" in key:
            raise CloudInitError("ssh_authorized_keys: a key spans several lines; give one key "
                                 "per list item")
        out.append(key)
    return out


def _abs_path(path: t.Any, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise CloudInitError(f"{what} {path!r}: must be an absolute path")
    if not _NO_SPACE.match(path):
        raise CloudInitError(f"{what} {path!r}: must not contain white space")
    return posixpath.normpath(path)


def _bool(value: t.Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise CloudInitError(f"{what} {value!r}: must be true or false")
    return value


def _script(script: t.Any, what: str) -> str | None:
    if script is None:
        return None
    if not isinstance(script, str):
        raise CloudInitError(f"{what}: must be a string (the script text), "
                             f"got {type(script).__name__}")
    return script if script.strip() else None


def _unknown(item: t.Mapping[str, t.Any], allowed: t.Sequence[str], what: str) -> None:
    extra = sorted(set(item) - set(allowed))
    if extra:
        raise CloudInitError(f"{what}: unknown key(s) {', '.join(extra)} "
                             f"(allowed: {', '.join(allowed)})")


def _items(value: t.Any, what: str, allowed: t.Sequence[str], needs: str) -> t.Iterator[tuple[str, t.Mapping]]:
    """(``what[i]``, item) for each mapping of a list option (None is an empty list)."""
    if value is None:
        return
    if not isinstance(value, (list, tuple)):
        raise CloudInitError(f"{what}: must be a list, got {type(value).__name__}")
    for index, item in enumerate(value):
        where = f"{what}[{index}]"
        if not isinstance(item, t.Mapping):
            raise CloudInitError(f"{where}: must be a mapping with {needs}")
        _unknown(item, allowed, where)
        yield where, item


# ---------------------------------------------------------------------------------------------
# Pieces of the cloud-config


def _shares(mounts: t.Any) -> list:
    """Validated shared folders as (tag, target, fstype, options)."""
    out, tags, targets = [], set(), set()
    for what, item in _items(mounts, "mounts", ("tag", "target", "readonly", "driver"), "tag and target"):
        tag = item.get("tag")
        if not isinstance(tag, str) or not _NO_SPACE.match(tag) or "#" in tag:
            raise CloudInitError(f"{what}.tag {tag!r}: must be a non-empty string without "
                                 "white space or '#'")
        target = _abs_path(item.get("target"), f"{what}.target")
        readonly = _bool(item.get("readonly", False), f"{what}.readonly")
        driver = item.get("driver") or "virtiofs"
        if driver not in MOUNT_DRIVERS:
            raise CloudInitError(f"{what}.driver {driver!r}: must be one of "
                                 f"{', '.join(MOUNT_DRIVERS)}")
        if tag in tags:
            raise CloudInitError(f"{what}.tag {tag!r}: used twice")
        if target in targets:
            raise CloudInitError(f"{what}.target {target!r}: used twice")
        tags.add(tag)
        targets.add(target)
        options = ["defaults"] if driver == "virtiofs" else ["trans=virtio", "version=9p2000.L"]
        options.append("nofail")
        if readonly:
            options.append("ro")
        out.append((tag, target, driver, ",".join(options)))
    return out


def _shares_script(shares: list) -> str:
    """A shell script that adds each share to /etc/fstab (once) and mounts it (nofail)."""
    lines = [
        "#!/bin/sh",
        "# Written by rum.pool (cloud-init): shared folders from the host, mounted with nofail.",
        "add() {",
        '    mkdir -p "$2"',
        "    if ! awk -v t=\"$1\" -v d=\"$2\" '$1 == t && $2 == d { found = 1 } "
        "END { exit !found }' /etc/fstab 2>/dev/null; then",
        "        printf '%s\\t%s\\t%s\\t%s\\t0\\t0\\n' \"$1\" \"$2\" \"$3\" \"$4\" >> /etc/fstab",
        "    fi",
        '    mountpoint -q "$2" || mount "$2" || echo "rum.pool: could not mount $1 on $2" >&2',
        "}",
    ]
    for tag, target, driver, options in shares:
        lines.append("add " + " ".join(shlex.quote(x) for x in (tag, target, driver, options)))
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def _drives(drives: t.Any) -> tuple:
    """(fs_setup entries, cloud-init mounts entries) for the data drives."""
    fs_setup, mounts, devices, targets = [], [], set(), set()
    for what, item in _items(drives, "drives", ("device", "filesystem", "target", "label"), "at least device"):
        device = item.get("device")
        if not isinstance(device, str) or not re.match(r"^/dev/[A-Za-z0-9/_.:-]+$", device):
            raise CloudInitError(f"{what}.device {device!r}: must be a device path such as /dev/vdb")
        if device in devices:
            raise CloudInitError(f"{what}.device {device!r}: used twice")
        devices.add(device)
        filesystem = item.get("filesystem")
        if filesystem is not None and filesystem not in FILESYSTEMS:
            raise CloudInitError(f"{what}.filesystem {filesystem!r}: must be one of "
                                 f"{', '.join(FILESYSTEMS)} (or null to leave the drive alone)")
        label = item.get("label")
        if label is not None:
            if not isinstance(label, str) or not _NO_SPACE.match(label):
                raise CloudInitError(f"{what}.label {label!r}: must be a string without white space")
            if filesystem and len(label) > LABEL_MAX[filesystem]:
                raise CloudInitError(f"{what}.label {label!r}: longer than {filesystem} allows "
                                     f"({LABEL_MAX[filesystem]} characters)")
        target = item.get("target")
        if target is not None:
            target = _abs_path(target, f"{what}.target")
            if target in targets:
                raise CloudInitError(f"{what}.target {target!r}: used twice")
            targets.add(target)
        if filesystem is None:
            continue
        entry = {"device": device, "filesystem": filesystem, "overwrite": False}
        if label is not None:
            entry["label"] = label
        fs_setup.append(entry)
        if target is not None:
            mounts.append([device, target, filesystem, "defaults,nofail", "0", "2"])
    return fs_setup, mounts


BTRFS_PROFILES = ("single", "dup", "raid0", "raid1", "raid1c3", "raid1c4", "raid10", "raid5", "raid6")
ZFS_LAYOUTS = ("mirror", "raidz", "raidz1", "raidz2", "raidz3")
# zpool(8): a letter first; names that are vdev types are reserved.
_ZPOOL = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$")
_ZPOOL_RESERVED = re.compile(r"^(mirror|raidz|draid|spare|log|cache|special|dedup|c[0-9])")


def _filesystems(filesystems: t.Any) -> list:
    """Validated file systems over several drives as (kind, target, mode, pool, devices)."""
    out, targets, devices = [], set(), set()
    for what, item in _items(filesystems, "filesystems", ("type", "devices", "target", "mode", "pool"),
                             "type, devices and target"):
        kind = item.get("type")
        if kind not in ("btrfs", "zfs"):
            raise CloudInitError(f"{what}.type {kind!r}: must be btrfs or zfs")
        devs = _strings(item.get("devices"), f"{what}.devices")
        if not devs:
            raise CloudInitError(f"{what}.devices: give at least one device")
        for dev in devs:
            if not re.match(r"^/dev/[A-Za-z0-9/_.:-]+$", dev) or dev in devices:
                raise CloudInitError(f"{what}.devices: {dev!r} is not a device path such as /dev/vdb, or used twice")
            devices.add(dev)
        target = _abs_path(item.get("target"), f"{what}.target")
        if target in targets:
            raise CloudInitError(f"{what}.target {target!r}: used twice")
        targets.add(target)
        mode = item.get("mode")
        modes = BTRFS_PROFILES if kind == "btrfs" else ZFS_LAYOUTS
        if mode is not None and mode not in modes:
            raise CloudInitError(f"{what}.mode {mode!r}: for {kind} one of {', '.join(modes)}")
        pool = item.get("pool")
        if kind == "zfs" and (not isinstance(pool, str) or not _ZPOOL.match(pool) or _ZPOOL_RESERVED.match(pool)):
            raise CloudInitError(f"{what}.pool {pool!r}: a zfs pool name (a letter, then letters, digits and "
                                 "_.:-; not a vdev type such as mirror)")
        if kind == "btrfs" and pool is not None:
            raise CloudInitError(f"{what}.pool: only zfs has pools")
        out.append((kind, target, mode or "", pool, devs))
    return out


def _filesystems_script(filesystems: list) -> str:
    """A shell script that makes each file system once (never over a drive that holds anything),
    adds it to /etc/fstab or the zfs pool cache, and mounts it (nofail)."""
    lines = [
        "#!/bin/sh",
        "# Written by rum.pool (cloud-init): file systems over several drives, made once (a drive that",
        "# already holds anything is never formatted) and mounted with nofail.",
        "set -u",
        'say() { echo "rum.pool: $*" >&2; }',
        "need() {  # need COMMAND PACKAGE: install PACKAGE when COMMAND is missing, as rum did",
        '    command -v "$1" >/dev/null 2>&1 && return 0',
        '    say "$1 is missing: installing $2"',
        "    if command -v apt-get >/dev/null 2>&1; then",
        '        DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" ||',
        '            { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2"; }',
        '    elif command -v dnf >/dev/null 2>&1; then dnf install -y "$2"',
        '    elif command -v zypper >/dev/null 2>&1; then zypper --non-interactive install "$2"',
        '    elif command -v apk >/dev/null 2>&1; then apk add "$2"',
        "    fi",
        '    command -v "$1" >/dev/null 2>&1 && return 0',
        '    say "$1 is still missing: add $2 to the image or to the VM\'s packages"; exit 1',
        "}",
        "blank() {  # blank DEVICE...: true when no device holds a file system, pool or partition table",
        "    for dev; do",
        '        [ -b "$dev" ] || { say "$dev is not a block device"; exit 1; }',
        '        [ -z "$(blkid -p -o value -s TYPE "$dev" 2>/dev/null)" ] || return 1',
        '        [ -z "$(blkid -p -o value -s PTTYPE "$dev" 2>/dev/null)" ] || return 1',
        "    done",
        "}",
        'listed() { awk -v d="$1" \'$2 == d { found = 1 } END { exit !found }\' /etc/fstab; }',
        "btrfs_fs() {  # btrfs_fs TARGET MODE DEVICE...",
        "    target=$1 mode=$2; shift 2",
        "    need mkfs.btrfs btrfs-progs",
        '    if [ "$(blkid -p -o value -s TYPE "$1" 2>/dev/null)" != btrfs ]; then',
        '        blank "$@" || { say "not formatting $*: a drive already holds data"; exit 1; }',
        '        if [ -n "$mode" ]; then set -- -d "$mode" "$@"; fi',
        '        mkfs.btrfs -q "$@" || { say "mkfs.btrfs $* failed"; exit 1; }',
        '        [ -z "$mode" ] || shift 2',
        "    fi",
        '    btrfs device scan "$@" >/dev/null 2>&1 || true',
        '    uuid=$(blkid -p -o value -s UUID "$1")',
        '    mkdir -p "$target"',
        "    listed \"$target\" || printf 'UUID=%s\\t%s\\tbtrfs\\tdefaults,nofail\\t0\\t0\\n' \"$uuid\" \"$target\" >> /etc/fstab",
        '    mountpoint -q "$target" || mount "$target" || { say "could not mount $target"; exit 1; }',
        "}",
        "zfs_fs() {  # zfs_fs POOL TARGET MODE DEVICE...",
        "    pool=$1 target=$2 mode=$3; shift 3",
        "    need zpool zfsutils-linux",
        "    modprobe zfs 2>/dev/null || true",
        '    if ! zpool list -H "$pool" >/dev/null 2>&1 && ! zpool import "$pool" >/dev/null 2>&1; then',
        '        blank "$@" || { say "not creating pool $pool on $*: a drive already holds data"; exit 1; }',
        '        if [ -n "$mode" ]; then set -- "$mode" "$@"; fi',
        '        zpool create -o ashift=12 -O mountpoint="$target" "$pool" "$@" || { say "zpool create $pool failed"; exit 1; }',
        "    fi",
        '    mountpoint -q "$target" || zfs mount "$pool" || { say "could not mount pool $pool on $target"; exit 1; }',
        "}",
    ]
    for kind, target, mode, pool, devices in filesystems:
        args = ([pool] if kind == "zfs" else []) + [target, mode] + devices
        lines.append(f"{kind}_fs " + " ".join(shlex.quote(arg) for arg in args))
    return "\n".join(lines) + "\n"


def _autologin_files(user: str) -> list:
    files = []
    for unit, args in AUTOLOGIN_UNITS.items():
        files.append({
            "path": f"/etc/systemd/system/{unit}.d/rum-autologin.conf",
            "owner": "root:root",
            "permissions": "0644",
            "content": ("[Service]\nExecStart=\n"
                        f"ExecStart=-/sbin/agetty --autologin {user} {args}\n"),
        })
    return files


def _script_file(path: str, content: str) -> dict:
    return {"path": path, "owner": "root:root", "permissions": "0700", "content": content}


def deep_merge(ours: t.Mapping[str, t.Any], theirs: t.Mapping[str, t.Any]) -> dict:
    """``theirs`` on top of ``ours``: mappings merge, lists append theirs after ours, other
    values from ``theirs`` win. Neither input is modified."""
    out = copy.deepcopy(dict(ours))
    for key, value in theirs.items():
        if isinstance(out.get(key), dict) and isinstance(value, t.Mapping):
            out[key] = deep_merge(out[key], value)
        elif isinstance(out.get(key), list) and isinstance(value, (list, tuple)):
            out[key] = out[key] + copy.deepcopy(list(value))
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------------------------------------
# Public


def vm_user_data(*, hostname: str, user: str = "rum", groups: t.Sequence[str] = (),
                 ssh_authorized_keys: t.Sequence[str] = (), sudo: t.Any = True,
                 provision_script: str | None = None, boot_script: str | None = None,
                 mounts: t.Sequence[t.Mapping[str, t.Any]] = (), drives: t.Sequence[t.Mapping[str, t.Any]] = (),
                 autologin: bool = False, packages: t.Sequence[str] = (),
                 extra: t.Mapping[str, t.Any] | None = None, shell: str | None = "/bin/bash",
                 filesystems: t.Sequence[t.Mapping[str, t.Any]] = (), default_mount: str | None = None) -> dict:
    """The cloud-config dict for a rum VM (see the module docstring for the choices made).

    ``sudo``: True for passwordless sudo, False/None for none, or a sudoers rule string.
    ``shell``: the user's login shell (None keeps the image's useradd default).
    ``extra``: user cloud-config merged on top with :func:`deep_merge`; its ``runcmd`` items
    run after ours, so they do not run when the provision script failed.
    ``filesystems``: file systems over several drives (see :func:`_filesystems`), made before the
    provision script runs; ``default_mount``: the folder login shells start in.
    """
    name = _hostname(hostname)
    login = _user(user)
    if not isinstance(autologin, bool):
        raise CloudInitError(f"autologin {autologin!r}: must be true or false")
    provision = _script(provision_script, "provision_script")
    boot = _script(boot_script, "boot_script")
    shares = _shares(mounts)
    fs_setup, drive_mounts = _drives(drives)
    multi = _filesystems(filesystems)
    start_in = _abs_path(default_mount, "default_mount") if default_mount is not None else None
    pkgs = _strings(packages, "packages")
    if extra is not None and not isinstance(extra, t.Mapping):
        raise CloudInitError(f"extra: must be a mapping (cloud-config), got {type(extra).__name__}")

    account: dict = {"name": login, "lock_passwd": True}
    if shell is not None:
        account["shell"] = _abs_path(shell, "shell")
    if sudo is True:
        account["sudo"] = SUDO_NOPASSWD
    elif isinstance(sudo, str) and sudo.strip():
        if "\n" in sudo:
            raise CloudInitError("sudo: a sudoers rule must be a single line")
        account["sudo"] = sudo
    elif sudo not in (False, None):
        raise CloudInitError(f"sudo {sudo!r}: must be true, false or a sudoers rule string")
    user_groups = _groups(groups)
    if user_groups:
        account["groups"] = user_groups
    keys = _keys(ssh_authorized_keys)
    if keys:
        account["ssh_authorized_keys"] = keys

    config: dict = {"hostname": name.split(".")[0]}
    if "." in name:
        config["fqdn"] = name
    config.update({
        "preserve_hostname": False,
        "manage_etc_hosts": "localhost",
        "users": [account],
        "disable_root": True,
        "ssh_pwauth": False,
    })
    if pkgs:
        config["packages"] = pkgs
    if fs_setup:
        config["fs_setup"] = fs_setup
    if drive_mounts:
        config["mounts"] = drive_mounts

    files: list = []
    runcmd: list = []
    if shares:
        files.append(_script_file(SHARES_PATH, _shares_script(shares)))
        runcmd.append([SHARES_PATH])
    if multi:
        files.append(_script_file(FILESYSTEMS_PATH, _filesystems_script(multi)))
        runcmd.append(f"{FILESYSTEMS_PATH} || exit 1")
    if start_in:
        files.append({"path": DEFAULT_MOUNT_PROFILE, "owner": "root:root", "permissions": "0644",
                      "content": ("# Written by rum.pool (cloud-init): login shells start in the default "
                                  f"mount.\nif [ -d {start_in} ]; then cd {start_in}; fi\n")})
    if provision is not None or boot is not None:
        files.append(_script_file(script_logs.RUNNER, script_logs.runner_script()))
    if autologin:
        files.extend(_autologin_files(login))
        units = " ".join(AUTOLOGIN_UNITS)
        runcmd.append(f"systemctl daemon-reload && systemctl try-restart {units} || true")
    if provision is not None:
        files.append(_script_file(PROVISION_PATH, provision))
        runcmd.append(f"{script_logs.run_line('provision', PROVISION_PATH)} && touch {PROVISIONED_MARKER} "
                      "|| exit 1")
    if boot is not None:
        files.append(_script_file(BOOT_PATH, boot))
        wrapper = ["#!/bin/sh",
                   "# Written by rum.pool (cloud-init): the VM's boot script, on every boot."]
        if provision is not None:
            wrapper.append("# An instance's first boot runs it from runcmd, after provisioning.")
            wrapper.append(f"[ -e {PROVISIONED_MARKER} ] || exit 0")
        wrapper.append("exec " + script_logs.run_line("boot", BOOT_PATH))
        files.append(_script_file(PER_BOOT_PATH, "\n".join(wrapper) + "\n"))
        if provision is not None:
            runcmd.append(f"{script_logs.run_line('boot', BOOT_PATH)} || exit 1")
    if files:
        config["write_files"] = files
    if runcmd:
        config["runcmd"] = runcmd

    if extra:
        config = deep_merge(config, extra)
    return config


def vm_meta_data(*, hostname: str, instance_id: str | None = None) -> dict:
    """NoCloud meta-data. Without ``instance_id``, ``_seed.make_seed`` derives one from the
    seed's content (so a changed seed re-provisions and an unchanged one does not)."""
    meta: dict = {}
    if instance_id is not None:
        if not isinstance(instance_id, str) or not instance_id.strip() or "\n" in instance_id:
            raise CloudInitError(f"instance_id {instance_id!r}: must be a non-empty single line")
        meta["instance-id"] = instance_id
    meta["local-hostname"] = _hostname(hostname)
    return meta


def vm_network_config(macs: t.Sequence[str], user_mode: t.Collection[str] = ()) -> dict:
    """network-config v2: DHCPv4 on each NIC, matched by MAC (no renaming).

    A user-mode NIC (``user_mode``: its MAC) that is not the first NIC is only there for port
    forwards: it gets qemu's fixed guest address 10.0.2.15/24 and neither a route nor DNS, so the
    guest's default route stays on the first NIC.

    cloud-init looks the interface name up by MAC in the guest, so this renders correctly with
    the netplan, networkd and ENI renderers alike. With no MACs, DHCP on every ``en*`` and
    ``eth*`` NIC; the glob is also the entry's id because cloud-init's networkd renderer uses
    the id as the interface name (best effort: the ENI renderer cannot express globs).
    """
    if isinstance(macs, str):
        raise CloudInitError("macs: must be a list of MAC addresses, got a single string")
    ethernets: dict = {}
    seen = set()
    for index, mac in enumerate(macs or ()):
        if not isinstance(mac, str) or not names.MAC.ok(mac.lower()):
            raise CloudInitError(f"macs[{index}] {mac!r}: not {names.MAC.hint}")
        mac = mac.lower()
        if mac in seen:
            raise CloudInitError(f"macs[{index}] {mac!r}: given twice")
        seen.add(mac)
        ethernets[f"nic{index}"] = {"match": {"macaddress": mac}, "dhcp4": True}
        if index and mac in {m.lower() for m in user_mode}:
            ethernets[f"nic{index}"] = {"match": {"macaddress": mac}, "dhcp4": False,
                                        "addresses": [USER_MODE_ADDRESS]}
    if not ethernets:
        for glob in ("en*", "eth*"):
            ethernets[glob] = {"match": {"name": glob}, "dhcp4": True}
    return {"version": 2, "ethernets": ethernets}
