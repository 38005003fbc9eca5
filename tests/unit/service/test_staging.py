# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Staging (issue 11): a job's start queues the slot's next generation, its end only starts it.

With ``stage: true`` in the service's config, ``workflow_job`` ``in_progress`` on one of our
runners queues a ``stage`` task (recreate.yml -e stage=true) for the slot and runner generation;
its ``completed`` queues the usual recreate, which finds the staged generation and starts it.
"""

from __future__ import annotations

import time

import pytest

from rum_pool_webhook.config import ConfigError, parse_config
from rum_pool_webhook.dispatch_awx import AwxDispatcher
from rum_pool_webhook.dispatch_runner import AnsibleRunnerDispatcher
from rum_pool_webhook.events import Decision, decide
from rum_pool_webhook.store import Store
from rum_pool_webhook.tasks import RECREATE, STAGE, Result

from tests.unit.service.helpers import RUNNER, SLOT, task
from test_app import start_service
from test_store import T0, job

OTHER = "ci-hv1-1-zzzzzz"


@pytest.fixture()
def db(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    yield store
    store.close()


def accept(db, delivery, now=T0, stage=True):
    return db.accept(delivery, decide(delivery, ["ci"], stage), now)


# -- the decision ------------------------------------------------------------------------------

def test_in_progress_is_a_stage_only_when_the_service_stages():
    started = job("d1", action="in_progress", runner=RUNNER, job_id=9)
    assert decide(started, ["ci"], stage=True) == Decision(
        "stage", slot=SLOT, pool="ci", runner=RUNNER,
        reason=f"job 9 in_progress on {RUNNER}: stage the next generation")
    assert decide(started, ["ci"]).kind == "record"
    for action in ("queued", "waiting"):
        assert decide(job("d2", action=action, runner=RUNNER), ["ci"], stage=True).kind == "record"
    assert decide(job("d3", runner=RUNNER), ["ci"], stage=True).kind == "recreate"
    assert decide(job("d4", action="in_progress", runner="other-x-1-aaaaaa"), ["ci"], stage=True).kind == "ignore"


def test_the_config_switch(tmp_path):
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "secret").chmod(0o600)
    (tmp_path / "hosts.yml").write_text("all: {}\n")
    base = {"pools": ["ci"], "secret_file": "secret",
            "dispatcher": {"kind": "ansible-runner", "playbook": "recreate.yml", "inventory": "hosts.yml"}}
    assert parse_config(dict(base), str(tmp_path), {}).stage is False
    assert parse_config(dict(base, stage=True), str(tmp_path), {}).stage is True
    with pytest.raises(ConfigError, match=r"^stage: must be true or false, got a string$"):
        parse_config(dict(base, stage="yes"), str(tmp_path), {})


# -- the queue -----------------------------------------------------------------------------------

def test_a_started_job_queues_a_stage_and_its_end_a_recreate_after_it(db):
    staged = accept(db, job("d1", action="in_progress", runner=RUNNER))
    assert (staged.outcome, staged.slot) == ("queued", SLOT)
    assert db.task(staged.task_id)["kind"] == STAGE
    again = accept(db, job("d2", action="in_progress", runner=RUNNER))
    assert (again.outcome, again.task_id) == ("coalesced", staged.task_id)

    claimed = db.claim(T0 + 1)
    assert (claimed.id, claimed.kind, claimed.runner) == (staged.task_id, STAGE, RUNNER)
    # The job ends while the stage runs: a recreate of its own, not absorbed by the stage...
    ended = accept(db, job("d3", runner=RUNNER), now=T0 + 2)
    assert ended.outcome == "queued" and ended.task_id != staged.task_id
    assert db.task(ended.task_id)["kind"] == RECREATE
    # ... which waits for the stage: one task per slot at a time.
    assert db.claim(T0 + 3) is None
    assert db.finish(staged.task_id, Result(True, "staged", rc=0, outcome="staged"), T0 + 4, 3, 0) == "done"
    assert db.task(staged.task_id)["message"] == "staged"
    assert db.claim(T0 + 5).id == ended.task_id


def test_a_stage_still_queued_when_the_job_ends_is_skipped(db):
    staged = accept(db, job("d1", action="in_progress", runner=RUNNER))
    other = accept(db, job("d2", action="in_progress", runner="ci-hv1-2-bbbbbb"))
    ended = accept(db, job("d3", runner=RUNNER), now=T0 + 1)
    row = db.task(staged.task_id)
    assert row["state"] == "skipped"
    assert row["message"] == "not staged: the job ended before the stage ran (the recreate boots a fresh generation)"
    assert db.task(other.task_id)["state"] == "queued"  # another slot's stage stays
    assert db.claim(T0 + 2).id == other.task_id
    assert db.claim(T0 + 2).id == ended.task_id
    assert db.metrics()["tasks"]["skipped"] == 1


def test_a_start_delivered_after_the_end_stages_nothing(db):
    ended = accept(db, job("d1", runner=RUNNER))
    late = accept(db, job("d2", action="in_progress", runner=RUNNER), now=T0 + 1)
    assert late.outcome == "recorded" and late.task_id is None
    assert late.detail == (f"job 7 in_progress on {RUNNER}: stage the next generation: not staged, "
                           "the job already ended (its recreate is known)")
    assert db.task_counts() == {"queued": 1, "running": 0}
    assert db.claim(T0 + 2).id == ended.task_id
    # The next generation's start stages as usual.
    assert accept(db, job("d3", action="in_progress", runner=OTHER), now=T0 + 3).outcome == "queued"


def test_a_failed_stage_is_not_retried(db):
    staged = accept(db, job("d1", action="in_progress", runner=RUNNER))
    db.claim(T0 + 1)
    assert db.finish(staged.task_id, Result(False, "boom", rc=2), T0 + 2, 3, 0) == "failed"
    ended = accept(db, job("d2", runner=RUNNER), now=T0 + 3)
    db.claim(T0 + 4)
    assert db.finish(ended.task_id, Result(False, "boom", rc=2), T0 + 5, 3, 0) == "queued"


# -- the dispatchers and the worker -----------------------------------------------------------------

def test_the_dispatchers_ask_the_playbook_to_stage(tmp_path):
    (tmp_path / "recreate.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.yml").write_text("all: {}\n")
    runner = AnsibleRunnerDispatcher(playbook=str(tmp_path / "recreate.yml"), inventory=str(tmp_path / "hosts.yml"),
                                     extravars={"a": 1, "stage": True}, state_dir=str(tmp_path / "s"),
                                     runner_module=object())
    assert runner.extravars_for(task(kind=STAGE)) == {"a": 1, "slot": SLOT, "runner_name": RUNNER, "stage": True}
    assert runner.extravars_for(task()) == {"a": 1, "slot": SLOT, "runner_name": RUNNER}
    awx = AwxDispatcher("https://awx.example.com", "token", 7)
    assert awx.extra_vars_for(task(kind=STAGE)) == {"slot": SLOT, "runner_name": RUNNER, "stage": True}
    assert awx.extra_vars_for(task()) == {"slot": SLOT, "runner_name": RUNNER}


class Recorder:
    kind = "fake"

    def __init__(self):
        self.tasks = []

    def run(self, task_, log, record):
        self.tasks.append((task_.kind, task_.slot, task_.runner))
        log("one line")
        return Result(True, "recreate.yml rc=0 (successful)", rc=0, outcome="staged")


def test_a_signed_start_is_queued_and_run_as_a_stage(tmp_path, example):
    dispatcher = Recorder()
    svc = start_service(tmp_path, worker="real", dispatcher=dispatcher, stage=True)
    try:
        status, body = svc.post(example("in_progress", runner_name=RUNNER), delivery="start-1")
        assert (status, body) == (202, {"queued": 1, "slot": SLOT})
        deadline = time.monotonic() + 30
        while svc.store.task(1)["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert svc.store.task(1)["state"] == "done"
        assert svc.store.task(1)["message"] == "recreate.yml rc=0 (successful)"
        assert dispatcher.tasks == [(STAGE, SLOT, RUNNER)]
        assert f"task 1 slot {SLOT} (stage): one line" in svc.log
        status, body = svc.post(example("completed", runner_name=RUNNER), delivery="end-1")
        assert (status, body) == (202, {"queued": 2, "slot": SLOT})
    finally:
        svc.worker.stop(10)
        svc.server.shutdown()
        svc.server.server_close()
        svc.store.close()


def test_the_status_page_names_stage_tasks(db):
    from rum_pool_webhook.status_page import render_html, render_svg  # pylint: disable=import-outside-toplevel
    accept(db, job("d1", action="in_progress", runner=RUNNER))
    accept(db, job("d2", action="in_progress", runner="ci-hv1-2-bbbbbb"))
    accept(db, job("d3", runner="ci-hv1-2-bbbbbb"), now=T0 + 1)
    snapshot = db.snapshot(T0 + 2)
    html = render_html(snapshot)
    assert f"<code>{SLOT} (stage)</code>" in html
    assert "<code>ci-hv1-2 (stage)</code>" in html and "<code>ci-hv1-2</code>" in html  # the skipped stage, the recreate
    assert f"#1 {SLOT} (stage) queued" in render_svg(snapshot)
