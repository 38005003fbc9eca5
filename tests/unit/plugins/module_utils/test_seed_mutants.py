# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mode, owner and group a seed gets on disk."""

from __future__ import annotations

import os
import stat

import pytest

from tests import needs
from tests.unit.plugins.module_utils.test_seed import _content

from ansible_collections.rum.pool.plugins.module_utils import _seed

# Ids that exist on every Debian host (daemon, bin): a seed handed to another account than root's.
OTHER_UID, OTHER_GID = 1, 2


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("first", [{}, {"mode": "0600"}, {"mode": "4750"}], ids=["new", "0600", "4750"])
def test_setuid_and_setgid_bits_survive_a_change_of_owner(tmp_path, first):
    """The kernel clears setuid/setgid when a file changes hands: the mode is set after the owner,
    whether the seed is written anew or only handed over, and a second run changes nothing."""
    needs.root("handing a file to another user")
    path = str(tmp_path / "seed.iso")
    if first:
        _seed.ensure_seed(path, _content(), **first)
    result = _seed.ensure_seed(path, _content(), mode="6750", owner=OTHER_UID, group=OTHER_GID)
    assert result["changed"] is True
    assert (_mode(path), os.stat(path).st_uid, os.stat(path).st_gid) == (0o6750, OTHER_UID, OTHER_GID)
    assert _seed.ensure_seed(path, _content(), mode="6750", owner=OTHER_UID, group=OTHER_GID)["changed"] is False
