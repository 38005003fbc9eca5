# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ansible-runner dispatcher with a warm standby (``dispatcher.standby: true``).

Starting ``ansible-playbook`` costs seconds before the first task of ``recreate.yml`` runs (the
interpreter, the plugins, the inventory, the ``check_hosts`` play). A standby run pays that ahead
of time: the dispatcher starts ``recreate.yml -e standby=<run dir>/request.json`` with nobody
waiting for it, and the play waits in ``rum.pool.rum_standby`` (which writes
``request.json.ready`` while it waits). When a recreate or stage task comes, the dispatcher
records the standby's run as the task's handle (durable, as any launch), writes the request
(``{slot, runner_name, stage}``, whole, by a rename) and follows that run as the task's. After a
stage task the next standby is started at once (the job may end seconds later, and its recreate
should find one waiting); after a recreate, when that run has ended (at most ``HOLD_SECONDS``
later): a standby's start-up keeps a core busy for a second or two, which the recreate's hot path
(the old VM destroyed, the staged one started, libvirt's firewall commands for it) would otherwise
share. Without a ready standby (at start, after an
expiry, while the next one starts) a task is launched the usual way, so the standby only
shortens the path, it never holds a task back.

* A standby is handed a task only while it is younger than ``standby_seconds`` minus a margin,
  so it cannot expire between the hand-over and its reading the request; one that ended anyway
  without saying what it did counts as a failed attempt (the task is retried), never as done.
* Standby runs are named ``0-<start in ms>`` (task 0: no task's runs), so the run directories
  they leave are pruned with the others, oldest first.
* A service killed between recording the hand-over and writing the request writes it at its next
  start (the run is still waiting); ``close()`` stops a standby nobody took.
* Reconcile tasks (``pool.yml``) never use it.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import threading
from typing import Any, Mapping

from . import runner_job
from .dispatch import one_line, safe_log
from .dispatch_runner import AnsibleRunnerDispatcher, _Adopted
from .runner_job import kill_leftovers
from .tasks import RECONCILE, STAGE, TASK_VARS, LogFn, RecordFn, Result, Task

REQUEST = "request.json"
# A standby older than standby_seconds minus this is not handed a task (it could expire first).
HANDOVER_MARGIN = 60.0
# How often the keeper thread checks that a standby is waiting.
KEEP_SECONDS = 2.0
# After a recreate, the next standby waits for the recreate's run to end, but no longer than this.
HOLD_SECONDS = 30.0
# After a standby ended by itself (a broken inventory, say), the next waits this long, doubled at
# each failure in a row up to BACKOFF_MAX: a broken set-up never starts ansible-playbook in a loop.
BACKOFF_FIRST = 10.0
BACKOFF_MAX = 600.0


class StandbyRunnerDispatcher(AnsibleRunnerDispatcher):
    """``AnsibleRunnerDispatcher`` that keeps one ``recreate.yml`` run started ahead of time."""

    def __init__(self, *args: Any, standby_seconds: float = 900, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if standby_seconds <= HANDOVER_MARGIN:
            raise ValueError(f"standby_seconds must be more than {HANDOVER_MARGIN:g}")
        self.standby_seconds = float(standby_seconds)
        self._warm: dict[str, Any] | None = None
        self._warm_lock = threading.Lock()
        self._closed = threading.Event()
        self._kick = threading.Event()
        self._keeper: threading.Thread | None = None
        self.standby_log: LogFn = lambda _line: None
        self._failures = 0
        self._not_before = 0.0
        self._held_until = 0.0  # while a recreate handed to a standby runs: no new standby before it ends

    # -- the standby run --------------------------------------------------------------------------

    def start_standby(self, log: LogFn | None = None) -> None:
        """Keep a standby waiting from now on (a thread of its own) until ``close()``."""
        if log is not None:
            self.standby_log = log
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="rum-pool-standby", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        while not self._closed.is_set():
            try:
                self.ensure_standby()
            except Exception as exc:  # pylint: disable=broad-except  # tasks run without it
                safe_log(self.standby_log, f"warm standby: cannot start one: {type(exc).__name__}: {exc}")
            self._kick.wait(KEEP_SECONDS)
            self._kick.clear()

    def ensure_standby(self) -> dict[str, Any] | None:
        """Start a standby run unless one is running; the standby (its run's facts)."""
        with self._warm_lock:
            if self._closed.is_set():
                return None
            warm = self._warm
            if warm is not None and self._usable(warm, ready=False):
                if self._failures and os.path.exists(warm["request"] + ".ready"):
                    self._failures = 0  # it got to its wait: the set-up works
                return warm
            if warm is not None:
                self._ended(warm)
                self._discard(warm)
                self._warm = None
            if self.clock() < max(self._not_before, self._held_until):
                return None
            self._warm = self._spawn_standby()
            return self._warm

    def _ended(self, warm: Mapping[str, Any]) -> None:
        """A standby that ended before its time failed: say why, and wait longer before the next."""
        if self.clock() - warm["started_at"] >= self.standby_seconds - HANDOVER_MARGIN:
            return  # expired (or about to): the usual turnover
        self._failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
        self._not_before = self.clock() + delay
        result = runner_job.read_json(os.path.join(warm["run_dir"], runner_job.RESULT)) or {}
        why = result.get("error") or result.get("first_failure") or f"status {result.get('status') or 'unknown'}"
        safe_log(self.standby_log, f"warm standby: run {warm['name']} ended before it was used ({one_line(why, 300)}); "
                                   f"the next one in {delay:g} s")

    def _spawn_standby(self) -> dict[str, Any]:
        started = self.clock()
        name = f"0-{int(started * 1000)}"
        run_dir = self._make_run_dir(name)
        marker = f"{os.getpid()}-{name}"
        request = os.path.join(run_dir, REQUEST)
        extravars = {k: v for k, v in self.extravars.items() if k not in TASK_VARS}
        extravars.update(standby=request, standby_timeout=int(self.standby_seconds))
        self._write_job(run_dir, name, self.playbook, extravars, marker,
                        int(self.standby_seconds + self.timeout) if self.timeout else None)
        launched = self._spawn(run_dir, self._launch_env(marker))
        return {"name": name, "run_dir": run_dir, "marker": marker, "request": request,
                "started_at": started, "launched": launched}

    def _usable(self, warm: Mapping[str, Any], ready: bool) -> bool:
        """Running, not about to expire and (with ``ready``) waiting for its request."""
        if not warm["launched"].alive() or os.path.exists(os.path.join(warm["run_dir"], runner_job.RESULT)):
            return False
        if self.clock() - warm["started_at"] >= self.standby_seconds - HANDOVER_MARGIN:
            return False
        return not ready or os.path.exists(warm["request"] + ".ready")

    def _discard(self, warm: Mapping[str, Any]) -> None:
        """Stop a standby nobody took and remove its run directory."""
        try:
            warm["launched"].signal(signal.SIGTERM)
        except Exception:  # pylint: disable=broad-except  # gone already
            pass
        kill_leftovers(str(warm["marker"]))
        shutil.rmtree(str(warm["run_dir"]), ignore_errors=True)

    def take_standby(self, hold: bool = True) -> dict[str, Any] | None:
        """The waiting standby, taken (no other task gets it), or None.

        With ``hold`` the next standby waits for ``release_standby()`` (or ``HOLD_SECONDS``);
        without, the keeper starts it now.
        """
        with self._warm_lock:
            warm = self._warm
            if warm is None or not self._usable(warm, ready=True):
                return None
            self._warm = None
            if hold:
                self._held_until = self.clock() + HOLD_SECONDS
        if not hold:
            self._kick.set()
        return warm

    def release_standby(self) -> None:
        """The run a standby was handed has ended: the keeper starts the next standby now."""
        with self._warm_lock:
            self._held_until = 0.0
        self._kick.set()

    def close(self) -> None:
        """Stop keeping a standby, and stop the one waiting."""
        self._closed.set()
        self._kick.set()
        with self._warm_lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            self._discard(warm)
        if self._keeper is not None:
            self._keeper.join(10)

    # -- handing tasks over -----------------------------------------------------------------------

    @staticmethod
    def write_request(path: str, task: Task) -> None:
        """The request the standby waits for, written whole (a rename), 0600."""
        data = {"slot": task.slot, "runner_name": task.runner, "stage": task.kind == STAGE}
        temporary = path + ".new"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(temporary, path)

    def _launch(self, task: Task, name: str, playbook: str, prefix: str, log: LogFn,
                record: RecordFn) -> Result:
        warm = self.take_standby(hold=task.kind != STAGE) \
            if task.kind != RECONCILE and playbook == self.playbook else None
        if warm is None:
            return super()._launch(task, name, playbook, prefix, log, record)
        handle = {"kind": self.kind, "ident": warm["name"], "run_dir": warm["run_dir"], "marker": warm["marker"],
                  "started_at": self.clock(), "playbook": playbook, "pid": warm["launched"].pid, "launched": True,
                  "request": warm["request"]}
        try:
            record(handle)  # durable before the request: a restart follows this run, it starts no other
            self.write_request(warm["request"], task)
            safe_log(log, f"{prefix}{os.path.basename(playbook)}: handed to the warm standby run {warm['name']} "
                          f"(task {task.id}, attempt {task.attempts + 1})")
            return self._handed(self._follow(task, handle, warm["launched"], prefix, log, skip_progress=True), task)
        finally:
            self.release_standby()

    def _resume(self, task: Task, handle: Mapping[str, Any], playbook: str, prefix: str,
                log: LogFn, record: RecordFn) -> Result | None:
        request = handle.get("request")
        if request and not os.path.exists(str(request)) and \
                _Adopted(handle.get("pid"), str(handle.get("marker") or "")).alive():
            self.write_request(str(request), task)  # the service stopped between the two
            safe_log(log, f"{prefix}wrote the request the standby run {handle.get('ident')} was handed before "
                          "the restart")
        resumed = super()._resume(task, handle, playbook, prefix, log, record)
        return self._handed(resumed, task) if request and resumed is not None else resumed

    @staticmethod
    def _handed(result: Result, task: Task) -> Result:
        """A standby run that ended well without saying what it did never read its request."""
        if result.ok and result.outcome is None and not result.detached:
            return Result(False, f"the standby run ended without taking the request for {task.slot} "
                                 f"({result.message})", rc=result.rc, ref=result.ref)
        return result

    def detach_all(self) -> None:
        self.close()
        super().detach_all()
