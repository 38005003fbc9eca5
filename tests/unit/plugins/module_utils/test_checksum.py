# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checksums: what users write, SUMS files, file digests."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.rum.pool.plugins.module_utils._checksum import (
    Checksum,
    ChecksumError,
    file_digest,
    find_in_sums,
    image_name,
    normalize_digest,
    parse_checksum,
)

HEX_A = "a" * 64


# -- parse_checksum --------------------------------------------------------------------------

@pytest.mark.parametrize("spec, algorithm, value", [
    (f"sha256:{HEX_A}", "sha256", HEX_A),
    (f"SHA256:{HEX_A.upper()}", "sha256", HEX_A),
    (HEX_A, "sha256", HEX_A),
    ("b" * 128, "sha512", "b" * 128),
    (f"sha512:{'c' * 128}", "sha512", "c" * 128),
    (f"sha1:{'d' * 40}", "sha1", "d" * 40),
    (f"  sha256:{HEX_A}\n", "sha256", HEX_A),
])
def test_parse_checksum_digests(spec, algorithm, value):
    assert parse_checksum(spec) == Checksum(algorithm, value)


@pytest.mark.parametrize("spec, algorithm, url", [
    ("sha256:https://example.org/images/SHA256SUMS", "sha256", "https://example.org/images/SHA256SUMS"),
    ("https://example.org/images/SHA256SUMS", None, "https://example.org/images/SHA256SUMS"),
    ("file:///srv/SHA512SUMS", None, "file:///srv/SHA512SUMS"),
    ("sha512:/srv/SHA512SUMS", "sha512", "/srv/SHA512SUMS"),
])
def test_parse_checksum_sums_references(spec, algorithm, url):
    parsed = parse_checksum(spec)
    assert parsed.is_reference
    assert (parsed.algorithm, parsed.sums_url) == (algorithm, url)


@pytest.mark.parametrize("spec, fragment", [
    ("", "empty checksum"),
    ("sha256:abc", "64 hex digits, not 3"),
    ("md5:" + "a" * 32, "expected sha256:<hex>"),
    ("a" * 40, "bare digest must be sha256"),
    ("sha256:not-hex", "hex digest or the URL"),
    ("whatever", "expected sha256:<hex>"),
])
def test_parse_checksum_errors_say_what_is_wrong(spec, fragment):
    with pytest.raises(ChecksumError, match=fragment.replace("<", ".").replace(">", ".")):
        parse_checksum(spec)


# -- SUMS files --------------------------------------------------------------------------------

GNU_SUMS = f"""\
{'1' * 64}  debian-12-genericcloud-amd64.raw
{'2' * 64}  debian-12-genericcloud-amd64.qcow2
{'3' * 64} *ubuntu-24.04-server-cloudimg-amd64.img
"""

BSD_SUMS = f"""\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

# Fedora-Cloud-41 checksums
SHA256 (Fedora-Cloud-Base-41.x86_64.qcow2) = {'4' * 64}
SHA256 (Fedora-Cloud-Base-41.x86_64.raw.xz) = {'5' * 64}
-----BEGIN PGP SIGNATURE-----
iQIzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
"""


def test_sums_gnu_text_and_binary_markers():
    assert find_in_sums(GNU_SUMS, "debian-12-genericcloud-amd64.qcow2").value == "2" * 64
    assert find_in_sums(GNU_SUMS, "ubuntu-24.04-server-cloudimg-amd64.img").value == "3" * 64


def test_sums_bsd_format_inside_a_signature():
    found = find_in_sums(BSD_SUMS, "Fedora-Cloud-Base-41.x86_64.qcow2")
    assert found == Checksum("sha256", "4" * 64)


def test_sums_prefers_exact_name_and_accepts_dot_slash():
    text = f"{'6' * 64}  other/dir/img.qcow2\n{'7' * 64}  ./img.qcow2\n"
    assert find_in_sums(text, "img.qcow2").value == "7" * 64
    assert find_in_sums(f"{'6' * 64}  sub/img.qcow2\n", "img.qcow2").value == "6" * 64


def test_sums_missing_entry_names_file_and_source():
    with pytest.raises(ChecksumError, match=r"no checksum for nope.qcow2 in SUMS file http://x/SUMS"):
        find_in_sums(GNU_SUMS, "nope.qcow2", source="SUMS file http://x/SUMS")


def test_sums_algorithm_must_match_the_prefix():
    text = f"{'8' * 128}  img.qcow2\n"
    assert find_in_sums(text, "img.qcow2").algorithm == "sha512"
    with pytest.raises(ChecksumError, match="no sha256 checksum for img.qcow2"):
        find_in_sums(text, "img.qcow2", "sha256")


def test_sums_conflicting_entries_are_an_error():
    text = f"{'1' * 64}  a/img.qcow2\n{'2' * 64}  b/img.qcow2\n"
    with pytest.raises(ChecksumError, match="more than once"):
        find_in_sums(text, "img.qcow2")


def test_image_name_from_urls_and_paths():
    assert image_name("https://h/x/disk%20one.qcow2?sig=1") == "disk one.qcow2"
    assert image_name("/srv/images/base.img") == "base.img"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "sha1"])
def test_file_digest_reads_the_whole_file_in_blocks(tmp_path, algorithm):
    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_digest(str(path), algorithm) == hashlib.new(algorithm, data).hexdigest()
    assert file_digest(str(path)) == hashlib.sha256(data).hexdigest()


def test_normalize_digest_forms():
    assert normalize_digest(HEX_A.upper()) == f"sha256:{HEX_A}"
    assert normalize_digest(f"/cache/sha512/{'b' * 128}") == f"sha512:{'b' * 128}"
    assert normalize_digest("SHA1:ABC") == "sha1:abc"
