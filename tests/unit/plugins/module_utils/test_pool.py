# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pool planning: names, every slot action and reason, foreign VMs, orphans, the status table."""

from __future__ import annotations

import random

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _pool as pool
from ansible_collections.rum.pool.plugins.module_utils import _slot
from ansible_collections.rum.pool.plugins.module_utils._pool import PoolError

NOW = 1_750_000_000.0
TIMEOUT = 600


def rname(slot, at=NOW - 3600, seed=0):
    """A runner name as the pool makes it, named ``at`` (default: an hour before NOW)."""
    return _slot.runner_name(slot, at, random.Random(seed))


def vm(index, state="running", age=30, pool_name="ci", host="hv1", runner=True, **labels):
    slot = f"{pool_name}-{host}-{index}"
    base = {"pool": pool_name, "host": host, "slot": slot, "created_at": str(int(NOW - age))}
    if runner:
        base.update(runner_name=rname(slot, NOW - age), runner_id=str(100 + index))
    base.update(labels)
    return {"name": slot, "state": state, "labels": {k: v for k, v in base.items() if v is not None}}


def runner_for(entry, status="offline", busy=False):
    labels = entry["labels"]
    return {"id": int(labels["runner_id"]), "name": labels["runner_name"], "status": status, "busy": busy,
            "labels": ["self-hosted", "linux", "x64"]}


def make_plan(vms=(), runners=(), size=2, host="hv1", pool_name="ci", now=NOW, timeout=TIMEOUT):
    return pool.plan(pool=pool_name, host=host, size=size, vms=list(vms), runners=list(runners), now=now,
                     online_timeout=timeout)


def slot_row(plan, slot):
    rows = [row for row in plan["slots"] if row["slot"] == slot]
    assert len(rows) == 1, plan["slots"]
    return rows[0]


# --- plan: every action and reason ---------------------------------------------------------------

def test_empty_host_creates_every_slot():
    plan = make_plan(size=3)
    assert [row["slot"] for row in plan["slots"]] == ["ci-hv1-1", "ci-hv1-2", "ci-hv1-3"]
    assert [row["index"] for row in plan["slots"]] == [1, 2, 3]
    for row in plan["slots"]:
        assert row["action"] == "create" and row["reason"] == "no VM"
        assert row["vm_state"] == "absent" and row["runner_name"] is None and row["runner_status"] is None
        assert row["runner_busy"] is False and row["age"] is None and row["runner_id"] is None
    assert plan["by_action"] == {"create": ["ci-hv1-1", "ci-hv1-2", "ci-hv1-3"], "recreate": [], "keep": [],
                                 "remove": [], "stage": []}
    assert plan["summary"]["create"] == 3 and plan["summary"]["changes"] == 3
    assert plan["keep_runners"] == [] and plan["orphans"] == []
    assert plan["pool"] == "ci" and plan["host"] == "hv1"


def test_online_idle_runner_is_kept():
    one = vm(1, age=5000)
    row = slot_row(make_plan([one], [runner_for(one, "online")], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("keep", "runner online, idle")
    assert row["runner_status"] == "online" and row["runner_busy"] is False
    assert row["runner_id"] == 101 and row["runner_name"] == one["labels"]["runner_name"] and row["age"] == 5000


def test_busy_runner_is_kept():
    one = vm(1, age=50000)
    row = slot_row(make_plan([one], [runner_for(one, "online", busy=True)], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("keep", "runner busy")
    assert row["runner_busy"] is True


def test_busy_but_offline_runner_is_kept():
    one = vm(1, age=50000)
    row = slot_row(make_plan([one], [runner_for(one, "offline", busy=True)], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("keep", "runner busy")


def test_young_vm_with_offline_runner_is_booting():
    one = vm(1, age=30)
    row = slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")
    assert row["action"] == "keep"
    assert row["reason"] == "booting: runner offline (30s of 600s)"


def test_runner_never_online_within_timeout_is_recreated():
    one = vm(1, age=601)
    row = slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")
    assert row["action"] == "recreate"
    assert row["reason"] == "runner not online 601s after creation (timeout 600s)"


def test_timeout_boundary():
    one = vm(1, age=600)
    assert slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")["action"] == "recreate"
    one = vm(1, age=599)
    assert slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")["action"] == "keep"


def test_young_vm_whose_runner_is_not_listed_yet_is_kept():
    row = slot_row(make_plan([vm(1, age=10)], [], size=1), "ci-hv1-1")
    assert row["action"] == "keep"
    assert row["reason"] == "booting: runner not listed yet (10s of 600s)"
    assert row["runner_status"] == "missing"


def test_runner_record_gone_while_vm_runs_is_recreated():
    row = slot_row(make_plan([vm(1, age=4000)], [], size=1), "ci-hv1-1")
    assert row["action"] == "recreate"
    assert row["reason"] == "runner record gone 4000s after creation while the VM runs (timeout 600s)"
    assert row["runner_status"] == "missing" and row["runner_busy"] is False


@pytest.mark.parametrize("state, reason", [
    ("shutoff", "VM shut off (its job finished or the guest powered off)"),
    ("paused", "VM paused"),
    ("crashed", "VM crashed"),
    ("pmsuspended", "VM suspended by its guest"),
])
def test_stopped_vm_is_recreated(state, reason):
    # A young VM too: a guest that powered off has finished, whatever its age.
    for age in (5, 5000):
        row = slot_row(make_plan([vm(1, state=state, age=age)], [], size=1), "ci-hv1-1")
        assert (row["action"], row["reason"]) == ("recreate", reason)
        assert row["vm_state"] == state


def test_stopped_vm_with_offline_runner_record_is_recreated():
    one = vm(1, state="shutoff", age=900)
    row = slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")
    assert row["action"] == "recreate"


@pytest.mark.parametrize("status, busy, shown", [("online", False, "online"), ("online", True, "busy"),
                                                 ("offline", True, "busy")])
def test_stopped_vm_whose_runner_github_shows_working_waits(status, busy, shown):
    one = vm(1, state="shutoff", age=900)
    row = slot_row(make_plan([one], [runner_for(one, status, busy)], size=1), "ci-hv1-1")
    assert row["action"] == "keep"
    assert row["reason"] == f"VM shut off (its job finished or the guest powered off), but GitHub still shows its runner {shown}: waiting"


def test_shutting_down_vm_is_kept():
    row = slot_row(make_plan([vm(1, state="shutdown", age=9000)], [], size=1), "ci-hv1-1")
    assert (row["action"], row["reason"]) == ("keep", "VM shutting down")


@pytest.mark.parametrize("state", ["nostate", "weird", None])
def test_unknown_vm_state_is_left_alone(state):
    one = vm(1, age=9000)
    one["state"] = state
    row = slot_row(make_plan([one], [], size=1), "ci-hv1-1")
    assert row["action"] == "keep"
    assert "not understood: left alone" in row["reason"]


def test_blocked_vm_counts_as_running():
    one = vm(1, state="blocked", age=30)
    row = slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")
    assert row["action"] == "keep" and row["reason"].startswith("booting")


def test_missing_created_at_uses_the_time_in_the_runner_name():
    young = vm(1, age=40, created_at=None)
    assert "created_at" not in young["labels"]
    row = slot_row(make_plan([young], [runner_for(young)], size=1), "ci-hv1-1")
    assert row["action"] == "keep" and row["age"] == 40
    old = vm(1, age=4000, created_at="not a number")
    row = slot_row(make_plan([old], [runner_for(old)], size=1), "ci-hv1-1")
    assert row["action"] == "recreate" and row["age"] == 4000


def test_no_age_at_all_recreates_unless_the_runner_works():
    one = vm(1, created_at=None, runner_name="hand-made")
    row = slot_row(make_plan([one], [], size=1), "ci-hv1-1")
    assert row["action"] == "recreate" and "no valid created_at" in row["reason"] and row["age"] is None
    one = vm(1, created_at=None, runner_name="hand-made")
    working = {"id": 101, "name": "hand-made", "status": "online", "busy": True}
    assert slot_row(make_plan([one], [working], size=1), "ci-hv1-1")["action"] == "keep"


def test_created_at_in_the_future_counts_as_just_created():
    one = vm(1, age=-100)
    row = slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")
    assert row["age"] == 0 and row["action"] == "keep"


def test_fractional_created_at():
    one = vm(1, created_at=str(NOW - 700.5))
    assert slot_row(make_plan([one], [runner_for(one)], size=1), "ci-hv1-1")["age"] == 700


def test_runner_found_by_id_when_the_vm_has_no_runner_name():
    one = vm(1, age=5000)
    record = runner_for(one, "online")
    del one["labels"]["runner_name"]
    row = slot_row(make_plan([one], [record], size=1), "ci-hv1-1")
    assert row["action"] == "keep" and row["runner_name"] == record["name"] and row["runner_status"] == "online"
    plan = make_plan([one], [record], size=1)
    assert record["name"] in plan["keep_runners"]


def test_runner_id_of_another_name_is_not_this_vms_runner():
    one = vm(1, age=5000)
    other = {"id": 101, "name": "ci-hv1-1-zzzzzz", "status": "online", "busy": True}
    row = slot_row(make_plan([one], [other], size=1), "ci-hv1-1")
    assert row["runner_status"] == "missing" and row["action"] == "recreate"


def test_vm_without_any_runner_label():
    one = vm(1, age=10, runner=False)
    row = slot_row(make_plan([one], [], size=1), "ci-hv1-1")
    assert row["runner_status"] is None and row["runner_name"] is None and row["action"] == "keep"


# --- beyond the size: draining and removing ------------------------------------------------------

def test_slot_beyond_size_is_removed():
    three = vm(3, age=5000)
    plan = make_plan([vm(1, age=10), vm(2, age=10), three], [runner_for(three)], size=2)
    row = slot_row(plan, "ci-hv1-3")
    assert (row["action"], row["reason"]) == ("remove", "beyond pool size 2")
    assert [r["index"] for r in plan["slots"]] == [1, 2, 3]
    assert plan["by_action"]["remove"] == ["ci-hv1-3"]


@pytest.mark.parametrize("state", ["running", "shutoff", "paused"])
def test_idle_runner_beyond_size_is_removed_whatever_the_vm_state(state):
    five = vm(5, state=state, age=5000)
    assert slot_row(make_plan([five], [runner_for(five, "online")], size=2), "ci-hv1-5")["action"] == "remove"


@pytest.mark.parametrize("status", ["online", "offline"])
def test_busy_runner_beyond_size_is_drained(status):
    three = vm(3, age=5000)
    plan = make_plan([three], [runner_for(three, status, busy=True)], size=2)
    row = slot_row(plan, "ci-hv1-3")
    assert (row["action"], row["reason"]) == ("keep", "draining: busy")
    assert plan["summary"]["draining"] == 1 and plan["summary"]["remove"] == 0
    assert three["labels"]["runner_name"] in plan["keep_runners"]


def test_size_zero_drains_and_removes_everything():
    one, two = vm(1, age=5000), vm(2, age=5000)
    plan = make_plan([one, two], [runner_for(one, "online"), runner_for(two, "online", busy=True)], size=0)
    assert slot_row(plan, "ci-hv1-1")["action"] == "remove"
    assert slot_row(plan, "ci-hv1-2")["reason"] == "draining: busy"
    assert plan["summary"]["size"] == 0 and plan["summary"]["slots"] == 2


def test_growing_creates_only_the_new_slots():
    one, two = vm(1, age=5000), vm(2, age=5000)
    plan = make_plan([one, two], [runner_for(one, "online"), runner_for(two, "online")], size=4)
    assert plan["by_action"] == {"create": ["ci-hv1-3", "ci-hv1-4"], "recreate": [],
                                 "keep": ["ci-hv1-1", "ci-hv1-2"], "remove": [], "stage": []}


# --- whose VMs and runners count -----------------------------------------------------------------

def test_foreign_vms_are_ignored():
    foreign = [
        vm(1, pool_name="other"),                                   # another pool on this host
        vm(1, host="hv10"),                                         # another host's label
        vm(1, pool_name="ci-big"),                                  # a pool whose name extends ours
        {"name": "ci-hv1-1", "state": "shutoff", "labels": {}},     # unlabelled, same name
        {"name": "ci-hv1-1", "state": "shutoff"},                   # no labels key
        {"name": "ci-hv1-1", "state": "shutoff", "labels": None},
        {"name": "ci-hv1-1", "state": "shutoff", "labels": "pool=ci"},
        {"name": "web", "state": "shutoff", "labels": {"pool": "ci", "host": "hv1", "slot": "web"}},
        {"name": "ci-hv1-x", "state": "shutoff", "labels": {"pool": "ci", "host": "hv1"}},
        # Labels say this pool and host, but the VM is not named after the slot it claims.
        {"name": "copy", "state": "shutoff", "labels": {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1"}},
        {"name": "ci-hv1-2", "state": "shutoff", "labels": {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1"}},
    ]
    plan = make_plan(foreign, [], size=2)
    assert [(r["slot"], r["action"], r["vm_state"]) for r in plan["slots"]] == [
        ("ci-hv1-1", "create", "absent"), ("ci-hv1-2", "create", "absent")]
    assert plan["summary"]["ignored_vms"] == len(foreign) and plan["summary"]["vms"] == 0
    assert plan["keep_runners"] == []


def test_foreign_vm_beyond_size_is_never_removed():
    plan = make_plan([vm(7, pool_name="other"), vm(7, host="hv2")], [], size=1)
    assert [r["slot"] for r in plan["slots"]] == ["ci-hv1-1"]
    assert plan["by_action"]["remove"] == []


def test_host_label_given_as_a_full_name_counts():
    one = vm(1, state="shutoff", host="hv1")
    one["labels"]["host"] = "hv1.example.com"
    plan = make_plan([one], [], size=1, host="hv1.example.com")
    assert slot_row(plan, "ci-hv1-1")["action"] == "recreate"


def test_vm_labelled_with_the_name_only():
    one = vm(1, state="shutoff")
    del one["labels"]["slot"]
    assert slot_row(make_plan([one], [], size=1), "ci-hv1-1")["action"] == "recreate"


# --- orphans and the keep list -------------------------------------------------------------------

def test_orphans_and_keep_runners():
    one = vm(1, age=5000)
    two = vm(2, age=10)   # booting, runner not listed yet
    orphan = {"id": 7, "name": rname("ci-hv1-4", NOW - 5000), "status": "offline", "busy": False}
    fresh = {"id": 8, "name": rname("ci-hv1-2", NOW - 20, seed=9), "status": "offline", "busy": False}
    other_host = {"id": 9, "name": rname("ci-hv1-2-1", NOW - 5000), "status": "offline", "busy": False}
    stray_online = {"id": 10, "name": rname("ci-hv1-3", NOW - 5000), "status": "online", "busy": False}
    stray_busy = {"id": 11, "name": rname("ci-hv1-5", NOW - 5000, seed=1), "status": "offline", "busy": True}
    hand_made = {"id": 12, "name": "ci-hv1-7-orphan1", "status": "offline", "busy": False}
    unrelated = {"id": 13, "name": "build-box", "status": "offline", "busy": False}
    other_host_busy = {"id": 14, "name": rname("ci-hv1-2-2", NOW - 5000), "status": "online", "busy": True}
    runners = [runner_for(one, "online"), orphan, fresh, other_host, stray_online, stray_busy, hand_made,
               unrelated, other_host_busy]
    plan = make_plan([one, two], runners, size=2)
    assert sorted(plan["orphans"], key=lambda o: o["id"]) == [
        {"name": orphan["name"], "id": 7, "slot": "ci-hv1-4"},
        {"name": hand_made["name"], "id": 12, "slot": None},   # under the prefix, made by no pool
    ]
    assert [o["name"] for o in plan["orphans"]] == sorted(o["name"] for o in plan["orphans"])
    assert plan["summary"]["orphans"] == 2
    assert plan["keep_runners"] == sorted([
        one["labels"]["runner_name"],   # its VM exists
        two["labels"]["runner_name"],   # its VM exists, GitHub does not list it (yet)
        fresh["name"],                  # named 20 s ago: another run may be making its VM
        other_host["name"],             # host hv1-2's runner shares the prefix ci-hv1-
        other_host_busy["name"],
    ])
    for never in (orphan, hand_made, stray_online, stray_busy, unrelated):
        assert never["name"] not in plan["keep_runners"]
    # What `gh_runner state=pruned name_prefix=ci-hv1-` deletes with this keep list is exactly the orphans.
    prefix = _slot.slot_prefix("ci", "hv1")
    pruned = sorted(r["name"] for r in runners if r["name"].startswith(prefix) and r["status"] == "offline"
                    and not r["busy"] and r["name"] not in plan["keep_runners"])
    assert pruned == [o["name"] for o in plan["orphans"]]


def test_young_grace_only_for_names_the_pool_makes():
    made_now = {"id": 1, "name": rname("ci-hv1-9", NOW - 1), "status": "offline", "busy": False}
    plan = make_plan([], [made_now], size=1)
    assert plan["orphans"] == [] and plan["keep_runners"] == [made_now["name"]]
    later = make_plan([], [made_now], size=1, now=NOW + TIMEOUT)
    assert [o["name"] for o in later["orphans"]] == [made_now["name"]] and later["keep_runners"] == []
    no_grace = make_plan([], [made_now], size=1, timeout=0)
    assert [o["name"] for o in no_grace["orphans"]] == [made_now["name"]]


def test_runners_of_vms_beyond_size_are_kept_from_the_prune():
    three = vm(3, age=5000)
    plan = make_plan([three], [runner_for(three)], size=1)
    assert three["labels"]["runner_name"] in plan["keep_runners"] and plan["orphans"] == []


def test_host_prefix_confusion_hv1_hv10():
    mine = vm(1, age=5000, host="hv1")
    theirs = vm(1, age=5000, host="hv10", state="shutoff")
    theirs_runner = dict(runner_for(theirs), status="offline")
    plan = make_plan([mine, theirs], [runner_for(mine, "online"), theirs_runner], size=1, host="hv1")
    assert [r["slot"] for r in plan["slots"]] == ["ci-hv1-1"] and plan["slots"][0]["action"] == "keep"
    assert plan["orphans"] == []
    assert theirs_runner["name"] not in plan["keep_runners"]  # not under our prefix: a prune never sees it
    plan10 = make_plan([mine, theirs], [runner_for(mine, "online"), theirs_runner], size=1, host="hv10")
    assert [r["action"] for r in plan10["slots"]] == ["recreate"]
    assert plan10["orphans"] == []


def test_pool_prefix_confusion_ci_ci_big():
    big = vm(1, pool_name="ci-big", age=5000, state="shutoff")
    big_runner = runner_for(big)
    plan = make_plan([big], [big_runner], size=1, pool_name="ci")
    assert [(r["slot"], r["action"]) for r in plan["slots"]] == [("ci-hv1-1", "create")]
    assert plan["orphans"] == []
    plan_big = make_plan([big], [big_runner], size=1, pool_name="ci-big")
    assert [(r["slot"], r["action"]) for r in plan_big["slots"]] == [("ci-big-hv1-1", "recreate")]


def test_busy_and_online_runners_are_never_proposed_for_anything_destructive():
    """Random pools: a busy runner's slot is always kept; an online one is never recreated or pruned."""
    rand = random.Random(2024)
    states = ["running", "shutoff", "paused", "crashed", "shutdown", "blocked", "pmsuspended", "nostate"]
    for _draw in range(400):
        size = rand.randint(0, 4)
        vms, runners = [], []
        for index in range(1, 7):
            if rand.random() < 0.7:
                entry = vm(index, state=rand.choice(states), age=rand.randint(-50, 5000))
                vms.append(entry)
                if rand.random() < 0.8:
                    runners.append(runner_for(entry, rand.choice(["online", "offline"]), rand.random() < 0.4))
            elif rand.random() < 0.5:
                runners.append({"id": 500 + index, "name": rname(f"ci-hv1-{index}", NOW - rand.randint(0, 5000)),
                                "status": rand.choice(["online", "offline"]), "busy": rand.random() < 0.4})
        plan = make_plan(vms, runners, size=size)
        by_name = {r["name"]: r for r in runners}
        for row in plan["slots"]:
            record = by_name.get(row["runner_name"])
            if record and record["busy"]:
                assert row["action"] == "keep", row
            if record and record["status"] == "online":
                assert row["action"] != "recreate", row
            if row["index"] > size:
                assert row["action"] in ("remove", "keep"), row
            else:
                assert row["action"] in ("create", "recreate", "keep"), row
        for orphan in plan["orphans"]:
            record = by_name[orphan["name"]]
            assert record["status"] == "offline" and not record["busy"]
            assert orphan["name"] not in plan["keep_runners"]
        counted = sum(plan["summary"][a] for a in pool.ACTIONS)
        assert counted == plan["summary"]["slots"] == len(plan["slots"])


def test_summary_counts():
    one, two, three = vm(1, age=5000), vm(2, state="shutoff"), vm(3, age=5000)
    runners = [runner_for(one, "online", busy=True), runner_for(three, "online", busy=True)]
    plan = make_plan([one, two, three], runners, size=2)
    assert plan["summary"] == {
        "size": 2, "slots": 3, "vms": 3, "ignored_vms": 0, "busy": 2, "online": 2, "draining": 1,
        "orphans": 0, "create": 0, "recreate": 1, "keep": 2, "remove": 0, "changes": 1,
        "stage": 0, "discard": 0,
    }


# --- input checking ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"vms": "ci-hv1-1"}, "vms must be a list"),
    ({"vms": [["ci-hv1-1"]]}, "each of vms must be a dict"),
    ({"vms": 5}, "vms must be a list"),
    ({"runners": {"name": "x"}}, "each of runners must be a dict"),
    ({"runners": ["x"]}, "each of runners must be a dict"),
    ({"size": -1}, "pool size"),
    ({"online_timeout": -5}, "online timeout"),
    ({"online_timeout": "ten"}, "online timeout"),
    ({"now": None}, "now"),
    ({"pool": "CI"}, "pool name"),
    ({"host": ""}, "host name"),
])
def test_bad_input_is_named(kwargs, match):
    args = {"pool": "ci", "host": "hv1", "size": 1, "vms": [], "runners": [], "now": NOW, "online_timeout": 600}
    args.update(kwargs)
    with pytest.raises(PoolError, match=match):
        pool.plan(**args)


def test_none_lists_and_string_numbers():
    plan = pool.plan(pool="ci", host="hv1", size="2", vms=None, runners=None, now=str(NOW), online_timeout="600")
    assert plan["summary"]["create"] == 2


# --- status table --------------------------------------------------------------------------------

def table_plan():
    one = vm(1, age=5000)
    two = vm(2, state="shutoff", age=5000)
    return make_plan([one, two], [runner_for(one, "online")], size=3)


def test_status_table_layout():
    plan = table_plan()
    lines = pool.status_table(plan).split("\n")
    header = lines[0]
    assert header.split() == ["SLOT", "VM", "STATE", "RUNNER", "STATUS", "BUSY", "ACTION", "REASON"]
    assert len(lines) == 1 + 3 + 1
    starts = [header.index(title) for title in ("VM STATE", "RUNNER", "STATUS", "BUSY", "ACTION", "REASON")]
    for line, row in zip(lines[1:4], plan["slots"]):
        assert line.startswith(row["slot"] + " ")
        for start in starts:  # every column starts at the same offset on every line
            assert line[start - 2:start] == "  " and line[start] != " ", (line, start)
        assert line.endswith(row["reason"])
    one, two, three = lines[1:4]
    assert one.split()[1:6] == ["running", plan["slots"][0]["runner_name"], "online", "no", "keep"]
    assert two.split()[1:6] == ["shutoff", plan["slots"][1]["runner_name"], "missing", "-", "recreate"]
    assert three.split()[1:6] == ["absent", "-", "-", "-", "create"]
    assert lines[-1] == "3 slots (size 3): 1 create, 1 recreate, 1 keep, 0 remove; 0 orphan runners"
    assert not any(line != line.rstrip() for line in lines)


def test_status_table_of_rows_has_no_summary():
    plan = table_plan()
    lines = pool.status_table(plan["slots"]).split("\n")
    assert len(lines) == 4 and lines[0].startswith("SLOT")


def test_status_table_busy_column_and_draining():
    three = vm(3, age=5000)
    plan = make_plan([three], [runner_for(three, "online", busy=True)], size=0)
    lines = pool.status_table(plan).split("\n")
    assert lines[1].split()[4] == "yes" and lines[1].endswith("draining: busy")
    assert lines[-1] == "1 slot (size 0): 0 create, 0 recreate, 1 keep, 0 remove (1 draining); 0 orphan runners"


def test_summary_line_counts_one_orphan():
    orphan = {"id": 7, "name": rname("ci-hv1-2", NOW - 5000), "status": "offline", "busy": False}
    plan = make_plan([], [orphan], size=1)
    assert pool.status_table(plan).rsplit("\n", maxsplit=1)[-1].endswith("; 1 orphan runner")


def test_status_table_empty():
    assert pool.status_table(make_plan(size=0)).split("\n")[1:] == [
        "(no slots)", "0 slots (size 0): 0 create, 0 recreate, 0 keep, 0 remove; 0 orphan runners"]
    assert pool.status_table([]).split("\n")[1] == "(no slots)"


@pytest.mark.parametrize("bad", [{"summary": {}}, "table", [1, 2], None])
def test_status_table_bad_input(bad):
    with pytest.raises(PoolError):
        pool.status_table(bad)


def test_status_table_matches_the_documented_example():
    rows = [
        {"slot": "ci-hv1-1", "vm_state": "running", "runner_name": "ci-hv1-1-t0f3kq", "runner_status": "online",
         "runner_busy": False, "action": "keep", "reason": "runner online, idle"},
        {"slot": "ci-hv1-2", "vm_state": "shutoff", "runner_name": "ci-hv1-2-t0ek2a", "runner_status": "missing",
         "runner_busy": False, "action": "recreate", "reason": pool.DEAD_STATES["shutoff"]},
    ]
    summary = {"size": 2, "slots": 2, "create": 0, "recreate": 1, "keep": 1, "remove": 0, "orphans": 0}
    expected = [
        "SLOT      VM STATE  RUNNER           STATUS   BUSY  ACTION    REASON",
        "ci-hv1-1  running   ci-hv1-1-t0f3kq  online   no    keep      runner online, idle",
        "ci-hv1-2  shutoff   ci-hv1-2-t0ek2a  missing  -     recreate  VM shut off (its job finished or the guest powered off)",
        "2 slots (size 2): 0 create, 1 recreate, 1 keep, 0 remove; 0 orphan runners",
    ]
    assert pool.status_table({"slots": rows, "summary": summary}) == "\n".join(expected)
