# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner's remaining edges exactly: the summary line from a partial summary, the status
table's refusals word for word, cells that are empty, a slot VM left staged, a VM without a state
or a created_at label, a missing runner record at the time-out exactly."""

from __future__ import annotations

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _pool as pool
from ansible_collections.rum.pool.plugins.module_utils import _slot
from ansible_collections.rum.pool.plugins.module_utils._pool import PoolError
from tests.unit.plugins.module_utils.test_pool import NOW, TIMEOUT, make_plan, rname, runner_for, slot_row, vm
from tests.unit.plugins.module_utils.test_pool_staging import CONFIG, other_vm, row


# --- summary line ------------------------------------------------------------------------------------

def test_a_summary_without_counts_reads_as_zeros():
    assert pool.summary_line({}) == "0 slots (size 0): 0 create, 0 recreate, 0 keep, 0 remove; 0 orphan runners"


def test_the_summary_shows_staging_only_when_there_is_some():
    summary = {"slots": 1, "size": 3, "create": 1, "stage": 2, "orphans": 2, "discard": 1}
    assert pool.summary_line(summary) == ("1 slot (size 3): 1 create, 0 recreate, 0 keep, 0 remove, 2 stage; "
                                          "2 orphan runners; 1 staged or retired VM to remove")
    assert pool.summary_line({"slots": 2, "stage": 0, "discard": 2}).endswith(
        "0 remove; 0 orphan runners; 2 staged or retired VMs to remove")
    assert pool.summary_line({"slots": 2, "discard": 0}) == (
        "2 slots (size 0): 0 create, 0 recreate, 0 keep, 0 remove; 0 orphan runners")


# --- status table ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"summary": {}}, "status table needs a pool plan (a dict with 'slots') or a list of slot rows"),
    (None, "status table needs a pool plan or a list of slot rows, got None"),
    ("table", "slot rows must be a list of dicts, got str"),
    (5, "slot rows must be a list of dicts, got int"),
    ([1, 2], "each of slot rows must be a dict, got int: 1"),
    ({"slots": "x"}, "the plan's slots must be a list of dicts, got str"),
    ({"slots": [["a"]]}, "each of the plan's slots must be a dict, got list: ['a']"),
])
def test_status_table_refusals_word_for_word(bad, message):
    with pytest.raises(PoolError) as info:
        pool.status_table(bad)
    assert str(info.value) == message


def test_empty_cells_show_a_dash_and_no_line_ends_in_spaces():
    rows = [{"slot": "ci-hv1-1", "vm_state": "", "runner_name": "", "runner_status": None,
             "runner_busy": True, "action": "keep", "reason": "waiting   "}]
    lines = pool.status_table(rows).split("\n")
    assert lines[1] == "ci-hv1-1  -         -       -       -     keep    waiting"
    assert lines[0] == "SLOT      VM STATE  RUNNER  STATUS  BUSY  ACTION  REASON"


# --- one slot ----------------------------------------------------------------------------------------

def test_a_slot_vm_left_staged_and_shut_off_is_recreated():
    left = vm(1, state="shutoff", age=5000, staged="yes")
    row = slot_row(make_plan([left], [runner_for(left)], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("recreate", "its staged generation was never started (an interrupted swap)")
    busy = slot_row(make_plan([left], [runner_for(left, "online", busy=True)], size=1), "ci-hv1-1")
    assert (busy["action"], busy["reason"]) == (
        "keep", "VM shut off (its job finished or the guest powered off), but GitHub still shows its runner busy: "
                "waiting")
    online = slot_row(make_plan([left], [runner_for(left, "online")], size=1), "ci-hv1-1")
    assert online["reason"].endswith("but GitHub still shows its runner online: waiting")
    running = vm(1, state="running", age=5000, staged="yes")
    row = slot_row(make_plan([running], [runner_for(running)], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("recreate", f"runner not online 5000s after creation (timeout {TIMEOUT}s)")


def test_a_vm_without_a_state_is_left_alone_by_that_name():
    entry = vm(1, age=5000)
    del entry["state"]
    row = slot_row(make_plan([entry], size=1), "ci-hv1-1")
    assert (row["vm_state"], row["action"], row["reason"]) == (
        "nostate", "keep", "VM state 'nostate' not understood: left alone")


def test_a_vm_without_created_at_or_runner_name_is_recreated():
    entry = vm(1, runner=False, created_at=None)
    row = slot_row(make_plan([entry], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("recreate", "runner not online and the VM has no valid created_at label")
    assert row["age"] is None and row["runner_status"] is None


def test_a_missing_runner_record_at_the_time_out_exactly_is_recreated():
    entry = vm(1, age=TIMEOUT)
    row = slot_row(make_plan([entry], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == (
        "recreate", f"runner record gone {TIMEOUT}s after creation while the VM runs (timeout {TIMEOUT}s)")
    early = slot_row(make_plan([vm(1, age=TIMEOUT - 1)], size=1), "ci-hv1-1")
    assert (early["action"], early["reason"]) == ("keep", f"booting: runner not listed yet ({TIMEOUT - 1}s of {TIMEOUT}s)")
    assert row["runner_status"] == "missing"


# --- inputs and runners ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("now", "soon", "now (epoch seconds) must be a number of seconds, got 'soon'"),
    ("online_timeout", "long", "online timeout must be a number of seconds, got 'long'"),
])
def test_bad_times_are_named(field, value, message):
    args = {"pool": "ci", "host": "hv1", "size": 1, "vms": [], "runners": [], "now": NOW, "online_timeout": TIMEOUT}
    args[field] = value
    with pytest.raises(PoolError) as info:
        pool.plan(**args)
    assert str(info.value) == message


def test_a_runner_is_found_by_name_when_the_vm_has_no_runner_id():
    entry = vm(1, age=5000, runner_id=None)
    found = dict(runner_for(vm(1, age=5000)), id=555)
    del found["status"]
    row = slot_row(make_plan([entry], [found], size=1), "ci-hv1-1")
    assert (row["runner_id"], row["runner_status"], row["action"]) == (555, "offline", "recreate")


def test_a_vm_with_only_a_runner_name_and_no_record_shows_it_missing():
    row = slot_row(make_plan([vm(1, age=5000, runner_id=None)], size=1), "ci-hv1-1")
    assert (row["runner_status"], row["runner_id"]) == ("missing", None)


def test_orphans_are_listed_by_name_then_id():
    old = NOW - 5000
    names = [rname("ci-hv1-3", old, seed=2), rname("ci-hv1-2", old, seed=3)]
    runners = [{"id": 9, "name": names[0], "status": "offline"}, {"id": 3, "name": names[0], "status": "offline"},
               {"id": 1, "name": names[1], "status": "offline"}]
    plan = make_plan([], runners, size=0)
    expected = sorted([(names[0], 9), (names[0], 3), (names[1], 1)])
    assert [(o["name"], o["id"]) for o in plan["orphans"]] == expected


def test_a_runner_named_exactly_the_time_out_ago_is_an_orphan():
    name = rname("ci-hv1-2", NOW - TIMEOUT)
    assert _slot.minted_at(name, NOW) == NOW - TIMEOUT
    plan = make_plan([], [{"id": 4, "name": name, "status": "offline"}], size=0)
    assert plan["orphans"] == [{"name": name, "id": 4, "slot": "ci-hv1-2"}]


def test_every_change_is_counted():
    three = vm(3, age=5000)
    plan = make_plan([three], [runner_for(three)], size=1)
    assert (plan["summary"]["create"], plan["summary"]["remove"], plan["summary"]["changes"]) == (1, 1, 2)


# --- staged and retired generations ------------------------------------------------------------------

def staged_plan(vms, runners=(), size=1, stage=True, timeout=TIMEOUT):
    return pool.plan(pool="ci", host="hv1", size=size, vms=list(vms), runners=list(runners), now=NOW,
                     online_timeout=timeout, stage=stage, config=CONFIG)


def discard_reasons(plan):
    return [(row["vm"], row["reason"]) for row in plan["discard"]]


def test_discarded_generations_are_listed_with_their_slot_state_and_reason():
    retired = other_vm(1, "retired", state="running")
    plan = staged_plan([retired])
    labels = retired["labels"]
    assert plan["discard"] == [{"vm": retired["name"], "slot": "ci-hv1-1", "state": "running",
                                "runner_name": labels["runner_name"], "runner_id": int(labels["runner_id"]),
                                "reason": "a retired generation not removed yet"}]


def test_staged_generations_say_why_they_may_not_start():
    removed = other_vm(3, "staged")
    off = other_vm(1, "staged")
    assert discard_reasons(staged_plan([removed])) == [(removed["name"], "its slot is removed")]
    assert discard_reasons(staged_plan([off], stage=False)) == [
        (off["name"], "staging is off (runner_pool_stage, runner_pool_batch, jit registration)")]


def test_a_staged_generation_whose_runner_is_not_listed_at_the_time_out_is_discarded():
    at = other_vm(1, "staged", age=TIMEOUT)
    assert discard_reasons(staged_plan([at])) == [(at["name"], "GitHub no longer lists its runner")]
    listed = {"id": 7, "name": at["labels"]["runner_name"], "status": "offline", "busy": False}
    assert staged_plan([at], [listed])["discard"] == []
    young = other_vm(1, "staged", age=TIMEOUT - 1)
    assert staged_plan([young])["discard"] == []
    assert row(staged_plan([young]), "ci-hv1-1")["staged"] == young["labels"]["runner_name"]
    new = other_vm(1, "staged", age=0)
    assert staged_plan([new], timeout=1)["discard"] == []


def test_a_removed_slot_with_only_a_staged_generation_does_not_end_the_plan():
    plan = staged_plan([other_vm(3, "staged"), vm(4, age=5000)])
    assert [(r["slot"], r["action"]) for r in plan["slots"]] == [("ci-hv1-1", "create"), ("ci-hv1-4", "remove")]


def test_staged_problem_words_and_bounds():
    labels = {"runner_name": rname("ci-hv1-1"), "created_at": str(int(NOW)), "config": "a"}
    assert pool.staged_problem(state="shutoff", labels={"runner_name": labels["runner_name"]}, now=NOW) == \
        "it has no runner_name or created_at label"
    assert pool.staged_problem(state="shutoff", labels=labels, now=NOW, config="b") == \
        "made with other pool settings (image, labels, VM options or isolation changed)"
    assert pool.staged_problem(state="shutoff", labels=labels, now=NOW, max_age=0) is None
    assert pool.staged_problem(state="shutoff", labels=labels, now=NOW + 10, max_age=10) is None
    assert pool.staged_problem(state="shutoff", labels=labels, now=NOW + 11, max_age=10) == (
        "staged 11s ago, more than 10s (GitHub removes a runner that never connected after a day)")
