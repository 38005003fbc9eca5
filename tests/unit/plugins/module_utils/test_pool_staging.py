# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Staged and retired generations in the slot contract and the planner (issue 11)."""

from __future__ import annotations

import random

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _pool as pool
from ansible_collections.rum.pool.plugins.module_utils import _slot
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

NOW = 1_750_000_000.0
TIMEOUT = 600
CONFIG = "c0ffee0123456789"


def rname(slot, at=NOW - 3600, seed=0):
    return _slot.runner_name(slot, at, random.Random(seed))


def slot_vm(index, state="running", age=5000, **labels):
    slot = f"ci-hv1-{index}"
    base = {"pool": "ci", "host": "hv1", "slot": slot, "created_at": str(int(NOW - age)),
            "runner_name": rname(slot, NOW - age), "runner_id": str(100 + index), "config": CONFIG}
    base.update(labels)
    return {"name": slot, "state": state, "labels": {k: v for k, v in base.items() if v is not None}}


def other_vm(index, kind, state="shutoff", age=60, seed=1, **labels):
    """A staged (``<slot>.<suffix>``) or retired (``<slot>_<suffix>``) generation of slot ``index``."""
    slot = f"ci-hv1-{index}"
    runner = rname(slot, NOW - age, seed)
    name = _slot.staged_name(runner) if kind == "staged" else _slot.retired_name(slot, runner)
    base = {"pool": "ci", "host": "hv1", "slot": slot, "created_at": str(int(NOW - age)), "runner_name": runner,
            "runner_id": str(900 + index + seed), "config": CONFIG, "staged": "yes" if kind == "staged" else None}
    base.update(labels)
    return {"name": name, "state": state, "labels": {k: v for k, v in base.items() if v is not None}}


def runner(entry, status="offline", busy=False):
    labels = entry["labels"]
    return {"id": int(labels["runner_id"]), "name": labels["runner_name"], "status": status, "busy": busy}


def make_plan(vms, runners, size=2, stage=True, config=CONFIG, **more):
    return pool.plan(pool="ci", host="hv1", size=size, vms=vms, runners=runners, now=NOW, online_timeout=TIMEOUT,
                     stage=stage, config=config, **more)


def row(plan, slot):
    [found] = [r for r in plan["slots"] if r["slot"] == slot]
    return found


# --- the contract's names --------------------------------------------------------------------------

def test_staged_and_retired_names_follow_the_generation_and_parse_back():
    runner_name = rname("ci-hv1-12")
    suffix = runner_name.rsplit("-", 1)[1]
    assert _slot.staged_name(runner_name) == f"ci-hv1-12.{suffix}"
    assert _slot.retired_name("ci-hv1-12", runner_name) == f"ci-hv1-12_{suffix}"
    assert _slot.parse_vm_name(f"ci-hv1-12.{suffix}", ["ci"]) == (_slot.SlotName("ci", "hv1", 12), "staged", suffix)
    assert _slot.parse_vm_name(f"ci-hv1-12_{suffix}", ["ci"]) == (_slot.SlotName("ci", "hv1", 12), "retired", suffix)
    assert _slot.parse_vm_name("ci-hv1-12", ["ci"]) == (_slot.SlotName("ci", "hv1", 12), "slot", None)
    # none of them is a slot or runner name: the kinds never mix
    for name in (f"ci-hv1-12.{suffix}", f"ci-hv1-12_{suffix}"):
        assert not _slot.is_slot_name(name) and _slot.parse_runner_name(name, ["ci"]) is None


def test_the_longest_names_still_fit_a_vm_name():
    longest = _slot.slot_name("p" * 20, "h" * 33, 1)
    assert len(longest) == _slot.MAX_SLOT_LEN
    runner_name = rname(longest)
    assert len(_slot.staged_name(runner_name)) == len(_slot.retired_name(longest)) == len(runner_name) == 63


def test_a_retired_name_without_a_runner_gets_a_random_suffix():
    one = _slot.retired_name("ci-hv1-3", None, random.Random(1))
    two = _slot.retired_name("ci-hv1-3", None, random.Random(2))
    assert one != two and one.startswith("ci-hv1-3_") and len(one) == len("ci-hv1-3_") + 6
    assert _slot.parse_vm_name(one, ["ci"]).kind == "retired"


@pytest.mark.parametrize("call, match", [
    (lambda: _slot.staged_name("ci-hv1-1"), "runner name must look like"),
    (lambda: _slot.staged_name("ci-hv1-1-ABCDEF"), "runner name must look like"),
    (lambda: _slot.staged_name(None), "runner name must look like"),
    (lambda: _slot.retired_name("nope", None), "slot name must look like"),
    (lambda: _slot.retired_name("ci-hv1-1", rname("ci-hv1-2")), "is not a generation of slot"),
])
def test_bad_names_are_refused(call, match):
    with pytest.raises(SlotError, match=match):
        call()


@pytest.mark.parametrize("name", ["ci-hv1-1.ABCDEF", "ci-hv1-1.abc", "ci-hv1-0.abcdef", "ci-hv1-1_", "x.y",
                                  "other-hv1-1.abcdef", 7, None])
def test_names_that_are_no_vm_of_the_pool(name):
    assert _slot.parse_vm_name(name, ["ci"]) is None


def test_labels_carry_the_staged_mark_and_the_config():
    labels = _slot.build_labels(pool="ci", host="hv1", slot="ci-hv1-1", backend="libvirt", runner_name=rname("ci-hv1-1"),
                                created_at=NOW, staged=True, config=CONFIG)
    assert labels["staged"] == "yes" and labels["config"] == CONFIG
    parsed = _slot.parse_labels(labels)
    assert parsed.staged is True and parsed.config == CONFIG
    plain = _slot.build_labels(pool="ci", host="hv1", slot="ci-hv1-1", backend="libvirt", created_at=NOW)
    assert "staged" not in plain and "config" not in plain
    assert _slot.parse_labels(plain).staged is False and _slot.parse_labels({"staged": "no"}).staged is False


def test_the_stage_action_needs_the_generation_it_follows():
    held = rname("ci-hv1-1")
    vm = slot_vm(1, runner_name=held)
    check = _slot.check_generation(action="stage", slot="ci-hv1-1", pool="ci", host="hv1", vm=vm, runner_name=held)
    assert check["act"] and check["outcome"] == "staged"
    other = _slot.check_generation(action="stage", slot="ci-hv1-1", pool="ci", host="hv1", vm=vm,
                                   runner_name=rname("ci-hv1-1", seed=9))
    assert not other["act"] and "it now holds runner " + held in other["reason"]
    with pytest.raises(SlotError, match="stage prepares the generation after runner_name: it needs one"):
        _slot.check_generation(action="stage", slot="ci-hv1-1", pool="ci", host="hv1", vm=vm)


# --- staged_problem ---------------------------------------------------------------------------------

def labels_of(entry):
    return entry["labels"]


def test_a_fresh_staged_generation_may_be_started():
    staged = other_vm(1, "staged")
    assert pool.staged_problem(state="shutoff", labels=labels_of(staged), now=NOW, config=CONFIG) is None
    assert pool.staged_problem(state="shutoff", labels=labels_of(staged), now=NOW) is None  # config not judged


@pytest.mark.parametrize("change, problem", [
    ({"state": "running"}, "its VM is running, not shut off: a staged VM is never started twice"),
    ({"config": "another"}, "made with other pool settings"),
    ({"age": pool.STAGE_MAX_AGE + 1}, "more than 72000s (GitHub removes a runner that never connected after a day)"),
    ({"runner_gone": True}, "GitHub no longer lists its runner"),
    ({"labels": {"runner_name": None}}, "it has no runner_name or created_at label"),
])
def test_what_keeps_a_staged_generation_from_being_started(change, problem):
    staged = other_vm(1, "staged", age=change.get("age", 60))
    labels = dict(labels_of(staged), **change.get("labels", {}))
    found = pool.staged_problem(state=change.get("state", "shutoff"), labels={k: v for k, v in labels.items() if v},
                                now=NOW, config=change.get("config", CONFIG), runner_gone=change.get("runner_gone", False))
    assert found is not None and problem in found


# --- the planner ------------------------------------------------------------------------------------

def test_a_busy_slot_without_a_staged_generation_is_staged():
    one, two = slot_vm(1), slot_vm(2)
    plan = make_plan([one, two], [runner(one, "online", busy=True), runner(two, "online")])
    assert (row(plan, "ci-hv1-1")["action"], row(plan, "ci-hv1-1")["reason"]) == (
        "stage", "runner busy: its next generation is staged meanwhile")
    assert row(plan, "ci-hv1-2")["action"] == "keep"
    assert plan["by_action"]["stage"] == ["ci-hv1-1"] and plan["summary"]["stage"] == 1
    assert plan["summary"]["changes"] == 1
    assert "1 stage" in pool.summary_line(plan["summary"])
    # staging off: busy is kept as before, and the summary line is today's
    off = make_plan([one, two], [runner(one, "online", busy=True), runner(two, "online")], stage=False)
    assert row(off, "ci-hv1-1")["action"] == "keep" and off["summary"]["changes"] == 0
    assert pool.summary_line(off["summary"]) == "2 slots (size 2): 0 create, 0 recreate, 2 keep, 0 remove; 0 orphan runners"


def test_a_busy_slot_with_a_ready_staged_generation_is_kept_and_its_runner_spared():
    one, staged = slot_vm(1), other_vm(1, "staged")
    stray = {"id": 5, "name": rname("ci-hv1-1", NOW - 90000, 3), "status": "offline", "busy": False}
    plan = make_plan([one, staged], [runner(one, "online", busy=True), runner(staged), stray], size=1)
    found = row(plan, "ci-hv1-1")
    assert found["action"] == "keep" and found["reason"] == "runner busy; next generation staged"
    assert found["staged"] == staged["labels"]["runner_name"] and plan["discard"] == []
    assert staged["labels"]["runner_name"] in plan["keep_runners"]
    assert [o["name"] for o in plan["orphans"]] == [stray["name"]], "the staged runner is never an orphan"
    assert plan["summary"]["changes"] == 1  # the orphan


def test_a_staged_runner_not_listed_yet_is_spared_while_young_and_judged_later():
    one, staged = slot_vm(1), other_vm(1, "staged", age=30)
    plan = make_plan([one, staged], [runner(one, "online", busy=True)], size=1)
    assert row(plan, "ci-hv1-1")["staged"] == staged["labels"]["runner_name"]
    old = other_vm(1, "staged", age=TIMEOUT + 5)
    later = make_plan([one, old], [runner(one, "online", busy=True)], size=1)
    assert [d["reason"] for d in later["discard"]] == ["GitHub no longer lists its runner"]
    assert row(later, "ci-hv1-1")["action"] == "stage", "a busy slot whose staged generation goes is staged again"


def test_a_finished_slot_with_a_staged_generation_is_recreated_from_it():
    done, staged = slot_vm(1, state="shutoff"), other_vm(1, "staged")
    plan = make_plan([done, staged], [runner(staged)], size=1)
    found = row(plan, "ci-hv1-1")
    assert found["action"] == "recreate" and found["staged"] == staged["labels"]["runner_name"]
    assert found["reason"].endswith("; next generation staged")


def test_an_empty_slot_with_a_staged_generation_starts_it():
    staged = other_vm(2, "staged")
    plan = make_plan([slot_vm(1), staged], [runner(staged)])
    found = row(plan, "ci-hv1-2")
    assert (found["action"], found["reason"], found["staged"]) == (
        "create", "no VM; its staged generation is started", staged["labels"]["runner_name"])


def test_a_promoted_generation_that_never_started_is_recreated():
    """The crash between "rename the staged VM to the slot" and "start it": the next converge acts."""
    never = slot_vm(1, state="shutoff", staged="yes", age=40)
    found = row(make_plan([never], [runner(never)], size=1), "ci-hv1-1")
    assert (found["action"], found["reason"]) == ("recreate", "its staged generation was never started (an interrupted swap)")


@pytest.mark.parametrize("labels, state, size, stage, reason", [
    ({"config": "older"}, "shutoff", 1, True, "made with other pool settings"),
    ({}, "running", 1, True, "its VM is running, not shut off"),
    ({}, "shutoff", 0, True, "its slot is removed"),
    ({}, "shutoff", 1, False, "staging is off"),
])
def test_staged_generations_that_may_not_be_started_are_discarded(labels, state, size, stage, reason):
    one = slot_vm(1)
    staged = other_vm(1, "staged", state=state, **labels)
    plan = make_plan([one, staged], [runner(one, "online", busy=True), runner(staged)], size=size, stage=stage)
    [gone] = plan["discard"]
    assert gone["vm"] == staged["name"] and gone["slot"] == "ci-hv1-1" and reason in gone["reason"]
    assert gone["runner_name"] == staged["labels"]["runner_name"] and gone["runner_id"] == int(staged["labels"]["runner_id"])
    assert staged["labels"]["runner_name"] in plan["keep_runners"], "its runner goes with its VM, under the slot's lock"
    assert plan["summary"]["discard"] == 1
    assert pool.summary_line(plan["summary"]).endswith("; 1 staged or retired VM to remove")


def test_only_the_newest_of_two_staged_generations_is_kept():
    one = slot_vm(1)
    older, newer = other_vm(1, "staged", age=500, seed=1), other_vm(1, "staged", age=50, seed=2)
    plan = make_plan([one, older, newer], [runner(one, "online", busy=True), runner(older), runner(newer)], size=1)
    assert row(plan, "ci-hv1-1")["staged"] == newer["labels"]["runner_name"]
    assert [d["vm"] for d in plan["discard"]] == [older["name"]]
    assert "newer staged generation" in plan["discard"][0]["reason"]


def test_retired_generations_are_removed_and_the_staged_of_a_removed_slot_too():
    retired = other_vm(1, "retired", state="shutoff")
    staged3 = other_vm(3, "staged")
    one = slot_vm(1)
    plan = make_plan([one, retired, staged3], [runner(one, "online")], size=2)
    assert sorted(d["vm"] for d in plan["discard"]) == sorted([retired["name"], staged3["name"]])
    assert [r["slot"] for r in plan["slots"]] == ["ci-hv1-1", "ci-hv1-2"], "a removed slot with only staged VMs has no row"
    assert plan["summary"]["discard"] == 2 and plan["summary"]["changes"] == 3  # and the create of slot 2


def test_staged_vms_of_another_host_or_with_a_lying_label_are_ignored():
    foreign = other_vm(1, "staged", host="hv2")
    lying = other_vm(1, "staged", slot="ci-hv1-2")
    plan = make_plan([slot_vm(1), foreign, lying], [], size=1)
    assert plan["discard"] == [] and plan["summary"]["ignored_vms"] == 2 and row(plan, "ci-hv1-1")["staged"] is None
