# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWX dispatcher exactly, against a scripted opener (no socket): every request it sends,
every line it logs and every message it returns, where the fake AWX cannot be steered so finely
(answers that are not objects, a 500 exactly, details past their cut, a job found after a restart
among jobs that are not it, the search window in UTC whatever the local zone)."""

from __future__ import annotations

import io
import json
import time
import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest

from rum_pool_webhook.dispatch import DispatchError
from rum_pool_webhook.dispatch_awx import AwxDispatcher, build_opener
from rum_pool_webhook.tasks import RECONCILE, Result
from tests.unit.service.helpers import RUNNER, SLOT, Lines, task

URL = "https://awx.example.com"
TOKEN = "awx-tok-mut-3b"
JOB = "/api/v2/jobs/100/"
LAUNCH = "/api/v2/job_templates/7/launch/"
REF = f"{URL}/#/jobs/playbook/100/output"


class Answer:
    """What the opener hands back for a request that succeeded."""

    def __init__(self, status, body):
        self.status = status
        self._body = body

    def read(self):
        return self._body

    def close(self):
        pass


class Opener:
    """Answers each request with the next scripted (status, body) for its method and path.

    A body that is not bytes is sent as JSON. Statuses of 300 and up are raised as urllib's
    HTTPError, the way urllib's opener raises them; a path without a script answers 200 {}.
    """

    def __init__(self, script=None):
        self.script = {key: list(value) for key, value in (script or {}).items()}
        self.requests = []
        self.headers = []
        self.timeouts = []

    def open(self, request, timeout=None):
        parts = urllib.parse.urlsplit(request.full_url)
        body = json.loads(request.data) if request.data is not None else None
        self.requests.append((request.get_method(), parts.path, parts.query, body))
        self.headers.append(dict(request.header_items()))
        self.timeouts.append(timeout)
        queue = self.script.get((request.get_method(), parts.path)) or [(200, {})]
        status, answer = queue.pop(0) if len(queue) > 1 else queue[0]
        raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        if status >= 300:
            raise urllib.error.HTTPError(request.full_url, status, "scripted", {}, io.BytesIO(raw))
        return Answer(status, raw)

    def paths(self):
        return [(method, path) for method, path, _query, _body in self.requests]


class Clock:
    def __init__(self, now=1000.0):
        self.now = now
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        # A dispatcher that never stops polling fails here instead of hanging the test.
        assert len(self.sleeps) < 1000, "still polling after 1000 sleeps"


def make(script=None, url=URL, template=7, **kwargs):
    script = dict(script or {})
    script.setdefault(("GET", JOB), [(200, {"status": "successful"})])
    opener = Opener(script)
    clock = kwargs.pop("clock", Clock())
    kwargs.setdefault("poll_seconds", 5)
    kwargs.setdefault("timeout", 60)
    disp = AwxDispatcher(url, TOKEN, template, opener=opener, clock=clock, sleep=clock.sleep, **kwargs)
    return disp, opener, clock


def launched(status="pending"):
    return [(201, {"job": 100, "status": status})]


# -- what an error says -------------------------------------------------------------------------

def error_message(status, body):
    disp, _opener, _clock = make({("POST", LAUNCH): [(status, body)]})
    result = disp.run(task(), Lines())
    assert result.ok is False
    return result.message


def test_an_error_names_awx_detail_then_error_then_the_whole_answer():
    where = f"AWX POST {LAUNCH}: HTTP 400"
    assert error_message(400, {"detail": "d", "error": "e"}) == f"{where}: d"
    assert error_message(400, {"error": "bad  input\nhere"}) == f"{where}: bad input here"
    assert error_message(400, {"b": [1], "a": "x"}) == f'{where}: {{"a": "x", "b": [1]}}'
    assert error_message(400, {}) == where
    assert error_message(400, [1, 2]) == where
    assert error_message(500, b"") == "AWX POST /api/v2/job_templates/7/launch/: HTTP 500"
    assert error_message(502, b"<html>bad gateway</html>") == f"AWX POST {LAUNCH}: HTTP 502"


@pytest.mark.parametrize("key", ["detail", "error", None])
def test_an_error_detail_is_cut_at_200_characters(key):
    long = "x" * 250
    body = {key: long} if key else {"k": long}
    message = error_message(400, body)
    detail = message.split(": HTTP 400: ", 1)[1]
    assert len(detail) == 200 and detail.endswith("...")
    text = long if key else json.dumps(body, sort_keys=True)
    assert detail == text[:197] + "..."
    exact = error_message(400, {key: "y" * 200} if key else {"k": "y" * 191})
    assert len(exact.split(": HTTP 400: ", 1)[1]) == 200 and not exact.endswith("...")


# -- finding the job launched just before a restart ---------------------------------------------

def resume(jobs, extra=None, kind=None, launches=(), since=1000.0):
    """Run a task whose handle says a launch was under way; ``jobs`` are what AWX lists."""
    script = {("GET", "/api/v2/job_templates/7/jobs/"): [(200, jobs)],
              ("POST", LAUNCH): launched("successful"),
              ("GET", JOB): [(200, {"status": "successful"})]}
    for ident, variables in (extra or {}).items():
        job = {"id": ident, "status": "successful", "extra_vars": variables}
        script[("GET", f"/api/v2/jobs/{ident}/")] = [(200, job)]
    disp, opener, _clock = make(script, clock=Clock(5000.0))
    handle = {"kind": "awx", "template": 7, "since": since}
    more = {"kind": kind} if kind else {}
    records = Lines()
    lines = Lines()
    result = disp.run(task(handle=handle, launches=tuple(launches), **more), lines, records)
    return result, opener, records, lines


def ours(slot=SLOT, runner=RUNNER):
    return json.dumps({"slot": slot, "runner_name": runner})


def test_the_search_asks_for_the_newest_jobs_since_five_minutes_before_in_utc(monkeypatch):
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        _result, opener, _records, _lines = resume({"results": []}, since=1_750_000_000.0)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    method, path, query, _body = opener.requests[0]
    assert (method, path) == ("GET", "/api/v2/job_templates/7/jobs/")
    # 1_750_000_000 - 300 s is 2025-06-15T15:01:40Z
    assert urllib.parse.parse_qsl(query) == [("created__gte", "2025-06-15T15:01:40Z"),
                                             ("order_by", "-id"), ("page_size", "50")]
    assert opener.paths()[1] == ("POST", LAUNCH)


def test_a_found_job_is_recorded_and_followed_without_a_launch():
    result, opener, records, lines = resume({"results": [{"id": 101}]}, {101: ours()})
    assert result == Result(True, "AWX job 101 successful", ref=f"{URL}/#/jobs/playbook/101/output")
    assert records == [{"kind": "awx", "template": 7, "since": 1000.0, "job_id": 101, "launched": True}]
    assert lines == [f"slot {SLOT}: found AWX job 101, launched just before the restart; following it",
                     f"slot {SLOT}: AWX job 101 successful"]
    assert ("POST", LAUNCH) not in opener.paths()


def test_jobs_that_are_not_ours_are_passed_over_to_the_next():
    jobs = {"results": [7, {"id": "x"}, {"id": 100}, {"id": 102}, {"id": 103}, {"id": 104},
                        {"id": 105}]}
    extra = {102: "{not json", 103: ours(slot="ci-other-2"), 104: json.dumps(["a"]), 105: ours()}
    result, opener, _records, _lines = resume(jobs, extra, launches=("awx:100", "ansible-runner:1-1"))
    assert result.message == "AWX job 105 successful"
    assert [path for method, path in opener.paths() if method == "GET"][:5] == [
        "/api/v2/job_templates/7/jobs/", "/api/v2/jobs/102/", "/api/v2/jobs/103/",
        "/api/v2/jobs/104/", "/api/v2/jobs/105/"]


def test_a_job_with_other_variables_is_not_adopted_and_the_task_launches():
    result, opener, records, _lines = resume({"results": [{"id": 103}]}, {103: ours(runner="old-1")})
    assert result.message == "AWX job 100 successful"
    assert opener.paths()[2] == ("POST", LAUNCH)
    assert records[-1]["job_id"] == 100


@pytest.mark.parametrize("jobs", [[{"id": 101}], {"results": None}, "text"])
def test_an_answer_that_lists_no_jobs_launches(jobs):
    result, opener, _records, _lines = resume(jobs)
    assert result.message == "AWX job 100 successful"
    assert ("POST", LAUNCH) in opener.paths()


@pytest.mark.parametrize("variables", [None, ""])
def test_a_reconcile_adopts_a_job_launched_without_variables(variables):
    job = {"status": "successful", "extra_vars": variables}
    disp, opener, _clock = make({("GET", "/api/v2/job_templates/9/jobs/"): [(200, {"results": [{"id": 101}]})],
                                 ("GET", "/api/v2/jobs/101/"): [(200, job)]},
                                reconcile_job_template=9)
    handle = {"kind": "awx", "template": 9, "since": 1000.0}
    result = disp.run(task(kind=RECONCILE, handle=handle), Lines(), Lines())
    assert result.message == "AWX job 101 successful"
    assert all(method == "GET" for method, _path in opener.paths())


def test_a_failed_search_names_the_request():
    disp, _opener, _clock = make({("GET", "/api/v2/job_templates/7/jobs/"): [(500, b"")]})
    result = disp.run(task(handle={"kind": "awx", "template": 7, "since": 1000.0}), Lines(), Lines())
    assert result.message.startswith("AWX GET /api/v2/job_templates/7/jobs/?created__gte=")
    assert result.message.endswith("&order_by=-id&page_size=50: HTTP 500")
    disp, _opener, _clock = make({("GET", "/api/v2/job_templates/7/jobs/"): [(200, {"results": [{"id": 101}]})],
                                  ("GET", "/api/v2/jobs/101/"): [(503, b"")]})
    result = disp.run(task(handle={"kind": "awx", "template": 7, "since": 1000.0}), Lines(), Lines())
    assert result.message == "AWX GET /api/v2/jobs/101/: HTTP 503"


# -- following a job ----------------------------------------------------------------------------

def test_the_deadline_counts_from_the_recorded_start():
    disp, _opener, clock = make({("GET", JOB): [(200, {"status": "running"})]})
    handle = {"kind": "awx", "template": 7, "since": 950.0, "job_id": 100, "launched": True}
    result = disp.run(task(handle=handle), Lines())
    assert result == Result(False, "AWX job 100 timed out after 60 s (last status running); "
                                   "cancel requested", ref=REF)
    assert clock.sleeps == [5, 5]


def test_without_a_recorded_start_the_deadline_counts_from_now():
    disp, _opener, clock = make({("GET", JOB): [(200, {"status": "running"})]}, timeout=10)
    handle = {"kind": "awx", "template": 7, "job_id": 100, "launched": True}
    assert disp.run(task(handle=handle), Lines()).message.startswith("AWX job 100 timed out after 10 s")
    assert clock.sleeps == [5, 5]


@pytest.mark.parametrize("timeout", [None, 0])
def test_without_a_timeout_a_job_is_followed_to_its_end(timeout):
    polls = [(200, {"status": "running"})] * 30 + [(200, {"status": "successful"})]
    disp, _opener, clock = make({("POST", LAUNCH): launched(), ("GET", JOB): polls}, timeout=timeout)
    assert disp.timeout is None
    assert disp.run(task(), Lines()).ok
    assert len(clock.sleeps) == 30


def test_each_status_is_logged_once_and_a_status_that_is_no_text_not_at_all():
    polls = [(200, {"status": "running"}), (200, {"status": "running"}), (200, {}),
             (200, {"status": "running"}), (200, {"status": "successful"})]
    disp, _opener, _clock = make({("POST", LAUNCH): [(201, {"job": 100, "status": 3})], ("GET", JOB): polls})
    lines = Lines()
    assert disp.run(task(), lines).ok
    assert lines == [f"slot {SLOT}: AWX job 100 launched from job template 7: {REF}",
                     f"slot {SLOT}: AWX job 100 running",
                     f"slot {SLOT}: AWX job 100 successful"]


def test_a_launch_status_stands_while_the_job_cannot_be_read():
    disp, _opener, clock = make({("POST", LAUNCH): launched("successful"), ("GET", JOB): [(502, b"")]})
    lines = Lines()
    result = disp.run(task(), lines)
    assert result == Result(True, "AWX job 100 successful", ref=REF)
    assert clock.sleeps == []
    assert lines[-1] == f"slot {SLOT}: AWX GET {JOB}: HTTP 502; still polling"


def test_a_poll_answer_that_is_no_object_is_an_unknown_status():
    polls = [(200, [1]), (200, {"status": "failed", "job_explanation": ""})]
    disp, _opener, clock = make({("POST", LAUNCH): launched(), ("GET", JOB): polls})
    assert disp.run(task(), Lines()) == Result(False, "AWX job 100 failed", ref=REF)
    assert clock.sleeps == [5]


def test_a_500_while_polling_is_passing_and_a_499_is_not():
    polls = [(500, b""), (200, {"status": "successful"})]
    disp, _opener, _clock = make({("POST", LAUNCH): launched(), ("GET", JOB): polls})
    assert disp.run(task(), Lines()).ok
    disp, _opener, _clock = make({("POST", LAUNCH): launched(), ("GET", JOB): [(499, b"")]})
    assert disp.run(task(), Lines()) == Result(False, f"AWX GET {JOB}: HTTP 499", ref=REF)


def test_a_stopping_service_keeps_the_job_reference():
    disp, _opener, _clock = make({("POST", LAUNCH): launched()})
    disp.detach_all()
    result = disp.run(task(), Lines())
    assert result == Result(False, "AWX job 100 left running; the service follows it again at its "
                                   "next start", ref=REF, detached=True)


LONG = "/api/" + "v" * 400
LONG_API = URL + LONG


def test_long_messages_are_cut_where_each_is_cut():
    script = {("POST", LONG + "/job_templates/7/launch/"): launched("running"),
              ("GET", LONG + "/jobs/100/"): [(503, b""), (404, b"")]}
    disp, _opener, _clock = make(script, url=LONG_API)
    lines = Lines()
    result = disp.run(task(), lines)
    polling = [line for line in lines if line.endswith("; still polling")]
    assert len(polling) == 1
    assert polling[0] == f"slot {SLOT}: AWX GET {LONG}/jobs/100/: HTTP 503"[:len(f"slot {SLOT}: ") + 297] \
        + "...; still polling"
    assert len(result.message) == 400 and result.message.endswith("...")
    assert result.message == f"AWX GET {LONG}/jobs/100/: HTTP 404"[:397] + "..."


def test_a_failed_cancel_is_logged_cut_at_300_characters():
    script = {("POST", LONG + "/job_templates/7/launch/"): launched("running"),
              ("GET", LONG + "/jobs/100/"): [(200, {"status": "running"})],
              ("POST", LONG + "/jobs/100/cancel/"): [(500, b"")]}
    disp, _opener, _clock = make(script, url=LONG_API, timeout=5)
    lines = Lines()
    result = disp.run(task(), lines)
    assert result.message == "AWX job 100 timed out after 5 s (last status running); cancel requested"
    failed = lines[-1]
    prefix = f"slot {SLOT}: AWX job 100: cancel failed: "
    assert failed.startswith(prefix)
    assert failed[len(prefix):] == f"AWX POST {LONG}/jobs/100/cancel/: HTTP 500"[:297] + "..."


def test_resolve_template_errors_other_than_404_are_raised_as_they_are():
    disp, _opener, _clock = make({("GET", "/api/v2/job_templates/"): [(500, {"detail": "db down"})]},
                                 template="recreate")
    with pytest.raises(DispatchError) as info:
        disp.resolve_template()
    assert str(info.value) == "AWX GET /api/v2/job_templates/?name=recreate: HTTP 500: db down"


# -- building the dispatcher --------------------------------------------------------------------

@pytest.mark.parametrize("url, api, ui", [
    ("https://awx.example.com/", "https://awx.example.com/api/v2", "https://awx.example.com"),
    ("http://awx.example.com:8052/awx", "http://awx.example.com:8052/awx/api/v2",
     "http://awx.example.com:8052/awx"),
    ("https://aap.example.com/api/controller/v2/", "https://aap.example.com/api/controller/v2",
     "https://aap.example.com"),
    ("https://aap.example.com/api", "https://aap.example.com/api", "https://aap.example.com"),
    ("https://aap.example.com/apis", "https://aap.example.com/apis/api/v2", "https://aap.example.com/apis"),
    ("https://awx.example.com/X/", "https://awx.example.com/X/api/v2", "https://awx.example.com/X"),
])
def test_the_api_root_and_the_job_pages(url, api, ui):
    disp, _opener, _clock = make(url=url)
    assert (disp.api, disp.ui, disp.url) == (api, ui, url.rstrip("/"))
    assert disp.job_url(12) == f"{ui}/#/jobs/playbook/12/output"
    assert repr(disp) == f"AwxDispatcher(url={url.rstrip('/')!r}, job_template=7)"


@pytest.mark.parametrize("url", ["ftp://awx.example.com", "awx.example.com", "https://", "http:///api/v2"])
def test_a_url_that_is_not_http_is_refused(url):
    with pytest.raises(DispatchError) as info:
        AwxDispatcher(url, TOKEN, 7, opener=Opener())
    assert str(info.value) == f"dispatcher.url: must be an http:// or https:// URL, got {url!r}"


@pytest.mark.parametrize("token", ["", None])
def test_an_empty_token_is_refused(token):
    with pytest.raises(DispatchError) as info:
        AwxDispatcher(URL, token, 7, opener=Opener())
    assert str(info.value) == ("dispatcher.token: empty; give the AWX token in dispatcher.token_file "
                               "or RUM_POOL_AWX_TOKEN")


def test_the_defaults():
    disp = AwxDispatcher(URL, TOKEN, "7", opener=Opener())
    assert (disp.poll_seconds, disp.timeout, disp.request_timeout) == (5.0, 1800.0, 30)
    assert isinstance(disp.poll_seconds, float) and isinstance(disp.timeout, float)
    assert disp.clock is time.time and disp.template_spec == "7" and disp.reconcile_template_spec is None
    assert AwxDispatcher(URL, TOKEN, 7, opener=Opener(), timeout="90").timeout == 90.0


def test_without_a_sleep_the_dispatcher_waits_on_its_detach_event():
    polls = [(200, {"status": "running"}), (200, {"status": "successful"})]
    opener = Opener({("POST", LAUNCH): launched(), ("GET", JOB): polls})
    disp = AwxDispatcher(URL, TOKEN, 7, opener=opener, poll_seconds=0.001)
    assert disp.run(task(), Lines()).ok
    opener = Opener({("POST", LAUNCH): launched(), ("GET", JOB): [(200, {"status": "running"})]})
    disp = AwxDispatcher(URL, TOKEN, 7, opener=opener, poll_seconds=3600)
    disp.detach_all()  # already set: the wait returns at once, and the next turn detaches
    assert disp.run(task(), Lines()).detached


@pytest.mark.parametrize("validate", [True, False])
def test_the_opener_checks_certificates_unless_told_not_to_and_never_redirects(validate):
    opener = build_opener(validate)
    https = [h for h in opener.handlers if isinstance(h, urllib.request.HTTPSHandler)]
    assert len(https) == 1
    context = https[0]._context  # pylint: disable=protected-access
    assert context.check_hostname is validate
    assert context.verify_mode == (ssl.CERT_REQUIRED if validate else ssl.CERT_NONE)
    redirects = [h for h in opener.handlers if isinstance(h, urllib.request.HTTPRedirectHandler)]
    assert len(redirects) == 1
    request = urllib.request.Request(URL + "/api/v2/x/", headers={"Authorization": "Bearer t"})
    assert redirects[0].redirect_request(request, None, 302, "Found", {}, "https://elsewhere/") is None
    assert AwxDispatcher(URL, TOKEN, 7, validate_certs=validate).opener.handlers


def test_certificates_are_checked_by_default():
    for opener in (build_opener(), AwxDispatcher(URL, TOKEN, 7).opener):
        [https] = [h for h in opener.handlers if isinstance(h, urllib.request.HTTPSHandler)]
        assert https._context.check_hostname is True  # pylint: disable=protected-access
        assert https._context.verify_mode == ssl.CERT_REQUIRED  # pylint: disable=protected-access


# -- one request --------------------------------------------------------------------------------

def test_each_request_carries_the_token_json_headers_and_the_time_out():
    disp, opener, _clock = make({("POST", LAUNCH): launched("successful")}, request_timeout=12)
    assert disp.run(task(), Lines()).ok
    assert opener.timeouts == [12, 12]
    assert opener.headers[0] == {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json",
                                 "User-agent": "rum-pool-webhook", "Content-type": "application/json"}
    assert opener.headers[1] == {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json",
                                 "User-agent": "rum-pool-webhook"}
    assert opener.requests[0] == ("POST", LAUNCH, "", {"extra_vars": {"slot": SLOT, "runner_name": RUNNER}})
    assert opener.requests[1] == ("GET", JOB, "", None)


class Plain:
    """An answer with no ``status`` attribute, only ``getcode()`` (as older responses)."""

    def __init__(self, code, body, status=None):
        self.code = code
        self.body = body
        if status is not None:
            self.status = status

    def getcode(self):
        return self.code

    def read(self):
        return self.body

    def close(self):
        pass


class Fixed:
    def __init__(self, answer=None, error=None):
        self.answer = answer
        self.error = error

    def open(self, _request, timeout=None):
        if self.error is not None:
            raise self.error
        return self.answer


def request_with(opener):
    disp = AwxDispatcher(URL, TOKEN, "recreate", opener=opener)
    with pytest.raises(DispatchError) as info:
        disp.resolve_template()
    return str(info.value)


WHERE = "AWX GET /api/v2/job_templates/?name=recreate"


def test_a_status_is_read_from_getcode_when_the_answer_has_none():
    assert request_with(Fixed(Plain(404, b""))) == f"AWX job template 'recreate': not found ({WHERE}: HTTP 404)"
    assert request_with(Fixed(Plain(401, b"", status=0))).startswith(f"{WHERE}: HTTP 401: AWX rejected")


def test_auth_errors_say_what_to_do():
    assert request_with(Fixed(Plain(401, b""))) == (
        f"{WHERE}: HTTP 401: AWX rejected the token (expired or wrong?); check dispatcher.token_file / "
        "RUM_POOL_AWX_TOKEN")
    assert request_with(Fixed(Plain(403, b""))) == (
        f"{WHERE}: HTTP 403: the token's user may not do this; give it Execute permission on the job template")


class Unreadable(io.RawIOBase):
    def read(self, *_args):
        raise OSError("connection reset while reading")

    def readinto(self, _buffer):
        raise OSError("connection reset while reading")


def test_an_error_whose_body_cannot_be_read_is_named_by_its_status():
    error = urllib.error.HTTPError(URL, 500, "boom", {}, Unreadable())
    assert request_with(Fixed(error=error)) == f"{WHERE}: HTTP 500"


@pytest.mark.parametrize("status, headers, where", [
    (302, {"Location": "https://sso.example.com/login"}, "https://sso.example.com/login"),
    (300, {"Location": "/a"}, "/a"), (399, {"Location": "/b"}, "/b"),
    (302, {"Server": "nginx"}, ""), (302, {}, ""), (302, None, "")])
def test_a_redirect_names_where_it_points(status, headers, where):
    error = urllib.error.HTTPError(URL, status, "Found", headers, io.BytesIO(b""))
    assert request_with(Fixed(error=error)) == (
        f"{WHERE}: HTTP {status} redirect to {where}; set dispatcher.url to the address the API answers on")


def test_a_long_redirect_target_is_cut_at_200_characters():
    target = "https://sso.example.com/" + "p" * 300
    error = urllib.error.HTTPError(URL, 307, "Moved", {"Location": target}, io.BytesIO(b""))
    assert request_with(Fixed(error=error)) == (
        f"{WHERE}: HTTP 307 redirect to {target[:197]}...; set dispatcher.url to the address the API answers on")


def test_a_connection_that_fails_names_why():
    reason = "Connection refused " + "r" * 300
    assert request_with(Fixed(error=urllib.error.URLError(reason))) == (
        f"{WHERE}: cannot connect: {reason[:197]}...")
    assert request_with(Fixed(error=ConnectionResetError("reset by peer"))) == (
        f"{WHERE}: ConnectionResetError: reset by peer")
    assert request_with(Fixed(error=http.client.RemoteDisconnected("closed " + "c" * 300))) == (
        f"{WHERE}: RemoteDisconnected: closed {'c' * 190}...")


@pytest.mark.parametrize("body", [b"<html>login</html>", b"\xff\xfe"])
def test_an_answer_that_is_not_json_is_an_error(body):
    assert request_with(Fixed(Plain(200, body))) == (
        f"{WHERE}: HTTP 200, but the answer is not JSON (is dispatcher.url the AWX address?)")


# -- the job template ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec, ident", [(12, 12), ("12", 12), (" 13 ", 13)])
def test_a_template_id_needs_no_lookup(spec, ident):
    disp, opener, _clock = make(template=spec)
    assert disp.resolve_template() == ident
    assert opener.requests == []


def test_a_template_name_is_matched_exactly_and_remembered():
    answer = {"results": [{"name": "Recreate", "id": 3}, "junk", {"name": "recreate", "id": 4}]}
    disp, opener, _clock = make({("GET", "/api/v2/job_templates/"): [(200, answer)]}, template="recreate")
    assert disp.resolve_template() == 4
    assert disp.resolve_template() == 4
    assert disp.resolve_template("recreate", "reconcile.job_template") == 4
    assert [query for _m, _p, query, _b in opener.requests] == ["name=recreate"]


@pytest.mark.parametrize("answer", [{"results": []}, {"results": [{"name": "Recreate", "id": 3}]}, [], {}])
def test_a_template_name_nobody_has_is_not_found(answer):
    disp, _opener, _clock = make({("GET", "/api/v2/job_templates/"): [(200, answer)]}, template="recreate")
    with pytest.raises(DispatchError) as info:
        disp.resolve_template()
    assert str(info.value) == (f"AWX job template 'recreate': not found at {URL} (or the token's user "
                               "cannot see it)")


def test_two_templates_of_one_name_name_the_setting_to_change():
    answer = {"results": [{"name": "pool", "id": 3}, {"name": "pool", "id": 8}]}
    disp, _opener, _clock = make({("GET", "/api/v2/job_templates/"): [(200, answer)]}, template=1,
                                 reconcile_job_template="pool")
    result = disp.run(task(kind=RECONCILE), Lines())
    assert result == Result(False, "AWX job template 'pool': 2 templates have this name (ids 3, 8); set "
                                   "reconcile.job_template to the id")


def test_a_reconcile_without_its_template_says_so_and_logs_it():
    disp, opener, _clock = make()
    lines = Lines()
    result = disp.run(task(kind=RECONCILE), lines)
    message = ("reconcile.job_template: not set; the AWX dispatcher cannot reconcile the pool without it")
    assert result == Result(False, message)
    assert lines == [f"slot {SLOT}: {message}"] and opener.requests == []


def test_a_reconcile_launches_its_template_with_an_empty_body():
    disp, opener, _clock = make({("POST", "/api/v2/job_templates/9/launch/"): launched("successful")},
                                reconcile_job_template=9)
    records = Lines()
    assert disp.run(task(kind=RECONCILE, runner=None), Lines(), records).ok
    assert opener.requests[0] == ("POST", "/api/v2/job_templates/9/launch/", "", {})
    assert records[0] == {"kind": "awx", "template": 9, "since": 1000.0}


# -- launching ----------------------------------------------------------------------------------

def test_a_launch_answer_may_name_the_job_as_id():
    disp, _opener, _clock = make({("POST", LAUNCH): [(201, {"id": 100, "status": "successful"})]})
    records = Lines()
    assert disp.run(task(runner=None), Lines(), records) == Result(True, "AWX job 100 successful", ref=REF)
    assert records[-1] == {"kind": "awx", "template": 7, "since": 1000.0, "job_id": 100, "launched": True}


@pytest.mark.parametrize("answer", [{"job": "100"}, {}, [100], {"job": None, "id": 1.5}])
def test_a_launch_answer_without_a_job_id_is_an_error(answer):
    disp, _opener, _clock = make({("POST", LAUNCH): [(201, answer)]})
    lines = Lines()
    records = Lines()
    result = disp.run(task(), lines, records)
    message = "AWX POST /job_templates/7/launch/: the answer names no job id"
    assert result == Result(False, message)
    assert lines == [f"slot {SLOT}: {message}"]
    assert records == [{"kind": "awx", "template": 7, "since": 1000.0}]


@pytest.mark.parametrize("cancel", [[(202, b"")], [(500, b"")]])
def test_variables_that_awx_ignored_cancel_the_job(cancel):
    script = {("POST", LAUNCH): [(201, {"job": 100, "status": "pending",
                                        "ignored_fields": {"extra_vars": {"slot": SLOT}}})],
              ("POST", "/api/v2/jobs/100/cancel/"): cancel}
    disp, opener, _clock = make(script)
    lines = Lines()
    result = disp.run(task(), lines)
    message = ("job template 7 does not prompt for variables on launch; enable 'Prompt on launch' for "
               "Variables (AWX job 100 was started without slot and cancelled)")
    assert result == Result(False, message, ref=REF)
    assert lines == [f"slot {SLOT}: {message}"]
    assert opener.paths() == [("POST", LAUNCH), ("POST", "/api/v2/jobs/100/cancel/")]


def test_other_ignored_fields_do_not_stop_the_job():
    script = {("POST", LAUNCH): [(201, {"job": 100, "status": "successful",
                                        "ignored_fields": {"limit": "x"}})]}
    disp, _opener, _clock = make(script)
    lines = Lines()
    assert disp.run(task(), lines).ok
    assert lines == [f"slot {SLOT}: AWX job 100 launched from job template 7: {REF}",
                     f"slot {SLOT}: AWX job 100 successful"]


def test_a_recorded_job_is_followed_and_a_handle_of_another_kind_is_not():
    disp, opener, _clock = make({("GET", "/api/v2/jobs/55/"): [(200, {"status": "successful"})]})
    lines = Lines()
    handle = {"kind": "awx", "template": 7, "since": 990.0, "job_id": 55, "launched": True}
    assert disp.run(task(handle=handle), lines).message == "AWX job 55 successful"
    assert lines == [f"slot {SLOT}: following AWX job 55, launched before the restart",
                     f"slot {SLOT}: AWX job 55 successful"]
    assert opener.paths() == [("GET", "/api/v2/jobs/55/")]
    disp, opener, _clock = make({("POST", LAUNCH): launched("successful")})
    other = {"kind": "ansible-runner", "ident": "1-1", "job_id": 55}
    assert disp.run(task(handle=other), Lines()).message == "AWX job 100 successful"
    assert opener.paths() == [("POST", LAUNCH), ("GET", JOB)]


def test_a_handle_without_a_start_searches_from_the_epoch():
    disp, opener, _clock = make({("GET", "/api/v2/job_templates/7/jobs/"): [(200, {"results": []})],
                                 ("POST", LAUNCH): launched("successful")})
    disp.run(task(handle={"kind": "awx", "template": 7}), Lines(), Lines())
    assert urllib.parse.parse_qs(opener.requests[0][2])["created__gte"] == ["1969-12-31T23:55:00Z"]


def test_refs_of_other_runs_or_malformed_ones_do_not_hide_a_job():
    jobs = {"results": [{"id": 101}]}
    result, _opener, _records, _lines = resume(jobs, {101: ours()},
                                               launches=("ansible-runner:101", "awx:7:8", "awx:x"))
    assert result.message == "AWX job 101 successful"


def test_a_found_job_keeps_the_deadline_of_the_recorded_start():
    script = {("GET", "/api/v2/job_templates/7/jobs/"): [(200, {"results": [{"id": 101}]})],
              ("GET", "/api/v2/jobs/101/"): [(200, {"status": "running", "extra_vars": ours()})]}
    disp, _opener, clock = make(script, clock=Clock(1000.0))
    handle = {"kind": "awx", "template": 7, "since": 950.0}
    result = disp.run(task(handle=handle), Lines(), Lines())
    assert result.message == "AWX job 101 timed out after 60 s (last status running); cancel requested"
    assert clock.sleeps == [5, 5]


class Ticking(Clock):
    """A clock that moves 10 s each time it is read (and not at all in sleep)."""

    def __call__(self):
        self.now += 10
        return self.now - 10

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        assert len(self.sleeps) < 1000, "still polling after 1000 sleeps"


def test_a_launched_job_counts_its_deadline_from_before_the_launch():
    disp, _opener, clock = make({("POST", LAUNCH): launched("running"), ("GET", JOB): [(200, {"status": "running"})]},
                                clock=Ticking(1000.0), timeout=15)
    assert disp.run(task(), Lines()).message.startswith("AWX job 100 timed out after 15 s")
    assert clock.sleeps == [5]


def test_a_time_out_without_any_status_says_unknown():
    disp, _opener, _clock = make({("POST", LAUNCH): [(201, {"job": 100})], ("GET", JOB): [(200, {})]}, timeout=5)
    assert disp.run(task(), Lines()).message == ("AWX job 100 timed out after 5 s (last status unknown); "
                                                 "cancel requested")


def test_a_skipped_outcome_without_a_reason_says_why_in_general():
    job = {"status": "successful", "artifacts": {"rum_pool_outcome": {SLOT: {"outcome": "skipped"}}}}
    disp, _opener, _clock = make({("POST", LAUNCH): launched(), ("GET", JOB): [(200, job)]})
    assert disp.run(task(), Lines()) == Result(True, "AWX job 100 successful: skipped: the slot no longer holds "
                                                     "this runner", ref=REF, outcome="skipped")


def test_a_long_launch_error_is_cut_at_400_characters():
    script = {("POST", LONG + "/job_templates/7/launch/"): [(500, b"")]}
    disp, _opener, _clock = make(script, url=LONG_API)
    lines = Lines()
    result = disp.run(task(), lines)
    assert result.message == f"AWX POST {LONG}/job_templates/7/launch/: HTTP 500"[:397] + "..."
    assert lines == [f"slot {SLOT}: {result.message}"]


class Polled:
    """Launches job 100, then answers every poll of it with ``answer`` (or raises ``error``)."""

    def __init__(self, answer=None, error=None):
        self.answer = answer
        self.error = error
        self.polls = 0

    def open(self, request, timeout=None):
        if request.get_method() == "POST":
            return Answer(201, json.dumps({"job": 100, "status": "pending"}).encode())
        self.polls += 1
        if self.error is not None:
            raise self.error
        return self.answer


POLL_ENDINGS = [
    (Plain(401, b""), f"AWX GET {JOB}: HTTP 401: AWX rejected the token (expired or wrong?); check "
     "dispatcher.token_file / RUM_POOL_AWX_TOKEN"),
    (Plain(403, b""), f"AWX GET {JOB}: HTTP 403: the token's user may not do this; give it Execute "
     "permission on the job template"),
    (Plain(200, b"<html>"), f"AWX GET {JOB}: HTTP 200, but the answer is not JSON (is dispatcher.url the "
     "AWX address?)"),
]


@pytest.mark.parametrize("answer, message", POLL_ENDINGS)
def test_an_answer_that_cannot_get_better_ends_the_polling(answer, message):
    opener = Polled(answer)
    clock = Clock()
    disp = AwxDispatcher(URL, TOKEN, 7, opener=opener, clock=clock, sleep=clock.sleep, timeout=60)
    assert disp.run(task(), Lines()) == Result(False, message, ref=REF)
    assert opener.polls == 1


def test_a_redirect_while_polling_ends_it():
    error = urllib.error.HTTPError(URL, 302, "Found", {"Location": "/login"}, io.BytesIO(b""))
    opener = Polled(error=error)
    clock = Clock()
    disp = AwxDispatcher(URL, TOKEN, 7, opener=opener, clock=clock, sleep=clock.sleep, timeout=60)
    result = disp.run(task(), Lines())
    assert result.message == (f"AWX GET {JOB}: HTTP 302 redirect to /login; set dispatcher.url to the address "
                              "the API answers on")
    assert opener.polls == 1
