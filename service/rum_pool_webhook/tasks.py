# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The unit of work between the store, the worker and the dispatchers.

A ``Task`` is what the store hands out: recreate one slot (``kind`` "recreate"), stage the slot's
next generation while its job runs (``kind`` "stage"), or converge the whole pool (``kind``
"reconcile"). A dispatcher runs it and ends with a ``Result``. On the way
it calls ``record(handle)`` with what identifies the run it started (an AWX job id; an
ansible-runner ident, run directory and process): the store keeps it durably before the
dispatcher goes on, so a service killed mid-run finds the handle again at its next start and
follows that run instead of starting a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

LogFn = Callable[[str], None]
RecordFn = Callable[[dict[str, Any]], None]


def launch_ref(handle: dict[str, Any]) -> str | None:
    """How the store counts a launched run: "awx:<job id>" or "ansible-runner:<ident>"."""
    if not handle.get("launched"):
        return None
    ident = handle.get("job_id") if handle.get("kind") == "awx" else handle.get("ident")
    return f"{handle.get('kind')}:{ident}" if ident is not None else None


RECREATE = "recreate"
RECONCILE = "reconcile"
# Prepare a busy slot's next generation (recreate.yml -e stage=true), so that its recreate after
# the job is only a start of what was staged.
STAGE = "stage"
# The queue's name for the pool-wide reconcile: never a slot name (those end in -<index>).
RECONCILE_SLOT = "(reconcile)"
# What recreate.yml publishes with set_stats: {"<slot>": {"outcome": ..., "reason": ...}}.
OUTCOME_STAT = "rum_pool_outcome"
OUTCOMES = ("recreated", "staged", "skipped")


@dataclass
class Task:
    """One unit of queued work: recreate (or stage) ``slot``, only while it holds ``runner`` if set."""

    id: int
    slot: str
    runner: str | None
    delivery: str | None
    attempts: int  # attempts already made before this one
    created_at: float
    kind: str = RECREATE
    # What a previous incarnation of the service started for this attempt, if anything.
    handle: dict[str, Any] | None = field(default=None, compare=False)
    # The runs launched for this task so far ("awx:<job id>", "ansible-runner:<ident>").
    launches: tuple[str, ...] = field(default=(), compare=False)


@dataclass
class Result:
    """How one attempt went; ``message`` is one line for logs and the status page.

    ``outcome`` is what the playbook said it did ("recreated", or "skipped" when the slot no
    longer held the runner generation), when it said so. ``detached`` means the dispatcher
    stopped following a run that goes on (the service is stopping): the task is not finished.
    """

    ok: bool
    message: str
    rc: int | None = None
    ref: str | None = None  # ansible-runner artifact dir, or the AWX job URL
    outcome: str | None = None
    detached: bool = False


class Dispatcher(Protocol):
    """What the worker needs from a dispatcher."""

    kind: str

    def run(self, task: Task, log: LogFn, record: RecordFn) -> Result:
        ...


# The variables the service sets on every run of recreate.yml (a user's extravars cannot override them).
TASK_VARS = ("slot", "runner", "runner_name", "stage")


def task_vars(task: Task) -> dict[str, Any]:
    """The playbook variables of ``task``: none for a reconcile; ``slot``, ``runner_name`` when the
    task has a runner generation, and ``stage: true`` for a stage."""
    if task.kind == RECONCILE:
        return {}
    values: dict[str, Any] = {"slot": task.slot}
    if task.runner is not None:
        values["runner_name"] = task.runner
    if task.kind == STAGE:
        values["stage"] = True
    return values


def outcome_said(outcome: str | None, reason: str) -> str:
    """What a successful run's message says after its status: ``": <outcome>: <reason>"`` when it
    published one (a skip without a reason names the usual one), else nothing."""
    if outcome == "skipped":
        return f": skipped: {reason or 'the slot no longer holds this runner'}"
    if outcome is not None and reason:
        return f": {outcome}: {reason}"
    return ""


def outcome_of(stats: Any, slot: str) -> tuple[str | None, str]:
    """(outcome, reason) that a run published for ``slot`` (see OUTCOME_STAT), or (None, "")."""
    if not isinstance(stats, dict):
        return None, ""
    table = stats.get(OUTCOME_STAT)
    entry = table.get(slot) if isinstance(table, dict) else None
    if not isinstance(entry, dict) or entry.get("outcome") not in OUTCOMES:
        return None, ""
    return str(entry["outcome"]), " ".join(str(entry.get("reason") or "").split())
