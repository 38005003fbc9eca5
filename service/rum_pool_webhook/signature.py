# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GitHub webhook signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

The HMAC is computed over the body bytes exactly as received (before any JSON or form
decoding), as they stream in (``Verifier``), and compared in constant time. Only the SHA-256
header is accepted; the legacy SHA-1 ``X-Hub-Signature`` is not.

This file uses the standard library only and imports nothing from its package: the
collection's Event-Driven Ansible source (``extensions/eda/plugins/event_source``) loads this
same file, so the service and the rulebook check signatures with one piece of code.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


class Verifier:
    """An HMAC-SHA256 of a body fed in pieces, checked against the header at the end."""

    def __init__(self, secret: bytes) -> None:
        self._secret = bool(secret)
        self._mac = hmac.new(secret or b"-", digestmod=hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self._mac.update(chunk)

    def header(self) -> str:
        """The ``X-Hub-Signature-256`` value GitHub would send for what was fed so far."""
        return PREFIX + self._mac.hexdigest()

    def matches(self, header: str | None) -> bool:
        """True when ``header`` is the right signature. A missing or malformed header, or an
        empty secret, is never valid."""
        if not self._secret or not header:
            return False
        try:
            given = header.strip().lower().encode("ascii")
        except UnicodeEncodeError:
            return False
        if not given.startswith(PREFIX.encode("ascii")):
            return False
        return hmac.compare_digest(self.header().encode("ascii"), given)


def sign(secret: bytes, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    verifier = Verifier(secret)
    verifier.update(body)
    return verifier.header()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the right signature of ``body`` under ``secret``."""
    verifier = Verifier(secret)
    verifier.update(body)
    return verifier.matches(header)
