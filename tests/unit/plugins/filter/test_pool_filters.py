# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pool filters: defaults, error translation, and docs that match the functions."""

from __future__ import annotations

import inspect
import os
import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.filter import pool as filters
from ansible_collections.rum.pool.plugins.module_utils import _slot
from ansible_collections.rum.pool.plugins.test import slot as slot_tests

FILTER_DIR = os.path.dirname(filters.__file__)
NOW = 1_750_000_000.0
ALL = filters.FilterModule().filters()
TESTS = slot_tests.TestModule().tests()
TEST_DIR = os.path.dirname(slot_tests.__file__)


def test_filter_names():
    assert set(ALL) == {"host_short_name", "slot_names", "runner_name", "slot_plan", "slot_table", "slot_guard",
                        "slot_labels"}
    assert all(callable(f) for f in ALL.values())


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_filter_has_a_doc_file_matching_its_signature(name):
    path = os.path.join(FILTER_DIR, f"{name}.yml")
    with open(path, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    assert set(doc) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    documentation = doc["DOCUMENTATION"]
    assert documentation["name"] == name
    assert str(documentation["version_added"]) == "0.1.0"
    assert documentation["author"] == "rum.pool developers (@rum-pool)"
    assert f"rum.pool.{name}" in doc["EXAMPLES"]
    assert "_value" in doc["RETURN"]
    # The options are the function's parameters, the input first under the name _input.
    params = list(inspect.signature(ALL[name]).parameters)
    options = documentation["options"]
    assert list(options) == ["_input"] + params[1:]
    assert options["_input"]["required"] is True
    positional = [p.strip() for p in documentation["positional"].split(",")]
    assert positional[0] == "_input" and set(positional) <= set(options)
    # Documented defaults are the real ones.
    for param in params[1:]:
        default = inspect.signature(ALL[name]).parameters[param].default
        documented = options[param].get("default")
        if default is None or default is inspect.Parameter.empty:
            assert documented in (None, []), (name, param)
        else:
            assert documented == default, (name, param)


def test_host_short_name():
    assert ALL["host_short_name"]("HV1.example.com") == "hv1"
    with pytest.raises(AnsibleFilterError, match="no usable first label"):
        ALL["host_short_name"](".example.com")


def test_slot_names():
    assert ALL["slot_names"]("ci", "hv1.example.com", "2") == ["ci-hv1-1", "ci-hv1-2"]
    with pytest.raises(AnsibleFilterError, match="pool name 'CI' is invalid"):
        ALL["slot_names"]("CI", "hv1", 2)
    with pytest.raises(AnsibleFilterError, match="pool size must be an integer"):
        ALL["slot_names"]("ci", "hv1", "many")


def test_runner_name_uses_the_clock_by_default(monkeypatch):
    monkeypatch.setattr(filters.time, "time", lambda: NOW)
    names = {ALL["runner_name"]("ci-hv1-1") for _draw in range(20)}
    explicit = ALL["runner_name"]("ci-hv1-1", now=NOW + 86400)
    assert all(re.match(r"^ci-hv1-1-[0-9a-z]{6}$", n) for n in names | {explicit})
    # The first 4 suffix characters are the second: the default clock was used.
    assert {n[-6:-2] for n in names} == {names.pop()[-6:-2]}
    assert explicit[-6:-2] not in {n[-6:-2] for n in names}


def test_runner_name_bad_slot():
    with pytest.raises(AnsibleFilterError, match="slot name must look like"):
        ALL["runner_name"]("ci")


def test_runner_names_are_unique_over_10000_filter_calls(monkeypatch):
    clock = [NOW]
    monkeypatch.setattr(filters.time, "time", lambda: clock[0])
    names = set()
    for _draw in range(10_000):
        clock[0] += 1.5
        names.add(ALL["runner_name"]("ci-hv1-1"))
    assert len(names) == 10_000


def test_slot_plan(monkeypatch):
    monkeypatch.setattr(filters.time, "time", lambda: NOW)
    vms = [{"name": "ci-hv1-1", "state": "running",
            "labels": {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "runner_name": "ci-hv1-1-aaaaaa",
                       "runner_id": "4", "created_at": str(int(NOW - 100))}}]
    plan = ALL["slot_plan"](vms, pool="ci", host="hv1.example.com", size=2)
    assert [(r["slot"], r["action"]) for r in plan["slots"]] == [("ci-hv1-1", "keep"), ("ci-hv1-2", "create")]
    assert plan["slots"][0]["age"] == 100  # now defaulted to the clock
    assert plan["slots"][0]["reason"] == "booting: runner not listed yet (100s of 600s)"  # default timeout
    later = ALL["slot_plan"](vms, pool="ci", host="hv1", size=1, runners=[], online_timeout=60, now=NOW + 1000)
    assert later["slots"][0]["action"] == "recreate" and later["slots"][0]["age"] == 1100
    assert ALL["slot_plan"]([], pool="ci", host="hv1")["summary"]["create"] == 2  # default size


@pytest.mark.parametrize("kwargs, match", [
    ({"host": "hv1"}, "the pool option is required"),
    ({"pool": "ci"}, "the host option is required"),
    ({"pool": "ci", "host": "hv1", "size": "lots"}, "pool size must be an integer"),
    ({"pool": "ci", "host": "hv1", "runners": "r1"}, "runners must be a list of dicts"),
    ({"pool": "ci", "host": "hv1", "online_timeout": -1}, "online timeout"),
])
def test_slot_plan_errors(kwargs, match):
    with pytest.raises(AnsibleFilterError, match=match):
        ALL["slot_plan"]([], **kwargs)


def test_slot_plan_bad_vms():
    with pytest.raises(AnsibleFilterError, match="vms must be a list of dicts"):
        ALL["slot_plan"]("ci-hv1-1", pool="ci", host="hv1")


def test_slot_table():
    plan = ALL["slot_plan"]([], pool="ci", host="hv1", size=1, now=NOW)
    table = ALL["slot_table"](plan)
    assert table.split("\n") == [
        "SLOT      VM STATE  RUNNER  STATUS  BUSY  ACTION  REASON",
        "ci-hv1-1  absent    -       -       -     create  no VM",
        "1 slot (size 1): 1 create, 0 recreate, 0 keep, 0 remove; 0 orphan runners",
    ]
    with pytest.raises(AnsibleFilterError, match="needs a pool plan"):
        ALL["slot_table"]({"not": "a plan"})


# --- one slot: the generation check and the labels ------------------------------------------------

SETTINGS = {"name": "ci", "host": "hv1", "backend": "libvirt", "github": {"token": "ghp_secret_value"}}
OLD = "ci-hv1-1-aaaaaa"


def slot_vm(runner=OLD, **labels):
    base = {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "runner_name": runner}
    base.update(labels)
    return {"name": "ci-hv1-1", "state": "shutoff", "labels": base}


def test_slot_guard_names_the_new_generation_when_it_goes_ahead(monkeypatch):
    monkeypatch.setattr(filters.time, "time", lambda: NOW)
    guard = ALL["slot_guard"]([slot_vm()], settings=SETTINGS, slot="ci-hv1-1", action="recreate", runner_name=OLD)
    assert {k: guard[k] for k in ("act", "outcome", "reason", "vm", "runner_name")} == {
        "act": True, "outcome": "recreated", "reason": f"it held runner {OLD}", "vm": True, "runner_name": OLD}
    assert re.match(r"^ci-hv1-1-[0-9a-z]{6}$", guard["new_runner_name"]) and guard["new_runner_name"] != OLD
    assert _slot.minted_at(guard["new_runner_name"], NOW) == int(NOW)  # the default clock
    created = ALL["slot_guard"]([], settings=SETTINGS, slot="ci-hv1-1", action="create")
    assert created["outcome"] == "created" and created["new_runner_name"]


@pytest.mark.parametrize("vms, action, runner_name, reason", [
    ([slot_vm("ci-hv1-1-bbbbbb")], "recreate", OLD, f"it now holds runner ci-hv1-1-bbbbbb, not runner {OLD}"),
    ([], "remove", OLD, f"it now holds no VM, not runner {OLD}"),
    ([slot_vm()], "create", None, f"it already holds runner {OLD}"),
])
def test_slot_guard_skips_without_naming_a_runner(vms, action, runner_name, reason):
    guard = ALL["slot_guard"](vms, settings=SETTINGS, slot="ci-hv1-1", action=action, runner_name=runner_name)
    assert (guard["act"], guard["outcome"], guard["reason"], guard["new_runner_name"]) == (False, "skipped", reason, None)


def test_slot_guard_remove_names_no_new_generation():
    guard = ALL["slot_guard"]([slot_vm()], settings=SETTINGS, slot="ci-hv1-1", action="remove")
    assert guard["act"] and guard["outcome"] == "removed" and guard["new_runner_name"] is None


@pytest.mark.parametrize("args, match", [
    ({"settings": None}, r"settings must be the pool's settings, lookup\('rum.pool.pool_settings'\) \(got NoneType\)"),
    ({"settings": {"name": "ci"}}, "settings must be the pool's settings"),
    ({"action": "keep"}, "action must be one of create, recreate, remove"),
    ({"slot": "ci-hv2-1"}, "'ci-hv2-1' is not a slot of pool 'ci' on host 'hv1'"),
    ({"vms": [slot_vm(), slot_vm()]}, "one slot has one VM at most, got 2 VMs"),
    ({"vms": "ci-hv1-1"}, "vms must be a list of dicts"),
])
def test_slot_guard_errors(args, match):
    call = {"settings": SETTINGS, "slot": "ci-hv1-1", "action": "recreate"}
    call.update(args)
    vms = call.pop("vms", [])
    with pytest.raises(AnsibleFilterError, match=match) as err:
        ALL["slot_guard"](vms, **call)
    assert "ghp_secret_value" not in str(err.value)


def test_slot_labels(monkeypatch):
    monkeypatch.setattr(filters.time, "time", lambda: NOW + 0.4)
    labels = ALL["slot_labels"]("ci-hv1-1", settings=SETTINGS, runner_name=OLD, runner_id=7)
    assert labels == {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "backend": "libvirt", "runner_name": OLD,
                      "runner_id": "7", "created_at": str(int(NOW))}
    token_runner = ALL["slot_labels"]("ci-hv1-1", settings=SETTINGS, runner_name=OLD, now=NOW)
    assert "runner_id" not in token_runner  # null is left out, never written as ''
    with pytest.raises(AnsibleFilterError, match="not a generation of slot 'ci-hv1-1'"):
        ALL["slot_labels"]("ci-hv1-1", settings=SETTINGS, runner_name="ci-hv1-2-aaaaaa")


# --- the slot_name test ----------------------------------------------------------------------------

def test_slot_name_test_and_its_doc():
    assert TESTS["slot_name"]("ci-hv1-1") and not TESTS["slot_name"]("ci-hv1-0") and not TESTS["slot_name"](None)
    with open(os.path.join(TEST_DIR, "slot_name.yml"), encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    assert doc["DOCUMENTATION"]["name"] == "slot_name" and "rum.pool.slot_name" in doc["EXAMPLES"]
