# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake GitHub REST API for tests: runner endpoints, auth, rate limits, faults (stdlib only)."""

from __future__ import annotations

from .model import FakeGitHubModel, Reply, decode_jit_config
from .server import FakeGitHub

__all__ = ["FakeGitHub", "FakeGitHubModel", "Reply", "decode_jit_config"]
