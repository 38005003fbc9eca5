"""The runner cache URL: the worker DLL's names renamed byte for byte, on a stand-in DLL built here.

The stand-in has the layout the real Runner.Worker.dll has where it matters: a PE32 file whose CLI
header points at a metadata root (BSJB) with #~, #Strings, #US, #GUID and #Blob streams; the names
are #US entries (length prefix, UTF-16LE, flag byte), next to entries that contain them, an ASCII
copy in #Strings, a UTF-16 copy outside the metadata, and bytes above 0x7F everywhere (which the
seed pool's ASCII round trip destroyed).
"""

from __future__ import annotations

import os
import pwd
import random
import struct
import subprocess

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _runner_cache as rc
from tests import needs

dnfile = needs.module("dnfile", "pip install dnfile (requirements-dev.txt)")

SYSTEM_PYTHON = "/usr/bin/python3"  # what a guest has


def _us_entry(text: str) -> bytes:
    body = text.encode("utf-16-le") + bytes([rc._flag(text)])  # pylint: disable=protected-access
    n = len(body)
    head = bytes([n]) if n < 0x80 else struct.pack(">H", 0x8000 | n)
    return head + body


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def standin_dll(us: list[str], *, pe32_plus: bool = False, noise: int = 4096) -> bytes:
    """A minimal .NET-shaped PE file with ``us`` as its #US heap (after the empty first entry)."""
    rnd = random.Random(7)
    junk = bytes(rnd.randrange(256) for _byte in range(noise))  # code and resources: every byte value
    streams = {
        "#~": _pad4(b"\0" * 24),
        "#Strings": _pad4(b"\0ACTIONS_RESULTS_URL\0ACTIONS_CACHE_URL\0Runner.Worker\0"),
        "#US": _pad4(b"\0" + b"".join(_us_entry(s) for s in us)),
        "#GUID": bytes(rnd.randrange(256) for _byte in range(16)),
        "#Blob": _pad4(b"\0\x03\x80\xff\xfe"),
    }
    version = _pad4(b"v4.0.30319\0")
    headers = b""
    offset = 16 + len(version) + 4 + sum(8 + len(_pad4(n.encode() + b"\0")) for n in streams)
    body = b""
    for name, data in streams.items():
        headers += struct.pack("<II", offset + len(body), len(data)) + _pad4(name.encode() + b"\0")
        body += data
    metadata = struct.pack("<IHHII", 0x424A5342, 1, 1, 0, len(version)) + version + struct.pack("<HH", 0, len(streams))
    metadata += headers + body
    # .text: the CLI header, the metadata, then "code" with a UTF-16 copy of a name in it (not a #US entry).
    text_rva, text_raw = 0x2000, 0x400
    cli = struct.pack("<IHHII", 72, 2, 5, text_rva + 72, len(metadata)) + b"\0" * (72 - 16)
    decoy = b"\x27" + "ACTIONS_RESULTS_URL".encode("utf-16-le") + b"\0"
    section = cli + metadata + junk + decoy + junk[:100]
    opt_size = 240 if pe32_plus else 224
    pe = 0x80
    dos = b"MZ" + junk[:0x3A] + struct.pack("<I", pe) + junk[:pe - 0x40]
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, opt_size, 0x2102)
    dirs = [(0, 0)] * 16
    dirs[14] = (text_rva, 72)
    if pe32_plus:
        opt = struct.pack("<H", 0x20B) + b"\0" * 106 + struct.pack("<I", 16)
    else:
        opt = struct.pack("<H", 0x10B) + b"\0" * 90 + struct.pack("<I", 16)
    opt += b"".join(struct.pack("<II", *d) for d in dirs)
    assert len(opt) == opt_size
    sect = b".text\0\0\0" + struct.pack("<IIII", len(section), text_rva, len(section), text_raw) + b"\0" * 16
    head = dos + coff + opt + sect
    return head + b"\0" * (text_raw - len(head)) + section


NAMES = ["ACTIONS_RUNTIME_URL", "ACTIONS_RESULTS_URL", "Größe ✓ – ümlaut", "ACTIONS_CACHE_URL",
         "x ACTIONS_RESULTS_URL", "ACTIONS_RESULTS_URL_", "a" * 100]


@pytest.mark.parametrize("pe32_plus", [False, True])
def test_patch_is_byte_exact(pe32_plus):
    data = standin_dll(NAMES, pe32_plus=pe32_plus)
    patched, counts = rc.patch(data)
    assert counts == {"ACTIONS_RESULTS_URL": 1, "ACTIONS_CACHE_URL": 1}
    assert len(patched) == len(data)
    changed = [i for i, (a, b) in enumerate(zip(data, patched)) if a != b]
    # exactly the 'U' of each renamed entry's "URL" (one UTF-16 code unit's low byte each)
    assert [(data[i], patched[i]) for i in changed] == [(ord("U"), ord("O"))] * 2
    start, size = rc.us_heap(patched)
    texts = [text for _at, _n, text in rc.us_entries(patched, start, size)]
    assert texts == ["ACTIONS_RUNTIME_URL", "ACTIONS_RESULTS_ORL", "Größe ✓ – ümlaut", "ACTIONS_CACHE_ORL",
                     "x ACTIONS_RESULTS_URL", "ACTIONS_RESULTS_URL_", "a" * 100]
    # dnfile, a .NET metadata reader of its own, reads the same strings at the same heap offsets
    heap = [at - start - (1 if 2 * n + 1 < 0x80 else 2) for at, n, _text in rc.us_entries(patched, start, size)]
    for version, texts_read in ((data, NAMES), (patched, texts)):
        read = dnfile.dnPE(data=version).net.user_strings
        assert [read.get(offset).value for offset in heap] == texts_read
    # the ASCII copy in #Strings and the UTF-16 copy outside the metadata are untouched
    assert patched.count(b"\0ACTIONS_RESULTS_URL\0") == 1
    assert patched.count(b"\x27" + "ACTIONS_RESULTS_URL".encode("utf-16-le") + b"\0") == 1


def test_the_seed_pools_ascii_round_trip_would_have_broken_it():
    """What the seed did (ASCII decode/encode) changes bytes the patch must not touch."""
    data = standin_dll(NAMES)
    seed = data.decode("ascii", "replace").encode("ascii", "replace")
    assert seed != data and sum(a != b for a, b in zip(seed, data)) > 1000
    patched, _counts = rc.patch(data)
    assert sum(a != b for a, b in zip(patched, data)) == 2


def test_already_patched_unknown_and_misfit():
    patched, _counts = rc.patch(standin_dll(NAMES))
    again, counts = rc.patch(patched)
    assert again == patched and counts == {"ACTIONS_RESULTS_URL": 0, "ACTIONS_CACHE_URL": 0}
    with pytest.raises(rc.CacheUrlError, match="none of ACTIONS_RESULTS_URL, ACTIONS_CACHE_URL is a string"):
        rc.patch(standin_dll(["something else", "x ACTIONS_RESULTS_URL"]))
    with pytest.raises(rc.CacheUrlError, match="'http://cache:3000/' does not fit in place of 'ACTIONS_RESULTS_URL'"):
        rc.patch(standin_dll(NAMES), renames=[("ACTIONS_RESULTS_URL", "http://cache:3000/")])
    for bad, message in ((b"PK\3\4", "no MZ header"), (b"MZ" + b"\0" * 200, "no PE signature"),
                         (standin_dll(NAMES)[:0x500], "truncated or malformed|RVA|past the end")):
        with pytest.raises(rc.CacheUrlError, match=message):
            rc.patch(bad)


@pytest.mark.parametrize("url, ok", [
    ("http://cache.internal:3000/token123/", True),
    ("https://10.0.0.5/", True),
    ("http://cache.internal:3000/token123", False),  # the seed's rule: a trailing '/'
    ("ftp://cache/", False),
    ("http://cache/ x/", False),
    ("http://cache/\n/", False),
    ("http://" + "a" * 2100 + "/", False),
])
def test_cache_url_rules(url, ok):
    if ok:
        assert rc.check_url(url) == url
    else:
        with pytest.raises(rc.CacheUrlError, match="ending with '/'"):
            rc.check_url(url)


def test_env_file_keeps_other_lines():
    assert rc.env_file("LANG=C.UTF-8\nACTIONS_CACHE_URL=old\n", "http://c/") == (
        "LANG=C.UTF-8\nACTIONS_RESULTS_URL=http://c/\nACTIONS_CACHE_URL=http://c/\n")


def _runner_dir(tmp_path, names=tuple(NAMES)):
    folder = tmp_path / "actions-runner"
    (folder / "bin").mkdir(parents=True)
    dll = folder / "bin" / "Runner.Worker.dll"
    dll.write_bytes(standin_dll(list(names)))
    dll.chmod(0o755)
    (folder / ".env").write_text("LANG=C.UTF-8\n")
    return folder, dll


def test_the_guest_program_applies_it(tmp_path):
    """guest_script() run the way the guest runs it: the system python3, a file of its own."""
    folder, dll = _runner_dir(tmp_path)
    before = dll.read_bytes()
    tool = tmp_path / "rum-runner-cache"
    tool.write_text(rc.guest_script())
    tool.chmod(0o755)
    user = pwd.getpwuid(os.getuid()).pw_name
    proc = subprocess.run([SYSTEM_PYTHON, "-I", str(tool), str(folder), user, "http://cache.internal:3000/t0k/"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "renamed ACTIONS_RESULTS_URL (1x), ACTIONS_CACHE_URL (1x)" in proc.stdout
    after = dll.read_bytes()
    assert len(after) == len(before) and sum(a != b for a, b in zip(after, before)) == 2
    assert oct(dll.stat().st_mode & 0o777) == "0o755"
    env = folder / ".env"
    assert env.read_text() == ("LANG=C.UTF-8\nACTIONS_RESULTS_URL=http://cache.internal:3000/t0k/\n"
                               "ACTIONS_CACHE_URL=http://cache.internal:3000/t0k/\n")
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    again = subprocess.run([SYSTEM_PYTHON, "-I", str(tool), str(folder), user, "http://cache.internal:3000/t0k/"],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "was already patched" in again.stdout
    assert dll.read_bytes() == after


def test_the_guest_program_refuses_and_leaves_the_dll(tmp_path):
    folder, dll = _runner_dir(tmp_path, names=("nothing to see",))
    before = dll.read_bytes()
    tool = tmp_path / "rum-runner-cache"
    tool.write_text(rc.guest_script())
    proc = subprocess.run([SYSTEM_PYTHON, "-I", str(tool), str(folder), "root", "http://cache/"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "the DLL is left as it was" in proc.stderr
    assert dll.read_bytes() == before and (folder / ".env").read_text() == "LANG=C.UTF-8\n"
    bad = subprocess.run([SYSTEM_PYTHON, "-I", str(tool), str(folder), "root", "http://cache"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "ending with '/'" in bad.stderr
