# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The changes an event loop submits in one turn reach the committer together: one group
commit, in the order submitted, none lost, and none left waiting when the store closes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rum_pool_webhook.store import Store, StoreError


@pytest.fixture()
def db(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    yield store
    store.close()


def insert(key, order=None):
    def op(cur):
        cur.execute("INSERT INTO seen (id, received_at) VALUES (?, 0)", (key,))
        if order is not None:
            order.append(key)
        return key
    return op


def test_one_turn_is_one_group_commit_in_submission_order(db):
    order = []

    async def turn():
        futures = [db.submit_async(insert("t%02d" % n, order)) for n in range(30)]
        assert not any(f.done() for f in futures)
        return await asyncio.gather(*futures)

    before = db.commit_stats
    assert asyncio.run(turn()) == ["t%02d" % n for n in range(30)]
    after = db.commit_stats
    assert order == ["t%02d" % n for n in range(30)]
    assert (after["groups"] - before["groups"], after["ops"] - before["ops"]) == (1, 30)
    assert all(db.seen("t%02d" % n) for n in range(30))


def test_later_turns_are_handed_over_after_earlier_ones(db):
    order = []

    async def turns():
        first = [db.submit_async(insert("a%d" % n, order)) for n in range(3)]
        await asyncio.sleep(0)
        second = [db.submit_async(insert("b%d" % n, order)) for n in range(3)]
        return await asyncio.gather(*first, *second)

    assert asyncio.run(turns()) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert order == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_a_blocking_submit_in_the_same_turn_comes_after_the_loops_changes(db):
    order = []

    async def turn():
        early = db.submit_async(insert("async", order))
        late = db.submit(insert("sync", order))  # from the loop's own thread
        await asyncio.wrap_future(late)
        return await early

    assert asyncio.run(turn()) == "async"
    assert order == ["async", "sync"]


def test_a_failing_change_fails_alone_within_its_turn(db):
    def broken(cur):
        cur.execute("INSERT INTO seen (id, received_at) VALUES ('half', 0)")
        raise ValueError("broken change")

    async def turn():
        futures = [db.submit_async(insert("ok1")), db.submit_async(broken),
                   db.submit_async(insert("ok2"))]
        return await asyncio.gather(*futures, return_exceptions=True)

    first, failed, last = asyncio.run(turn())
    assert (first, last) == ("ok1", "ok2")
    assert isinstance(failed, ValueError)
    assert db.seen("ok1") and db.seen("ok2") and not db.seen("half")


def test_changes_of_the_turn_that_closes_the_store_are_committed(tmp_path):
    path = str(tmp_path / "state.db")
    store = Store(path)

    async def turn():
        futures = [store.submit_async(insert("c%d" % n)) for n in range(5)]
        store.close()  # in the same turn, before the hand-over was due
        return await asyncio.wait_for(asyncio.gather(*futures), 5)

    assert asyncio.run(turn()) == ["c%d" % n for n in range(5)]
    again = Store(path)
    try:
        assert all(again.seen("c%d" % n) for n in range(5))
    finally:
        again.close()


def test_a_turn_handed_over_after_the_store_closed_fails_every_future(tmp_path):
    """Another thread closes the store while a loop's turn is pending: each of its futures
    gets a StoreError, none is left unresolved, and nothing is written."""
    path = str(tmp_path / "state.db")
    store = Store(path)
    closed = threading.Event()

    async def turn():
        futures = [store.submit_async(insert("late%d" % n)) for n in range(4)]
        closer = threading.Thread(target=lambda: (store.close(), closed.set()))
        closer.start()
        closer.join(10)  # the loop is still in this turn: nothing handed over yet
        assert closed.is_set()
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)

    outcomes = asyncio.run(turn())
    assert len(outcomes) == 4
    assert all(isinstance(o, StoreError) and "closed" in str(o) for o in outcomes)
    again = Store(path)
    try:
        assert not any(again.seen("late%d" % n) for n in range(4))
    finally:
        again.close()


def test_a_blocking_submit_after_close_is_refused(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.submit(insert("x"))
