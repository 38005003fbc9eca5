# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The unit of work: how a launched run is counted, what a run said it did, the defaults."""

from __future__ import annotations

import pytest

from rum_pool_webhook import tasks


@pytest.mark.parametrize("handle, ref", [
    ({"kind": "awx", "job_id": 12, "launched": True}, "awx:12"),
    ({"kind": "awx", "job_id": 0, "launched": True}, "awx:0"),
    ({"kind": "ansible-runner", "ident": "abc", "launched": True}, "ansible-runner:abc"),
    ({"kind": "ansible-runner", "ident": "abc", "job_id": 5, "launched": True}, "ansible-runner:abc"),
    ({"kind": "awx", "ident": "abc", "launched": True}, None),
    ({"kind": "awx", "job_id": 12}, None),
    ({"kind": "awx", "job_id": 12, "launched": False}, None),
    ({"kind": "ansible-runner", "launched": True}, None),
])
def test_launch_ref(handle, ref):
    assert tasks.launch_ref(handle) == ref


@pytest.mark.parametrize("stats, outcome", [
    ({"rum_pool_outcome": {"ci-1": {"outcome": "recreated", "reason": ""}}}, ("recreated", "")),
    ({"rum_pool_outcome": {"ci-1": {"outcome": "skipped", "reason": " the slot\n holds  another "}}},
     ("skipped", "the slot holds another")),
    ({"rum_pool_outcome": {"ci-1": {"outcome": "skipped"}}}, ("skipped", "")),
    ({"rum_pool_outcome": {"ci-1": {"outcome": "skipped", "reason": None}}}, ("skipped", "")),
    ({"rum_pool_outcome": {"ci-1": {"outcome": "exploded"}}}, (None, "")),
    ({"rum_pool_outcome": {"ci-2": {"outcome": "recreated"}}}, (None, "")),
    ({"rum_pool_outcome": {"ci-1": "recreated"}}, (None, "")),
    ({"rum_pool_outcome": ["ci-1"]}, (None, "")),
    ({"other": {}}, (None, "")),
    (None, (None, "")),
    ("recreated", (None, "")),
])
def test_outcome_of(stats, outcome):
    assert tasks.outcome_of(stats, "ci-1") == outcome


def test_names_and_defaults():
    assert (tasks.RECREATE, tasks.RECONCILE, tasks.RECONCILE_SLOT) == ("recreate", "reconcile", "(reconcile)")
    assert tasks.STAGE == "stage"
    assert (tasks.OUTCOME_STAT, tasks.OUTCOMES) == ("rum_pool_outcome", ("recreated", "staged", "skipped"))
    task = tasks.Task(id=1, slot="ci-1", runner=None, delivery=None, attempts=0, created_at=0.0)
    assert (task.kind, task.handle, task.launches) == ("recreate", None, ())
    # what a previous run started is not part of a task's identity
    assert task == tasks.Task(id=1, slot="ci-1", runner=None, delivery=None, attempts=0, created_at=0.0,
                              handle={"kind": "awx"}, launches=("awx:1",))
    result = tasks.Result(True, "done")
    assert (result.rc, result.ref, result.outcome, result.detached) == (None, None, None, False)


def test_task_vars_are_what_every_run_of_recreate_yml_gets():
    from tests.unit.service.helpers import RUNNER, SLOT, task  # pylint: disable=import-outside-toplevel
    assert tasks.task_vars(task()) == {"slot": SLOT, "runner_name": RUNNER}
    assert tasks.task_vars(task(runner=None)) == {"slot": SLOT}
    assert tasks.task_vars(task(kind=tasks.STAGE)) == {"slot": SLOT, "runner_name": RUNNER, "stage": True}
    assert tasks.task_vars(task(slot=tasks.RECONCILE_SLOT, runner=None, kind=tasks.RECONCILE)) == {}
    assert tasks.TASK_VARS == ("slot", "runner", "runner_name", "stage")


@pytest.mark.parametrize("outcome, reason, said", [
    ("skipped", "it holds g2", ": skipped: it holds g2"),
    ("skipped", "", ": skipped: the slot no longer holds this runner"),
    ("recreated", "started its staged generation g2", ": recreated: started its staged generation g2"),
    ("staged", "its job runs", ": staged: its job runs"),
    ("recreated", "", ""),
    (None, "a reason without an outcome", ""),
    (None, "", ""),
])
def test_what_a_message_says_of_the_outcome(outcome, reason, said):
    assert tasks.outcome_said(outcome, reason) == said
