# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sqlite store: dedupe, coalescing, per-slot claims, retries, recovery, snapshot."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest

from rum_pool_webhook import store as store_mod
from rum_pool_webhook.tasks import Result
from rum_pool_webhook.events import Delivery, decide
from rum_pool_webhook.store import SCHEMA_VERSION, Store, StoreError

T0 = 1_700_000_000.0


@pytest.fixture()
def db(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    yield store
    store.close()


def job(delivery_id, action="completed", runner="ci-hv1-1-aaaaaa", job_id=7, event="workflow_job"):
    return Delivery(id=delivery_id, event=event, action=action, job_id=job_id, job_name="build",
                    runner_name=runner, conclusion="success" if action == "completed" else None)


def accept(db, delivery, now=T0, pools=("ci",)):
    return db.accept(delivery, decide(delivery, list(pools)), now)


def test_schema_is_versioned_and_in_wal_mode(tmp_path, db):
    raw = sqlite3.connect(str(tmp_path / "state.db"))
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"seen", "deliveries", "tasks", "slots", "counters"} <= tables
    raw.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "state.db")
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = %d" % (SCHEMA_VERSION + 1))
    raw.close()
    with pytest.raises(StoreError, match="schema version %d; this service knows %d"
                       % (SCHEMA_VERSION + 1, SCHEMA_VERSION)):
        Store(path)


def test_record_delivery_dedupes_on_the_delivery_id(db):
    assert db.record_delivery(job("d1"), T0, "recorded", "first") is True
    assert db.record_delivery(job("d1"), T0 + 1) is False
    assert db.record_delivery(job("d2"), T0 + 2) is True
    outcomes = [d["outcome"] for d in db.snapshot(T0)["deliveries"]]
    assert outcomes == ["ignored", "duplicate", "recorded"]  # newest first


def test_rejected_ids_are_not_marked_seen(db):
    db.reject(T0, "signature missing or wrong", "d1", "workflow_job")
    assert accept(db, job("d1")).outcome == "queued"
    snap = db.snapshot(T0)
    assert snap["counts"]["rejected"] == 1
    assert snap["deliveries"][1]["outcome"] == "rejected"
    assert snap["deliveries"][1]["detail"] == "signature missing or wrong"


def test_accept_queues_then_coalesces_then_dedupes(db):
    first = accept(db, job("d1"))
    assert (first.outcome, first.slot) == ("queued", "ci-hv1-1")
    again = accept(db, job("d2"))  # another delivery about the same runner: e.g. a re-run
    assert (again.outcome, again.task_id) == ("coalesced", first.task_id)
    dup = accept(db, job("d1"))
    assert dup.outcome == "duplicate"
    other_runner = accept(db, job("d3", runner="ci-hv1-1-bbbbbb"))
    assert other_runner.outcome == "queued" and other_runner.task_id != first.task_id
    counts = db.snapshot(T0)["counts"]
    assert (counts["deliveries"], counts["duplicates"], counts["queued"]) == (4, 1, 2)


def test_enqueue_coalesces_while_running_but_not_after(db):
    task_id, coalesced = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", T0)
    assert not coalesced
    assert db.claim(T0).id == task_id
    assert db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d2", T0) == (task_id, True)
    db.finish(task_id, Result(True, "ok"), T0 + 1, 3, 30)
    new_id, coalesced = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d3", T0 + 2)
    assert not coalesced and new_id != task_id


def test_record_and_ignore_outcomes(db):
    assert accept(db, job("d1", action="in_progress")).outcome == "recorded"
    ignored = accept(db, job("d2", runner="GitHub Actions 5"))
    assert ignored.outcome == "ignored" and "not in pools ci" in ignored.detail
    assert db.task_counts() == {"queued": 0, "running": 0}


def test_claim_runs_one_task_per_slot_and_oldest_first(db):
    a1 = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", None, T0)[0]
    a2 = db.enqueue("ci-hv1-1", "ci-hv1-1-bbbbbb", None, T0)[0]
    b1 = db.enqueue("ci-hv1-2", "ci-hv1-2-cccccc", None, T0)[0]
    first = db.claim(T0)
    assert (first.id, first.slot, first.runner, first.attempts) == (a1, "ci-hv1-1",
                                                                    "ci-hv1-1-aaaaaa", 0)
    second = db.claim(T0)
    assert second.id == b1  # a2 waits: its slot is busy
    assert db.claim(T0) is None
    db.finish(a1, Result(True, "ok", rc=0), T0 + 5, 3, 30)
    assert db.claim(T0 + 5).id == a2


def test_finish_retries_with_backoff_then_fails(db):
    task_id = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", T0)[0]
    task = db.claim(T0)
    assert task.attempts == 0
    assert db.finish(task_id, Result(False, "boom\nsecond line", rc=2), T0 + 10, 2, 30) == "queued"
    row = db.task(task_id)
    assert row["state"] == "queued" and row["attempts"] == 1
    assert row["message"] == "attempt 1/2 failed: boom second line; retry in 30 s"
    assert db.claim(T0 + 39) is None  # not before T0 + 10 + 30
    assert db.next_due() == T0 + 40
    task = db.claim(T0 + 40)
    assert task.id == task_id and task.attempts == 1
    assert db.finish(task_id, Result(False, "boom again", rc=2, ref="/runs/1-2"), T0 + 50, 2,
                     30) == "failed"
    row = db.task(task_id)
    assert (row["state"], row["attempts"], row["message"], row["ref"]) == (
        "failed", 2, "boom again", "/runs/1-2")
    metrics = db.metrics()
    assert metrics["tasks"]["failed"] == 1 and metrics["tasks"]["done"] == 0
    assert metrics["task_seconds_count"] == 2 and metrics["task_seconds_sum"] == 20.0


def test_recover_requeues_running_tasks_without_counting_the_interrupted_attempt(tmp_path):
    path = str(tmp_path / "state.db")
    first = Store(path)
    task_id = first.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", T0)[0]
    assert first.claim(T0).id == task_id
    first.close()  # the process dies here, mid-task

    second = Store(path)
    assert second.task(task_id)["state"] == "running"
    assert second.recover() == 1
    row = second.task(task_id)
    assert (row["state"], row["attempts"]) == ("queued", 0)
    assert "interrupted" in row["message"]
    again = second.claim(T0 + 1)
    assert again.id == task_id and again.attempts == 0
    assert second.recover() == 1 and second.recover() == 0
    second.close()


def test_prune_keeps_the_newest_rows_and_the_counters(db, monkeypatch):
    for n in range(30):
        db.record_delivery(job("d%d" % n), T0 + n)
        task_id = db.enqueue("ci-hv1-%d" % n, None, None, T0 + n)[0]
        db.claim(T0 + n)
        db.finish(task_id, Result(True, "ok"), T0 + n + 1, 3, 30)
    queued_id = db.enqueue("ci-hv1-0", None, None, T0 + 99)[0]
    db.prune(keep=5, keep_seen=10)
    snap = db.snapshot(T0 + 100)
    assert [d["id"] for d in snap["deliveries"]] == ["d29", "d28", "d27", "d26", "d25"]
    task_ids = [t["id"] for t in snap["tasks"]]
    assert queued_id in task_ids and len(task_ids) <= 6
    assert snap["counts"]["done"] == 30 and snap["counts"]["deliveries"] == 30
    # a delivery id older than the kept ``seen`` window is no longer known
    assert db.record_delivery(job("d0"), T0 + 200) is True
    assert db.record_delivery(job("d29"), T0 + 200) is False


def test_prune_runs_by_itself(db, monkeypatch):
    calls = []
    monkeypatch.setattr(store_mod, "PRUNE_EVERY", 3)
    monkeypatch.setattr(store_mod.Store, "_prune", staticmethod(lambda *a, **k: calls.append(1)))
    for n in range(7):
        db.record_delivery(job("x%d" % n), T0)
    assert len(calls) == 2


def test_snapshot_has_exactly_the_contract_shape(db):
    accept(db, job("d1", action="in_progress", runner="ci-hv1-2-bbbbbb", job_id=5), T0)
    queued = accept(db, job("d2", runner="ci-hv1-1-aaaaaa", job_id=6), T0 + 1)
    snap = db.snapshot(T0 + 2, {"version": "0.1.0", "started_at": T0, "dispatcher": "fake",
                                "pools": ["ci"], "max_parallel": 2})
    json.dumps(snap)  # serialisable
    assert list(snap) == ["service", "counts", "slots", "tasks", "deliveries"]
    assert snap["service"] == {"version": "0.1.0", "started_at": T0, "now": T0 + 2,
                               "dispatcher": "fake", "pools": ["ci"], "max_parallel": 2}
    assert set(snap["counts"]) == {"deliveries", "duplicates", "rejected", "ignored", "recorded",
                                   "queued", "running", "done", "skipped", "failed"}
    slot1, slot2 = snap["slots"]
    assert slot1 == {
        "slot": "ci-hv1-1", "pool": "ci", "state": "queued", "runner": "ci-hv1-1-aaaaaa",
        "job": {"id": 6, "name": "build", "action": "completed", "at": T0 + 1},
        "last_task": {"id": queued.task_id, "state": "queued", "finished_at": None,
                      "message": "job 6 completed (success) on ci-hv1-1-aaaaaa"},
    }
    assert slot2 == {
        "slot": "ci-hv1-2", "pool": "ci", "state": "busy", "runner": "ci-hv1-2-bbbbbb",
        "job": {"id": 5, "name": "build", "action": "in_progress", "at": T0},
        "last_task": None,
    }
    assert snap["tasks"] == [{
        "id": queued.task_id, "kind": "recreate", "slot": "ci-hv1-1", "runner": "ci-hv1-1-aaaaaa",
        "state": "queued",
        "attempts": 0, "created_at": T0 + 1, "started_at": None, "finished_at": None,
        "message": "job 6 completed (success) on ci-hv1-1-aaaaaa", "ref": None,
    }]
    newest = snap["deliveries"][0]
    assert newest == {
        "id": "d2", "event": "workflow_job", "action": "completed", "received_at": T0 + 1,
        "outcome": "queued", "detail": "job 6 completed (success) on ci-hv1-1-aaaaaa; task %d"
        % queued.task_id, "slot": "ci-hv1-1", "runner": "ci-hv1-1-aaaaaa", "job_id": 6,
    }
    assert snap["deliveries"][1]["outcome"] == "recorded"


def test_slot_states_follow_the_contract(db):
    task_id = db.enqueue("ci-hv1-1", "r", None, T0, pool="ci")[0]
    assert db.snapshot(T0)["slots"][0]["state"] == "queued"
    db.claim(T0)
    assert db.snapshot(T0)["slots"][0]["state"] == "running"
    db.finish(task_id, Result(False, "no"), T0, 1, 0)
    assert db.snapshot(T0)["slots"][0]["state"] == "failed"
    # a job in progress does not hide a failed last task ...
    accept(db, job("d1", action="in_progress", runner="ci-hv1-1-cccccc"))
    assert db.snapshot(T0)["slots"][0]["state"] == "failed"
    # ... but once a later task succeeds the slot is busy while its job runs, then idle
    task_id = db.enqueue("ci-hv1-1", "r2", None, T0)[0]
    db.claim(T0)
    db.finish(task_id, Result(True, "ok"), T0, 1, 0)
    assert db.snapshot(T0)["slots"][0]["state"] == "busy"
    accept(db, job("d2", action="queued", runner="ci-hv1-1-cccccc"))
    assert db.snapshot(T0)["slots"][0]["state"] == "idle"


def test_lists_are_capped_at_fifty_newest_first(db):
    for n in range(60):
        db.record_delivery(job("d%02d" % n), T0 + n)
        db.enqueue("ci-hv1-%d" % n, None, None, T0 + n)
    snap = db.snapshot(T0)
    assert len(snap["deliveries"]) == 50 and snap["deliveries"][0]["id"] == "d59"
    assert len(snap["tasks"]) == 50 and snap["tasks"][0]["slot"] == "ci-hv1-59"
    assert len(snap["slots"]) == 60


def test_metrics_totals(db):
    accept(db, job("d1"))
    accept(db, job("d2"))
    accept(db, job("d1"))
    db.reject(T0, "bad")
    metrics = db.metrics()
    assert metrics["deliveries"] == {"queued": 1, "coalesced": 1, "duplicate": 1, "ignored": 0,
                                     "recorded": 0, "rejected": 1}
    assert metrics["tasks"] == {"queued": 1, "running": 0, "done": 0, "skipped": 0, "failed": 0}


def test_store_is_usable_from_many_threads(db):
    import threading

    def hammer(k):
        for n in range(20):
            accept(db, job("t%d-%d" % (k, n), runner="ci-hv%d-1-aaaaaa" % k))

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = db.snapshot(T0)["counts"]
    assert counts["deliveries"] == 80 and counts["queued"] == 4


def test_a_recreate_that_left_the_slot_alone_ends_skipped(db):
    task_id = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", T0, pool="ci")[0]
    db.claim(T0)
    result = Result(True, "recreate.yml rc=0 (successful): skipped: the slot holds ci-hv1-1-bbbbbb",
                    rc=0, outcome="skipped")
    assert db.finish(task_id, result, T0 + 3, 3, 30) == "skipped"
    row = db.task(task_id)
    assert row["state"] == "skipped" and "skipped: the slot holds" in row["message"]
    assert db.metrics()["tasks"]["skipped"] == 1 and db.metrics()["tasks"]["done"] == 0
    assert db.snapshot(T0 + 4)["counts"]["skipped"] == 1
    assert db.snapshot(T0 + 4)["slots"][0]["state"] == "idle"


def test_handles_are_kept_for_a_restart_and_each_launch_counted_once(tmp_path):
    path = str(tmp_path / "state.db")
    first = Store(path)
    task_id = first.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", T0)[0]
    first.claim(T0)
    intent = {"kind": "awx", "since": T0}
    first.record_handle(task_id, intent, T0)
    first.record_handle(task_id, dict(intent, job_id=100, launched=True), T0 + 1)
    first.record_handle(task_id, dict(intent, job_id=100, launched=True), T0 + 2)  # again: same run
    first.close()  # killed here

    second = Store(path)
    assert second.recover() == 1
    task = second.claim(T0 + 5)
    assert task.handle == {"kind": "awx", "since": T0, "job_id": 100, "launched": True}
    assert task.launches == ("awx:100",) and task.attempts == 0
    assert [(r["ref"], r["task_id"], r["slot"]) for r in second.launches()] == [
        ("awx:100", task_id, "ci-hv1-1")]
    second.finish(task_id, Result(False, "failed"), T0 + 9, 3, 0)
    again = second.claim(T0 + 10)
    assert again.handle is None and again.launches == ("awx:100",)  # a new attempt, a new run
    second.close()


def test_a_group_commit_covers_every_change_waiting_for_it(db):
    """Changes submitted while one commit is being written go to disk together, in one commit;
    a change that fails is undone alone. Deliveries come from an event loop, as in the service."""
    block = threading.Event()
    held = db.submit(lambda cur: block.wait(10))  # the committer is busy with this one

    def broken(cur):
        cur.execute("INSERT INTO seen (id, received_at) VALUES ('half-done', 0)")
        raise RuntimeError("a change that fails")

    async def burst():
        deliveries = [job("g%d" % n, runner="ci-hv1-%d-aaaaaa" % (n + 1)) for n in range(20)]
        waiting = [db.accept_async(d, decide(d, ["ci"]), T0) for d in deliveries]
        failing = db.submit_async(broken)
        block.set()
        accepted = await asyncio.gather(*waiting)
        with pytest.raises(RuntimeError, match="a change that fails"):
            await failing
        return accepted

    before = db.commit_stats["groups"]
    accepted = asyncio.run(burst())
    held.result(10)
    assert [a.outcome for a in accepted] == ["queued"] * 20
    assert db.commit_stats["groups"] - before <= 2  # the 21 changes after it: one group
    assert not db.seen("half-done") and db.seen("g0") and db.seen("g19")


def test_schema_version_1_is_migrated(tmp_path):
    path = str(tmp_path / "state.db")
    raw = sqlite3.connect(path)
    raw.executescript(store_mod._SCHEMA_V1 + ";\nPRAGMA user_version = 1;")  # pylint: disable=protected-access
    raw.execute("INSERT INTO tasks (slot, runner, state, created_at) VALUES ('ci-hv1-1', 'r', 'running', 1)")
    raw.commit()
    raw.close()
    store = Store(path)
    try:
        assert store.recover() == 1
        task = store.claim(T0)
        assert (task.slot, task.kind, task.handle) == ("ci-hv1-1", "recreate", None)
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        raw.close()
        # the writer syncs every commit (FULL = 2): an acknowledged delivery survives power loss
        assert store._committer.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # pylint: disable=protected-access
    finally:
        store.close()
