# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service's durable state: deliveries seen, the task queue, slots, counters (sqlite).

One connection shared by the HTTP threads and the worker threads, guarded by one lock; every
change is one ``BEGIN IMMEDIATE`` transaction, so a crash never leaves half a delivery. The
database runs in WAL mode and carries its schema version in ``PRAGMA user_version``.

Queue rules:

* a delivery id is handled once (``seen``); a redelivery is answered "duplicate";
* a task for the same slot and runner that is still queued or running absorbs new requests
  (coalescing), because one recreate of that runner generation is enough;
* ``claim`` never hands out a task for a slot that already has one running, and respects the
  ``not_before`` time of a task waiting for its retry;
* ``finish`` re-queues a failed task while attempts remain, else marks it failed;
* ``recover`` (at start-up) puts tasks left "running" by a crash back in the queue; the
  interrupted attempt is not counted.

Counters (deliveries by outcome, tasks done/failed, task seconds) are kept in their own table
so that pruning old rows (the newest 1000 deliveries and tasks are kept) does not reset them.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .dispatch import Result, Task
from .events import Decision, Delivery

SCHEMA_VERSION = 1
KEEP_ROWS = 1000
KEEP_SEEN = 10000
LIST_LIMIT = 50
PRUNE_EVERY = 100
MESSAGE_LIMIT = 500
OUTCOMES = ("queued", "coalesced", "duplicate", "ignored", "recorded", "rejected")
TASK_STATES = ("queued", "running", "done", "failed")

_SCHEMA = """
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
);
"""


class StoreError(Exception):
    """The state database cannot be used (for example, it was made by a newer version)."""


@dataclass(frozen=True)
class Accepted:
    """What ``Store.accept`` did with a delivery."""

    outcome: str  # one of OUTCOMES except "rejected"
    task_id: Optional[int] = None
    slot: Optional[str] = None
    detail: str = ""


def one_line(text: Any, limit: int = MESSAGE_LIMIT) -> str:
    """Collapse ``text`` to a single line of at most ``limit`` characters."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Store:
    """sqlite-backed state; safe to share between threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._writes = 0
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
        except sqlite3.Error as exc:
            raise StoreError("state database %s: cannot open: %s" % (path, exc)) from None
        self._db.row_factory = sqlite3.Row
        with self._lock:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._migrate()
            except sqlite3.Error as exc:
                self._db.close()
                raise StoreError("state database %s: %s" % (path, exc)) from None

    # -- plumbing -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                "state database %s has schema version %d; this service knows %d or older"
                % (self.path, version, SCHEMA_VERSION)
            )
        if version == 0:
            with self._tx() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute("PRAGMA user_version = %d" % SCHEMA_VERSION)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            self._writes += 1
            due = self._writes % PRUNE_EVERY == 0
        if due:
            self.prune()

    def _read(self, sql: str, args: tuple = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _bump(cur: sqlite3.Cursor, name: str, amount: float = 1) -> None:
        cur.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )

    def _add_delivery(self, cur: sqlite3.Cursor, now: float, outcome: str, detail: str,
                      delivery_id: str = "", event: str = "", action: Optional[str] = None,
                      slot: Optional[str] = None, runner: Optional[str] = None,
                      job_id: Optional[int] = None) -> None:
        cur.execute(
            "INSERT INTO deliveries (id, event, action, received_at, outcome, detail, slot, "
            "runner, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (one_line(delivery_id, 128), one_line(event, 64),
             one_line(action, 64) if action is not None else None, now, outcome,
             one_line(detail), slot, runner, job_id),
        )
        self._bump(cur, "deliveries:" + outcome)

    @staticmethod
    def _seen(cur: sqlite3.Cursor, delivery_id: str) -> bool:
        return cur.execute("SELECT 1 FROM seen WHERE id = ?", (delivery_id,)).fetchone() is not None

    def _note_slot(self, cur: sqlite3.Cursor, slot: str, pool: Optional[str],
                   delivery: Optional[Delivery], now: float) -> None:
        cur.execute("INSERT OR IGNORE INTO slots (slot, pool) VALUES (?, ?)", (slot, pool))
        if delivery is not None:
            cur.execute(
                "UPDATE slots SET runner = ?, job_id = ?, job_name = ?, job_action = ?, "
                "job_at = ? WHERE slot = ?",
                (delivery.runner_name, delivery.job_id, one_line(delivery.job_name, 200),
                 delivery.action, now, slot),
            )

    def _enqueue(self, cur: sqlite3.Cursor, slot: str, runner: Optional[str],
                 delivery_id: Optional[str], now: float, pool: Optional[str],
                 message: str) -> Tuple[int, bool]:
        row = cur.execute(
            "SELECT id FROM tasks WHERE slot = ? AND runner IS ? AND state IN ('queued', "
            "'running') ORDER BY id LIMIT 1",
            (slot, runner),
        ).fetchone()
        if row is not None:
            return int(row["id"]), True
        self._note_slot(cur, slot, pool, None, now)
        cur.execute(
            "INSERT INTO tasks (slot, pool, runner, delivery, state, created_at, message) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?)",
            (slot, pool, runner, delivery_id, now, one_line(message)),
        )
        return int(cur.lastrowid), False

    # -- deliveries ---------------------------------------------------------------------------

    def record_delivery(self, delivery: Delivery, now: float, outcome: str = "ignored",
                        detail: str = "", slot: Optional[str] = None,
                        runner: Optional[str] = None) -> bool:
        """Remember ``delivery``; False (and a "duplicate" entry) if its id was seen before."""
        with self._tx() as cur:
            if self._seen(cur, delivery.id):
                self._add_delivery(cur, now, "duplicate", "delivery id seen before", delivery.id,
                                   delivery.event, delivery.action, slot, runner, delivery.job_id)
                return False
            cur.execute("INSERT INTO seen (id, received_at) VALUES (?, ?)", (delivery.id, now))
            self._add_delivery(cur, now, outcome, detail, delivery.id, delivery.event,
                               delivery.action, slot, runner, delivery.job_id)
            return True

    def reject(self, now: float, detail: str, delivery_id: Optional[str] = None,
               event: Optional[str] = None, action: Optional[str] = None) -> None:
        """Log a delivery that was refused (bad signature, bad body). Its id is not "seen":
        an unauthenticated request must not be able to block a real delivery."""
        with self._tx() as cur:
            self._add_delivery(cur, now, "rejected", detail, delivery_id or "", event or "",
                               action)

    def accept(self, delivery: Delivery, decision: Decision, now: float) -> Accepted:
        """Handle a verified, parsed delivery in one transaction: dedupe, record, enqueue."""
        with self._tx() as cur:
            if self._seen(cur, delivery.id):
                self._add_delivery(cur, now, "duplicate", "delivery id seen before", delivery.id,
                                   delivery.event, delivery.action, decision.slot,
                                   decision.runner, delivery.job_id)
                return Accepted("duplicate", slot=decision.slot, detail="delivery id seen before")
            cur.execute("INSERT INTO seen (id, received_at) VALUES (?, ?)", (delivery.id, now))
            task_id = None
            if decision.kind in ("recreate", "record") and decision.slot:
                self._note_slot(cur, decision.slot, decision.pool, delivery, now)
            if decision.kind == "recreate" and decision.slot:
                task_id, coalesced = self._enqueue(cur, decision.slot, decision.runner,
                                                   delivery.id, now, decision.pool,
                                                   decision.reason)
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

    # -- tasks --------------------------------------------------------------------------------

    def enqueue(self, slot: str, runner: Optional[str], delivery_id: Optional[str], now: float,
                pool: Optional[str] = None, message: str = "") -> Tuple[int, bool]:
        """Queue a recreate of ``slot``; returns ``(task_id, coalesced)``."""
        with self._tx() as cur:
            return self._enqueue(cur, slot, runner, delivery_id, now, pool, message)

    def claim(self, now: float) -> Optional[Task]:
        """Take the oldest due task whose slot has nothing running; mark it running."""
        with self._tx() as cur:
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
            return Task(id=int(row["id"]), slot=row["slot"], runner=row["runner"],
                        delivery=row["delivery"], attempts=int(row["attempts"]),
                        created_at=float(row["created_at"]))

    def finish(self, task_id: int, result: Result, now: float, retry_attempts: int,
               backoff: float) -> str:
        """Record the outcome of a claimed task; returns its new state.

        A failure with attempts left puts the task back in the queue, due ``backoff`` seconds
        from ``now`` ("queued"); otherwise it ends "done" or "failed".
        """
        with self._tx() as cur:
            row = cur.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise StoreError("task %d does not exist" % task_id)
            attempts = int(row["attempts"])
            message = one_line(result.message)
            if result.ok:
                state, not_before = "done", row["not_before"]
            elif attempts < retry_attempts:
                state, not_before = "queued", now + backoff
                message = one_line("attempt %d/%d failed: %s; retry in %g s"
                                   % (attempts, retry_attempts, result.message, backoff))
            else:
                state, not_before = "failed", row["not_before"]
            cur.execute(
                "UPDATE tasks SET state = ?, not_before = ?, finished_at = ?, message = ?, "
                "rc = ?, ref = ? WHERE id = ?",
                (state, not_before, now, message, result.rc, result.ref, task_id),
            )
            if row["started_at"] is not None:
                self._bump(cur, "task_seconds_sum", max(0.0, now - float(row["started_at"])))
                self._bump(cur, "task_seconds_count")
            if state != "queued":
                self._bump(cur, "tasks:" + state)
            return state

    def recover(self) -> int:
        """Put tasks left running by a crash back in the queue; returns how many."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET state = 'queued', not_before = 0, "
                "attempts = MAX(attempts - 1, 0), "
                "message = 'interrupted by a restart of the service; queued again' "
                "WHERE state = 'running'"
            )
            return cur.rowcount

    def next_due(self) -> Optional[float]:
        """The earliest ``not_before`` of the queued tasks, or None when nothing is queued."""
        rows = self._read("SELECT MIN(not_before) AS due FROM tasks WHERE state = 'queued'")
        due = rows[0]["due"]
        return None if due is None else float(due)

    def task_counts(self) -> Dict[str, int]:
        """Tasks now queued and running."""
        counts = {"queued": 0, "running": 0}
        for row in self._read("SELECT state, COUNT(*) AS n FROM tasks "
                              "WHERE state IN ('queued', 'running') GROUP BY state"):
            counts[row["state"]] = int(row["n"])
        return counts

    def task(self, task_id: int) -> Optional[Dict[str, Any]]:
        """One task as the snapshot shows it (for tests and tools)."""
        rows = self._read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return self._task_dict(rows[0]) if rows else None

    # -- housekeeping -------------------------------------------------------------------------

    def prune(self, keep: int = KEEP_ROWS, keep_seen: int = KEEP_SEEN) -> None:
        """Drop all but the newest ``keep`` deliveries and finished tasks."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("DELETE FROM deliveries WHERE seq <= "
                            "(SELECT MAX(seq) FROM deliveries) - ?", (keep,))
                cur.execute("DELETE FROM tasks WHERE state IN ('done', 'failed') AND id <= "
                            "(SELECT MAX(id) FROM tasks) - ?", (keep,))
                cur.execute("DELETE FROM seen WHERE rowid <= (SELECT MAX(rowid) FROM seen) - ?",
                            (keep_seen,))
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    # -- views --------------------------------------------------------------------------------

    def _counters(self) -> Dict[str, float]:
        return {row["name"]: row["value"] for row in self._read("SELECT * FROM counters")}

    @staticmethod
    def _task_dict(row: sqlite3.Row) -> Dict[str, Any]:
        return {
            "id": int(row["id"]), "slot": row["slot"], "runner": row["runner"],
            "state": row["state"], "attempts": int(row["attempts"]),
            "created_at": row["created_at"], "started_at": row["started_at"],
            "finished_at": row["finished_at"], "message": row["message"], "ref": row["ref"],
        }

    def metrics(self) -> Dict[str, Any]:
        """Totals for ``/metrics``: deliveries by outcome, tasks by state, task seconds."""
        counters = self._counters()
        live = self.task_counts()
        return {
            "deliveries": {o: int(counters.get("deliveries:" + o, 0)) for o in OUTCOMES},
            "tasks": {
                "queued": live["queued"], "running": live["running"],
                "done": int(counters.get("tasks:done", 0)),
                "failed": int(counters.get("tasks:failed", 0)),
            },
            "task_seconds_sum": float(counters.get("task_seconds_sum", 0.0)),
            "task_seconds_count": int(counters.get("task_seconds_count", 0)),
        }

    def snapshot(self, now: float, service: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The status snapshot of the contract; ``service`` is filled in by the caller."""
        with self._lock:
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
            active = {}
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
        snap: Dict[str, Any] = {}
        snap["service"] = dict(service or {})
        snap["service"]["now"] = now
        snap["counts"] = {
            "deliveries": sum(d.values()), "duplicates": d["duplicate"],
            "rejected": d["rejected"], "ignored": d["ignored"], "recorded": d["recorded"],
            "queued": metrics["tasks"]["queued"], "running": metrics["tasks"]["running"],
            "done": metrics["tasks"]["done"], "failed": metrics["tasks"]["failed"],
        }
        snap["slots"] = slots
        snap["tasks"] = tasks
        snap["deliveries"] = deliveries
        return snap
