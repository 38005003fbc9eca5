# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rum.pool.runner_user_data`` filter: the cloud-config that runs one runner once in a guest.

Documented in ``runner_user_data.yml`` beside this file. The work is done by
``module_utils/_runner_guest.py``; this wrapper only turns its errors into ``AnsibleFilterError``.
"""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.module_utils import _runner_guest


def runner_user_data(credential: t.Any, runner_dir: t.Any = _runner_guest.DEFAULT_RUNNER_DIR,
                     runner_user: t.Any = _runner_guest.DEFAULT_RUNNER_USER, poweroff: t.Any = True,
                     cache_url: t.Any = None) -> dict:
    """``jit.encoded_jit_config | rum.pool.runner_user_data`` (or a registration mapping) -> rum_vm's ``user_data``."""
    if isinstance(credential, str):
        credential = str(credential)
    elif isinstance(credential, dict):
        credential = {str(key): value for key, value in credential.items()}
    try:
        return _runner_guest.runner_user_data(credential, runner_dir=runner_dir, runner_user=runner_user,
                                              poweroff=poweroff, cache_url=None if cache_url is None else str(cache_url))
    except _runner_guest.RunnerGuestError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """rum.pool runner guest bootstrap filter."""

    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"runner_user_data": runner_user_data}
