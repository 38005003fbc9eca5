# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWX dispatcher against the fake AWX over HTTP on 127.0.0.1, make_dispatcher, the fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from rum_pool_webhook.dispatch import DispatchError, make_dispatcher
from rum_pool_webhook.dispatch_awx import AwxDispatcher
from rum_pool_webhook.dispatch_runner import AnsibleRunnerDispatcher
from rum_pool_webhook.tasks import RECONCILE, Result
from tests.unit.service.helpers import RUNNER, SLOT, Lines, task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_awx import FakeAwx  # noqa: E402  pylint: disable=wrong-import-position


class StubRunner:
    """Stands in for the ansible_runner module (make_dispatcher only builds the dispatcher)."""

    @staticmethod
    def run(**_kwargs):
        raise AssertionError("not run here")


# --------------------------------------------------------------------------------------------
# AWX against the fake AWX, over HTTP on 127.0.0.1
# --------------------------------------------------------------------------------------------

TOKEN = "awx-tok-51f0c2"


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def awx():
    fake = FakeAwx(token=TOKEN, read_token="awx-readonly-77")
    fake.start()
    yield fake
    fake.stop()


def awx_dispatcher(fake, template, clock, token=TOKEN, **kwargs):
    kwargs.setdefault("poll_seconds", 5)
    kwargs.setdefault("timeout", 60)
    return AwxDispatcher(fake.url, token, template, clock=clock, sleep=clock.sleep, **kwargs)


def test_awx_launch_by_id_and_follow(awx):
    template = awx.add_template("rum.pool recreate slot")
    clock = Clock()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock).run(task(), lines)
    assert result == Result(True, "AWX job 100 successful", None, f"{awx.url}/#/jobs/playbook/100/output")
    assert lines == [
        f"slot {SLOT}: AWX job 100 launched from job template {template}: {awx.url}/#/jobs/playbook/100/output",
        f"slot {SLOT}: AWX job 100 pending",
        f"slot {SLOT}: AWX job 100 running",
        f"slot {SLOT}: AWX job 100 successful",
    ]
    assert clock.sleeps == [5]
    assert awx.launches()[0]["extra_vars"] == {"slot": SLOT, "runner_name": RUNNER}
    requests = awx.requests
    assert [(r["method"], r["path"]) for r in requests] == [
        ("POST", f"/api/v2/job_templates/{template}/launch/"),
        ("GET", "/api/v2/jobs/100/"), ("GET", "/api/v2/jobs/100/")]
    assert {r["auth"] for r in requests} == {"execute"}
    assert requests[0]["body"] == {"extra_vars": {"slot": SLOT, "runner_name": RUNNER}}


def test_awx_template_by_name_is_resolved_once(awx):
    awx.add_template("other")
    template = awx.add_template("recreate slot")
    disp = awx_dispatcher(awx, "recreate slot", Clock())
    assert disp.run(task(task_id=1, runner=None), Lines()).ok
    assert disp.run(task(task_id=2), Lines()).ok
    lookups = [r for r in awx.requests if r["path"] == "/api/v2/job_templates/"]
    assert len(lookups) == 1 and lookups[0]["query"] == "name=recreate+slot"
    launches = awx.launches()
    assert [j["job_template"] for j in launches] == [template, template]
    assert launches[0]["extra_vars"] == {"slot": SLOT}  # no runner when the task has none


def test_awx_unknown_template_name(awx):
    disp = awx_dispatcher(awx, "no such template", Clock())
    with pytest.raises(DispatchError, match="AWX job template 'no such template': not found"):
        disp.resolve_template()
    lines = Lines()
    result = disp.run(task(), lines)
    assert result.ok is False and "'no such template': not found" in result.message
    assert lines == [f"slot {SLOT}: {result.message}"]


def test_awx_template_without_prompt_on_launch(awx):
    template = awx.add_template("recreate", ask_variables_on_launch=False)
    result = awx_dispatcher(awx, template, Clock()).run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith(
        f"job template {template} does not prompt for variables on launch; "
        "enable 'Prompt on launch' for Variables")
    assert result.ref == f"{awx.url}/#/jobs/playbook/100/output"
    job = awx.launches()[0]
    assert job["status"] == "canceled" and job["extra_vars"] == {}


def test_awx_failed_job(awx):
    template = awx.add_template("recreate", script=("pending", "waiting", "running", "failed"),
                                job_explanation="Previous Task Failed: {\"job_type\": \"project_update\"}")
    clock = Clock()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock).run(task(), lines)
    assert result.ok is False
    assert result.message == 'AWX job 100 failed: Previous Task Failed: {"job_type": "project_update"}'
    assert [line.rsplit(" ", 1)[-1] for line in lines[1:]] == ["pending", "waiting", "running", "failed"]
    assert clock.sleeps == [5, 5]


def test_awx_timeout_cancels_the_job(awx):
    template = awx.add_template("recreate", script=("pending", "running"))
    clock = Clock()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock, timeout=30, poll_seconds=10).run(task(), lines)
    assert result.ok is False
    assert result.message == "AWX job 100 timed out after 30 s (last status running); cancel requested"
    assert clock.sleeps == [10, 10, 10]
    assert awx.launches()[0]["status"] == "canceled"
    assert ("POST", "/api/v2/jobs/100/cancel/") in [(r["method"], r["path"]) for r in awx.requests]
    assert f"slot {SLOT}: AWX job 100: cancel requested" in lines


def test_awx_job_moved_by_admin_call(awx):
    template = awx.add_template("recreate", auto_advance=False)
    clock = Clock()

    def sleep(seconds):
        clock.sleep(seconds)
        if len(clock.sleeps) == 3:  # someone finishes the job in AWX
            body = json.dumps({"status": "successful"}).encode()
            req = urllib.request.Request(f"{awx.url}/_fake/jobs/100/status", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert json.loads(resp.read())["status"] == "successful"

    disp = AwxDispatcher(awx.url, TOKEN, template, poll_seconds=2, timeout=60, clock=clock, sleep=sleep)
    result = disp.run(task(), Lines())
    assert result.ok and clock.sleeps == [2, 2, 2]


def test_awx_bad_token_is_an_auth_error_without_the_token(awx):
    template = awx.add_template("recreate")
    result = awx_dispatcher(awx, template, Clock(), token="wrong-token-e9a1").run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith(f"AWX POST /api/v2/job_templates/{template}/launch/: HTTP 401: ")
    assert "token" in result.message and "wrong-token-e9a1" not in result.message
    assert awx.requests[0]["auth"] == "bad"
    assert awx.launches() == []


def test_awx_read_only_token_is_forbidden(awx):
    template = awx.add_template("recreate")
    result = awx_dispatcher(awx, template, Clock(), token="awx-readonly-77").run(task(), Lines())
    assert result.ok is False
    assert "HTTP 403" in result.message and "Execute permission" in result.message
    assert "awx-readonly-77" not in result.message


def test_awx_http_errors_name_method_path_and_status(awx):
    result = awx_dispatcher(awx, 999, Clock()).run(task(), Lines())
    assert result == Result(False, "AWX POST /api/v2/job_templates/999/launch/: HTTP 404: Not found.")


def test_awx_unreachable_server():
    with FakeAwx() as fake:
        url = fake.url
    disp = AwxDispatcher(url, TOKEN, 7, clock=Clock(), sleep=lambda s: None)
    result = disp.run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith("AWX POST /api/v2/job_templates/7/launch/: cannot connect: ")


def test_awx_url_with_api_root_and_repr(awx):
    template = awx.add_template("recreate")
    disp = AwxDispatcher(awx.url + "/api/v2/", TOKEN, template, clock=Clock(), sleep=lambda s: None)
    result = disp.run(task(), Lines())
    assert result.ok and result.ref == f"{awx.url}/#/jobs/playbook/100/output"
    assert TOKEN not in repr(disp)


def test_awx_redirect_is_not_followed():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    seen = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("Authorization"))
            self.send_response(301)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = AwxDispatcher(url, TOKEN, 7, clock=Clock(), sleep=lambda s: None).run(task(), Lines())
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 1
    assert result.message == ("AWX POST /api/v2/job_templates/7/launch/: HTTP 301 redirect to "
                              "http://127.0.0.1:9/elsewhere; set dispatcher.url to the address the API answers on")


def test_awx_records_its_intent_then_the_job_before_following_it(awx):
    template = awx.add_template("recreate")
    records = Lines()
    clock = Clock()
    assert awx_dispatcher(awx, template, clock).run(task(), Lines(), records).ok
    assert records == [{"kind": "awx", "template": template, "since": 1000.0},
                       {"kind": "awx", "template": template, "since": 1000.0, "job_id": 100,
                        "launched": True}]


def test_awx_after_a_restart_follows_the_recorded_job_without_launching(awx):
    template = awx.add_template("recreate", auto_advance=False)
    first = awx_dispatcher(awx, template, Clock())
    records = Lines()
    first.detach_all()  # the service stops right after launching
    result = first.run(task(), Lines(), records)
    assert result.detached and records[-1]["job_id"] == 100
    awx.set_job_status(100, "successful")
    lines = Lines()
    again = awx_dispatcher(awx, template, Clock()).run(task(handle=records[-1]), lines, Lines())
    assert again.ok and len(awx.launches()) == 1
    assert lines[0] == f"slot {SLOT}: following AWX job 100, launched before the restart"


def test_awx_after_a_crash_mid_launch_adopts_the_job_it_finds(awx):
    template = awx.add_template("recreate")
    clock = Clock()
    clock.now = __import__("time").time()
    intent = {"kind": "awx", "template": template, "since": clock.now - 1}
    # the launch reached AWX, but the service died before it heard the job id
    launched = _http(f"{awx.url}/api/v2/job_templates/{template}/launch/", "POST",
                     {"extra_vars": {"slot": SLOT, "runner_name": RUNNER}}, token=TOKEN)[1]["job"]
    records = Lines()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock).run(task(handle=intent), lines, records)
    assert result.ok and len(awx.launches()) == 1
    assert records == [dict(intent, job_id=launched, launched=True)]
    assert f"slot {SLOT}: found AWX job {launched}, launched just before the restart; following it" in lines


def test_awx_after_a_crash_before_the_launch_launches_once(awx):
    template = awx.add_template("recreate")
    clock = Clock()
    clock.now = __import__("time").time()
    # an earlier attempt's job for the same slot is not this attempt's
    old = _http(f"{awx.url}/api/v2/job_templates/{template}/launch/", "POST",
                {"extra_vars": {"slot": SLOT, "runner_name": RUNNER}}, token=TOKEN)[1]["job"]
    intent = {"kind": "awx", "template": template, "since": clock.now}
    result = awx_dispatcher(awx, template, clock).run(
        task(handle=intent, launches=(f"awx:{old}",)), Lines(), Lines())
    assert result.ok
    assert [j["id"] for j in awx.launches()] == [old, old + 1]


def test_awx_skipped_outcome_from_the_job_artifacts(awx):
    template = awx.add_template("recreate", artifacts=lambda extra: {"rum_pool_outcome": {
        extra["slot"]: {"outcome": "skipped", "reason": "the slot holds another runner"}}})
    result = awx_dispatcher(awx, template, Clock()).run(task(), Lines())
    assert result.ok and result.outcome == "skipped"
    assert result.message == "AWX job 100 successful: skipped: the slot holds another runner"
    recreated = awx.add_template("recreate2", artifacts={"rum_pool_outcome": {
        SLOT: {"outcome": "recreated", "reason": ""}}})
    result = awx_dispatcher(awx, recreated, Clock()).run(task(), Lines())
    assert (result.ok, result.outcome, result.message) == (True, "recreated", "AWX job 101 successful")
    staged = awx.add_template("recreate3", artifacts={"rum_pool_outcome": {
        SLOT: {"outcome": "recreated", "reason": "its job ended;\n started its staged generation g2"}}})
    result = awx_dispatcher(awx, staged, Clock()).run(task(), Lines())
    assert result.message == "AWX job 102 successful: recreated: its job ended; started its staged generation g2"


def test_awx_reconcile_launches_the_pool_template_without_variables(awx):
    template = awx.add_template("recreate")
    pool = awx.add_template("rum.pool converge")
    disp = awx_dispatcher(awx, template, Clock(), reconcile_job_template="rum.pool converge")
    reconcile = task(slot="(reconcile)", runner=None, kind=RECONCILE)
    assert disp.run(reconcile, Lines()).ok
    job = awx.launches()[0]
    assert job["job_template"] == pool and job["extra_vars"] == {}
    result = awx_dispatcher(awx, template, Clock()).run(reconcile, Lines())
    assert result.ok is False and result.message.startswith("reconcile.job_template: not set")


# --------------------------------------------------------------------------------------------
# make_dispatcher and the fake AWX itself
# --------------------------------------------------------------------------------------------

def test_make_dispatcher(tmp_path, awx):
    (tmp_path / "ok.yml").write_text("[]\n")
    (tmp_path / "inventory").write_text("localhost\n")
    runner = make_dispatcher({"kind": "ansible-runner", "playbook": str(tmp_path / "ok.yml"),
                              "project_dir": None, "inventory": str(tmp_path / "inventory"),
                              "extravars": {"a": 1}, "envvars": {}, "timeout": 10.0},
                             str(tmp_path / "state"), 7, runner_module=StubRunner())
    assert isinstance(runner, AnsibleRunnerDispatcher) and runner.kind == "ansible-runner"
    assert runner.keep_runs == 7 and runner.timeout == 10
    assert runner.runs_dir == str(tmp_path / "state" / "runs")

    template = awx.add_template("recreate")
    conf = {"kind": "awx", "url": awx.url, "token": TOKEN, "token_file": None, "job_template": "recreate",
            "validate_certs": False, "poll_seconds": 1.0, "timeout": 5.0}
    clock = Clock()
    awx_disp = make_dispatcher(conf, str(tmp_path), 3, clock=clock, sleep=clock.sleep)
    assert isinstance(awx_disp, AwxDispatcher) and awx_disp.kind == "awx"
    assert awx_disp.run(task(), Lines()).ok
    assert awx.launches()[0]["job_template"] == template

    with pytest.raises(DispatchError, match="no AWX token"):
        make_dispatcher(dict(conf, token=""), str(tmp_path), 3)
    with pytest.raises(DispatchError, match="must be 'ansible-runner' or 'awx', got 'shell'"):
        make_dispatcher({"kind": "shell"}, str(tmp_path), 3)


def _http(url, method="GET", body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_fake_awx_basics(awx):
    template = awx.add_template("recreate", script=("pending", "successful"))
    assert _http(f"{awx.url}/api/v2/job_templates/") == (
        401, {"detail": "Authentication credentials were not provided."})
    assert _http(f"{awx.url}/api/v2/job_templates/", token="nope")[0] == 401
    status, data = _http(f"{awx.url}/api/v2/job_templates/?name=recreate", token=TOKEN)
    assert status == 200 and data["count"] == 1 and data["results"][0]["id"] == template
    assert _http(f"{awx.url}/api/v2/job_templates/?name=other", token=TOKEN)[1]["count"] == 0
    status, data = _http(f"{awx.url}/api/v2/job_templates/{template}/launch/", "POST",
                         {"extra_vars": json.dumps({"slot": "a-b-1"})}, token=TOKEN)
    assert status == 201 and data["job"] == 100 and data["ignored_fields"] == {}
    assert _http(f"{awx.url}/api/v2/jobs/100/", token=TOKEN)[1]["status"] == "successful"
    assert _http(f"{awx.url}/api/v2/jobs/100/cancel/", "POST", token=TOKEN)[0] == 405
    assert _http(f"{awx.url}/api/v2/jobs/999/", token=TOKEN)[0] == 404
    status, data = _http(f"{awx.url}/_fake/requests")
    assert status == 200 and [r["auth"] for r in data["requests"]] == [
        "missing", "bad", "execute", "execute", "execute", "execute", "execute", "execute"]
    assert all("nope" not in json.dumps(r) and TOKEN not in json.dumps(r) for r in data["requests"])


def test_fake_awx_command_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "tools", "fake_awx", "server.py"), "--port", "0",
         "--token", "cli-tok", "--template", "recreate:noprompt"],
        stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, data = _http(f"{url}/api/v2/job_templates/?name=recreate", token="cli-tok")
        assert status == 200 and data["results"][0]["ask_variables_on_launch"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_task_and_result_types():
    assert Result(True, "m") == Result(ok=True, message="m", rc=None, ref=None, outcome=None,
                                       detached=False)
    t = task()
    assert (t.id, t.slot, t.runner, t.delivery, t.attempts, t.kind, t.handle, t.launches) == \
        (1, SLOT, RUNNER, "d-1", 0, "recreate", None, ())
    assert AnsibleRunnerDispatcher.kind == "ansible-runner" and AwxDispatcher.kind == "awx"


def test_the_fake_awx_launches_nothing_from_a_malformed_or_cut_body(awx):
    """As Django REST framework: a body that is no JSON is a 400 ParseError; a client that dies
    mid-body (the service killed while launching) sent no request at all. Neither launches a job."""
    import socket  # pylint: disable=import-outside-toplevel
    template = awx.add_template("recreate")
    path = f"/api/v2/job_templates/{template}/launch/"
    req = urllib.request.Request(awx.url + path, data=b'{"extra_vars": {"slot": "ci-hv1-', method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310 - the local fake
    assert err.value.code == 400
    assert json.loads(err.value.read())["detail"].startswith("JSON parse error - ")
    host, port = awx.url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"extra_vars\": {".encode())
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed without an answer
    assert awx.launches() == []
