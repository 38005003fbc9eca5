# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWX dispatcher's recovery, against the fake AWX with faults injected over HTTP.

Polling goes on through a 5xx or a hung answer; a 4xx ends it; a service that stops leaves the
job running without cancelling it; a job past its time-out is cancelled, and a cancel that fails
is logged without hiding the time-out; a launch that fails leaves only the intent recorded; two
templates with the same name are refused with their ids.
"""

from __future__ import annotations

import pytest

from rum_pool_webhook.dispatch import DispatchError
from rum_pool_webhook.dispatch_awx import AwxDispatcher
from tests.unit.service.helpers import SLOT, Lines, task
from tests.unit.service.test_dispatch_awx import TOKEN, Clock, awx  # noqa: F401  pylint: disable=unused-import

JOB = "/api/v2/jobs/100/"


def dispatcher(fake, template, clock, **kwargs):
    kwargs.setdefault("poll_seconds", 5)
    kwargs.setdefault("timeout", 60)
    return AwxDispatcher(fake.url, TOKEN, template, clock=clock, sleep=clock.sleep, **kwargs)


def polls(fake):
    return [r.get("fault") for r in fake.requests if r["path"] == JOB]


def test_polling_goes_on_through_server_errors(awx):
    template = awx.add_template("recreate")
    awx.add_fault("GET", JOB, status=502, times=2)
    clock = Clock()
    lines = Lines()
    result = dispatcher(awx, template, clock).run(task(), lines)
    assert result.ok and result.message == "AWX job 100 successful"
    assert polls(awx) == [502, 502, None, None]
    assert clock.sleeps == [5, 5, 5]
    # said once, not once per failed poll
    assert [line for line in lines if "still polling" in line] == [
        f"slot {SLOT}: AWX GET {JOB}: HTTP 502: Bad Gateway; still polling"]


def test_polling_goes_on_through_an_answer_that_never_comes(awx):
    template = awx.add_template("recreate")
    awx.add_fault("GET", JOB, status=None, delay=2.0)
    lines = Lines()
    result = dispatcher(awx, template, Clock(), request_timeout=0.3).run(task(), lines)
    assert result.ok
    assert any("timed out; still polling" in line for line in lines), lines


def test_a_client_error_while_polling_ends_the_task(awx):
    template = awx.add_template("recreate")
    awx.add_fault("GET", JOB, status=404, detail="Not found.")
    lines = Lines()
    result = dispatcher(awx, template, Clock()).run(task(), lines)
    assert result.ok is False
    assert result.message == f"AWX GET {JOB}: HTTP 404: Not found."
    assert result.ref == f"{awx.url}/#/jobs/playbook/100/output"
    assert polls(awx) == [404]
    assert lines[-1] == f"slot {SLOT}: {result.message}"


def test_a_stopping_service_leaves_the_job_running_without_cancelling_it(awx):
    template = awx.add_template("recreate", auto_advance=False)
    clock = Clock()
    disp = dispatcher(awx, template, clock)

    def stop_while_waiting(seconds):
        clock.sleep(seconds)
        disp.detach_all()

    disp.sleep = stop_while_waiting
    result = disp.run(task(), Lines())
    assert result.detached and result.ok is False
    assert result.message == "AWX job 100 left running; the service follows it again at its next start"
    assert awx.launches()[0]["status"] == "pending"
    assert not [r for r in awx.requests if r["path"].endswith("/cancel/")]


def test_a_job_past_its_time_out_is_cancelled(awx):
    template = awx.add_template("recreate", script=("pending", "running"))
    clock = Clock()
    lines = Lines()
    result = dispatcher(awx, template, clock, timeout=20, poll_seconds=10).run(task(), lines)
    assert result.message == "AWX job 100 timed out after 20 s (last status running); cancel requested"
    assert awx.launches()[0]["status"] == "canceled"
    assert f"slot {SLOT}: AWX job 100: cancel requested" in lines


def test_a_failed_cancel_is_logged_and_the_time_out_still_reported(awx):
    template = awx.add_template("recreate", script=("pending", "running"))
    awx.add_fault("POST", r"/api/v2/jobs/\d+/cancel/", status=500)
    lines = Lines()
    result = dispatcher(awx, template, Clock(), timeout=20, poll_seconds=10).run(task(), lines)
    assert result.ok is False and result.message.startswith("AWX job 100 timed out after 20 s")
    assert awx.launches()[0]["status"] == "running"  # the cancel never reached AWX
    assert (f"slot {SLOT}: AWX job 100: cancel failed: AWX POST /api/v2/jobs/100/cancel/: "
            "HTTP 500: A server error occurred.") in lines
    assert f"slot {SLOT}: AWX job 100: cancel requested" not in lines


def test_a_failed_cancel_of_a_job_launched_without_variables_is_not_fatal(awx):
    template = awx.add_template("recreate", ask_variables_on_launch=False)
    awx.add_fault("POST", r"/api/v2/jobs/\d+/cancel/", status=503)
    result = dispatcher(awx, template, Clock()).run(task(), Lines())
    assert result.ok is False and "does not prompt for variables on launch" in result.message


def test_a_launch_that_fails_records_only_the_intent(awx):
    template = awx.add_template("recreate")
    awx.add_fault("POST", rf"/api/v2/job_templates/{template}/launch/", status=503)
    records = Lines()
    lines = Lines()
    result = dispatcher(awx, template, Clock()).run(task(), lines, records)
    assert result.ok is False
    assert result.message == f"AWX POST /api/v2/job_templates/{template}/launch/: HTTP 503: Service Unavailable"
    assert records == [{"kind": "awx", "template": template, "since": 1000.0}]
    assert awx.launches() == []
    # The next attempt, from that record, finds no job and launches once.
    again = dispatcher(awx, template, Clock()).run(task(handle=records[-1]), Lines(), Lines())
    assert again.ok and len(awx.launches()) == 1


def test_duplicate_template_names_are_refused_with_their_ids(awx):
    first = awx.add_template("recreate")
    second = awx.add_template("recreate")
    disp = dispatcher(awx, "recreate", Clock())
    with pytest.raises(DispatchError) as info:
        disp.resolve_template()
    assert str(info.value) == (f"AWX job template 'recreate': 2 templates have this name (ids {first}, "
                               f"{second}); set dispatcher.job_template to the id")
    result = disp.run(task(), Lines())
    assert result.ok is False and "2 templates have this name" in result.message
    assert awx.launches() == []
    reconcile = dispatcher(awx, first, Clock(), reconcile_job_template="recreate")
    with pytest.raises(DispatchError, match="set reconcile.job_template to the id"):
        reconcile.resolve_template("recreate", "reconcile.job_template")


def test_a_template_lookup_through_a_server_error_fails_without_caching(awx):
    template = awx.add_template("recreate")
    awx.add_fault("GET", "/api/v2/job_templates/", status=502)
    disp = dispatcher(awx, "recreate", Clock())
    first = disp.run(task(), Lines())
    assert first.ok is False and "HTTP 502" in first.message
    assert disp.run(task(task_id=2), Lines()).ok
    assert disp.resolve_template() == template


def test_the_fake_takes_faults_over_http_too(awx):
    import json  # pylint: disable=import-outside-toplevel
    import urllib.request  # pylint: disable=import-outside-toplevel
    request = urllib.request.Request(f"{awx.url}/_fake/faults", method="POST", data=json.dumps(
        {"method": "GET", "path": "/api/v2/job_templates/", "status": 503, "times": 1}).encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
    with pytest.raises(DispatchError, match="HTTP 503"):
        dispatcher(awx, "x", Clock()).resolve_template()
