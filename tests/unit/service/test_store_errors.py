# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store when things go wrong: a database that cannot be opened, changes to tasks that do not
exist, a closed store, a metrics hook that fails, a commit that fails, a closed event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from rum_pool_webhook.store import Store, StoreError
from rum_pool_webhook.tasks import Result
from tests.unit.service.test_store import T0, db  # noqa: F401  pylint: disable=unused-import


def test_a_database_that_cannot_be_opened_is_named(tmp_path):
    where = tmp_path / "no" / "such" / "dir" / "state.db"
    with pytest.raises(StoreError) as info:
        Store(str(where))
    assert str(info.value).startswith(f"state database {where}: ")


def test_a_file_that_is_no_database_is_named(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        Store(str(path))
    assert str(info.value) == f"state database {path}: file is not a database"


@pytest.mark.parametrize("call", ["record_handle", "finish"])
def test_changes_to_a_task_that_does_not_exist_are_refused(db, call):
    with pytest.raises(StoreError) as info:
        if call == "record_handle":
            db.record_handle(41, {"kind": "awx", "job_id": 1, "launched": True}, T0)
        else:
            db.finish(41, Result(True, "ok"), T0, retry_attempts=1, backoff=0)
    assert str(info.value) == "task 41 does not exist"
    assert db.launches() == []


def test_a_closed_store_takes_no_change(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    store.close()
    with pytest.raises(StoreError) as info:
        store.submit(lambda cur: None)
    assert str(info.value) == "the state database is closed"


def test_a_failing_metrics_hook_does_not_stop_commits(db):
    seen = []

    def hook(seconds, size):
        seen.append(size)
        raise RuntimeError("metrics broke")

    db.on_commit = hook
    task_id, _new = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", None, T0)
    assert db.task(task_id)["state"] == "queued"
    assert seen == [1]
    assert db.commit_stats["ops"] >= 1 and db.commit_stats["groups"] >= 1


def test_a_change_whose_sql_fails_gets_its_own_error_and_the_store_goes_on(db):
    def broken(cur):
        cur.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(sqlite3.OperationalError, match="no such table: no_such_table"):
        db.submit(broken).result()
    task_id, _new = db.enqueue("ci-hv1-1", None, None, T0)
    assert db.task(task_id)["state"] == "queued"


def test_a_group_whose_change_fails_keeps_the_others(db):
    def bad(cur):
        raise ValueError("this change is wrong")

    futures = [db.submit(bad), db.submit(lambda cur: cur.execute("SELECT 1").fetchone()[0])]
    with pytest.raises(ValueError, match="this change is wrong"):
        futures[0].result()
    assert futures[1].result() == 1


def test_an_async_change_whose_loop_closed_is_dropped_quietly(db):
    loop = asyncio.new_event_loop()
    gate = __import__("threading").Event()

    def slow(cur):
        gate.wait(5)
        return 1

    async def submit():
        return db.submit_async(slow)

    future = loop.run_until_complete(submit())
    loop.close()
    gate.set()
    # the committer settles nothing in a closed loop and goes on with the next change
    assert db.submit(lambda cur: 2).result(timeout=10) == 2
    assert not future.done()


def test_an_async_change_settles_in_its_loop(db):
    def missing(cur):
        raise KeyError("k")

    async def both():
        ok = db.submit_async(lambda cur: 5)
        bad = db.submit_async(missing)
        value = await ok
        with pytest.raises(KeyError):
            await bad
        return value

    assert asyncio.run(both()) == 5


def test_a_newer_schema_names_both_versions(tmp_path):
    path = tmp_path / "state.db"
    raw = sqlite3.connect(str(path))
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError) as info:
        Store(str(path))
    assert str(info.value) == f"state database {path} has schema version 99; this service knows 2 or older"


def test_a_commit_that_fails_fails_every_change_of_its_group_and_the_store_goes_on(db):
    """A failed COMMIT acknowledges nothing of its group: each change's future gets the error (so no
    delivery of it is answered 2xx), the counters count the group, and the next group commits."""
    gate, running = threading.Event(), threading.Event()
    first = db.submit(lambda cur: running.set() or (gate.wait(10) and "first"))  # holds the committer
    assert running.wait(10)  # the next two then form a group of their own

    def sneaky(cur):
        cur.execute("COMMIT")  # ends the group's transaction early: the group's own COMMIT then fails
        return "sneaky"

    stats = db.commit_stats
    group = [db.submit(lambda cur: "a"), db.submit(sneaky)]
    gate.set()
    assert first.result(timeout=10) == "first"
    for future in group:
        with pytest.raises(StoreError) as info:
            future.result(timeout=10)
        assert str(info.value) == "state database: commit failed: cannot commit - no transaction is active"
    assert db.commit_stats == {"ops": stats["ops"] + 3, "groups": stats["groups"] + 2}
    assert db.submit(lambda cur: cur.execute("SELECT 3").fetchone()[0]).result(timeout=10) == 3
    assert db.commit_stats == {"ops": stats["ops"] + 4, "groups": stats["groups"] + 3}


def test_the_commit_hook_gets_each_groups_seconds_and_size(db):
    seen = []
    db.on_commit = lambda seconds, size: seen.append((seconds, size))
    gate, running = threading.Event(), threading.Event()
    first = db.submit(lambda cur: running.set() or gate.wait(10))
    assert running.wait(10)
    rest = [db.submit(lambda cur: None), db.submit(lambda cur: None), db.submit(lambda cur: None)]
    gate.set()
    first.result(timeout=10)
    for future in rest:
        future.result(timeout=10)
    assert [size for _seconds, size in seen] == [1, 3]
    # an elapsed time, not a clock reading (a sanity bound, not a speed target)
    assert all(0 <= seconds < 600 for seconds, _size in seen), seen
