# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service's durable state: deliveries seen, the task queue, slots, counters (sqlite).

Every change goes through one committer thread, which applies the changes waiting for it in
one transaction and commits them together: a *group commit*. The database runs in WAL mode with
``synchronous=FULL``, so a commit returns only once the WAL is synced to disk (fsync); while one
group is being written, the next one gathers. A caller gets its answer only after the commit
that holds its change, so a delivery is acknowledged (2xx) only once it is on disk, and a burst
of deliveries costs one sync per group, not one per delivery. Each change runs inside a
savepoint: one that fails is undone alone and reports its error, the rest of its group commits.
Reads use a connection of their own and never wait for a sync.

Queue rules:

* a delivery id is handled once (``seen``); a redelivery is answered "duplicate";
* a task of the same kind for the same slot and runner that is still queued or running absorbs
  new requests (coalescing), because one recreate of that runner generation is enough; the pool's
  reconcile is queued under a slot name of its own (``tasks.RECONCILE_SLOT``) and coalesces the
  same way;
* a stage (the slot's next generation prepared while its job runs) is queued only while that
  job has not ended: not when a recreate of the same runner generation is already known, and a
  stage still queued when the recreate comes is skipped (the recreate boots a fresh generation
  itself); a failed stage is not retried (the recreate does the whole work instead);
* ``claim`` never hands out a task for a slot that already has one running, and respects the
  ``not_before`` time of a task waiting for its retry;
* ``record_handle`` keeps what the dispatcher started for the running attempt (and counts each
  launched run once, in ``launches``);
* ``finish`` re-queues a failed task while attempts remain, else marks it failed; a successful
  run that left the slot alone (it held another runner generation) ends "skipped";
* ``recover`` (at start-up) puts tasks left "running" by a crash back in the queue with their
  handle, so their run is followed again rather than started twice; the interrupted attempt
  is not counted.

Counters (deliveries by outcome, tasks done/skipped/failed, task seconds) are kept in their own
table so that pruning old rows (the newest 1000 deliveries and tasks are kept) does not reset
them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from .events import Decision, Delivery
from .tasks import RECONCILE, RECONCILE_SLOT, RECREATE, STAGE, Result, Task, launch_ref

SCHEMA_VERSION = 2
KEEP_ROWS = 1000
KEEP_SEEN = 10000
LIST_LIMIT = 50
PRUNE_EVERY = 100
MESSAGE_LIMIT = 500
OUTCOMES = ("queued", "coalesced", "duplicate", "ignored", "recorded", "rejected")
TASK_STATES = ("queued", "running", "done", "skipped", "failed")
FINAL_STATES = ("done", "skipped", "failed")

_SCHEMA_V1 = """
CREATE TABLE seen (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    event TEXT NOT NULL,
    action TEXT,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    slot TEXT,
    runner TEXT,
    job_id INTEGER
);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slot TEXT NOT NULL,
    pool TEXT,
    runner TEXT,
    delivery TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    message TEXT NOT NULL DEFAULT '',
    rc INTEGER,
    ref TEXT
);
CREATE INDEX tasks_state ON tasks (state, slot);
CREATE INDEX tasks_slot ON tasks (slot, id);
CREATE TABLE slots (
    slot TEXT PRIMARY KEY,
    pool TEXT,
    runner TEXT,
    job_id INTEGER,
    job_name TEXT,
    job_action TEXT,
    job_at REAL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
)
"""
# Version 2: task kinds (reconcile), the handle of the running attempt, what a run did, the
# runs launched (counted once each), small settings (meta), and redeliveries asked of GitHub.
_SCHEMA_V2 = """
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'recreate';
ALTER TABLE tasks ADD COLUMN handle TEXT;
ALTER TABLE tasks ADD COLUMN outcome TEXT;
CREATE TABLE launches (
    ref TEXT PRIMARY KEY,
    task_id INTEGER NOT NULL,
    slot TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX launches_task ON launches (task_id);
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE redeliveries (
    guid TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL,
    last_at REAL NOT NULL
)
"""


class StoreError(Exception):
    """The state database cannot be used (for example, it was made by a newer version)."""


@dataclass(frozen=True)
class Accepted:
    """What ``Store.accept`` did with a delivery."""

    outcome: str  # one of OUTCOMES except "rejected"
    task_id: int | None = None
    slot: str | None = None
    detail: str = ""


def one_line(text: Any, limit: int = MESSAGE_LIMIT) -> str:
    """Collapse ``text`` to a single line of at most ``limit`` characters."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


Op = Callable[[sqlite3.Cursor], Any]
CommitHook = Callable[[float, int], None]


class _Committer(threading.Thread):
    """The one writer: applies queued changes in groups, one ``COMMIT`` (one sync) per group."""

    def __init__(self, db: sqlite3.Connection, on_commit: Callable[[], CommitHook | None]):
        super().__init__(name="rum-pool-commit", daemon=True)
        self.db = db
        self.on_commit = on_commit
        self.cond = threading.Condition()
        self.pending: list[tuple[Op, Future]] = []
        self.closing = False
        self.ops = 0
        self.groups = 0
        self.op_bumps: dict[str, float] = {}

    def submit(self, op: Op, future: Any = None) -> Any:
        """Queue ``op``; ``future`` (a concurrent.futures one by default, or an asyncio one
        created in its event loop) gets its result after the commit."""
        if future is None:
            future = Future()
        with self.cond:
            if self.closing:
                raise StoreError("the state database is closed")
            self.pending.append((op, future))
            self.cond.notify()
        return future

    def submit_many(self, items: list[tuple[Op, Any]]) -> None:
        """Queue several changes with one wake-up; their futures fail if the store is closed."""
        with self.cond:
            if not self.closing:
                self.pending.extend(items)
                self.cond.notify()
                return
        error = StoreError("the state database is closed")
        for _op, future in items:
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.join()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.cond.wait()
                if not self.pending:
                    return
                group, self.pending = self.pending, []
            self._commit(group)

    def bump(self, name: str, amount: float = 1) -> None:
        """Add to a counter: summed over the group and written once, with its commit."""
        self.op_bumps[name] = self.op_bumps.get(name, 0) + amount

    def _apply(self, cur: sqlite3.Cursor, group: list[tuple[Op, Future]], isolated: bool
               ) -> tuple[list[tuple[Future, Any, BaseException | None]], dict[str, float]]:
        """Run the group's changes in one transaction. Not ``isolated`` (the usual case), a
        failing change aborts the whole attempt (``_Retry``); ``isolated``, each runs in a
        savepoint and a failing one is undone alone."""
        outcomes: list[tuple[Future, Any, BaseException | None]] = []
        bumps: dict[str, float] = {}
        cur.execute("BEGIN IMMEDIATE")
        for op, future in group:
            self.op_bumps = {}
            if isolated:
                cur.execute("SAVEPOINT op")
            try:
                value = op(cur)
            except BaseException as exc:  # pylint: disable=broad-except  # handed to the caller
                if not isolated:
                    raise _Retry() from exc
                cur.execute("ROLLBACK TO op")
                cur.execute("RELEASE op")
                outcomes.append((future, None, exc))
                continue
            if isolated:
                cur.execute("RELEASE op")
            for name, amount in self.op_bumps.items():
                bumps[name] = bumps.get(name, 0) + amount
            outcomes.append((future, value, None))
        return outcomes, bumps

    def _commit(self, group: list[tuple[Op, Future]]) -> None:
        started = time.perf_counter()
        cur = self.db.cursor()
        try:
            try:
                outcomes, bumps = self._apply(cur, group, isolated=False)
            except _Retry:
                cur.execute("ROLLBACK")
                outcomes, bumps = self._apply(cur, group, isolated=True)
            if bumps:
                cur.executemany(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    sorted(bumps.items()))
            cur.execute("COMMIT")  # synchronous=FULL: returns once the WAL is on disk
        except sqlite3.Error as exc:
            try:
                cur.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            failure = StoreError(f"state database: commit failed: {exc}")
            outcomes = [(future, None, failure) for _op, future in group]
        self.ops += len(group)
        self.groups += 1
        hook = self.on_commit()
        if hook is not None:
            try:
                hook(time.perf_counter() - started, len(group))
            except Exception:  # pylint: disable=broad-except  # metrics must not break commits
                pass
        by_loop: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
        for future, value, error in outcomes:
            if isinstance(future, asyncio.Future):  # settled in its loop, one wake-up per group
                by_loop.setdefault(future.get_loop(), []).append((future, value, error))
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _settle(settled: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, value, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class _Retry(Exception):
    """A change of the group failed: apply the group again, each change in a savepoint."""


class Store:
    """sqlite-backed state; safe to share between threads (writes go through one committer)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.on_commit: CommitHook | None = None
        self._writes = 0
        self._read_lock = threading.RLock()
        self._turn: dict[asyncio.AbstractEventLoop, list[tuple[Op, Any]]] = {}
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError("state database %s: cannot open: %s" % (path, exc)) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate(db)
            self._rdb = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                        timeout=30)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError("state database %s: %s" % (path, exc)) from None
        self._rdb.row_factory = sqlite3.Row
        db.row_factory = sqlite3.Row
        self._committer = _Committer(db, lambda: self.on_commit)
        self._committer.start()

    # -- plumbing -----------------------------------------------------------------------------

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                "state database %s has schema version %d; this service knows %d or older"
                % (self.path, version, SCHEMA_VERSION)
            )
        steps = [(1, _SCHEMA_V1), (2, _SCHEMA_V2)]
        for target, script in steps:
            if version >= target:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("PRAGMA user_version = %d" % target)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            version = target

    def submit(self, op: Op) -> Future:
        """Queue a change for the next group commit; the future resolves once it is on disk."""
        self._hand_over_here()  # after what this thread's loop submitted before it
        return self._committer.submit(self._counted(op))

    def submit_async(self, op: Op) -> "asyncio.Future[Any]":
        """The same from an event loop: an asyncio future of that loop (call it there).

        The changes submitted during one turn of the loop reach the committer together at the
        end of that turn (one lock, one wake-up of the committer), so the deliveries the loop
        handled in one go share a group commit. They keep their order, also before a ``submit``
        or ``close`` later in the same turn; if the store is closed before they are handed over,
        their futures fail with ``StoreError``.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        turn = self._turn.get(loop)
        if turn is None:
            turn = self._turn[loop] = []
            loop.call_soon(self._hand_over, loop)
        turn.append((self._counted(op), future))
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turn.pop(loop, None)
        if turn:  # None: handed over already, earlier in the turn
            self._committer.submit_many(turn)

    def _hand_over_here(self) -> None:
        """Hand over now what the event loop running in this thread submitted this turn."""
        if not self._turn:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in an event loop
            return
        self._hand_over(loop)

    def _write(self, op: Op) -> Any:
        return self.submit(op).result()

    def _counted(self, op: Op) -> Op:
        def run(cur: sqlite3.Cursor) -> Any:
            value = op(cur)
            self._writes += 1
            if self._writes % PRUNE_EVERY == 0:
                self._prune(cur, KEEP_ROWS, KEEP_SEEN)
            return value
        return run

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._rdb.execute(sql, args).fetchall()

    def close(self) -> None:
        self._hand_over_here()  # what this loop submitted before closing is still committed
        self._committer.close()
        with self._read_lock:
            self._rdb.close()
        self._committer.db.close()

    @property
    def commit_stats(self) -> dict[str, int]:
        """Changes and group commits so far (for tests and the benchmark)."""
        return {"ops": self._committer.ops, "groups": self._committer.groups}

    def _bump(self, _cur: sqlite3.Cursor, name: str, amount: float = 1) -> None:
        self._committer.bump(name, amount)

    def _add_delivery(self, cur: sqlite3.Cursor, now: float, outcome: str, detail: str,
                      delivery_id: str = "", event: str = "", action: str | None = None,
                      slot: str | None = None, runner: str | None = None,
                      job_id: int | None = None) -> None:
        cur.execute(
            "INSERT INTO deliveries (id, event, action, received_at, outcome, detail, slot, "
            "runner, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (one_line(delivery_id, 128), one_line(event, 64),
             one_line(action, 64) if action is not None else None, now, outcome,
             one_line(detail), slot, runner, job_id),
        )
        self._bump(cur, "deliveries:" + outcome)

    @staticmethod
    def _first_time(cur: sqlite3.Cursor, delivery_id: str, now: float) -> bool:
        """Mark ``delivery_id`` seen; False when it was seen before."""
        cur.execute("INSERT OR IGNORE INTO seen (id, received_at) VALUES (?, ?)", (delivery_id, now))
        return cur.rowcount == 1

    @staticmethod
    def _note_slot(cur: sqlite3.Cursor, slot: str, pool: str | None,
                   delivery: Delivery | None, now: float) -> None:
        if delivery is None:
            cur.execute("INSERT OR IGNORE INTO slots (slot, pool) VALUES (?, ?)", (slot, pool))
            return
        cur.execute(
            "INSERT INTO slots (slot, pool, runner, job_id, job_name, job_action, job_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(slot) DO UPDATE SET runner = excluded.runner, "
            "job_id = excluded.job_id, job_name = excluded.job_name, "
            "job_action = excluded.job_action, job_at = excluded.job_at",
            (slot, pool, delivery.runner_name, delivery.job_id, one_line(delivery.job_name, 200),
             delivery.action, now))

    def _enqueue(self, cur: sqlite3.Cursor, slot: str, runner: str | None,
                 delivery_id: str | None, now: float, pool: str | None,
                 message: str, kind: str = RECREATE) -> tuple[int, bool]:
        row = cur.execute(
            "SELECT id FROM tasks WHERE slot = ? AND runner IS ? AND kind = ? AND state IN "
            "('queued', 'running') ORDER BY id LIMIT 1",
            (slot, runner, kind),
        ).fetchone()
        if row is not None:
            return int(row["id"]), True
        if kind == RECREATE:
            self._note_slot(cur, slot, pool, None, now)
            cur.execute(
                "UPDATE tasks SET state = 'skipped', finished_at = ?, message = ? WHERE slot = ? "
                "AND runner IS ? AND kind = ? AND state = 'queued'",
                (now, "not staged: the job ended before the stage ran (the recreate boots a fresh "
                 "generation)", slot, runner, STAGE))
            if cur.rowcount:
                self._bump(cur, "tasks:skipped", cur.rowcount)
        cur.execute(
            "INSERT INTO tasks (slot, pool, runner, delivery, state, created_at, message, kind) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
            (slot, pool, runner, delivery_id, now, one_line(message), kind),
        )
        return int(cur.lastrowid), False

    # -- deliveries ---------------------------------------------------------------------------

    def record_delivery(self, delivery: Delivery, now: float, outcome: str = "ignored",
                        detail: str = "", slot: str | None = None,
                        runner: str | None = None) -> bool:
        """Remember ``delivery``; False (and a "duplicate" entry) if its id was seen before."""
        def op(cur: sqlite3.Cursor) -> bool:
            if not self._first_time(cur, delivery.id, now):
                self._add_delivery(cur, now, "duplicate", "delivery id seen before", delivery.id,
                                   delivery.event, delivery.action, slot, runner, delivery.job_id)
                return False
            self._add_delivery(cur, now, outcome, detail, delivery.id, delivery.event,
                               delivery.action, slot, runner, delivery.job_id)
            return True
        return self._write(op)

    def _reject_op(self, now: float, detail: str, delivery_id: str | None, event: str | None,
                   action: str | None) -> Op:
        def op(cur: sqlite3.Cursor) -> None:
            self._add_delivery(cur, now, "rejected", detail, delivery_id or "", event or "",
                               action)
        return op

    def reject(self, now: float, detail: str, delivery_id: str | None = None,
               event: str | None = None, action: str | None = None) -> None:
        """Log a delivery that was refused (bad signature, bad body). Its id is not "seen":
        an unauthenticated request must not be able to block a real delivery."""
        self.submit(self._reject_op(now, detail, delivery_id, event, action)).result()

    def reject_async(self, now: float, detail: str, delivery_id: str | None = None,
                     event: str | None = None) -> "asyncio.Future[Any]":
        """``reject`` from an event loop."""
        return self.submit_async(self._reject_op(now, detail, delivery_id, event, None))

    def accept(self, delivery: Delivery, decision: Decision, now: float) -> Accepted:
        """Handle a verified, parsed delivery as one change: dedupe, record, enqueue; return
        once the change is on disk."""
        return self.submit(lambda cur: self._accept(cur, delivery, decision, now)).result()

    def accept_async(self, delivery: Delivery, decision: Decision,
                     now: float) -> "asyncio.Future[Accepted]":
        """``accept`` from an event loop: resolves to an ``Accepted`` once it is on disk."""
        return self.submit_async(lambda cur: self._accept(cur, delivery, decision, now))

    def _accept(self, cur: sqlite3.Cursor, delivery: Delivery, decision: Decision,
                now: float) -> Accepted:
        if not self._first_time(cur, delivery.id, now):
            self._add_delivery(cur, now, "duplicate", "delivery id seen before", delivery.id,
                               delivery.event, delivery.action, decision.slot,
                               decision.runner, delivery.job_id)
            return Accepted("duplicate", slot=decision.slot, detail="delivery id seen before")
        task_id = None
        if decision.kind in ("recreate", "stage", "record") and decision.slot:
            self._note_slot(cur, decision.slot, decision.pool, delivery, now)
        if decision.kind == "stage" and decision.slot and self._ended(cur, decision.slot, decision.runner):
            outcome = "recorded"
            detail = "%s: not staged, the job already ended (its recreate is known)" % decision.reason
        elif decision.kind in ("recreate", "stage") and decision.slot:
            task_id, coalesced = self._enqueue(cur, decision.slot, decision.runner,
                                               delivery.id, now, decision.pool,
                                               decision.reason, decision.kind)
            if coalesced:
                outcome = "coalesced"
                detail = "%s; task %d already queued or running" % (decision.reason, task_id)
            else:
                outcome = "queued"
                detail = "%s; task %d" % (decision.reason, task_id)
        elif decision.kind == "record":
            outcome, detail = "recorded", decision.reason
        else:
            outcome, detail = "ignored", decision.reason
        self._add_delivery(cur, now, outcome, detail, delivery.id, delivery.event,
                           delivery.action, decision.slot, decision.runner, delivery.job_id)
        return Accepted(outcome, task_id=task_id, slot=decision.slot, detail=one_line(detail))

    @staticmethod
    def _ended(cur: sqlite3.Cursor, slot: str, runner: str | None) -> bool:
        """Whether a recreate of this runner generation is known (its job ended: GitHub may
        deliver a job's ``in_progress`` after its ``completed``)."""
        return cur.execute("SELECT 1 FROM tasks WHERE slot = ? AND runner IS ? AND kind = ? LIMIT 1",
                           (slot, runner, RECREATE)).fetchone() is not None

    def seen(self, delivery_id: str) -> bool:
        """Whether a delivery with this id was handled (rejected ones were not)."""
        return bool(self._read("SELECT 1 FROM seen WHERE id = ?", (delivery_id,)))

    # -- tasks --------------------------------------------------------------------------------

    def enqueue(self, slot: str, runner: str | None, delivery_id: str | None, now: float,
                pool: str | None = None, message: str = "") -> tuple[int, bool]:
        """Queue a recreate of ``slot``; returns ``(task_id, coalesced)``."""
        return self._write(lambda cur: self._enqueue(cur, slot, runner, delivery_id, now, pool,
                                                     message))

    def enqueue_reconcile(self, now: float, message: str) -> tuple[int, bool]:
        """Queue a reconcile of the pool (joins one already queued or running)."""
        return self._write(lambda cur: self._enqueue(cur, RECONCILE_SLOT, None, None, now, None,
                                                     message, RECONCILE))

    def claim(self, now: float) -> Task | None:
        """Take the oldest due task whose slot has nothing running; mark it running."""
        def op(cur: sqlite3.Cursor) -> Task | None:
            row = cur.execute(
                "SELECT * FROM tasks AS t WHERE t.state = 'queued' AND t.not_before <= ? "
                "AND NOT EXISTS (SELECT 1 FROM tasks AS r WHERE r.slot = t.slot "
                "AND r.state = 'running') ORDER BY t.id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            cur.execute(
                "UPDATE tasks SET state = 'running', attempts = attempts + 1, started_at = ?, "
                "finished_at = NULL WHERE id = ?",
                (now, row["id"]),
            )
            launches = tuple(r["ref"] for r in cur.execute(
                "SELECT ref FROM launches WHERE task_id = ? ORDER BY at", (row["id"],)))
            return Task(id=int(row["id"]), slot=row["slot"], runner=row["runner"],
                        delivery=row["delivery"], attempts=int(row["attempts"]),
                        created_at=float(row["created_at"]), kind=row["kind"],
                        handle=json.loads(row["handle"]) if row["handle"] else None,
                        launches=launches)
        return self._write(op)

    def record_handle(self, task_id: int, handle: dict[str, Any], now: float) -> None:
        """Keep what the dispatcher started for the running attempt of ``task_id`` (on disk
        when this returns); a launched run is counted once in ``launches``."""
        def op(cur: sqlite3.Cursor) -> None:
            row = cur.execute("SELECT slot FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise StoreError("task %d does not exist" % task_id)
            cur.execute("UPDATE tasks SET handle = ? WHERE id = ?",
                        (json.dumps(handle, sort_keys=True), task_id))
            ref = launch_ref(handle)
            if ref is not None:
                cur.execute("INSERT OR IGNORE INTO launches (ref, task_id, slot, at) "
                            "VALUES (?, ?, ?, ?)", (ref, task_id, row["slot"], now))
        self._write(op)

    def finish(self, task_id: int, result: Result, now: float, retry_attempts: int,
               backoff: float) -> str:
        """Record the outcome of a claimed task; returns its new state.

        A failure with attempts left puts the task back in the queue, due ``backoff`` seconds
        from ``now`` ("queued"); otherwise it ends "done", "skipped" or "failed".
        """
        def op(cur: sqlite3.Cursor) -> str:
            row = cur.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise StoreError("task %d does not exist" % task_id)
            attempts = int(row["attempts"])
            message = one_line(result.message)
            if result.ok:
                state = "skipped" if result.outcome == "skipped" else "done"
                not_before = row["not_before"]
            elif attempts < retry_attempts and row["kind"] != STAGE:
                state, not_before = "queued", now + backoff
                message = one_line("attempt %d/%d failed: %s; retry in %g s"
                                   % (attempts, retry_attempts, result.message, backoff))
            else:
                state, not_before = "failed", row["not_before"]
            cur.execute(
                "UPDATE tasks SET state = ?, not_before = ?, finished_at = ?, message = ?, "
                "rc = ?, ref = ?, handle = NULL, outcome = ? WHERE id = ?",
                (state, not_before, now, message, result.rc, result.ref,
                 result.outcome if result.ok else None, task_id),
            )
            if row["started_at"] is not None:
                self._bump(cur, "task_seconds_sum", max(0.0, now - float(row["started_at"])))
                self._bump(cur, "task_seconds_count")
            if state != "queued":
                self._bump(cur, "tasks:" + state)
            return state
        return self._write(op)

    def recover(self) -> int:
        """Put tasks left running by a crash back in the queue; returns how many.

        Their handles stay: the dispatcher follows what they started instead of starting it
        again.
        """
        def op(cur: sqlite3.Cursor) -> int:
            cur.execute(
                "UPDATE tasks SET state = 'queued', not_before = 0, "
                "attempts = MAX(attempts - 1, 0), "
                "message = CASE WHEN handle IS NULL "
                "THEN 'interrupted by a restart of the service; queued again' "
                "ELSE 'interrupted by a restart of the service; its run is followed again' END "
                "WHERE state = 'running'"
            )
            return cur.rowcount
        return self._write(op)

    def next_due(self) -> float | None:
        """The earliest ``not_before`` of the queued tasks, or None when nothing is queued."""
        rows = self._read("SELECT MIN(not_before) AS due FROM tasks WHERE state = 'queued'")
        due = rows[0]["due"]
        return None if due is None else float(due)

    def task_counts(self) -> dict[str, int]:
        """Tasks now queued and running."""
        counts = {"queued": 0, "running": 0}
        for row in self._read("SELECT state, COUNT(*) AS n FROM tasks "
                              "WHERE state IN ('queued', 'running') GROUP BY state"):
            counts[row["state"]] = int(row["n"])
        return counts

    def task(self, task_id: int) -> dict[str, Any] | None:
        """One task as the snapshot shows it (for tests and tools)."""
        rows = self._read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return self._task_dict(rows[0]) if rows else None

    def launches(self) -> list[dict[str, Any]]:
        """Every run launched, oldest first: ``{ref, task_id, slot, at}``."""
        return [dict(r) for r in self._read("SELECT * FROM launches ORDER BY at, ref")]

    # -- small settings and redelivery bookkeeping --------------------------------------------

    def get_meta(self, name: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE name = ?", (name,))
        return rows[0]["value"] if rows else None

    def set_meta(self, name: str, value: str) -> None:
        self._write(lambda cur: cur.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value)))

    def note_redelivery(self, guid: str, now: float) -> int:
        """Count one redelivery asked of GitHub for ``guid``; returns how many so far."""
        def op(cur: sqlite3.Cursor) -> int:
            cur.execute(
                "INSERT INTO redeliveries (guid, attempts, last_at) VALUES (?, 1, ?) "
                "ON CONFLICT(guid) DO UPDATE SET attempts = attempts + 1, last_at = excluded.last_at",
                (guid, now))
            return int(cur.execute("SELECT attempts FROM redeliveries WHERE guid = ?",
                                   (guid,)).fetchone()[0])
        return self._write(op)

    def redeliveries(self, guid: str) -> int:
        rows = self._read("SELECT attempts FROM redeliveries WHERE guid = ?", (guid,))
        return int(rows[0]["attempts"]) if rows else 0

    # -- housekeeping -------------------------------------------------------------------------

    def prune(self, keep: int = KEEP_ROWS, keep_seen: int = KEEP_SEEN) -> None:
        """Drop all but the newest ``keep`` deliveries and finished tasks."""
        self._write(lambda cur: self._prune(cur, keep, keep_seen))

    @staticmethod
    def _prune(cur: sqlite3.Cursor, keep: int, keep_seen: int) -> None:
        cur.execute("DELETE FROM deliveries WHERE seq <= "
                    "(SELECT MAX(seq) FROM deliveries) - ?", (keep,))
        cur.execute("DELETE FROM tasks WHERE state IN ('done', 'skipped', 'failed') AND id <= "
                    "(SELECT MAX(id) FROM tasks) - ?", (keep,))
        cur.execute("DELETE FROM launches WHERE task_id NOT IN (SELECT id FROM tasks)")
        cur.execute("DELETE FROM seen WHERE rowid <= (SELECT MAX(rowid) FROM seen) - ?",
                    (keep_seen,))
        cur.execute("DELETE FROM redeliveries WHERE guid NOT IN (SELECT id FROM seen) "
                    "AND rowid <= (SELECT MAX(rowid) FROM redeliveries) - ?", (keep_seen,))

    # -- views --------------------------------------------------------------------------------

    def _counters(self) -> dict[str, float]:
        return {row["name"]: row["value"] for row in self._read("SELECT * FROM counters")}

    @staticmethod
    def _task_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": int(row["id"]), "kind": row["kind"], "slot": row["slot"],
            "runner": row["runner"], "state": row["state"], "attempts": int(row["attempts"]),
            "created_at": row["created_at"], "started_at": row["started_at"],
            "finished_at": row["finished_at"], "message": row["message"], "ref": row["ref"],
        }

    def metrics(self) -> dict[str, Any]:
        """Totals for ``/metrics``: deliveries by outcome, tasks by state, task seconds."""
        counters = self._counters()
        live = self.task_counts()
        tasks = {"queued": live["queued"], "running": live["running"]}
        tasks.update({state: int(counters.get("tasks:" + state, 0)) for state in FINAL_STATES})
        return {
            "deliveries": {o: int(counters.get("deliveries:" + o, 0)) for o in OUTCOMES},
            "tasks": tasks,
            "task_seconds_sum": float(counters.get("task_seconds_sum", 0.0)),
            "task_seconds_count": int(counters.get("task_seconds_count", 0)),
        }

    def snapshot(self, now: float, service: dict[str, Any] | None = None) -> dict[str, Any]:
        """The status snapshot of the contract; ``service`` is filled in by the caller."""
        with self._read_lock:
            self._rdb.execute("BEGIN")  # one consistent view for every query below
            try:
                return self._snapshot(now, service)
            finally:
                self._rdb.execute("COMMIT")

    def _snapshot(self, now: float, service: dict[str, Any] | None) -> dict[str, Any]:
        metrics = self.metrics()
        tasks = [self._task_dict(r) for r in
                 self._read("SELECT * FROM tasks ORDER BY id DESC LIMIT ?", (LIST_LIMIT,))]
        deliveries = [
            {"id": r["id"], "event": r["event"], "action": r["action"],
             "received_at": r["received_at"], "outcome": r["outcome"], "detail": r["detail"],
             "slot": r["slot"], "runner": r["runner"], "job_id": r["job_id"]}
            for r in self._read("SELECT * FROM deliveries ORDER BY seq DESC LIMIT ?",
                                (LIST_LIMIT,))
        ]
        active: dict[str, str] = {}
        for r in self._read("SELECT slot, state FROM tasks WHERE state IN "
                            "('queued', 'running')"):
            if active.get(r["slot"]) != "running":
                active[r["slot"]] = r["state"]
        last_tasks = {
            r["slot"]: r for r in self._read(
                "SELECT t.* FROM tasks AS t JOIN (SELECT slot, MAX(id) AS id FROM tasks "
                "GROUP BY slot) AS m ON t.id = m.id")
        }
        slot_rows = self._read("SELECT * FROM slots ORDER BY slot")
        slots = []
        for r in slot_rows:
            last = last_tasks.get(r["slot"])
            if r["slot"] in active:
                state = active[r["slot"]]
            elif last is not None and last["state"] == "failed":
                state = "failed"
            elif r["job_action"] == "in_progress":
                state = "busy"
            else:
                state = "idle"
            job = None
            if r["job_action"] is not None:
                job = {"id": r["job_id"], "name": r["job_name"], "action": r["job_action"],
                       "at": r["job_at"]}
            slots.append({
                "slot": r["slot"], "pool": r["pool"], "state": state, "runner": r["runner"],
                "job": job,
                "last_task": None if last is None else {
                    "id": int(last["id"]), "state": last["state"],
                    "finished_at": last["finished_at"], "message": last["message"]},
            })
        d = metrics["deliveries"]
        snap: dict[str, Any] = {}
        snap["service"] = dict(service or {})
        snap["service"]["now"] = now
        snap["counts"] = {
            "deliveries": sum(d.values()), "duplicates": d["duplicate"],
            "rejected": d["rejected"], "ignored": d["ignored"], "recorded": d["recorded"],
            "queued": metrics["tasks"]["queued"], "running": metrics["tasks"]["running"],
            "done": metrics["tasks"]["done"], "skipped": metrics["tasks"]["skipped"],
            "failed": metrics["tasks"]["failed"],
        }
        snap["slots"] = slots
        snap["tasks"] = tasks
        snap["deliveries"] = deliveries
        return snap
