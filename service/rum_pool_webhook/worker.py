# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Worker threads: take due tasks from the store and run them through the dispatcher.

``max_parallel`` threads each loop: claim a task (the store guarantees one task per slot at a
time), run it, record the result (the store re-queues it for a retry while attempts remain).
A dispatcher that raises gives a failed result naming the exception; it never kills a thread.
The dispatcher records the handle of what it starts through the store (on disk before it goes
on), so a task interrupted by a crash is followed, not started again, at the next start.
When there is nothing due, a thread sleeps until ``wake()`` (the HTTP side calls it after
queueing), the next retry is due, or ``poll_seconds`` pass.

``stop(timeout)`` stops claiming new work and waits up to ``timeout`` seconds for running
tasks. Runs still going after that are left running (the dispatcher stops following them): their
tasks stay "running" in the database, and the next start follows them to their end. Work still
queued stays in the database for the next start.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

from .store import Store, one_line
from .tasks import RECONCILE, STAGE, Result, Task

LogFn = Callable[[str], None]


def _stderr_log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Worker:
    """Runs queued tasks; see the module docstring."""

    def __init__(self, store: Store, dispatcher: Any, max_parallel: int = 2,
                 retry_attempts: int = 3, retry_backoff: float = 30.0,
                 clock: Callable[[], float] = time.time, log: LogFn = _stderr_log,
                 warn: LogFn | None = None, poll_seconds: float = 5.0) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.max_parallel = max(1, int(max_parallel))
        self.retry_attempts = max(1, int(retry_attempts))
        self.retry_backoff = float(retry_backoff)
        self.clock = clock
        self.log = log
        self.warn = warn or log
        self.poll_seconds = poll_seconds
        self._cond = threading.Condition()
        self._stopping = False
        self._wakeups = 0
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "Worker":
        """Start the worker threads (once)."""
        if self._threads:
            return self
        for n in range(self.max_parallel):
            thread = threading.Thread(target=self._loop, name="rum-pool-worker-%d" % (n + 1),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def wake(self) -> None:
        """New work may be due: let an idle thread look now."""
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop claiming work; wait up to ``timeout`` s for running tasks. True if all ended.

        Tasks still running then are detached: the dispatcher stops following their runs,
        which go on, and the tasks stay "running" for the next start to follow.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in self._threads):
            return True
        detach = getattr(self.dispatcher, "detach_all", None)
        if callable(detach):
            detach()
        for thread in self._threads:
            thread.join(10)
        return False

    # -- the work -----------------------------------------------------------------------------

    def _say(self, sink: LogFn, line: str) -> None:
        try:
            sink(line)
        except Exception:  # pylint: disable=broad-except  # a broken log must not stop work
            pass

    @staticmethod
    def _head(task: Task) -> str:
        if task.kind == RECONCILE:
            return "task %d pool reconcile: " % task.id
        if task.kind == STAGE:
            return "task %d slot %s (stage): " % (task.id, task.slot)
        return "task %d slot %s: " % (task.id, task.slot)

    def _progress(self, task: Task) -> LogFn:
        head = self._head(task)
        own = "slot %s: " % task.slot

        def progress(line: str) -> None:
            text = str(line)
            if text.startswith(own):
                text = text[len(own):]
            self._say(self.log, head + one_line(text, 1000))

        return progress

    def run_once(self) -> str | None:
        """Claim and run one due task in this thread; its final state, or None if none was due.

        The threads call this in a loop; tests call it directly with an injected clock.
        """
        task = self.store.claim(self.clock())
        if task is None:
            return None
        attempt = task.attempts + 1
        head = self._head(task)
        self._say(self.log, "%s%s (attempt %d/%d)" % (
            head, "resumed" if task.handle else "started", attempt, self.retry_attempts))
        started = self.clock()

        def record(handle: dict) -> None:
            self.store.record_handle(task.id, handle, self.clock())

        try:
            result = self.dispatcher.run(task, self._progress(task), record)
            if not isinstance(result, Result):
                result = Result(False, "dispatcher returned %s, not a Result"
                                % type(result).__name__)
        except Exception as exc:  # pylint: disable=broad-except  # reported, thread lives on
            text = str(exc)
            result = Result(False, "%s: %s" % (type(exc).__name__, text) if text
                            else type(exc).__name__)
        now = self.clock()
        if result.detached:
            self._say(self.warn, "%s%s" % (head, one_line(result.message)))
            return "running"
        state = self.store.finish(task.id, result, now, self.retry_attempts, self.retry_backoff)
        if state == "done":
            self._say(self.log, "%sdone in %.1f s" % (head, now - started))
        elif state == "skipped":
            self._say(self.log, "%sskipped in %.1f s: %s"
                      % (head, now - started, one_line(result.message)))
        elif state == "queued":
            self._say(self.warn, "%sfailed: %s; retry in %g s"
                      % (head, one_line(result.message), self.retry_backoff))
        else:
            self._say(self.warn, "%sfailed: %s; giving up after %d attempts"
                      % (head, one_line(result.message), attempt))
        return state

    def _wait_time(self) -> float:
        due = self.store.next_due()
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.05, due - self.clock()))

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                seen = self._wakeups
            try:
                state = self.run_once()
                idle = 0.0 if state is not None else self._wait_time()
            except Exception as exc:  # pylint: disable=broad-except  # e.g. the db went away
                self._say(self.warn, "worker: %s: %s" % (type(exc).__name__, one_line(exc)))
                state, idle = None, self.poll_seconds
            if state is not None:
                continue
            with self._cond:
                if not self._stopping and self._wakeups == seen:
                    self._cond.wait(idle)
