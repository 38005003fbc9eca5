# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only callback: a JSON line per task start, task result and the play recap.

Not part of the collection (bench/ is left out of the Galaxy tarball). bench/pool.py enables it with
ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins, ANSIBLE_CALLBACKS_ENABLED=rum_bench_timer and
RUM_BENCH_TIMER_FILE=<path>, then reads the events back to split a run into per-task times and the
gaps between tasks (include and templating work of the strategy).
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: rum_bench_timer
    type: aggregate
    short_description: write task timings as JSON lines for rum.pool's benchmarks
    description:
      - Appends one JSON object per event to the file named by E(RUM_BENCH_TIMER_FILE).
    requirements:
      - enable in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    """Record wall-clock timestamps of tasks and their results."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "rum_bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("RUM_BENCH_TIMER_FILE")

    def _emit(self, event: str, **fields) -> None:
        if not self._path:
            return
        fields.update(ev=event, t=time.time(), pid=os.getpid())  # pid: runs that share a file
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(fields, default=str) + "\n")

    def v2_playbook_on_start(self, playbook) -> None:
        self._emit("playbook_start", file=getattr(playbook, "_file_name", ""))

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._emit("task_start", name=task.get_name(), action=task.action, path=task.get_path() or "")

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self._emit("task_start", name=task.get_name(), action=task.action, path=task.get_path() or "")

    def _result(self, status: str, result) -> None:
        more = {}
        if result._task.action.endswith("rum_slots"):
            # the batch module's own split: its phases, and each step summed over the slots
            steps: dict = {}
            for job in result._result.get("slots") or ():
                for what, seconds in (job.get("timings") or {}).items():
                    count, total, longest = steps.get(what, (0, 0.0, 0.0))
                    steps[what] = (count + 1, total + seconds, max(longest, seconds))
            more = {"phases": result._result.get("timings") or {}, "steps": steps}
        self._emit("result", status=status, changed=bool(result._result.get("changed")),
                   action=result._task.action, **more)

    def v2_runner_on_ok(self, result) -> None:
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._result("failed", result)

    def v2_runner_on_skipped(self, result) -> None:
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._result("unreachable", result)

    def v2_playbook_on_include(self, included_file) -> None:
        self._emit("include", file=included_file._filename)

    def v2_playbook_on_stats(self, stats) -> None:
        hosts = {}
        for host in sorted(stats.processed):
            hosts[host] = stats.summarize(host)
        self._emit("stats", hosts=hosts)
