# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker: per-slot serialisation, retries on an injected clock, crash recovery, logs."""

from __future__ import annotations

import threading
import time

import pytest

from rum_pool_webhook.tasks import Result
from rum_pool_webhook.store import Store
from rum_pool_webhook.worker import Worker


@pytest.fixture()
def db(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    yield store
    store.close()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_run_once_logs_start_progress_and_done(db, clock, fake_dispatcher_cls, lines):
    task_id = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", clock())[0]

    class Slow(fake_dispatcher_cls):
        def run(self, task, log, record=None):
            clock.advance(41.2)
            return super().run(task, log, record)

    worker = Worker(db, Slow(), retry_attempts=3, clock=clock, log=lines)
    assert worker.run_once() == "done"
    assert lines.lines == [
        "task %d slot ci-hv1-1: started (attempt 1/3)" % task_id,
        "task %d slot ci-hv1-1: TASK [rum.pool.runner_slot : Boot] ok" % task_id,
        "task %d slot ci-hv1-1: done in 41.2 s" % task_id,
    ]
    assert db.task(task_id)["state"] == "done"
    assert worker.run_once() is None


def test_retries_wait_for_the_backoff_on_the_injected_clock(db, clock, fake_dispatcher_cls, lines):
    dispatcher = fake_dispatcher_cls([Result(False, "boom", rc=2), Result(False, "boom 2"),
                                      Result(True, "recreated", rc=0)])
    task_id = db.enqueue("ci-hv1-1", None, None, clock())[0]
    warnings = []
    worker = Worker(db, dispatcher, retry_attempts=3, retry_backoff=30, clock=clock, log=lines,
                    warn=warnings.append)
    assert worker.run_once() == "queued"
    assert warnings == ["task %d slot ci-hv1-1: failed: boom; retry in 30 s" % task_id]
    clock.advance(29)
    assert worker.run_once() is None  # not due yet
    clock.advance(1)
    assert worker.run_once() == "queued"
    assert "task %d slot ci-hv1-1: started (attempt 2/3)" % task_id in lines.lines
    clock.advance(30)
    assert worker.run_once() == "done"
    assert "task %d slot ci-hv1-1: started (attempt 3/3)" % task_id in lines.lines
    assert [c.attempts for c in dispatcher.calls] == [0, 1, 2]
    row = db.task(task_id)
    assert (row["state"], row["attempts"], row["message"]) == ("done", 3, "recreated")


def test_giving_up_after_the_last_attempt(db, clock, fake_dispatcher_cls, lines):
    dispatcher = fake_dispatcher_cls([Result(False, "nope"), Result(False, "still nope")])
    task_id = db.enqueue("ci-hv1-1", None, None, clock())[0]
    worker = Worker(db, dispatcher, retry_attempts=2, retry_backoff=0, clock=clock, log=lines)
    assert worker.run_once() == "queued"
    assert worker.run_once() == "failed"
    assert lines.lines[-1] == ("task %d slot ci-hv1-1: failed: still nope; giving up after 2 "
                               "attempts" % task_id)
    assert db.task(task_id)["state"] == "failed"


def test_a_dispatcher_exception_is_a_failed_result(db, clock, fake_dispatcher_cls, lines):
    dispatcher = fake_dispatcher_cls([RuntimeError("libvirt went away"), KeyError("x")])
    task_id = db.enqueue("ci-hv1-1", None, None, clock())[0]
    worker = Worker(db, dispatcher, retry_attempts=2, retry_backoff=0, clock=clock, log=lines)
    assert worker.run_once() == "queued"
    assert db.task(task_id)["message"] == ("attempt 1/2 failed: RuntimeError: libvirt went away; "
                                           "retry in 0 s")
    assert worker.run_once() == "failed"
    assert db.task(task_id)["message"] == "KeyError: 'x'"


def test_a_broken_log_sink_does_not_stop_the_work(db, clock, fake_dispatcher_cls):
    def broken(_line):
        raise OSError("stderr closed")

    task_id = db.enqueue("ci-hv1-1", None, None, clock())[0]
    worker = Worker(db, fake_dispatcher_cls(), clock=clock, log=broken)
    assert worker.run_once() == "done"
    assert db.task(task_id)["state"] == "done"


def test_threads_never_run_two_tasks_for_one_slot(db, fake_dispatcher_cls, lines):
    gate = threading.Event()
    dispatcher = fake_dispatcher_cls(gate=gate)
    for runner in ("a", "b", "c"):
        db.enqueue("ci-hv1-1", runner, None, time.time())
    db.enqueue("ci-hv1-2", "d", None, time.time())
    worker = Worker(db, dispatcher, max_parallel=3, log=lines, poll_seconds=0.05).start()
    try:
        assert dispatcher.started.acquire(timeout=10) and dispatcher.started.acquire(timeout=10)
        time.sleep(0.2)  # give the third thread a chance to (wrongly) take a ci-hv1-1 task
        assert len(dispatcher.calls) == 2
        assert {c.slot for c in dispatcher.calls} == {"ci-hv1-1", "ci-hv1-2"}
        gate.set()
        assert wait_for(lambda: db.task_counts() == {"queued": 0, "running": 0})
    finally:
        gate.set()
        assert worker.stop(10)
    assert len(dispatcher.calls) == 4
    assert dispatcher.max_running_per_slot == 1
    assert [c.runner for c in dispatcher.calls if c.slot == "ci-hv1-1"] == ["a", "b", "c"]


def test_wake_starts_new_work_without_waiting_for_the_poll(db, fake_dispatcher_cls, lines):
    dispatcher = fake_dispatcher_cls()
    worker = Worker(db, dispatcher, max_parallel=1, log=lines, poll_seconds=30).start()
    try:
        time.sleep(0.1)  # the thread is now idle, waiting up to 30 s
        task_id = db.enqueue("ci-hv1-1", None, None, time.time())[0]
        worker.wake()
        assert wait_for(lambda: db.task(task_id)["state"] == "done", timeout=5)
    finally:
        assert worker.stop(5)


def test_stop_lets_the_running_task_finish_and_claims_nothing_new(db, fake_dispatcher_cls,
                                                                  lines):
    gate = threading.Event()
    dispatcher = fake_dispatcher_cls(gate=gate)
    first = db.enqueue("ci-hv1-1", "a", None, time.time())[0]
    second = db.enqueue("ci-hv1-1", "b", None, time.time())[0]
    worker = Worker(db, dispatcher, max_parallel=2, log=lines, poll_seconds=0.05).start()
    assert dispatcher.started.acquire(timeout=10)
    assert worker.stop(0.2) is False  # still running
    gate.set()
    assert worker.stop(10) is True
    assert db.task(first)["state"] == "done"
    assert db.task(second)["state"] == "queued"
    assert len(dispatcher.calls) == 1


def test_recover_after_a_crash_runs_the_task_again(tmp_path, fake_dispatcher_cls, lines):
    path = str(tmp_path / "state.db")
    crashed = Store(path)
    task_id = crashed.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", time.time())[0]
    assert crashed.claim(time.time()).id == task_id  # a worker took it ... and the process died
    crashed.close()

    store = Store(path)
    dispatcher = fake_dispatcher_cls()
    worker = Worker(store, dispatcher, log=lines)
    assert worker.run_once() is None  # still "running": nothing to claim before recovery
    assert store.recover() == 1
    assert worker.run_once() == "done"
    assert dispatcher.calls[0].id == task_id and dispatcher.calls[0].attempts == 0
    assert "task %d slot ci-hv1-1: started (attempt 1/3)" % task_id in lines.lines
    store.close()


def test_the_dispatcher_records_its_handle_through_the_store(db, clock, lines):
    task_id = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", clock())[0]

    class Recording:
        kind = "fake"

        def run(self, task, log, record):
            record({"kind": "fake", "ident": "x", "launched": True})
            # on disk before the run goes on: a second connection sees it at once
            other = Store(db.path)
            try:
                assert [r["ref"] for r in other.launches()] == ["fake:x"]
            finally:
                other.close()
            return Result(True, "recreate.yml rc=0 (successful): skipped: slot moved on", rc=0,
                          outcome="skipped")

    assert Worker(db, Recording(), clock=clock, log=lines).run_once() == "skipped"
    assert lines.lines[-1] == ("task %d slot ci-hv1-1: skipped in 0.0 s: recreate.yml rc=0 "
                               "(successful): skipped: slot moved on" % task_id)


def test_a_detached_run_leaves_its_task_running_for_the_next_start(db, clock, lines):
    task_id = db.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", clock())[0]

    class Detached:
        kind = "fake"

        def run(self, task, log, record):
            record({"kind": "fake", "ident": "y"})
            return Result(False, "run y left running", detached=True)

    assert Worker(db, Detached(), clock=clock, log=lines).run_once() == "running"
    assert db.task(task_id)["state"] == "running"
    assert db.recover() == 1
    assert db.claim(clock()).handle == {"kind": "fake", "ident": "y"}


def test_a_reconcile_task_is_logged_as_the_pools(db, clock, fake_dispatcher_cls, lines):
    task_id, joined = db.enqueue_reconcile(clock(), "the service's timer")
    assert not joined and db.enqueue_reconcile(clock(), "again") == (task_id, True)
    dispatcher = fake_dispatcher_cls()
    assert Worker(db, dispatcher, clock=clock, log=lines).run_once() == "done"
    assert dispatcher.calls[0].kind == "reconcile" and dispatcher.calls[0].runner is None
    assert lines.lines[0] == "task %d pool reconcile: started (attempt 1/3)" % task_id
    assert db.snapshot(clock())["slots"] == []  # the reconcile is not a slot
