"""Make the checkout importable as ``ansible_collections.rum.pool`` for every test."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".collections")
_LINK = os.path.join(COLLECTIONS, "ansible_collections", "rum", "pool")

if not os.path.lexists(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink("../../..", _LINK)
for _path in (COLLECTIONS, ROOT):  # the collection, and tests.tools.* helpers
    if _path not in sys.path:
        sys.path.insert(0, _path)
