# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store word for word (issue 14: the mutants test_store.py let through).

What a user of the status page and the service see: each delivery's recorded fields and detail,
task rows, the counters, which task ``claim`` hands out, what ``prune`` keeps, the snapshot, the
small settings and redelivery counts, the exact errors; and the durable rows themselves, read
back with a connection of their own.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest

from rum_pool_webhook import store as store_mod
from rum_pool_webhook.events import Decision, Delivery, decide
from rum_pool_webhook.store import Accepted, Store, StoreError, one_line
from rum_pool_webhook.tasks import RECONCILE, RECONCILE_SLOT, Result
from tests.unit.service.test_store import T0, accept, db, job  # noqa: F401  pylint: disable=unused-import

RUNNER = "ci-hv1-1-aaaaaa"
# A bound on waits that only a broken committer reaches (it then fails the test, not hangs it).
BOUND = 10


def bounded(call, *args):
    """``call(*args)`` in a thread of its own; fails if no answer comes (a dead committer)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call(*args)), daemon=True)
    thread.start()
    thread.join(BOUND)
    assert out, "no answer from the store: its committer stopped"
    return out[0]


def raw(store, sql, args=()):
    """Rows as the database file holds them (a connection of the test's own)."""
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def counters(store):
    return dict(raw(store, "SELECT name, value FROM counters"))


def deliveries(store, now=T0):
    return store.snapshot(now)["deliveries"]


# -- one_line ---------------------------------------------------------------------------------


def test_one_line_collapses_whitespace_and_keeps_nothing_as_empty():
    assert one_line(None) == ""
    assert one_line("") == ""
    assert one_line(0) == ""
    assert one_line("  a\n\tb   c \r\n") == "a b c"
    assert one_line(42) == "42"


def test_one_line_cuts_at_the_limit_with_an_ellipsis():
    assert one_line("x" * 500) == "x" * 500
    assert one_line("x" * 501) == "x" * 497 + "..."
    assert len(one_line("y" * 5000)) == 500
    assert one_line("abcdefgh", 8) == "abcdefgh"
    assert one_line("abcdefghi", 8) == "abcde..."
    assert one_line("a  b", 3) == "a b"


# -- deliveries -------------------------------------------------------------------------------


def test_record_delivery_keeps_every_field_and_its_duplicate_too(db):
    delivery = job("d1", action="in_progress", runner=RUNNER, job_id=11)
    assert db.record_delivery(delivery, T0, "recorded", "first seen", slot="ci-hv1-1",
                              runner=RUNNER) is True
    assert db.record_delivery(delivery, T0 + 1, "recorded", "again", slot="ci-hv1-1",
                              runner=RUNNER) is False
    assert db.record_delivery(job("d2", action="queued", job_id=12), T0 + 2) is True
    newest, dup, first = deliveries(db)
    assert first == {"id": "d1", "event": "workflow_job", "action": "in_progress",
                     "received_at": T0, "outcome": "recorded", "detail": "first seen",
                     "slot": "ci-hv1-1", "runner": RUNNER, "job_id": 11}
    assert dup == {"id": "d1", "event": "workflow_job", "action": "in_progress",
                   "received_at": T0 + 1, "outcome": "duplicate",
                   "detail": "delivery id seen before", "slot": "ci-hv1-1", "runner": RUNNER,
                   "job_id": 11}
    # the defaults: ignored, no detail, no slot or runner
    assert newest == {"id": "d2", "event": "workflow_job", "action": "queued",
                      "received_at": T0 + 2, "outcome": "ignored", "detail": "", "slot": None,
                      "runner": None, "job_id": 12}
    assert db.metrics()["deliveries"] == {"queued": 0, "coalesced": 0, "duplicate": 1,
                                          "ignored": 1, "recorded": 1, "rejected": 0}


def test_a_rejection_without_id_or_event_is_logged_blank(db):
    db.reject(T0, "signature missing or wrong")
    assert deliveries(db) == [{
        "id": "", "event": "", "action": None, "received_at": T0, "outcome": "rejected",
        "detail": "signature missing or wrong", "slot": None, "runner": None, "job_id": None}]
    assert counters(db) == {"deliveries:rejected": 1}


def test_a_rejection_names_the_delivery_it_refused(db):
    db.reject(T0, "body is not JSON", "d9", "workflow_job", "completed")
    assert deliveries(db) == [{
        "id": "d9", "event": "workflow_job", "action": "completed", "received_at": T0,
        "outcome": "rejected", "detail": "body is not JSON", "slot": None, "runner": None,
        "job_id": None}]
    assert not db.seen("d9")


def test_an_async_rejection_names_the_delivery_it_refused(db):
    async def reject():
        return await db.reject_async(T0, "signature missing or wrong", "d8", "ping")

    assert asyncio.run(reject()) is None
    assert deliveries(db) == [{
        "id": "d8", "event": "ping", "action": None, "received_at": T0, "outcome": "rejected",
        "detail": "signature missing or wrong", "slot": None, "runner": None, "job_id": None}]


def test_long_fields_of_a_delivery_are_cut(db):
    delivery = Delivery(id="i" * 200, event="e" * 100, action="a" * 100, job_id=3,
                        job_name="n" * 300, runner_name=RUNNER)
    db.reject(T0, "d" * 600, delivery.id, delivery.event, delivery.action)
    row = deliveries(db)[0]
    assert row["id"] == "i" * 125 + "..."
    assert row["event"] == "e" * 61 + "..."
    assert row["action"] == "a" * 61 + "..."
    assert row["detail"] == "d" * 497 + "..."
    # at the limits nothing is cut
    db.reject(T0, "d" * 500, "i" * 128, "e" * 64, "a" * 64)
    row = deliveries(db)[0]
    assert (row["id"], row["event"], row["action"], row["detail"]) == (
        "i" * 128, "e" * 64, "a" * 64, "d" * 500)
    # the slot keeps at most 200 characters of the job's name
    accept(db, Delivery(id="j1", event="workflow_job", action="in_progress", job_id=3,
                        job_name="n" * 300, runner_name=RUNNER))
    accept(db, Delivery(id="j2", event="workflow_job", action="in_progress", job_id=4,
                        job_name="m" * 200, runner_name="ci-hv1-2-bbbbbb"))
    slot1, slot2 = db.snapshot(T0)["slots"]
    assert slot1["job"]["name"] == "n" * 197 + "..."
    assert slot2["job"]["name"] == "m" * 200


def test_a_duplicate_is_answered_and_logged_word_for_word(db):
    first = accept(db, job("d1", runner=RUNNER, job_id=21), T0)
    dup = accept(db, job("d1", runner=RUNNER, job_id=21), T0 + 1)
    assert dup == Accepted("duplicate", task_id=None, slot="ci-hv1-1",
                           detail="delivery id seen before")
    assert deliveries(db)[0] == {
        "id": "d1", "event": "workflow_job", "action": "completed", "received_at": T0 + 1,
        "outcome": "duplicate", "detail": "delivery id seen before", "slot": "ci-hv1-1",
        "runner": RUNNER, "job_id": 21}
    assert first.task_id == 1


def test_queued_and_coalesced_deliveries_word_for_word(db):
    first = accept(db, job("d1", runner=RUNNER, job_id=5), T0)
    assert first == Accepted("queued", task_id=1, slot="ci-hv1-1",
                             detail="job 5 completed (success) on %s; task 1" % RUNNER)
    again = accept(db, job("d2", runner=RUNNER, job_id=5), T0 + 1)
    assert again == Accepted(
        "coalesced", task_id=1, slot="ci-hv1-1",
        detail="job 5 completed (success) on %s; task 1 already queued or running" % RUNNER)
    assert deliveries(db)[0]["detail"] == again.detail
    assert deliveries(db)[0]["outcome"] == "coalesced"
    task = db.claim(T0 + 2)
    assert (task.id, task.delivery, task.created_at, task.runner) == (1, "d1", T0, RUNNER)


def test_recorded_and_ignored_deliveries_have_no_task(db):
    recorded = accept(db, job("d1", action="in_progress", runner=RUNNER, job_id=5))
    assert recorded == Accepted("recorded", task_id=None, slot="ci-hv1-1",
                                detail="job 5 in_progress on %s" % RUNNER)
    ignored = accept(db, job("d2", runner="elsewhere-1-aaaaaa", job_id=6))
    assert ignored == Accepted("ignored", task_id=None, slot=None,
                               detail="job 6 completed: runner 'elsewhere-1-aaaaaa' is not in "
                               "pools ci")
    assert [d["outcome"] for d in deliveries(db)] == ["ignored", "recorded"]


def test_only_recreates_stages_and_records_note_their_slot(db):
    delivery = job("d1", runner=RUNNER)
    for n, kind in enumerate(("ignore", "ping")):
        decision = Decision(kind, slot="ci-hv1-%d" % (n + 5), pool="ci", runner=RUNNER,
                            reason="not ours")
        got = db.accept(Delivery(id="x%d" % n, event="workflow_job"), decision, T0)
        assert got == Accepted("ignored", task_id=None, slot="ci-hv1-%d" % (n + 5),
                               detail="not ours")
    # a decision without a slot notes none and queues nothing
    got = db.accept(delivery, Decision("recreate", slot=None, reason="no slot"), T0)
    assert got == Accepted("ignored", task_id=None, slot=None, detail="no slot")
    snap = db.snapshot(T0)
    assert snap["slots"] == [] and snap["tasks"] == []


# -- tasks ------------------------------------------------------------------------------------


def test_enqueue_notes_the_slot_with_its_pool_and_keeps_the_message(db):
    task_id, coalesced = db.enqueue("ci-hv1-3", RUNNER, "d7", T0, pool="ci", message="by hand")
    assert (task_id, coalesced) == (1, False)
    plain_id = db.enqueue("ci-hv1-4", None, None, T0 + 1)[0]
    snap = db.snapshot(T0 + 2)
    assert snap["slots"] == [
        {"slot": "ci-hv1-3", "pool": "ci", "state": "queued", "runner": None, "job": None,
         "last_task": {"id": task_id, "state": "queued", "finished_at": None,
                       "message": "by hand"}},
        {"slot": "ci-hv1-4", "pool": None, "state": "queued", "runner": None, "job": None,
         "last_task": {"id": plain_id, "state": "queued", "finished_at": None, "message": ""}},
    ]
    task = db.claim(T0 + 3)
    assert (task.id, task.slot, task.runner, task.delivery, task.created_at, task.kind,
            task.handle, task.launches) == (task_id, "ci-hv1-3", RUNNER, "d7", T0, "recreate",
                                            None, ())
    assert db.task(plain_id)["message"] == ""


def test_a_reconcile_keeps_its_message_and_coalesces(db):
    task_id, coalesced = db.enqueue_reconcile(T0, "pool config changed")
    assert not coalesced
    assert db.enqueue_reconcile(T0 + 1, "again") == (task_id, True)
    assert db.task(task_id) == {
        "id": task_id, "kind": RECONCILE, "slot": RECONCILE_SLOT, "runner": None,
        "state": "queued", "attempts": 0, "created_at": T0, "started_at": None,
        "finished_at": None, "message": "pool config changed", "ref": None}
    assert db.snapshot(T0 + 1)["slots"] == []  # the pool's reconcile is no slot
    task = db.claim(T0 + 2)
    assert (task.id, task.kind, task.delivery) == (task_id, RECONCILE, None)


def test_a_task_row_after_a_claim_and_a_finish(db):
    task_id = db.enqueue("ci-hv1-1", RUNNER, "d1", T0)[0]
    db.claim(T0 + 1)
    assert db.task(task_id) == {
        "id": task_id, "kind": "recreate", "slot": "ci-hv1-1", "runner": RUNNER,
        "state": "running", "attempts": 1, "created_at": T0, "started_at": T0 + 1,
        "finished_at": None, "message": "", "ref": None}
    result = Result(True, "recreate.yml rc=0 (successful)", rc=0, ref="/runs/1",
                    outcome="recreated")
    assert db.finish(task_id, result, T0 + 1.25, 3, 30) == "done"
    assert db.task(task_id) == {
        "id": task_id, "kind": "recreate", "slot": "ci-hv1-1", "runner": RUNNER,
        "state": "done", "attempts": 1, "created_at": T0, "started_at": T0 + 1,
        "finished_at": T0 + 1.25, "message": "recreate.yml rc=0 (successful)",
        "ref": "/runs/1"}
    assert raw(db, "SELECT rc, outcome, handle, not_before FROM tasks WHERE id = ?",
               (task_id,)) == [(0, "recreated", None, 0)]
    # a quarter of a second counts as a quarter of a second
    assert counters(db) == {"task_seconds_sum": 0.25, "task_seconds_count": 1, "tasks:done": 1}
    assert db.task(task_id + 1) is None


def test_a_failed_run_keeps_no_outcome_and_a_retry_counts_no_final_state(db):
    task_id = db.enqueue("ci-hv1-1", RUNNER, "d1", T0)[0]
    db.claim(T0)
    failed = Result(False, "boom", rc=2, outcome="recreated")
    assert db.finish(task_id, failed, T0 + 2, 2, 10) == "queued"
    assert raw(db, "SELECT state, outcome, not_before, rc FROM tasks WHERE id = ?",
               (task_id,)) == [("queued", None, T0 + 12, 2)]
    assert db.task(task_id)["message"] == "attempt 1/2 failed: boom; retry in 10 s"
    assert counters(db) == {"task_seconds_sum": 2.0, "task_seconds_count": 1}
    assert db.next_due() == T0 + 12
    db.claim(T0 + 12)
    assert db.finish(task_id, failed, T0 + 13, 2, 10) == "failed"
    assert raw(db, "SELECT state, outcome, not_before FROM tasks WHERE id = ?",
               (task_id,)) == [("failed", None, T0 + 12)]
    assert counters(db) == {"task_seconds_sum": 3.0, "task_seconds_count": 2, "tasks:failed": 1}
    assert db.next_due() is None


def test_a_success_keeps_the_due_time_it_had(db):
    task_id = db.enqueue("ci-hv1-1", RUNNER, "d1", T0)[0]
    db.claim(T0)
    db.finish(task_id, Result(False, "boom"), T0 + 1, 3, 5)
    db.claim(T0 + 6)
    assert db.finish(task_id, Result(True, "ok", outcome="skipped"), T0 + 7, 3, 5) == "skipped"
    assert raw(db, "SELECT state, outcome, not_before FROM tasks WHERE id = ?",
               (task_id,)) == [("skipped", "skipped", T0 + 6)]
    assert counters(db)["tasks:skipped"] == 1


def test_finishing_a_task_never_claimed_counts_no_seconds(db):
    task_id = db.enqueue("ci-hv1-1", RUNNER, None, T0)[0]
    assert db.finish(task_id, Result(True, "ok"), T0 + 5, 3, 30) == "done"
    assert counters(db) == {"tasks:done": 1}
    assert db.metrics()["task_seconds_count"] == 0


def test_claim_respects_the_due_time_exactly(db):
    task_id = db.enqueue("ci-hv1-1", RUNNER, None, T0)[0]
    db.claim(T0)
    db.finish(task_id, Result(False, "no"), T0, 3, 30)
    assert db.claim(T0 + 29.5) is None
    assert db.claim(T0 + 30).id == task_id


def test_a_running_task_wins_the_slots_state_over_a_queued_one(db):
    first = db.enqueue("ci-hv1-1", RUNNER, None, T0, pool="ci")[0]
    db.claim(T0)
    second = db.enqueue("ci-hv1-1", "ci-hv1-1-bbbbbb", None, T0 + 1, pool="ci")[0]
    slot = db.snapshot(T0 + 2)["slots"][0]
    assert slot["state"] == "running"
    assert slot["last_task"] == {"id": second, "state": "queued", "finished_at": None,
                                 "message": ""}
    assert db.task_counts() == {"queued": 1, "running": 1}
    db.finish(first, Result(True, "ok"), T0 + 3, 3, 30)
    assert db.snapshot(T0 + 4)["slots"][0]["state"] == "queued"


def test_handles_are_stored_with_sorted_keys_and_launches_once(db):
    task_id = db.enqueue("ci-hv1-1", RUNNER, None, T0)[0]
    db.claim(T0)
    handle = {"launched": True, "kind": "ansible-runner", "ident": "r1", "dir": "/x"}
    db.record_handle(task_id, handle, T0 + 1)
    assert raw(db, "SELECT handle FROM tasks WHERE id = ?", (task_id,)) == [
        (json.dumps(handle, sort_keys=True),)]
    assert raw(db, "SELECT handle FROM tasks WHERE id = ?", (task_id,))[0][0].startswith(
        '{"dir": "/x", "ident": "r1", "kind"')
    assert db.launches() == [{"ref": "ansible-runner:r1", "task_id": task_id,
                              "slot": "ci-hv1-1", "at": T0 + 1}]
    db.record_handle(task_id, {"kind": "ansible-runner", "ident": "r2"}, T0 + 2)  # not launched
    assert len(db.launches()) == 1


def test_recover_words_its_message_by_whether_a_run_is_followed(tmp_path):
    path = str(tmp_path / "state.db")
    first = Store(path)
    plain = first.enqueue("ci-hv1-1", RUNNER, None, T0)[0]
    followed = first.enqueue("ci-hv1-2", "ci-hv1-2-bbbbbb", None, T0)[0]
    waiting = first.enqueue("ci-hv1-3", "ci-hv1-3-cccccc", None, T0)[0]
    first.claim(T0)
    first.claim(T0)
    first.record_handle(followed, {"kind": "awx", "job_id": 9, "launched": True}, T0)
    first.close()
    second = Store(path)
    try:
        assert second.recover() == 2
        assert second.task(plain)["message"] == (
            "interrupted by a restart of the service; queued again")
        assert second.task(followed)["message"] == (
            "interrupted by a restart of the service; its run is followed again")
        assert second.task(waiting)["message"] == ""
        assert [second.task(t)["attempts"] for t in (plain, followed, waiting)] == [0, 0, 0]
        assert second.task_counts() == {"queued": 3, "running": 0}
        assert second.next_due() == 0.0
    finally:
        second.close()


def test_recover_puts_a_task_waiting_for_its_retry_back_at_once(tmp_path):
    path = str(tmp_path / "state.db")
    first = Store(path)
    task_id = first.enqueue("ci-hv1-1", RUNNER, None, T0)[0]
    first.claim(T0)
    first.finish(task_id, Result(False, "no"), T0, 3, 100)
    first.claim(T0 + 100)
    first.close()
    second = Store(path)
    try:
        assert second.recover() == 1
        assert raw(second, "SELECT state, attempts, not_before FROM tasks") == [("queued", 1, 0)]
        assert second.claim(T0).attempts == 1
    finally:
        second.close()


# -- settings and redeliveries ----------------------------------------------------------------


def test_meta_settings_are_kept_and_replaced(db):
    assert db.get_meta("redeliver:checked_at") is None
    db.set_meta("redeliver:checked_at", "1.5")
    db.set_meta("other", "x")
    assert db.get_meta("redeliver:checked_at") == "1.5"
    db.set_meta("redeliver:checked_at", "2.5")
    assert (db.get_meta("redeliver:checked_at"), db.get_meta("other")) == ("2.5", "x")
    assert raw(db, "SELECT name, value FROM meta ORDER BY name") == [
        ("other", "x"), ("redeliver:checked_at", "2.5")]


def test_redeliveries_are_counted_per_guid(db):
    assert db.redeliveries("g1") == 0
    assert db.note_redelivery("g1", T0) == 1
    assert db.note_redelivery("g2", T0 + 1) == 1
    assert db.note_redelivery("g1", T0 + 2) == 2
    assert (db.redeliveries("g1"), db.redeliveries("g2"), db.redeliveries("g3")) == (2, 1, 0)
    assert raw(db, "SELECT guid, attempts, last_at FROM redeliveries ORDER BY guid") == [
        ("g1", 2, T0 + 2), ("g2", 1, T0 + 1)]


# -- prune ------------------------------------------------------------------------------------


def test_prune_keeps_exactly_the_newest_rows(db):
    for n in range(8):
        db.record_delivery(job("d%d" % n), T0 + n)
        task_id = db.enqueue("ci-hv1-%d" % n, None, None, T0 + n)[0]
        db.claim(T0 + n)
        db.record_handle(task_id, {"kind": "awx", "job_id": n, "launched": True}, T0 + n)
        db.finish(task_id, Result(True, "ok"), T0 + n, 3, 30)
        db.note_redelivery("g%d" % n, T0 + n)
    db.prune(keep=3, keep_seen=4)
    assert [d["id"] for d in deliveries(db)] == ["d7", "d6", "d5"]
    assert [t["id"] for t in db.snapshot(T0)["tasks"]] == [8, 7, 6]
    assert [launch["ref"] for launch in db.launches()] == ["awx:5", "awx:6", "awx:7"]
    assert [r[0] for r in raw(db, "SELECT id FROM seen ORDER BY rowid")] == [
        "d4", "d5", "d6", "d7"]
    assert [r[0] for r in raw(db, "SELECT guid FROM redeliveries ORDER BY rowid")] == [
        "g4", "g5", "g6", "g7"]
    assert db.metrics()["tasks"]["done"] == 8


def test_prune_keeps_unfinished_tasks_and_the_redeliveries_of_seen_ids(db):
    queued = db.enqueue("ci-hv1-0", None, None, T0)[0]
    for n in range(1, 6):
        task_id = db.enqueue("ci-hv1-%d" % n, None, None, T0)[0]
        db.finish(task_id, Result(True, "ok"), T0, 3, 30)
    db.note_redelivery("d1", T0)  # a delivery that came, after all
    db.record_delivery(job("d1"), T0)
    for n in range(2, 5):
        db.note_redelivery("g%d" % n, T0)
    db.prune(keep=2, keep_seen=1)
    assert [t["id"] for t in db.snapshot(T0)["tasks"]] == [6, 5, queued]
    assert [r[0] for r in raw(db, "SELECT guid FROM redeliveries ORDER BY rowid")] == [
        "d1", "g4"]


def test_the_store_prunes_by_itself_every_hundred_changes(db, monkeypatch):
    monkeypatch.setattr(store_mod, "KEEP_ROWS", 2)
    for n in range(store_mod.PRUNE_EVERY - 1):
        db.record_delivery(job("d%d" % n), T0)
    assert len(raw(db, "SELECT seq FROM deliveries")) == 99
    db.record_delivery(job("last"), T0)
    assert [d["id"] for d in deliveries(db)] == ["last", "d98"]


# -- the committer ----------------------------------------------------------------------------


def test_futures_of_a_turn_handed_over_after_close_get_the_exact_error(tmp_path):
    store = Store(str(tmp_path / "state.db"))

    async def turn():
        cancelled = store.submit_async(lambda cur: 1)
        kept = store.submit_async(lambda cur: 2)
        cancelled.cancel()
        closer = threading.Thread(target=store.close)
        closer.start()
        closer.join()
        await asyncio.sleep(0)  # the hand-over: the store is closed by now
        return cancelled, kept

    cancelled, kept = asyncio.run(turn())
    assert cancelled.cancelled()
    error = kept.exception()
    assert isinstance(error, StoreError) and str(error) == "the state database is closed"


def test_a_cancelled_future_does_not_stop_the_others_of_its_group(db):
    async def turn():
        loop = asyncio.get_running_loop()
        applied = threading.Event()

        def last(cur):
            applied.set()
            return "kept"

        cancelled = db.submit_async(lambda cur: "dropped")
        kept = db.submit_async(last)
        cancelled.cancel()
        assert await loop.run_in_executor(None, applied.wait, BOUND)
        # a change submitted now goes into a later group, settled after the first one
        assert await asyncio.wait_for(db.submit_async(lambda cur: "later"), BOUND) == "later"
        return kept

    kept = asyncio.run(turn())
    assert kept.done() and kept.result() == "kept"


def test_every_change_of_a_turn_is_handed_over(db):
    async def turn():
        loop = asyncio.get_running_loop()
        applied = threading.Event()

        def last(cur):
            applied.set()
            return "c"

        futures = [db.submit_async(lambda cur: "a"), db.submit_async(lambda cur: "b"),
                   db.submit_async(last)]
        assert await loop.run_in_executor(None, applied.wait, BOUND)
        assert await asyncio.wait_for(db.submit_async(lambda cur: "later"), BOUND) == "later"
        return futures

    futures = asyncio.run(turn())
    assert [f.done() for f in futures] == [True, True, True]
    assert [f.result() for f in futures] == ["a", "b", "c"]


def test_counters_of_one_group_are_summed(db):
    block = threading.Event()
    held = db.submit(lambda cur: block.wait(10))
    futures = [db.submit(lambda cur, n=n: db._bump(cur, "deliveries:queued", n))  # pylint: disable=protected-access
               for n in (1, 2, 4)]
    twice = db.submit(lambda cur: (db._bump(cur, "deliveries:ignored"),  # pylint: disable=protected-access
                                   db._bump(cur, "deliveries:ignored", 2)))  # pylint: disable=protected-access
    block.set()
    held.result()
    for future in futures + [twice]:
        future.result()
    assert db.metrics()["deliveries"]["queued"] == 7
    assert db.metrics()["deliveries"]["ignored"] == 3


def test_schema_v1_gains_the_columns_and_tables_of_v2(tmp_path):
    path = str(tmp_path / "state.db")
    conn = sqlite3.connect(path)
    conn.executescript(store_mod._SCHEMA_V1 + ";\nPRAGMA user_version = 1;")  # pylint: disable=protected-access
    conn.execute("INSERT INTO tasks (slot, runner, state, created_at, message) "
                 "VALUES ('ci-hv1-1', 'r', 'queued', 1, 'old')")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        assert store.task(1) == {
            "id": 1, "kind": "recreate", "slot": "ci-hv1-1", "runner": "r", "state": "queued",
            "attempts": 0, "created_at": 1, "started_at": None, "finished_at": None,
            "message": "old", "ref": None}
        store.set_meta("k", "v")
        assert store.note_redelivery("g", T0) == 1
        assert store.get_meta("k") == "v"
        tables = {r[0] for r in raw(store, "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"launches", "meta", "redeliveries"} <= tables
        assert raw(store, "PRAGMA user_version") == [(2,)]
    finally:
        store.close()


def test_a_failed_migration_leaves_the_old_version(tmp_path, monkeypatch):
    path = str(tmp_path / "state.db")
    conn = sqlite3.connect(path)
    conn.executescript(store_mod._SCHEMA_V1 + ";\nPRAGMA user_version = 1;")  # pylint: disable=protected-access
    conn.commit()
    conn.close()
    monkeypatch.setattr(store_mod, "_SCHEMA_V2", "ALTER TABLE tasks ADD COLUMN kind TEXT;"
                        "CREATE TABLE broken (")
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(info.value).startswith("state database %s: " % path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [r[1] for r in conn.execute("PRAGMA table_info(tasks)")]
        assert "kind" not in columns
    finally:
        conn.close()


def test_a_whole_round_gets_its_answers(db):
    """A delivery queued, claimed, run with a handle, failed once, run again and finished: every
    change answers (a change that broke the committer thread would leave its caller waiting)."""
    got = bounded(accept, db, job("d1", runner=RUNNER, job_id=3))
    assert (got.outcome, got.task_id) == ("queued", 1)
    assert bounded(accept, db, job("d1", runner=RUNNER, job_id=3)).outcome == "duplicate"
    assert bounded(db.claim, T0).id == 1
    bounded(db.record_handle, 1, {"kind": "awx", "job_id": 4, "launched": True}, T0)
    assert bounded(db.finish, 1, Result(False, "no", rc=1), T0 + 1, 2, 0) == "queued"
    assert bounded(db.claim, T0 + 1).attempts == 1
    assert bounded(db.finish, 1, Result(True, "ok", rc=0), T0 + 3, 2, 0) == "done"
    assert bounded(db.enqueue_reconcile, T0, "r") == (2, False)
    assert counters(db) == {"deliveries:queued": 1, "deliveries:duplicate": 1,
                            "task_seconds_sum": 3.0, "task_seconds_count": 2, "tasks:done": 1}


def test_changes_of_a_turn_all_answer(db):
    async def turn():
        futures = [db.accept_async(d, decide(d, ["ci"]), T0)
                   for d in (job("a1", runner=RUNNER), job("a2", runner="ci-hv1-2-bbbbbb"))]
        futures.append(db.reject_async(T0, "bad"))
        return await asyncio.wait_for(asyncio.gather(*futures), BOUND)

    first, second, rejected = asyncio.run(turn())
    assert (first.outcome, second.outcome, rejected) == ("queued", "queued", None)
    assert counters(db) == {"deliveries:queued": 2, "deliveries:rejected": 1}


def test_a_turn_handed_over_early_leaves_no_error_in_the_loop(db):
    """A blocking submit (or close) in the loop's thread hands its turn over at once; the
    hand-over planned for the end of the turn then finds nothing and does nothing."""
    errors = []

    async def turn():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        early = db.submit_async(lambda cur: "early")
        late = db.submit(lambda cur: "late")
        assert await asyncio.wait_for(asyncio.wrap_future(late), BOUND) == "late"
        return await asyncio.wait_for(early, BOUND)

    assert asyncio.run(turn()) == "early"
    assert errors == []


def test_task_rows_keep_their_pool_delivery_and_kind(db):
    accept(db, job("d1", runner=RUNNER, job_id=3))
    db.enqueue("ci-hv1-2", "ci-hv1-2-bbbbbb", "d2", T0, pool="ci")
    db.enqueue("ci-hv1-3", None, None, T0)
    db.enqueue_reconcile(T0, "why")
    assert raw(db, "SELECT id, slot, pool, runner, delivery, kind FROM tasks ORDER BY id") == [
        (1, "ci-hv1-1", "ci", RUNNER, "d1", "recreate"),
        (2, "ci-hv1-2", "ci", "ci-hv1-2-bbbbbb", "d2", "recreate"),
        (3, "ci-hv1-3", None, None, None, "recreate"),
        (4, RECONCILE_SLOT, None, None, None, RECONCILE)]


# -- stages -----------------------------------------------------------------------------------


def stage(db, delivery_id, runner=RUNNER, now=T0):
    delivery = job(delivery_id, action="in_progress", runner=runner)
    return db.accept(delivery, decide(delivery, ["ci"], True), now)


def test_only_the_queued_stage_of_the_same_generation_is_skipped(db):
    running = stage(db, "s1", runner="ci-hv1-1-oldold")
    db.claim(T0)
    same = stage(db, "s2")  # the next generation of the same slot, queued behind the running one
    other_slot = stage(db, "s3", runner="ci-hv1-2-bbbbbb")
    ended = accept(db, job("e1", runner=RUNNER), T0 + 5)
    assert (ended.outcome, ended.task_id) == ("queued", 4)
    assert raw(db, "SELECT id, kind, state, finished_at, message FROM tasks ORDER BY id") == [
        (running.task_id, "stage", "running", None, "job 7 in_progress on ci-hv1-1-oldold: "
         "stage the next generation"),
        (same.task_id, "stage", "skipped", T0 + 5, "not staged: the job ended before the stage ran "
         "(the recreate boots a fresh generation)"),
        (other_slot.task_id, "stage", "queued", None, "job 7 in_progress on ci-hv1-2-bbbbbb: "
         "stage the next generation"),
        (4, "recreate", "queued", None, "job 7 completed (success) on %s" % RUNNER)]
    assert counters(db) == {"deliveries:queued": 4, "tasks:skipped": 1}
    # the job of the running stage's generation ends: that stage is running, it stays
    accept(db, job("e2", runner="ci-hv1-1-oldold"), T0 + 6)
    assert db.task(running.task_id)["state"] == "running"
    assert counters(db)["tasks:skipped"] == 1


def test_a_stage_and_a_recreate_of_one_generation_never_absorb_each_other(db):
    staged = stage(db, "s1")
    db.claim(T0)
    ended = accept(db, job("e1", runner=RUNNER), T0 + 1)
    assert ended.outcome == "queued" and ended.task_id != staged.task_id
    # a redelivered start of that generation: its recreate is known, nothing is staged
    late = stage(db, "s2", now=T0 + 2)
    assert late == Accepted("recorded", task_id=None, slot="ci-hv1-1", detail=(
        "job 7 in_progress on %s: stage the next generation: not staged, the job already ended "
        "(its recreate is known)" % RUNNER))
    assert deliveries(db)[0]["outcome"] == "recorded"
    # another generation of the same slot still stages
    assert stage(db, "s3", runner="ci-hv1-1-cccccc", now=T0 + 3).outcome == "queued"


def test_a_reconcile_does_not_count_as_the_end_of_a_job(db):
    db.enqueue_reconcile(T0, "pool changed")
    assert stage(db, "s1").outcome == "queued"


def test_a_failed_stage_fails_at_once_and_a_failed_recreate_retries(db):
    staged = stage(db, "s1")
    db.claim(T0)
    assert db.finish(staged.task_id, Result(False, "boom", rc=2), T0 + 1, 3, 10) == "failed"
    assert db.task(staged.task_id)["message"] == "boom"
    assert counters(db)["tasks:failed"] == 1
    ended = accept(db, job("e1", runner=RUNNER), T0 + 2)
    db.claim(T0 + 2)
    assert db.finish(ended.task_id, Result(False, "boom", rc=2), T0 + 3, 3, 10) == "queued"


def test_a_stage_notes_its_slot_and_job(db):
    staged = stage(db, "s1", now=T0 + 1)
    assert db.snapshot(T0 + 2)["slots"] == [{
        "slot": "ci-hv1-1", "pool": "ci", "state": "queued", "runner": RUNNER,
        "job": {"id": 7, "name": "build", "action": "in_progress", "at": T0 + 1},
        "last_task": {"id": staged.task_id, "state": "queued", "finished_at": None,
                      "message": "job 7 in_progress on %s: stage the next generation" % RUNNER}}]


def test_an_async_change_that_fails_hands_its_error_over_and_the_rest_answer(db):
    def broken(cur):
        raise LookupError("no such thing")

    async def turn():
        futures = [db.submit_async(broken), db.submit_async(lambda cur: "after")]
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), BOUND)

    error, after = asyncio.run(turn())
    assert isinstance(error, LookupError) and str(error) == "no such thing"
    assert after == "after"
