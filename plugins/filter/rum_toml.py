# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rum.pool.rum_toml`` filter: a rum.toml's path in, rum_vm's options out.

Documented in ``rum_toml.yml`` beside this file. The work is done by
``module_utils/_rum_toml.py``; this wrapper only turns its errors into ``AnsibleFilterError``.
"""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.module_utils import _rum_toml


def rum_toml(path: t.Any) -> dict:
    """``'dev.rum.toml' | rum.pool.rum_toml`` -> a dict of rum.pool.rum_vm options."""
    if not isinstance(path, str) or not path.strip():
        raise AnsibleFilterError(f"rum_toml: give the path of a rum.toml file, got {path!r}")
    try:
        return _rum_toml.options(str(path))
    except _rum_toml.RumTomlError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """rum.pool rum.toml filter."""

    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"rum_toml": rum_toml}
