# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where VM files and cached images live, and whether qemu can reach them.

Internal to the rum.pool collection; not a public API. Used by ``rum_vm`` and ``rum_image``.

Under ``qemu:///system`` qemu does not run as the user that runs Ansible: on Debian it runs
as ``libvirt-qemu`` (``qemu`` on Fedora). libvirt's DAC driver chowns the disk files it hands
to qemu (backing files included), but it never touches their directories, so every ancestor
directory must be traversable by that user. ``check_qemu_access`` finds the first one that
is not, so a VM fails with a message that names the directory instead of libvirt's
"Permission denied" at start time.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import typing as t
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

SYSTEM_STORAGE_DIR = "/var/lib/libvirt/images/rum"
SYSTEM_IMAGE_CACHE = "/var/lib/libvirt/images/rum/cache"
QEMU_CONF = "/etc/libvirt/qemu.conf"
# Debian/Ubuntu build libvirt with libvirt-qemu, Fedora/RHEL with qemu.
DEFAULT_QEMU_USERS = ("libvirt-qemu", "qemu")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONF_RE = re.compile(r'^\s*(user|group)\s*=\s*"([^"]*)"\s*(#.*)?$')


class StorageError(Exception):
    """A storage path that cannot be used (bad VM name, unreadable configuration)."""


def is_session_uri(uri: str | None) -> bool:
    """True for a per-user libvirt (``qemu:///session``, ``qemu+ssh://host/session``)."""
    if not uri:
        return False
    return urlsplit(uri).path.rstrip("/") == "/session"


def is_system_uri(uri: str | None) -> bool:
    """True when qemu runs as a separate system user (``qemu:///system`` and remote variants)."""
    if not uri:
        return False
    parts = urlsplit(uri)
    return parts.scheme.split("+")[0] == "qemu" and parts.path.rstrip("/") == "/system"


def _user_dir(env_var: str, fallback: str) -> str:
    base = os.environ.get(env_var) or os.path.join(os.path.expanduser("~"), fallback)
    return os.path.join(base, "rum")


def default_storage_dir(uri: str | None) -> str:
    """Where VM directories go: a libvirt-readable place for system, the XDG data dir for session."""
    if is_session_uri(uri):
        return _user_dir("XDG_DATA_HOME", os.path.join(".local", "share"))
    return SYSTEM_STORAGE_DIR


def default_image_cache(uri: str | None) -> str:
    """Where downloaded base images are cached (content-addressed, see ``_image``)."""
    if is_session_uri(uri):
        return os.path.join(_user_dir("XDG_CACHE_HOME", ".cache"), "images")
    return SYSTEM_IMAGE_CACHE


def vm_dir(storage: str, name: str) -> str:
    """The directory that holds one VM's overlay, seed, drives and logs."""
    if not _NAME_RE.match(name or "") or name in (".", ".."):
        raise StorageError(
            f"VM name {name!r} cannot be used as a directory name: use letters, digits, '.', '_' "
            "and '-', starting with a letter or digit")
    return os.path.join(storage, name)


def read_qemu_conf(path: str = QEMU_CONF) -> tuple[str | None, str | None]:
    """The ``user`` and ``group`` qemu runs as according to ``qemu.conf`` (None when unset)."""
    found = {"user": None, "group": None}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = _CONF_RE.match(line)
                if match:
                    found[match.group(1)] = match.group(2)
    except OSError:
        pass
    return found["user"], found["group"]


def _lookup_user(name: str, getpwnam: t.Callable, getpwuid: t.Callable):
    """``pwd`` entry for a name or a ``+uid`` (qemu.conf accepts both); None if it does not exist."""
    try:
        if name.startswith("+"):
            return getpwuid(int(name[1:]))
        return getpwnam(name)
    except (KeyError, ValueError):
        return None


def _lookup_gid(name: str, getgrnam: t.Callable) -> int | None:
    try:
        if name.startswith("+"):
            return int(name[1:])
        return getgrnam(name).gr_gid
    except (KeyError, ValueError):
        return None


def _ancestors(path: str, stat_fn: t.Callable) -> list[str]:
    """``/``, ``/a``, ``/a/b`` ... above ``path``, and ``path`` itself when it is a directory."""
    path = os.path.abspath(path)
    out = []
    try:
        if stat.S_ISDIR(stat_fn(path).st_mode):
            out.append(path)
    except OSError:
        pass
    parent = os.path.dirname(path)
    if parent == path:
        return out
    while True:
        out.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return list(reversed(out))


def _describe(st: os.stat_result, getpwuid: t.Callable, getgrgid: t.Callable) -> str:
    try:
        owner = getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"mode {stat.S_IMODE(st.st_mode):04o} owned by {owner}:{group}"


def _allowed(st: os.stat_result, uid: int, gids: t.Iterable[int], bits: t.Sequence[int]) -> bool:
    """POSIX permission check: the owner bits if owner, else the group bits if in group, else other."""
    user_bit, group_bit, other_bit = bits
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & user_bit)
    if st.st_gid in set(gids):
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)


_EXEC_BITS = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_READ_BITS = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def check_qemu_access(path: str, qemu_user: str | None = None, qemu_group: str | None = None,
                      *, check_file: bool = False, conf_path: str = QEMU_CONF,
                      getpwnam: t.Callable = pwd.getpwnam, getpwuid: t.Callable = pwd.getpwuid,
                      getgrnam: t.Callable = grp.getgrnam, getgrgid: t.Callable = grp.getgrgid,
                      getgrouplist: t.Callable = os.getgrouplist,
                      stat_fn: t.Callable = os.stat) -> str | None:
    """Explain why qemu cannot reach ``path``, or return None when it can.

    Every existing ancestor directory must grant search (x) permission to the qemu user
    (owner, group or other bits, in POSIX order). Directories that do not exist yet are
    skipped: the collection creates them 0755/0711. With ``check_file`` the file itself must
    also be readable (for files libvirt does not relabel). The user comes from ``qemu_user``,
    else ``qemu.conf``, else the distribution default; when that user does not exist on this
    host (no system libvirt here), the check is skipped. ACLs are not evaluated.
    """
    conf_user, conf_group = read_qemu_conf(conf_path)
    entry = None
    if qemu_user or conf_user:
        qemu_user = qemu_user or conf_user
        entry = _lookup_user(qemu_user, getpwnam, getpwuid)
    else:
        for candidate in DEFAULT_QEMU_USERS:
            entry = _lookup_user(candidate, getpwnam, getpwuid)
            if entry is not None:
                qemu_user = candidate
                break
    if entry is None or entry.pw_uid == 0:
        return None
    user_name = entry.pw_name

    group_name = qemu_group or conf_group
    gid = _lookup_gid(group_name, getgrnam) if group_name else None
    if gid is None:
        # libvirt's built-in default group has the user's name on Debian/Fedora.
        gid = _lookup_gid(user_name, getgrnam)
    if gid is None:
        gid = entry.pw_gid
    try:
        gids = set(getgrouplist(user_name, gid))
    except (KeyError, OSError):
        gids = set()
    gids.add(gid)

    abspath = os.path.abspath(path)
    real = os.path.realpath(abspath)
    paths = [abspath] if real == abspath else [abspath, real]
    for target in paths:
        for directory in _ancestors(target, stat_fn):
            try:
                st = stat_fn(directory)
            except FileNotFoundError:
                break  # created later by the collection with a traversable mode
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            if not _allowed(st, entry.pw_uid, gids, _EXEC_BITS):
                return (
                    f"qemu (user {user_name}) cannot reach {abspath}: {directory} is "
                    f"{_describe(st, getpwuid, getgrgid)}; use a storage_dir outside {directory} "
                    f"(default {SYSTEM_STORAGE_DIR}) or chmod o+x {directory}")
        if check_file:
            try:
                st = stat_fn(target)
            except OSError:
                continue
            if not _allowed(st, entry.pw_uid, gids, _READ_BITS):
                return (f"qemu (user {user_name}) cannot read {abspath}: it is "
                        f"{_describe(st, getpwuid, getgrgid)}; chmod o+r {target}")
    return None


def domain_disk_files(domain_xml: str) -> list[str]:
    """The file paths of a libvirt domain's disks (``<disk type='file'>`` sources)."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return []
    paths = []
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("file"):
            paths.append(source.get("file"))
    return paths
