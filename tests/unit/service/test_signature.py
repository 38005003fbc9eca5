# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""X-Hub-Signature-256 signing and verification."""

from __future__ import annotations

import pytest

from rum_pool_webhook.signature import sign, verify

GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_sign_matches_githubs_documented_example():
    assert sign(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE


def test_verify_accepts_githubs_documented_example():
    assert verify(GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE) is True


def test_verify_tolerates_case_and_surrounding_space():
    assert verify(GITHUB_SECRET, GITHUB_BODY, "  " + GITHUB_SIGNATURE.upper() + "\t")


@pytest.mark.parametrize("secret, body, header", [
    (b"another secret", GITHUB_BODY, GITHUB_SIGNATURE),
    (GITHUB_SECRET, b"Hello, World?", GITHUB_SIGNATURE),
    (GITHUB_SECRET, GITHUB_BODY, None),
    (GITHUB_SECRET, GITHUB_BODY, ""),
    (GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE[len("sha256="):]),
    (GITHUB_SECRET, GITHUB_BODY, "sha1=" + GITHUB_SIGNATURE[len("sha256="):]),
    (GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE[:-1]),
    (GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE[:-1] + "\u00e9"),
    (b"", GITHUB_BODY, sign(b"", GITHUB_BODY)),
], ids=["wrong-secret", "tampered-body", "missing", "empty", "no-prefix", "sha1", "truncated",
        "non-ascii", "empty-secret"])
def test_verify_rejects(secret, body, header):
    assert verify(secret, body, header) is False


def test_signature_covers_raw_bytes_not_decoded_text():
    body = '{"a": "\u00e9"}'.encode("utf-8")
    header = sign(b"s3cret", body)
    assert verify(b"s3cret", body, header)
    assert not verify(b"s3cret", body.decode("utf-8").encode("latin-1"), header)
