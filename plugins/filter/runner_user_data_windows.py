# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rum.pool.runner_user_data_windows`` and ``rum.pool.windows_host_name`` filters.

Documented in ``runner_user_data_windows.yml`` and ``windows_host_name.yml`` beside this file. The
work is done by ``module_utils/_windows_guest.py``; these wrappers only turn its errors into
``AnsibleFilterError``.
"""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.module_utils import _windows_guest


def _plain(credential: t.Any) -> t.Any:
    if isinstance(credential, str):
        return str(credential)
    if isinstance(credential, dict):
        return {str(key): value for key, value in credential.items()}
    return credential


def runner_user_data_windows(credential: t.Any, runner_dir: t.Any = _windows_guest.DEFAULT_RUNNER_DIR,
                             runner_user: t.Any = _windows_guest.DEFAULT_RUNNER_USER, poweroff: t.Any = True,
                             cache_url: t.Any = None) -> str:
    """``jit.encoded_jit_config | rum.pool.runner_user_data_windows`` -> the seed's ``user_data`` (a script)."""
    try:
        return _windows_guest.runner_user_data_windows(_plain(credential), runner_dir=runner_dir,
                                                       runner_user=runner_user, poweroff=poweroff,
                                                       cache_url=None if cache_url is None else str(cache_url))
    except _windows_guest.WindowsGuestError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def windows_host_name(name: t.Any) -> str:
    """``runner_name | rum.pool.windows_host_name`` -> a computer name of at most 15 characters."""
    try:
        return _windows_guest.windows_host_name(str(name) if isinstance(name, str) else name)
    except _windows_guest.WindowsGuestError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """rum.pool Windows guest bootstrap filters."""

    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"runner_user_data_windows": runner_user_data_windows, "windows_host_name": windows_host_name}
