# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cloud-init NoCloud seed ISOs: render, build, read back and converge on disk.

Internal to the rum.pool collection; not a public API. Used by the ``rum_seed_iso`` and
``rum_vm`` modules.

Idempotence is decided on the *content* of the seed (the files cloud-init reads), never on
the ISO bytes: pycdlib stamps the current time into the image, so two builds of the same
seed differ byte for byte.
"""

from __future__ import annotations

import grp
import hashlib
import io
import os
import pwd
import stat
import tempfile
import traceback
import typing as t
from dataclasses import dataclass, field

from ansible_collections.rum.pool.plugins.module_utils._checksum import file_digest

try:
    import yaml
    HAS_YAML = True
    YAML_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - PyYAML comes with ansible-core
    HAS_YAML = False
    YAML_IMPORT_ERROR = traceback.format_exc()

try:
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException
    HAS_PYCDLIB = True
    PYCDLIB_IMPORT_ERROR = None
except ImportError:
    HAS_PYCDLIB = False
    PYCDLIB_IMPORT_ERROR = traceback.format_exc()

VOLUME_ID = "cidata"

# Rock Ridge / Joliet name -> ISO9660 level-1 name (8.3), in the order cloud-init documents them.
ISO_NAMES = {
    "user-data": "USERDATA.;1",
    "meta-data": "METADATA.;1",
    "network-config": "NETWORKC.;1",
    "vendor-data": "VENDORDA.;1",
}

CLOUD_CONFIG_HEADER = "#cloud-config\n"

# Text in the seed may carry bytes that are not UTF-8 (a gzip'd user-data read back from an
# existing seed); surrogateescape keeps such bytes intact through str.
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


class SeedError(Exception):
    """A seed could not be rendered, built, read or written; the message says which and why."""


def _require_yaml() -> None:
    if not HAS_YAML:
        raise SeedError("the PyYAML library is required to render cloud-init seeds")


# ---------------------------------------------------------------------------------------------
# Rendering


def _plain(value: t.Any, where: str) -> t.Any:
    """Copy ``value`` into plain dict/list/str/int/float/bool/None, or fail naming ``where``.

    Ansible hands over str and dict subclasses (and tuples from Python callers) that PyYAML's
    safe dumper refuses; anything that is not data (objects, bytes, sets) is an input error.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, t.Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise SeedError(f"{where}: mapping key {key!r} is not a string or number")
            out[_plain(key, where)] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise SeedError(f"{where}: value of type {type(value).__name__} cannot be written to YAML")


def _str_representer(dumper: t.Any, data: str) -> t.Any:
    """Write multi-line strings as literal blocks so scripts stay readable in the seed.

    PyYAML falls back to a quoted style by itself when a block cannot represent the string
    exactly (trailing spaces, control characters), so the round trip stays exact.
    """
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


if HAS_YAML:
    class _SeedDumper(yaml.SafeDumper):
        """Safe dumper with literal blocks for multi-line strings; never emits Python tags."""

    _SeedDumper.add_representer(str, _str_representer)


def dump_yaml(data: t.Any, where: str = "data") -> str:
    """Deterministic, safe YAML of plain data (keys kept in the order given)."""
    _require_yaml()
    plain = _plain(data, where)
    return yaml.dump(plain, Dumper=_SeedDumper, default_flow_style=False, sort_keys=False,
                     allow_unicode=True, width=4096, explicit_start=False)


def render_user_data(user_data: str | t.Mapping[str, t.Any], where: str = "user_data") -> str:
    """A user-data text: a dict becomes ``#cloud-config`` YAML, a string is kept verbatim."""
    if isinstance(user_data, str):
        return str(user_data)
    if isinstance(user_data, t.Mapping):
        return CLOUD_CONFIG_HEADER + dump_yaml(user_data, where)
    raise SeedError(f"{where} must be a string or a mapping (cloud-config), "
                    f"got {type(user_data).__name__}")


def _render_network_config(network_config: str | t.Mapping[str, t.Any]) -> str:
    if isinstance(network_config, str):
        return str(network_config)
    if isinstance(network_config, t.Mapping):
        return dump_yaml(network_config, "network_config")
    raise SeedError("network_config must be a string or a mapping (network-config v1/v2), "
                    f"got {type(network_config).__name__}")


# ---------------------------------------------------------------------------------------------
# Content


@dataclass(frozen=True)
class SeedContent:
    """The files of a NoCloud seed, as cloud-init reads them."""

    user_data: str
    meta_data: dict = field(default_factory=dict)
    network_config: str | None = None
    vendor_data: str | None = None

    @property
    def instance_id(self) -> str | None:
        value = self.meta_data.get("instance-id")
        return None if value is None else str(value)

    def files(self) -> dict:
        """``{name: bytes}`` for every file the ISO holds, in a fixed order."""
        out = {
            "user-data": self.user_data.encode(_ENCODING, _ERRORS),
            "meta-data": dump_yaml(self.meta_data, "meta_data").encode(_ENCODING, _ERRORS),
        }
        if self.network_config is not None:
            out["network-config"] = self.network_config.encode(_ENCODING, _ERRORS)
        if self.vendor_data is not None:
            out["vendor-data"] = self.vendor_data.encode(_ENCODING, _ERRORS)
        return out

    def digest(self) -> str:
        """sha256 hex over the files (names and lengths included, so no two seeds collide)."""
        return _digest_files(self.files())

    def text(self) -> str:
        """Readable rendering of all files, for ``--diff``. It shows secrets the seed holds."""
        parts = []
        for name, data in self.files().items():
            body = data.decode(_ENCODING, "replace")
            if body and not body.endswith("\n"):
                body += "\n"
            parts.append(f"# ---- {name} ----\n{body}")
        return "".join(parts)


def _digest_files(files: t.Mapping[str, bytes]) -> str:
    sha = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        sha.update(f"{name}\0{len(data)}\0".encode("ascii"))
        sha.update(data)
    return sha.hexdigest()


def derive_instance_id(user_data: str, meta_data: t.Mapping[str, t.Any], network_config: str | None,
                       vendor_data: str | None) -> str:
    """``iid-<16 hex>`` from the seed's content, ignoring any instance-id already in meta_data."""
    rest = {key: value for key, value in meta_data.items() if key != "instance-id"}
    files = SeedContent(user_data, rest, network_config, vendor_data).files()
    return "iid-" + _digest_files(files)[:16]


def make_seed(user_data: str | t.Mapping[str, t.Any] | None,
              meta_data: t.Mapping[str, t.Any] | None = None,
              network_config: str | t.Mapping[str, t.Any] | None = None,
              vendor_data: str | t.Mapping[str, t.Any] | None = None,
              instance_id: str | None = None) -> SeedContent:
    """Render a seed.

    instance-id policy: ``instance_id`` wins; else ``meta_data['instance-id']``; else it is
    derived from the rest of the content, so that changing anything re-provisions the guest
    (cloud-init re-runs its per-instance modules for a new instance-id) and an unchanged seed
    keeps its id.
    """
    if user_data is None:
        user_text = CLOUD_CONFIG_HEADER + "{}\n"
    else:
        user_text = render_user_data(user_data)
    if meta_data is None:
        meta = {}
    elif isinstance(meta_data, t.Mapping):
        meta = _plain(meta_data, "meta_data")
    else:
        raise SeedError(f"meta_data must be a mapping, got {type(meta_data).__name__}")
    net_text = None if network_config is None else _render_network_config(network_config)
    vendor_text = None if vendor_data is None else render_user_data(vendor_data, "vendor_data")

    if instance_id is not None:
        iid = str(instance_id)
    elif meta.get("instance-id") not in (None, ""):
        iid = str(meta["instance-id"])
    else:
        iid = derive_instance_id(user_text, meta, net_text, vendor_text)
    if not iid.strip() or "\n" in iid:
        raise SeedError(f"instance-id {iid!r} must be a non-empty single line")
    # instance-id first: it is what people look for in meta-data.
    ordered = {"instance-id": iid}
    ordered.update((key, value) for key, value in meta.items() if key != "instance-id")
    return SeedContent(user_text, ordered, net_text, vendor_text)


# ---------------------------------------------------------------------------------------------
# ISO


def _require_pycdlib() -> None:
    if not HAS_PYCDLIB:
        raise SeedError("the pycdlib library is required to build cloud-init seed ISOs")


def build_iso_bytes(content: SeedContent) -> bytes:
    """The ISO image: volume id ``cidata``, ISO9660 + Rock Ridge + Joliet names."""
    _require_pycdlib()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
    try:
        for name, data in content.files().items():
            iso.add_fp(io.BytesIO(data), len(data), "/" + ISO_NAMES[name], rr_name=name,
                       joliet_path="/" + name)
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def _read_member(iso: t.Any, name: str) -> bytes | None:
    """A file of the seed by its long name, through Rock Ridge, else Joliet; None if absent."""
    if iso.has_rock_ridge():
        kwargs = {"rr_path": "/" + name}
    elif iso.has_joliet():
        kwargs = {"joliet_path": "/" + name}
    else:
        kwargs = {"iso_path": "/" + ISO_NAMES[name]}
    try:
        iso.get_record(**kwargs)
    except PyCdlibException:
        return None
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, **kwargs)
    return buf.getvalue()


def read_iso(path: str) -> SeedContent | None:
    """Read a seed back. None when ``path`` does not exist; SeedError when it is not a seed."""
    _require_pycdlib()
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        raise SeedError(f"seed ISO {path}: exists and is not a regular file")
    iso = pycdlib.PyCdlib()
    try:
        try:
            with open(path, "rb") as handle:
                iso.open_fp(handle)
                try:
                    volume = iso.pvd.volume_identifier.decode("ascii", "replace").strip()
                    if volume.lower() != VOLUME_ID:
                        raise SeedError(f"seed ISO {path}: volume id is {volume!r}, not "
                                        f"{VOLUME_ID!r}: not a cloud-init NoCloud seed")
                    raw = {name: _read_member(iso, name) for name in ISO_NAMES}
                finally:
                    iso.close()
        except PyCdlibException as exc:
            raise SeedError(f"seed ISO {path}: not a readable ISO9660 image ({exc})") from exc
    except OSError as exc:
        raise SeedError(f"seed ISO {path}: cannot read it: {exc.strerror or exc}") from exc
    if raw["user-data"] is None or raw["meta-data"] is None:
        raise SeedError(f"seed ISO {path}: no user-data or meta-data file: not a NoCloud seed")
    meta_text = raw["meta-data"].decode(_ENCODING, _ERRORS)
    _require_yaml()
    try:
        meta = yaml.safe_load(meta_text) if meta_text.strip() else {}
    except yaml.YAMLError as exc:
        raise SeedError(f"seed ISO {path}: meta-data is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise SeedError(f"seed ISO {path}: meta-data is not a mapping")

    def text(data: bytes | None) -> str | None:
        return None if data is None else data.decode(_ENCODING, _ERRORS)

    return SeedContent(text(raw["user-data"]) or "", meta, text(raw["network-config"]),
                       text(raw["vendor-data"]))


# ---------------------------------------------------------------------------------------------
# On disk


def parse_mode(mode: int | str | None) -> int:
    """An octal file mode from ``'0600'``/``'600'``/``0o600``; SeedError otherwise."""
    if mode is None:
        return 0o600
    if isinstance(mode, bool):
        raise SeedError(f"mode {mode!r} is not an octal file mode such as '0600'")
    if isinstance(mode, int):
        value = mode
    else:
        text = str(mode).strip()
        try:
            value = int(text, 8)
        except ValueError:
            raise SeedError(f"mode {mode!r} is not an octal file mode such as '0600'") from None
    if value < 0 or value > 0o7777:
        raise SeedError(f"mode {mode!r} is outside 0000-7777")
    return value


def _account_id(value: str | int | None, option: str, kind: str, lookup: t.Callable[[str], int]) -> int:
    """A numeric user or group id from a name or a number; -1 (leave it alone) for None."""
    if value is None:
        return -1
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise SeedError(f"{option} {text!r}: no such {kind} on this host") from None


def _attributes(st: os.stat_result | None, mode: int, uid: int, gid: int) -> dict:
    """The managed attributes as text, for the diff (owner/group only when managed)."""
    out = {"mode": "%04o" % (stat.S_IMODE(st.st_mode) if st else mode)}
    if uid != -1:
        out["owner"] = str(st.st_uid if st else uid)
    if gid != -1:
        out["group"] = str(st.st_gid if st else gid)
    return out


def _diff_text(attrs: dict, content: SeedContent | None) -> str:
    if content is None:
        return ""
    head = "".join(f"# {key}: {value}\n" for key, value in attrs.items())
    return head + content.text()


def write_atomic(path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory, fsync, rename.

    The file gets its final mode and owner before the rename, so it is never readable by
    anyone else, even for a moment.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SeedError(f"seed ISO {path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise SeedError(f"seed ISO {path}: cannot create a file in {directory}: "
                        f"{exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            if uid != -1 or gid != -1:
                os.fchown(handle.fileno(), uid, gid)
            handle.write(data)
            handle.flush()
            # The mode last: a change of owner, and a write by anyone but root, clear the
            # setuid/setgid bits it may ask for (mkstemp made the file 0600 meanwhile).
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SeedError(f"seed ISO {path}: write failed: {exc.strerror or exc}") from exc
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def ensure_seed(path: str, content: SeedContent, mode: int | str = 0o600,
                owner: str | int | None = None, group: str | int | None = None,
                check_mode: bool = False) -> dict:
    """Make ``path`` a seed ISO holding ``content`` with the given mode/owner/group.

    Returns ``changed``, ``path``, ``sha256`` (of the file on disk; None in check mode when the
    seed would be rewritten), ``instance_id``, ``content_changed`` and ``diff`` {before, after}.
    A file at ``path`` that is not a seed is an error, never silently replaced.
    """
    wanted_mode = parse_mode(mode)
    uid = _account_id(owner, "owner", "user", lambda name: pwd.getpwnam(name).pw_uid)
    gid = _account_id(group, "group", "group", lambda name: grp.getgrnam(name).gr_gid)
    current = read_iso(path)
    st = os.stat(path) if current is not None else None

    content_changed = current is None or current.files() != content.files()
    attrs_before = _attributes(st, wanted_mode, uid, gid) if st else {}
    attrs_after = _attributes(None, wanted_mode, uid, gid)
    changed = content_changed or attrs_before != attrs_after

    if changed and not check_mode:
        if content_changed:
            write_atomic(path, build_iso_bytes(content), wanted_mode, uid, gid)
        else:
            try:
                # Owner first: a change of owner clears the setuid/setgid bits of the mode.
                if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
                    os.chown(path, uid, gid)
                    os.chmod(path, wanted_mode)
                elif stat.S_IMODE(st.st_mode) != wanted_mode:
                    os.chmod(path, wanted_mode)
            except OSError as exc:
                raise SeedError(f"seed ISO {path}: cannot set mode/owner: "
                                f"{exc.strerror or exc}") from exc

    if check_mode and content_changed:
        sha = None
    else:
        sha = file_digest(path)
    return {
        "changed": changed,
        "content_changed": content_changed,
        "path": path,
        "sha256": sha,
        "instance_id": content.instance_id,
        "diff": {
            "before_header": path,
            "after_header": path,
            "before": _diff_text(attrs_before, current),
            "after": _diff_text(attrs_after, content),
        },
    }


def remove_seed(path: str, check_mode: bool = False, force: bool = False) -> dict:
    """Delete the seed at ``path`` if there is one.

    A regular file there that is not a seed is an error unless ``force`` (then it is deleted
    too); anything else (a directory, a device) is always an error. Returns ``changed``,
    ``path`` and ``diff``.
    """
    try:
        current = read_iso(path)
        before = _diff_text({}, current)
    except SeedError as exc:
        if not (force and os.path.isfile(path) and not os.path.islink(path)):
            raise SeedError(f"{exc}; refusing to delete it") from None
        current, before = None, f"# {path}: not a cloud-init seed ISO\n"
    if current is None and not os.path.lexists(path):
        return {"changed": False, "path": path, "diff": {"before": "", "after": ""}}
    if not check_mode:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SeedError(f"seed ISO {path}: cannot delete it: {exc.strerror or exc}") from exc
    return {"changed": True, "path": path,
            "diff": {"before_header": path, "after_header": path, "before": before, "after": ""}}
