# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Worker threads: take due tasks from the store and run them through the dispatcher.

``max_parallel`` threads each loop: claim a task (the store guarantees one task per slot at a
time), run it, record the result (the store re-queues it for a retry while attempts remain).
A dispatcher that raises gives a failed result naming the exception; it never kills a thread.
When there is nothing due, a thread sleeps until ``wake()`` (the HTTP side calls it after
queueing), the next retry is due, or ``poll_seconds`` pass.

``stop(timeout)`` stops claiming new work and waits up to ``timeout`` seconds for running
tasks; work still queued stays in the database for the next start.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, List, Optional

from .dispatch import Result, Task
from .store import Store, one_line

LogFn = Callable[[str], None]


def _stderr_log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Worker:
    """Runs queued tasks; see the module docstring."""

    def __init__(self, store: Store, dispatcher: Any, max_parallel: int = 2,
                 retry_attempts: int = 3, retry_backoff: float = 30.0,
                 clock: Callable[[], float] = time.time, log: LogFn = _stderr_log,
                 warn: Optional[LogFn] = None, poll_seconds: float = 5.0) -> None:
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
        self._threads: List[threading.Thread] = []

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
        """Stop claiming work; wait up to ``timeout`` s for running tasks. True if all ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # -- the work -----------------------------------------------------------------------------

    def _say(self, sink: LogFn, line: str) -> None:
        try:
            sink(line)
        except Exception:  # pylint: disable=broad-except  # a broken log must not stop work
            pass

    def _progress(self, task: Task) -> LogFn:
        head = "task %d slot %s: " % (task.id, task.slot)
        own = "slot %s: " % task.slot

        def progress(line: str) -> None:
            text = str(line)
            if text.startswith(own):
                text = text[len(own):]
            self._say(self.log, head + one_line(text, 1000))

        return progress

    def run_once(self) -> Optional[str]:
        """Claim and run one due task in this thread; its final state, or None if none was due.

        The threads call this in a loop; tests call it directly with an injected clock.
        """
        task = self.store.claim(self.clock())
        if task is None:
            return None
        attempt = task.attempts + 1
        head = "task %d slot %s: " % (task.id, task.slot)
        self._say(self.log, "%sstarted (attempt %d/%d)" % (head, attempt, self.retry_attempts))
        started = self.clock()
        try:
            result = self.dispatcher.run(task, self._progress(task))
            if not isinstance(result, Result):
                result = Result(False, "dispatcher returned %s, not a Result"
                                % type(result).__name__)
        except Exception as exc:  # pylint: disable=broad-except  # reported, thread lives on
            text = str(exc)
            result = Result(False, "%s: %s" % (type(exc).__name__, text) if text
                            else type(exc).__name__)
        now = self.clock()
        state = self.store.finish(task.id, result, now, self.retry_attempts, self.retry_backoff)
        if state == "done":
            self._say(self.log, "%sdone in %.1f s" % (head, now - started))
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
