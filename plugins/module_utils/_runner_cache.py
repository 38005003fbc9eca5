# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A runner whose jobs use a self-hosted Actions cache server (the seed pool's ``cache_url``).

Internal to the rum.pool collection: not a public API. This file is also the program the guest runs
(``python3 rum-runner-cache RUNNER_DIR RUNNER_USER URL``, see ``guest_script``), so it uses the
standard library only.

Why a patch at all: the runner's worker sets ``ACTIONS_RESULTS_URL`` (cache service v2) and
``ACTIONS_CACHE_URL`` (v1) in every job's environment from what GitHub sends, over anything the
runner's own environment says, so a cache server given as an environment variable never reaches the
cache actions. Cache servers such as falcondev's document the way around it: rename those two
names in ``bin/Runner.Worker.dll`` (``..._URL`` to ``..._ORL``), so the worker sets variables
nobody reads, and give the runner the real names pointing at the cache server.

Done right, unlike the seed pool (which read the DLL as ASCII text and wrote it back, turning
every byte above 0x7F into ``?``):

* The names are .NET string literals: UTF-16LE entries of the assembly's ``#US`` heap, each a
  length prefix, the characters, and one flag byte. The PE and CLI headers are read to find that
  heap, and only whole entries equal to a name are rewritten, in place, byte for byte; every other
  byte of the file stays as it was (an ASCII copy of the name elsewhere, a longer string that
  contains it, resources).
* A replacement must have exactly as many UTF-16 code units as the name it replaces: the IL
  refers to an entry by its offset and the prefix gives its length, so an entry can neither grow
  nor shrink. ``..._URL`` to ``..._ORL`` fits by construction; anything else is refused. The cache
  server's URL itself never goes into the DLL, so it has no length limit: it goes to the runner's
  ``.env`` file (read by the runner at start, passed to every job).
* A DLL in which no name is found is refused and left untouched (a runner version this patch does
  not know); one already patched is left as it is. The new file replaces the old atomically.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
import typing as t

RENAMES = (("ACTIONS_RESULTS_URL", "ACTIONS_RESULTS_ORL"), ("ACTIONS_CACHE_URL", "ACTIONS_CACHE_ORL"))
ENV_NAMES = ("ACTIONS_RESULTS_URL", "ACTIONS_CACHE_URL")
WORKER_DLL = os.path.join("bin", "Runner.Worker.dll")
URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@-]*)*/\Z")
MAX_URL = 2048


class CacheUrlError(ValueError):
    """The cache URL or the DLL is not usable; the message says which and why."""


def check_url(url: t.Any, what: str = "cache_url") -> str:
    """An http(s) URL ending in '/' (the seed's rule: the cache actions append their paths to it)."""
    if not isinstance(url, str) or len(url) > MAX_URL or not URL.match(url):
        raise CacheUrlError(f"{what} {url!r}: an http:// or https:// URL of a cache server ending with '/', "
                            f"such as http://cache.internal:3000/<token>/ (at most {MAX_URL} characters)")
    return url


# --- the #US heap of a .NET assembly ------------------------------------------------------------------

def _u16(data: bytes, at: int) -> int:
    return struct.unpack_from("<H", data, at)[0]


def _u32(data: bytes, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def us_heap(data: bytes) -> tuple[int, int]:
    """(file offset, size) of the ``#US`` stream of a .NET PE file; CacheUrlError if it is none."""
    try:
        if data[:2] != b"MZ":
            raise CacheUrlError("not a PE file (no MZ header)")
        pe = _u32(data, 0x3C)
        if data[pe:pe + 4] != b"PE\0\0":
            raise CacheUrlError("not a PE file (no PE signature)")
        sections, opt_size = _u16(data, pe + 6), _u16(data, pe + 20)
        opt = pe + 24
        magic = _u16(data, opt)
        if magic not in (0x10B, 0x20B):
            raise CacheUrlError(f"unknown optional header magic {magic:#x}")
        dirs = opt + (96 if magic == 0x10B else 112)
        if _u32(data, dirs - 4) <= 14:
            raise CacheUrlError("no CLI header: not a .NET assembly")
        table = [struct.unpack_from("<IIII", data, opt + opt_size + 40 * i + 8) for i in range(sections)]

        def offset(rva: int) -> int:
            for vsize, vaddr, raw_size, raw in table:
                if vaddr <= rva < vaddr + max(vsize, raw_size):
                    return rva - vaddr + raw
            raise CacheUrlError(f"RVA {rva:#x} is in no section")

        cli_rva = _u32(data, dirs + 14 * 8)
        if not cli_rva:
            raise CacheUrlError("no CLI header: not a .NET assembly")
        root = offset(_u32(data, offset(cli_rva) + 8))
        if _u32(data, root) != 0x424A5342:
            raise CacheUrlError("no metadata root (BSJB)")
        at = root + 16 + _u32(data, root + 12)
        count = _u16(data, at + 2)
        at += 4
        for _stream in range(count):
            stream_offset, size = _u32(data, at), _u32(data, at + 4)
            end = data.index(b"\0", at + 8)
            name = data[at + 8:end]
            at = at + 8 + ((len(name) + 4) & ~3)
            if name == b"#US":
                if root + stream_offset + size > len(data):
                    raise CacheUrlError("the #US stream runs past the end of the file")
                return root + stream_offset, size
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, CacheUrlError):
            raise
        raise CacheUrlError(f"a truncated or malformed PE file ({exc})") from None
    raise CacheUrlError("no #US stream: not a .NET assembly")


def us_entries(data: bytes, start: int, size: int) -> t.Iterator[tuple[int, int, str]]:
    """(offset of the characters, number of UTF-16 code units, text) of each ``#US`` entry."""
    at, end = start, start + size
    while at < end:
        first = data[at]
        if first & 0x80 == 0:
            length, head = first, 1
        elif first & 0xC0 == 0x80:
            length, head = ((first & 0x3F) << 8) | data[at + 1], 2
        elif first & 0xE0 == 0xC0:
            length, head = (((first & 0x1F) << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]), 4
        else:
            raise CacheUrlError(f"a malformed #US heap entry at offset {at:#x}")
        if at + head + length > end:
            raise CacheUrlError(f"a #US heap entry at offset {at:#x} runs past the heap")
        if length >= 1:
            chars = at + head
            units = (length - 1) // 2
            yield chars, units, data[chars:chars + 2 * units].decode("utf-16-le", "replace")
        at += head + length


def _flag(text: str) -> int:
    """The byte after a #US entry's characters (ECMA-335 II.24.2.4)."""
    for char in text:
        code = ord(char)
        if code > 0xFF or 0x01 <= code <= 0x08 or 0x0E <= code <= 0x1F or code in (0x27, 0x2D, 0x7F):
            return 1
    return 0


def patch(data: bytes, renames: t.Sequence[tuple[str, str]] = RENAMES) -> tuple[bytes, dict[str, int]]:
    """``data`` with each #US entry equal to an old name rewritten as its new name; and how many of each.

    Raises CacheUrlError when a new name does not fit (another length) or when no name, old or new,
    is in the heap. Counts of 0 for every name with the new names present mean: already patched.
    """
    for old, new in renames:
        if len(old.encode("utf-16-le")) != len(new.encode("utf-16-le")):
            raise CacheUrlError(f"{new!r} does not fit in place of {old!r}: a #US entry keeps its length "
                                f"({len(old)} UTF-16 code units, not {len(new)})")
    start, size = us_heap(data)
    out = bytearray(data)
    counts = {old: 0 for old, _new in renames}
    present = set()
    for chars, units, text in us_entries(data, start, size):
        present.add(text)
        for old, new in renames:
            if text == old and units == len(old):
                out[chars:chars + 2 * units] = new.encode("utf-16-le")
                out[chars + 2 * units] = _flag(new)
                counts[old] += 1
    if not any(counts.values()) and not any(new in present for _old, new in renames):
        names = ", ".join(old for old, _new in renames)
        raise CacheUrlError(f"none of {names} is a string of this assembly: not a runner worker this patch knows")
    return bytes(out), counts


# --- applied in the guest -----------------------------------------------------------------------------

def _replace_file(path: str, data: bytes, owner: tuple[int, int] | None = None, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it (same mode, or ``mode``), atomically."""
    folder = os.path.dirname(path) or "."
    handle, temp = tempfile.mkstemp(prefix=".rum-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as fh:
            fh.write(data)
        if os.path.exists(path):
            info = os.stat(path)
            os.chmod(temp, mode if mode is not None else info.st_mode & 0o7777)
            os.chown(temp, *(owner or (info.st_uid, info.st_gid)))
        else:
            os.chmod(temp, mode if mode is not None else 0o644)
            if owner:
                os.chown(temp, *owner)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def env_file(current: str, url: str) -> str:
    """The runner's ``.env`` with ENV_NAMES set to ``url`` (other lines kept)."""
    lines = [line for line in current.splitlines() if line.split("=", 1)[0].strip() not in ENV_NAMES]
    return "".join(line + "\n" for line in lines + [f"{name}={url}" for name in ENV_NAMES])


def apply(runner_dir: str, url: str, owner: tuple[int, int] | None = None) -> str:
    """Patch ``runner_dir``'s worker DLL and point its ``.env`` at ``url``; returns what was done."""
    check_url(url)
    dll = os.path.join(runner_dir, WORKER_DLL)
    try:
        with open(dll, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CacheUrlError(f"{dll}: {exc.strerror}") from None
    try:
        patched, counts = patch(data)
    except CacheUrlError as exc:
        raise CacheUrlError(f"{dll}: {exc}; the DLL is left as it was") from None
    if patched != data:
        _replace_file(dll, patched)
        done = "renamed " + ", ".join(f"{old} ({n}x)" for old, n in counts.items() if n) + f" in {dll}"
    else:
        done = f"{dll} was already patched"
    env = os.path.join(runner_dir, ".env")
    current = ""
    if os.path.exists(env):
        with open(env, encoding="utf-8") as fh:
            current = fh.read()
    _replace_file(env, env_file(current, url).encode("utf-8"), owner=owner, mode=0o600)
    return f"{done}; {', '.join(ENV_NAMES)} set in {env}"


def guest_script() -> str:
    """The program the guest runs before the runner starts: this file, with a command line."""
    import inspect  # pylint: disable=import-outside-toplevel  # only the controller needs it

    return "#!/usr/bin/python3\n" + inspect.getsource(sys.modules[__name__])


def main(argv: list[str]) -> int:
    """``rum-runner-cache RUNNER_DIR RUNNER_USER URL``: exit 0 when applied, 1 when refused."""
    if len(argv) != 3:
        sys.stderr.write("usage: rum-runner-cache RUNNER_DIR RUNNER_USER URL\n")
        return 2
    runner_dir, user, url = argv
    try:
        import pwd  # pylint: disable=import-outside-toplevel  # POSIX only; the module is imported on any OS

        entry = pwd.getpwnam(user)
        sys.stdout.write("rum-runner-cache: " + apply(runner_dir, url, owner=(entry.pw_uid, entry.pw_gid)) + "\n")
    except (CacheUrlError, KeyError, OSError) as exc:
        sys.stderr.write(f"rum-runner-cache: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
