# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GitHub webhook signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

The HMAC is computed over the body bytes exactly as received (before any JSON or form
decoding) and compared in constant time. Only the SHA-256 header is accepted; the legacy
SHA-1 ``X-Hub-Signature`` is not.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional

PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: Optional[str]) -> bool:
    """True when ``header`` is the right signature of ``body`` under ``secret``.

    A missing or malformed header, or an empty secret, is never valid.
    """
    if not secret or not header:
        return False
    try:
        given = header.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    if not given.startswith(PREFIX.encode("ascii")):
        return False
    expected = sign(secret, body).encode("ascii")
    return hmac.compare_digest(expected, given)
