"""Named locks held across tasks: exclusion, tokens, waiting, stale takeover."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from ansible_collections.rum.pool.plugins.module_utils._lock import LockDir, LockError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_acquire_release_and_token(tmp_path):
    locks = LockDir(str(tmp_path))
    rec = locks.acquire("ci-hv1-1", owner="test")
    assert len(rec["token"]) == 32
    with pytest.raises(LockError, match="held by test, not by this token"):
        locks.release("ci-hv1-1", "wrong")
    assert locks.release("ci-hv1-1", rec["token"]) is True
    assert locks.release("ci-hv1-1", rec["token"]) is False


def test_other_slots_are_independent(tmp_path):
    locks = LockDir(str(tmp_path))
    locks.acquire("ci-hv1-1")
    assert locks.acquire("ci-hv1-2", timeout=0)["token"]


def test_waits_then_gives_up_naming_the_holder(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    locks.acquire("slot", owner="pool.yml")
    with pytest.raises(LockError, match=r"lock 'slot' is held by pool.yml .* gave up after 5s"):
        locks.acquire("slot", timeout=5, poll=1)
    assert clock.now >= 1005


def test_stale_lock_is_taken_over(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    old = locks.acquire("slot", owner="dead run")
    clock.now += 7200
    new = locks.acquire("slot", timeout=0, stale_after=3600)
    assert new["token"] != old["token"]
    assert new["took_over"]["owner"] == "dead run" and "token" not in new["took_over"]


def test_bad_name(tmp_path):
    with pytest.raises(LockError, match="invalid lock name"):
        LockDir(str(tmp_path)).acquire("../x")


def _hold(root, name, out, delay):
    locks = LockDir(root)
    rec = locks.acquire(name, timeout=30, poll=0.01)
    out.put(("in", time.monotonic()))
    time.sleep(delay)
    out.put(("out", time.monotonic()))
    locks.release(name, rec["token"])


def test_processes_exclude_each_other(tmp_path):
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_hold, args=(str(tmp_path), "slot", queue, 0.2)) for _worker in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = [queue.get() for _event in range(6)]
    events.sort(key=lambda e: e[1])
    # never two "in" without an "out" between them
    assert [e[0] for e in events] == ["in", "out"] * 3
    assert not os.path.exists(tmp_path / "slot.lock")
