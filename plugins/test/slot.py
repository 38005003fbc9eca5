# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runner pool tests: whether a string is a slot name (the slot contract's grammar, ``module_utils/_slot.py``)."""

from __future__ import annotations

import typing as t

from ansible_collections.rum.pool.plugins.module_utils import _slot


def slot_name(value: t.Any) -> bool:
    """``'ci-hv1-1' is rum.pool.slot_name``."""
    return _slot.is_slot_name(value)


class TestModule:
    """rum.pool runner pool tests."""

    def tests(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"slot_name": slot_name}
