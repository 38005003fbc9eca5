# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RS256 JWT verification with the standard library only (the fake GitHub has no dependencies).

RSASSA-PKCS1-v1_5 verification is one modular exponentiation and a byte comparison, and an RSA
public key in PEM is a short DER structure: small enough to do by hand for a test server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

# DER of DigestInfo{sha256} that prefixes the hash inside a PKCS#1 v1.5 signature block.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_OID = bytes.fromhex("2a864886f70d010101")


class JWTError(Exception):
    """The token is malformed, badly signed, or its claims are not acceptable."""


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER element at ``pos``: (tag, contents, position after it)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:end], end


def _sequence(data: bytes) -> list[tuple[int, bytes]]:
    items = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _read_tlv(data, pos)
        items.append((tag, value))
    return items


def _pkcs1_public(der: bytes) -> tuple[int, int]:
    tag, body, _unused = _read_tlv(der, 0)
    fields = _sequence(body) if tag == 0x30 else []
    if len(fields) < 2 or fields[0][0] != 0x02 or fields[1][0] != 0x02:
        raise ValueError("not an RSAPublicKey")
    return int.from_bytes(fields[0][1], "big"), int.from_bytes(fields[1][1], "big")


def load_public_key(pem: str) -> tuple[int, int]:
    """(n, e) from a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) or ``RSA PUBLIC KEY`` (PKCS#1)."""
    match = re.search(r"-----BEGIN ((?:RSA )?PUBLIC KEY)-----(.*?)-----END \1-----", pem, re.S)
    if not match:
        raise ValueError("no PEM public key found")
    der = base64.b64decode("".join(match.group(2).split()))
    if match.group(1) == "RSA PUBLIC KEY":
        return _pkcs1_public(der)
    tag, body, _unused = _read_tlv(der, 0)
    fields = _sequence(body) if tag == 0x30 else []
    if len(fields) != 2 or fields[0][0] != 0x30 or fields[1][0] != 0x03:
        raise ValueError("not a SubjectPublicKeyInfo")
    algorithm = _sequence(fields[0][1])
    if not algorithm or algorithm[0] != (0x06, _RSA_OID):
        raise ValueError("not an RSA public key")
    bits = fields[1][1]
    if not bits or bits[0] != 0:
        raise ValueError("unexpected unused bits in the key")
    return _pkcs1_public(bits[1:])


def _b64url_decode(text: str) -> bytes:
    pad = "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(text + pad)
    except (ValueError, TypeError) as exc:
        raise JWTError("bad base64url segment") from exc


def verify_rs256(message: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    n, e = key
    size = (n.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    value = int.from_bytes(signature, "big")
    if value >= n:
        return False
    block = pow(value, e, n).to_bytes(size, "big")
    digest = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    padding_len = size - len(digest) - 3
    if padding_len < 8:
        return False
    expected = b"\x00\x01" + b"\xff" * padding_len + b"\x00" + digest
    return hmac.compare_digest(block, expected)


def decode_unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) without checking the signature: to find which App's key to use."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("a JWT has three segments")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
    except ValueError as exc:
        raise JWTError("JWT segments are not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTError("JWT segments are not JSON objects")
    return header, claims


def verify_jwt(token: str, key: tuple[int, int]) -> dict:
    """The claims of an RS256 JWT whose signature matches ``key``; JWTError otherwise."""
    header, claims = decode_unverified(token)
    if header.get("alg") != "RS256":
        raise JWTError(f"unsupported JWT algorithm {header.get('alg')!r}")
    head, body, sig = token.split(".")
    if not verify_rs256(f"{head}.{body}".encode("ascii"), _b64url_decode(sig), key):
        raise JWTError("JWT signature does not match the App's public key")
    return claims
