# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake AWX API for tests: job templates, launch, job status, cancel (stdlib only)."""

from __future__ import annotations

from .server import FakeAwx, FakeAwxModel

__all__ = ["FakeAwx", "FakeAwxModel"]
