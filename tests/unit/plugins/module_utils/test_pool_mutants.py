# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner's remaining edges exactly: the summary line from a partial summary, the status
table's refusals word for word, cells that are empty, a slot VM left staged, a VM without a state
or a created_at label, a missing runner record at the time-out exactly."""

from __future__ import annotations

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _pool as pool
from ansible_collections.rum.pool.plugins.module_utils._pool import PoolError
from tests.unit.plugins.module_utils.test_pool import TIMEOUT, make_plan, runner_for, slot_row, vm


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
