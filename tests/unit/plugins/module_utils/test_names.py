# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The naming rules shared by the domain XML, cloud-init data, runner bootstrap and rum_vm."""

from __future__ import annotations

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _names as names


@pytest.mark.parametrize("rule, good, bad", [
    (names.VM_NAME, ["a", "ci-pool-1", "x.y_z", "a" * 63], ["", "-a", "a" * 64, "a b", "a\n", None, 7]),
    (names.USER_NAME, ["rum", "_svc", "a-b_c1"], ["Rum", "1a", "a" * 33, "rum\n", ""]),
    (names.MAC, ["52:54:00:12:34:56"], ["52:54:00:12:34", "52-54-00-12-34-56", "52:54:00:12:34:56\n"]),
])
def test_rules_match_whole_values_only(rule, good, bad):
    assert all(rule.ok(value) for value in good)
    assert not any(rule.ok(value) for value in bad)
    assert rule.hint


@pytest.mark.parametrize("name, ok", [
    ("dev", True), ("a.b-c.example", True), ("a" * 63, True), ("a" * 64, False), ("-a", False),
    ("a_b", False), ("a.", False), ("", False), (".".join(["a" * 63] * 4), False), (None, False),
])
def test_hostnames(name, ok):
    assert names.is_hostname(name) is ok
