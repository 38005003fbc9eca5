# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img wrappers: inspect images, make overlays and blank drives, grow disks.

Internal to the rum.pool collection; not a public API. Used by ``rum_vm``.

Every function takes ``run(argv) -> (rc, stdout, stderr)`` so unit tests can fake qemu-img;
the default runs it with ``subprocess``.

File modes: overlays and drives are created 0600. They hold the guest's own data (its SSH host
keys, whatever the workload writes), so only root needs them on the host. That works under
``qemu:///system`` because libvirt's DAC driver (``dynamic_ownership``, on by default) chowns
a disk to the qemu user while the VM runs and gives it back afterwards; under
``qemu:///session`` qemu runs as the owner anyway. What libvirt never fixes is the directory:
the VM directory must stay traversable (see ``_storage.check_qemu_access``). Base images in
the cache are 0644: they are public downloads and may back several VMs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import typing as t
from decimal import Decimal, InvalidOperation

Runner = t.Callable[[t.Sequence[str]], t.Tuple[int, str, str]]  # a run-time alias: no tuple[] before Python 3.9

QEMU_IMG = "qemu-img"
DISK_MODE = 0o600

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


class DiskError(Exception):
    """A disk image operation that failed; the message names the file and the cause."""


def default_run(argv: t.Sequence[str]) -> tuple[int, str, str]:
    """Run a command and return (rc, stdout, stderr) without raising on a non-zero rc."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        return 127, "", f"{argv[0]} not found ({exc}); install qemu-utils"
    return proc.returncode, proc.stdout, proc.stderr


def parse_size(value: str | int) -> int:
    """Bytes from ``20G`` / ``512M`` / ``1.5T`` / ``1048576`` (binary units, ``GiB``/``GB`` alike)."""
    if isinstance(value, bool):
        raise DiskError(f"invalid size {value!r}: expected bytes or a number with K, M, G or T")
    if isinstance(value, int):
        if value <= 0:
            raise DiskError(f"invalid size {value!r}: must be greater than zero")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise DiskError(
            f"invalid size {value!r}: expected bytes or a number with K, M, G or T "
            "(binary units), such as 20G")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the regex only lets decimals through
        raise DiskError(f"invalid size {value!r}") from None
    size = number * _UNITS[match.group(2).upper()]
    if size != size.to_integral_value():
        raise DiskError(f"invalid size {value!r}: not a whole number of bytes")
    if size <= 0:
        raise DiskError(f"invalid size {value!r}: must be greater than zero")
    return int(size)


def _check(run: Runner, argv: t.Sequence[str], what: str) -> str:
    rc, out, err = run(argv)
    if rc != 0:
        detail = (err or out or "").strip() or f"exit code {rc}"
        raise DiskError(f"{what}: {detail}")
    return out


def image_info(path: str, *, run: Runner | None = None) -> dict:
    """``qemu-img info --output=json`` of one image.

    The keys are qemu-img's own (``format``, ``virtual-size``, ``actual-size``,
    ``backing-filename``, ``backing-filename-format``...) plus ``virtual_size``,
    ``backing_file`` and ``backing_format`` (None when absent). ``-U`` lets it read an image a
    running VM holds open.
    """
    run = run or default_run
    if not os.path.exists(path):
        raise DiskError(f"cannot inspect disk image {path}: no such file")
    out = _check(run, [QEMU_IMG, "info", "--output=json", "-U", path],
                 f"cannot inspect disk image {path}")
    try:
        info = json.loads(out)
    except ValueError as exc:
        raise DiskError(f"cannot inspect disk image {path}: qemu-img printed no JSON ({exc})") from None
    if not isinstance(info, dict) or "virtual-size" not in info:
        raise DiskError(f"cannot inspect disk image {path}: unexpected qemu-img output")
    info["virtual_size"] = int(info["virtual-size"])
    info["backing_file"] = info.get("full-backing-filename") or info.get("backing-filename")
    info["backing_format"] = info.get("backing-filename-format")
    return info


def _temp_path(path: str) -> str:
    """A free name beside ``path`` for building it before the atomic rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=directory)
    os.close(fd)
    os.unlink(tmp)  # qemu-img creates the file itself; it must not exist
    return tmp


def _create(run: Runner, make_argv: t.Callable[[str], list], path: str, what: str) -> None:
    """Run ``qemu-img create`` into a temporary name, set the mode, rename into place."""
    if os.path.lexists(path):
        raise DiskError(f"{what}: {path} already exists; refusing to overwrite it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DiskError(f"{what}: directory {directory} does not exist")
    tmp = _temp_path(path)
    try:
        _check(run, make_argv(tmp), what)
        if os.path.exists(tmp):  # a faked runner in tests may not create it
            os.chmod(tmp, DISK_MODE)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def overlay_argv(base: str, base_format: str, size: int | None, path: str) -> list:
    """The ``qemu-img create`` command for a qcow2 overlay (kept apart so tests can read it)."""
    argv = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", base, "-F", base_format, path]
    if size is not None:
        argv.append(str(size))
    return argv


def create_overlay(base: str, path: str, *, base_format: str, size_bytes: int | None = None,
                   run: Runner | None = None) -> int:
    """Make ``path`` a qcow2 overlay backed by ``base``; return its virtual size.

    Never copies the base. The virtual size is max(``size_bytes``, the base's virtual size):
    qemu cannot shrink below the backing image without losing data. A base that has a
    backing file of its own is refused: a downloaded qcow2 could otherwise point at any file
    on the host and hand it to the guest.
    """
    run = run or default_run
    what = f"cannot create overlay {path} on {base}"
    base = os.path.abspath(base)  # the overlay records this path; it must not be relative
    info = image_info(base, run=run)
    if info.get("backing_file"):
        raise DiskError(f"{what}: the base image has a backing file of its own "
                        f"({info['backing_file']}); use a standalone image")
    if info.get("format") and info["format"] != base_format:
        raise DiskError(f"{what}: base_format is {base_format} but qemu-img reads the base as "
                        f"{info['format']}")
    base_size = info["virtual_size"]
    size = size_bytes if size_bytes is not None and size_bytes > base_size else None
    _create(run, lambda tmp: overlay_argv(base, base_format, size, tmp), path, what)
    return size if size is not None else base_size


def grow(path: str, size_bytes: int, *, check_mode: bool = False,
         run: Runner | None = None) -> bool:
    """Grow the virtual size of ``path`` to ``size_bytes``; True when it grew. Never shrinks."""
    run = run or default_run
    info = image_info(path, run=run)
    if size_bytes <= info["virtual_size"]:
        return False
    if not check_mode:
        fmt = info.get("format") or "qcow2"
        _check(run, [QEMU_IMG, "resize", "-q", "-f", fmt, path, str(size_bytes)],
               f"cannot grow disk {path} to {size_bytes} bytes")
    return True


def create_blank(path: str, size_bytes: int, fmt: str = "qcow2", *,
                 run: Runner | None = None) -> None:
    """Make an empty disk image (for extra drives), 0600."""
    run = run or default_run
    if size_bytes <= 0:
        raise DiskError(f"cannot create disk {path}: size must be greater than zero")
    _create(run, lambda tmp: [QEMU_IMG, "create", "-q", "-f", fmt, tmp, str(size_bytes)], path,
            f"cannot create disk {path}")
