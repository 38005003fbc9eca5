# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checksums: parse what users write, look digests up in SUMS files, hash files.

Internal to the rum.pool collection; not a public API. Pure Python (no Ansible imports), used by
the image cache (``_image``), the seed ISO (``_seed``) and the test tooling, so a file is hashed
by one function everywhere (``file_digest``).
"""

from __future__ import annotations

import hashlib
import os
import re
import typing as t
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# hex length of each supported algorithm
ALGORITHMS = {"sha256": 64, "sha512": 128, "sha1": 40}
CHUNK = 1 << 20

HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_GNU_LINE = re.compile(r"^\\?([0-9a-fA-F]{40,128})\s[ *]?(.+)$")
_BSD_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]{40,128})$", re.IGNORECASE)


class ChecksumError(ValueError):
    """A checksum that cannot be parsed or found; the message names it and its source."""


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checksum:
    """An expected digest, or a reference to a SUMS file that holds it.

    ``value`` is None for a reference (``sums_url`` set); ``algorithm`` is None for a plain
    SUMS URL until the file tells which algorithm it uses.
    """

    algorithm: str | None
    value: str | None = None
    sums_url: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.value is None

    def __str__(self) -> str:
        if self.value is None:
            prefix = f"{self.algorithm}:" if self.algorithm else ""
            return f"{prefix}{self.sums_url}"
        return f"{self.algorithm}:{self.value}"


def _looks_like_location(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text)) or text.startswith(("/", "./", "~"))


def _algorithm_for_length(length: int) -> str | None:
    for name, size in ALGORITHMS.items():
        if size == length:
            return name
    return None


def parse_checksum(spec: str) -> Checksum:
    """Parse ``sha256:<hex>``, a bare sha256/sha512 hex digest, or a SUMS file location.

    A SUMS location is ``sha256:<URL or path>`` or just the URL or absolute path of the file;
    the entry for the image's file name is looked up later (``resolve_checksum``).
    """
    text = (spec or "").strip()
    if not text:
        raise ChecksumError("empty checksum: give sha256:<hex digest> or the URL of a SUMS file")
    algo, sep, rest = text.partition(":")
    if sep and algo.lower() in ALGORITHMS:
        algo = algo.lower()
        rest = rest.strip()
        if HEX_RE.match(rest):
            if len(rest) != ALGORITHMS[algo]:
                raise ChecksumError(f"invalid checksum {text!r}: a {algo} digest has "
                                    f"{ALGORITHMS[algo]} hex digits, not {len(rest)}")
            return Checksum(algo, rest.lower())
        if rest and _looks_like_location(rest):
            return Checksum(algo, None, rest)
        raise ChecksumError(f"invalid checksum {text!r}: after '{algo}:' give a hex digest or the "
                            "URL of a SUMS file")
    if HEX_RE.match(text):
        guessed = _algorithm_for_length(len(text))
        if guessed in ("sha256", "sha512"):
            return Checksum(guessed, text.lower())
        raise ChecksumError(f"invalid checksum {text!r}: a bare digest must be sha256 (64 hex digits) "
                            "or sha512 (128); prefix others with their algorithm, e.g. sha1:<hex>")
    if _looks_like_location(text):
        return Checksum(None, None, text)
    raise ChecksumError(f"invalid checksum {text!r}: expected sha256:<hex>, a bare sha256 digest, "
                        "or the URL of a SUMS file (optionally prefixed with sha256:)")


def image_name(url: str) -> str:
    """The file name an image URL or path ends in (what SUMS files list)."""
    path = urlsplit(url).path if "://" in url else url
    return os.path.basename(unquote(path).rstrip("/"))


def find_in_sums(text: str, name: str, algorithm: str | None = None,
                 source: str = "the SUMS file") -> Checksum:
    """The checksum of ``name`` in GNU (``hash  name``, ``hash *name``) or BSD format text.

    An exact name match wins over a match on the base name (``./dir/name``). Lines of other
    lengths or algorithms (a PGP signature block, other tools' output) are ignored.
    """
    exact: list[Checksum] = []
    by_base: list[Checksum] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bsd = _BSD_LINE.match(line)
        if bsd:
            algo, entry, value = bsd.group(1).lower(), bsd.group(2), bsd.group(3)
        else:
            gnu = _GNU_LINE.match(line)
            if not gnu:
                continue
            value, entry = gnu.group(1), gnu.group(2).strip()
            algo = _algorithm_for_length(len(value))
        if algo is None or len(value) != ALGORITHMS[algo]:
            continue
        if algorithm and algo != algorithm:
            continue
        entry = entry.lstrip("*")
        found = Checksum(algo, value.lower())
        cleaned = entry[2:] if entry.startswith("./") else entry
        if cleaned == name:
            exact.append(found)
        elif os.path.basename(cleaned) == name:
            by_base.append(found)
    matches = exact or by_base
    wanted = f"{algorithm} " if algorithm else ""
    if not matches:
        raise ChecksumError(f"no {wanted}checksum for {name} in {source}")
    if len({m.value for m in matches}) > 1:
        raise ChecksumError(f"{source} lists {name} more than once with different checksums")
    return matches[0]


def resolve_checksum(checksum: Checksum | None, image_url: str,
                     read_text: t.Callable[[str], str]) -> Checksum | None:
    """Turn a SUMS reference into a concrete digest by reading the SUMS file."""
    if checksum is None or not checksum.is_reference:
        return checksum
    text = read_text(checksum.sums_url or "")
    return find_in_sums(text, image_name(image_url), checksum.algorithm,
                        source=f"SUMS file {checksum.sums_url}")


def normalize_digest(value: str) -> str:
    """``sha256:<hex>`` from a digest, a bare hex digest, or a blob path in a cache."""
    text = (value or "").strip()
    if text.startswith("/"):
        return f"{os.path.basename(os.path.dirname(text))}:{os.path.basename(text)}".lower()
    if ":" not in text and HEX_RE.match(text):
        algo = _algorithm_for_length(len(text))
        if algo:
            return f"{algo}:{text.lower()}"
    return text.lower()
