# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nothing missed: the service's own timers.

GitHub sends each delivery once and never retries on its own, so a delivery that failed while
the service was down (or unreachable) is lost unless something asks again. Two timers close
that gap, both at start and then every interval:

* **redelivery** (with a ``github`` section): list the webhook's recent deliveries through
  GitHub's REST API, and for every ``workflow_job`` ``completed`` delivery that no attempt
  delivered (no 2xx) and that this service never handled, read it and ask GitHub to deliver it
  again (GitHub's documented recipe: list, get, ``POST .../attempts``). The redelivery comes in
  as a normal delivery and recreates its slot. Each delivery is asked for at most
  ``max_redeliveries`` times.
* **reconcile**: queue the pool's converge (``pool.yml``, or the AWX job template that runs it)
  as a task of its own. It goes through the same queue and dispatcher as the recreates, and
  the runner slots' locks on the hosts keep it and a recreate from acting on one slot at once.

Either way an outage heals within one interval, with no timer on the host.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

from .github import GitHubError, HookDeliveries
from .store import Store, one_line

LogFn = Callable[[str], None]
CHECKED_AT = "redeliver:checked_at"
# Look this far behind the last check again: a delivery can be listed a little after its time.
OVERLAP_SECONDS = 300


class Redeliverer:
    """Finds the webhook's failed ``completed`` deliveries and asks GitHub to send them again."""

    def __init__(self, hooks: HookDeliveries, store: Store, settings: Mapping[str, Any],
                 clock: Callable[[], float] = time.time, log: LogFn = print,
                 counter: Any = None) -> None:
        self.hooks = hooks
        self.store = store
        self.lookback = float(settings.get("lookback_hours", 24)) * 3600
        self.max_redeliveries = int(settings.get("max_redeliveries", 3))
        self.clock = clock
        self.log = log
        self.counter = counter

    def scan(self) -> list[str]:
        """One pass; returns the delivery ids (guids) it asked GitHub to redeliver."""
        now = self.clock()
        checked = self.store.get_meta(CHECKED_AT)
        since = now - self.lookback
        if checked is not None:
            since = max(since, float(checked) - OVERLAP_SECONDS)
        attempts: dict[str, list[dict[str, Any]]] = {}
        for item in self.hooks.deliveries(since):
            attempts.setdefault(str(item.get("guid")), []).append(item)
        asked = []
        for guid, tries in attempts.items():
            latest = max(tries, key=lambda d: int(d.get("id") or 0))
            if any(200 <= int(d.get("status_code") or 0) < 300 for d in tries):
                continue  # delivered
            if latest.get("event") != "workflow_job" or latest.get("action") != "completed":
                continue  # only completed jobs recreate a slot; the rest is for the status page
            if self.store.seen(guid) or self.store.redeliveries(guid) >= self.max_redeliveries:
                continue  # handled here after all (GitHub gave up waiting), or asked enough
            detail = self.hooks.delivery(int(latest["id"]))
            if 200 <= int(detail.get("status_code") or 0) < 300:
                continue
            self.hooks.redeliver(int(latest["id"]))
            count = self.store.note_redelivery(guid, now)
            if self.counter is not None:
                self.counter.inc()
            asked.append(guid)
            self.log("asked GitHub to redeliver %s (workflow_job completed, job %s; last attempt: "
                     "%s; request %d)" % (one_line(guid, 64), _job_of(detail),
                                          one_line(latest.get("status"), 80), count))
        self.store.set_meta(CHECKED_AT, repr(now))
        return asked


def _job_of(detail: Mapping[str, Any]) -> str:
    payload = (detail.get("request") or {}).get("payload") or {}
    job = payload.get("workflow_job") if isinstance(payload, dict) else None
    return str(job.get("id")) if isinstance(job, dict) else "?"


class Timers(threading.Thread):
    """Runs the reconcile and the redelivery scan at start and then every interval."""

    def __init__(self, store: Store, worker: Any, reconcile: Mapping[str, Any],
                 redeliverer: Redeliverer | None, redeliver_minutes: float,
                 clock: Callable[[], float] = time.time, log: LogFn = print,
                 warn: LogFn | None = None, reconcile_counter: Any = None) -> None:
        super().__init__(name="rum-pool-timers", daemon=True)
        self.store = store
        self.worker = worker
        self.reconcile = reconcile
        self.redeliverer = redeliverer
        self.clock = clock
        self.log = log
        self.warn = warn or log
        self.reconcile_counter = reconcile_counter
        self._halt = threading.Event()
        self._due: dict[str, float] = {}
        self._every: dict[str, float] = {}
        now = time.monotonic()
        if reconcile.get("enabled"):
            self._every["reconcile"] = float(reconcile.get("interval_minutes") or 0) * 60
            start = now if reconcile.get("at_start") else now + self._every["reconcile"]
            if reconcile.get("at_start") or self._every["reconcile"] > 0:
                self._due["reconcile"] = start
        if redeliverer is not None:
            self._every["redeliver"] = float(redeliver_minutes) * 60
            self._due["redeliver"] = now

    def describe(self) -> list[str]:
        """What the timers will do, one line each, for the start-up log."""
        lines = []
        for name, what in (("redeliver", "failed deliveries redelivered"),
                           ("reconcile", "pool reconciled")):
            if name not in self._due:
                lines.append("%s: off" % what)
                continue
            every = self._every[name] / 60
            at_start = self._due[name] <= time.monotonic()
            if at_start and every:
                lines.append("%s: at start, then every %g min" % (what, every))
            else:
                lines.append("%s: %s" % (what, "every %g min" % every if every else "at start"))
        return lines

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)

    def run(self) -> None:
        while self._due and not self._halt.is_set():
            name = min(self._due, key=self._due.__getitem__)
            if self._halt.wait(max(0.0, self._due[name] - time.monotonic())):
                return
            self._fire(name)
            if self._every[name] > 0:
                self._due[name] = time.monotonic() + self._every[name]
            else:
                del self._due[name]

    def _fire(self, name: str) -> None:
        try:
            if name == "reconcile":
                task_id, joined = self.store.enqueue_reconcile(self.clock(), "the service's timer")
                if self.reconcile_counter is not None:
                    self.reconcile_counter.inc()
                self.log("pool reconcile %s task %d" % ("joins" if joined else "queued as", task_id))
                self.worker.wake()
            elif self.redeliverer is not None:
                self.redeliverer.scan()
        except GitHubError as exc:
            self.warn("redelivery check of %s failed: %s; next try in %g min"
                      % (self.redeliverer.hooks.describe() if self.redeliverer else "?", exc,
                         self._every[name] / 60))
        except Exception as exc:  # pylint: disable=broad-except  # a timer must keep running
            self.warn("%s: %s: %s" % (name, type(exc).__name__, one_line(exc)))
