# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GitHub client's exact words and values: error messages and statuses, defaults, the
transport over Ansible's open_url, what a rate limit records. A user reads these messages in a
failed task; a slip in one of them is a regression too (`make mutate` found them untested)."""

from __future__ import annotations

import json
import socket
import ssl
from urllib.error import HTTPError, URLError

import pytest

from test_github import Clock, Script

from ansible_collections.rum.pool.plugins.module_utils import _github as gh


def client(script, auth=None, **policy):
    clock = Clock()
    policy.setdefault("rng", lambda: 1.0)
    return gh.GitHubClient("https://api.github.test/", auth=auth or gh.TokenAuth("ghp_x"), transport=script,
                           policy=gh.RetryPolicy(**policy), clock=clock, sleep=clock.sleep)


ORG = gh.Scope("organization", "acme")


# ---------------------------------------------------------------- small parts
def test_defaults():
    policy = gh.RetryPolicy()
    assert (policy.max_wait, policy.max_retries, policy.backoff_base, policy.backoff_cap,
            policy.secondary_min_wait, policy.secondary_cap) == (300.0, 5, 1.0, 60.0, 60.0, 900.0)
    c = gh.GitHubClient(api_url="", transport=Script())
    assert c.api_url == gh.DEFAULT_API_URL and c.timeout == 30.0 and c.user_agent == gh.USER_AGENT
    assert gh.GitHubClient("https://x.test///", transport=Script()).api_url == "https://x.test"
    assert gh.GitHubClient("/api/v3/", transport=Script()).api_url == "/api/v3"
    assert gh.TransportError("m").sent is True
    response = gh.Response(200)
    assert (response.headers, response.body, response.after_ambiguous) == ({}, b"", False)
    assert gh.Response(200, None, None).body == b""
    assert gh.Stats().as_dict() == {"requests": 0, "retries": 0, "waited_seconds": 0.0, "rate_limit": {}}
    transport = gh.OpenUrlTransport()
    assert (transport.validate_certs, transport.ca_path) == (True, None)


def test_stats_round_waits_to_milliseconds():
    stats = gh.Stats()
    stats.waited = 1.23456
    assert stats.as_dict()["waited_seconds"] == 1.235


def test_an_empty_token_is_refused_by_name():
    with pytest.raises(ValueError) as info:
        gh.TokenAuth("")
    assert str(info.value) == "an empty token was given"


def test_response_json_reads_utf8_and_survives_garbage():
    assert gh.Response(200, {}, "{\"m\": \"caf\u00e9\"}".encode("utf-8")).json() == {"m": "caf\u00e9"}
    assert gh.Response(200, {}, b"\xff\xfe").json() is None
    assert gh.Response(200, {}, b"").json() is None
    assert gh.Response(502, {}, b"  <html>bad gateway</html>  ").message == "<html>bad gateway</html>"
    assert gh.Response(502, {}, b"").message == "(empty body)"
    assert gh.Response(422, {}, b'{"message": "Invalid", "errors": [{"message": "a"}, "b", {"code": "c"}]}'
                       ).message == "Invalid (a; b; {'code': 'c'})"


@pytest.mark.parametrize("exc, never", [
    (URLError(ConnectionRefusedError(111, "refused")), True),
    (URLError(socket.gaierror(-2, "no such host")), True),
    (URLError(ssl.SSLError(1, "handshake")), True),
    (ConnectionRefusedError(111, "refused"), True),
    (URLError(socket.timeout("timed out")), False),
    (ConnectionResetError(104, "reset"), False),
])
def test_never_sent_tells_refused_from_maybe_done(exc, never):
    assert gh._never_sent(exc) is never  # pylint: disable=protected-access


def test_retry_after_is_never_negative_and_zero_stays_zero():
    assert gh._retry_after_seconds("0", 0.0) == 0.0  # pylint: disable=protected-access
    assert gh._retry_after_seconds("-3", 0.0) == 0.0  # pylint: disable=protected-access
    assert gh._retry_after_seconds("Thu, 01 Jan 1970 00:00:01 GMT", 1.5) == 0.0  # pylint: disable=protected-access
    assert gh._retry_after_seconds("Thu, 01 Jan 1970 00:00:01 GMT", 0.5) == 0.5  # pylint: disable=protected-access
    assert gh._retry_after_seconds(None, 0.0) is None  # pylint: disable=protected-access
    assert gh._retry_after_seconds("tomorrow", 0.0) is None  # pylint: disable=protected-access


def test_link_header_skips_a_bad_part_and_reads_the_rest():
    links = gh.parse_link_header('garbage, <https://x/2>; rel="next", <https://x/9>; rel="last"')
    assert links == {"next": "https://x/2", "last": "https://x/9"}
    assert gh.parse_link_header('<https://x/1>; rel="prev first"') == {"prev": "https://x/1", "first": "https://x/1"}


def test_strip_query_keeps_scheme_host_and_path():
    assert gh._strip_query("https://h:8/a/b?token=s#f") == "https://h:8/a/b"  # pylint: disable=protected-access


def test_url_joins_paths_and_keeps_absolute_urls():
    c = client(Script())
    assert c.url("/x") == "https://api.github.test/x"
    assert c.url("x/y") == "https://api.github.test/x/y"
    assert c.url("http://other/z") == "http://other/z" and c.url("https://o/z") == "https://o/z"


def test_scopes_compare_and_hash_by_kind_and_name():
    assert gh.Scope("organization", "acme") == ORG and ORG != gh.Scope("enterprise", "acme")
    assert ORG != "organization:acme"
    assert len({ORG, gh.Scope("organization", "acme"), gh.Scope("organization", "other")}) == 2
    assert repr(ORG) == "Scope('organization', 'acme')"
    assert gh.Scope("organization", " /acme/ ").name == "acme"


@pytest.mark.parametrize("kind, name, message", [
    ("team", "x", "unknown scope kind 'team'"),
    ("organization", "", "organization name must be a single path segment, got ''"),
    ("organization", None, "organization name must be a single path segment, got ''"),
    ("enterprise", "a/b", "enterprise name must be a single path segment, got 'a/b'"),
])
def test_scope_errors_say_what_was_wrong(kind, name, message):
    with pytest.raises(ValueError) as info:
        gh.Scope(kind, name)
    assert str(info.value) == message


def test_scope_needs_exactly_one_message():
    with pytest.raises(ValueError) as info:
        gh.Scope.from_options()
    assert str(info.value) == "exactly one of repository, organization or enterprise is required"


def test_web_url_of_a_host_that_only_looks_like_ghe():
    assert ORG.web_url("https://api.example.com") == "https://api.example.com/acme"
    assert ORG.web_url("https://my.ghe.com") == "https://my.ghe.com/acme"
    assert ORG.web_url("https://h/api/v3/") == "https://h/acme"


# ---------------------------------------------------------------- policy reasons
def test_decision_reasons():
    policy = gh.RetryPolicy(rng=lambda: 0.0)
    assert policy.decide(None, 0, 0.0).reason == "no response from GitHub"
    assert policy.decide(gh.Response(502), 0, 0.0).reason == "HTTP 502 server error"
    assert policy.decide(gh.Response(503, {"Retry-After": "2"}), 0, 0.0).reason == "HTTP 503 server error, Retry-After 2s"
    secondary = policy.decide(gh.Response(429), 0, 0.0)
    assert (secondary.reason, secondary.rate_limited) == ("HTTP 429 secondary rate limit", True)
    primary = policy.decide(gh.Response(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "10"}), 0, 0.0)
    assert primary.reason == "HTTP 403 rate limit for 'core' exhausted until reset" and primary.rate_limited
    limited = policy.decide(gh.Response(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "10",
                                              "x-ratelimit-resource": "search"}), 0, 0.0)
    assert "rate limit for 'search'" in limited.reason
    assert repr(gh.Decision(1.5, "why", False)) == "Decision(1.50, 'why', rate_limited=False)"


def test_a_reset_already_past_waits_one_second():
    decision = gh.RetryPolicy().decide(gh.Response(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "5"}),
                                       0, 100.0)
    assert decision.delay == 1.0


def test_remaining_zero_without_a_reset_is_a_secondary_limit():
    decision = gh.RetryPolicy(rng=lambda: 0.0).decide(gh.Response(403, {"x-ratelimit-remaining": "0"}), 0, 0.0)
    assert (decision.delay, decision.reason) == (60.0, "HTTP 403 secondary rate limit")


@pytest.mark.parametrize("headers, body, limited", [
    ({"x-ratelimit-remaining": "0"}, b"", True),
    ({"x-ratelimit-remaining": "1"}, b"", False),
    ({"retry-after": "3"}, b"", True),
    ({}, b'{"message": "You have exceeded a secondary Rate Limit"}', True),
    ({}, b'{"message": "Resource not accessible"}', False),
])
def test_which_403_is_a_rate_limit(headers, body, limited):
    assert gh.RetryPolicy.is_rate_limited(gh.Response(403, headers, body)) is limited
    assert gh.RetryPolicy.is_rate_limited(gh.Response(404, headers, body)) is False


# ---------------------------------------------------------------- the request loop's words
def test_a_post_that_may_have_been_done_is_not_repeated():
    script = Script((502, {}, {"message": "Server Error"}))
    with pytest.raises(gh.GitHubAmbiguous) as info:
        client(script).request("POST", "/orgs/acme/actions/runners/generate-jitconfig", body={"n": 1},
                               expected=(201,), what="create a JIT runner", scope=ORG)
    assert str(info.value) == ("create a JIT runner for organization 'acme': no usable answer from GitHub "
                               "(HTTP 502 Server Error); the call may have been done, so it is not repeated")
    assert info.value.status == 502 and len(script.requests) == 1
    script = Script(gh.TransportError("POST https://api.github.test/x: timed out"))
    with pytest.raises(gh.GitHubAmbiguous) as info:
        client(script).request("POST", "/x", body={})
    assert str(info.value) == ("POST /x: no usable answer from GitHub (POST https://api.github.test/x: timed out); "
                               "the call may have been done, so it is not repeated")
    assert info.value.status is None


def test_a_post_that_never_left_is_retried():
    script = Script(gh.TransportError("refused", sent=False), (201, {}, {"ok": 1}))
    resp = client(script).request("POST", "/x", body={"a": 1}, expected=(201,))
    assert resp.json() == {"ok": 1} and resp.after_ambiguous is False
    assert [r["body"] for r in script.requests] == [b'{"a": 1}'] * 2


def test_a_repeatable_call_after_an_ambiguous_failure_says_so():
    script = Script((500, {}, {}), (404, {}, {"message": "Not Found"}))
    resp = client(script).request("DELETE", "/x", expected=(204,), allow=(404,))
    assert resp.status == 404 and resp.after_ambiguous is True
    fresh = client(Script((404, {}, {}))).request("DELETE", "/x", expected=(204,), allow=(404,))
    assert fresh.after_ambiguous is False


def test_giving_up_names_the_attempts_and_the_last_answer():
    script = Script(*[gh.TransportError("GET https://api.github.test/x: reset")] * 3)
    with pytest.raises(gh.GitHubGaveUp) as info:
        client(script, max_retries=2).request("GET", "/x", what="list runners", scope=ORG)
    assert str(info.value) == ("list runners for organization 'acme': gave up after 3 attempts and 3s of waiting "
                               "(max_retries=2); last: no response from GitHub "
                               "(GET https://api.github.test/x: reset)")
    assert info.value.status is None and info.value.github_message is None
    script = Script(*[(503, {}, {"message": "busy"})] * 2)
    with pytest.raises(gh.GitHubGaveUp) as info:
        client(script, max_retries=1).request("GET", "/x")
    assert str(info.value) == ("GET /x: gave up after 2 attempts and 1s of waiting (max_retries=1); "
                               "last: HTTP 503 server error")
    assert (info.value.status, info.value.github_message) == (503, "busy")


def test_max_wait_is_reached_exactly_not_passed():
    script = Script((503, {"Retry-After": "5"}, {}), (503, {"Retry-After": "5"}, {}), (200, {}, {}))
    c = client(script, max_wait=10)
    assert c.request("GET", "/x").status == 200  # 5 + 5 = 10 is allowed
    script = Script((429, {"Retry-After": "7"}, {"message": "slow"}), (200, {}, {}))
    with pytest.raises(gh.GitHubGaveUp) as info:
        client(script, max_wait=6).request("GET", "/x")
    assert str(info.value) == ("GET /x: gave up: waiting 7s more would exceed max_wait=6s (already waited 0s "
                               "over 1 attempts); last: HTTP 429 rate limited, Retry-After 7s")
    assert (info.value.status, info.value.github_message) == (429, "slow")
    script = Script(gh.TransportError("t"))
    with pytest.raises(gh.GitHubGaveUp) as info:
        client(script, max_wait=0.5).request("GET", "/x")
    assert info.value.status is None and info.value.github_message is None


def test_request_headers_body_and_timeout():
    script = Script((201, {}, {}))
    c = client(script)
    c.timeout = 12.5
    c.request("POST", "/x", body={"name": "caf\u00e9"}, expected=(201,))
    sent = script.requests[0]
    assert sent["body"] == json.dumps({"name": "caf\u00e9"}).encode("utf-8") and sent["timeout"] == 12.5
    assert sent["headers"] == {"Accept": gh.MEDIA_TYPE, "X-GitHub-Api-Version": gh.API_VERSION,
                               "User-Agent": gh.USER_AGENT, "Authorization": "Bearer ghp_x",
                               "Content-Type": "application/json"}
    anonymous = Script((200, {}, {}))
    gh.GitHubClient("https://h", transport=anonymous).get_json("/x")
    assert "Authorization" not in anonymous.requests[0]["headers"]
    assert "Content-Type" not in anonymous.requests[0]["headers"] and anonymous.requests[0]["body"] is None


def test_get_json_returns_the_body():
    script = Script((200, {}, {"a": 1}))
    assert client(script).get_json("/y", what="w") == {"a": 1}
    assert script.requests[0]["method"] == "GET" and script.requests[0]["url"] == "https://api.github.test/y"


def test_rate_limit_headers_are_recorded():
    headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999", "x-ratelimit-used": "1",
               "x-ratelimit-reset": "1700000000", "x-ratelimit-resource": "core"}
    c = client(Script((200, headers, {})))
    c.request("GET", "/x")
    assert c.stats.rate_limit == {"limit": "5000", "remaining": "4999", "used": "1", "reset": "1700000000",
                                  "resource": "core"}


@pytest.mark.parametrize("status, cls", [
    (401, gh.GitHubAuthError), (403, gh.GitHubAuthError), (404, gh.GitHubNotFound), (409, gh.GitHubConflict),
    (422, gh.GitHubValidationError), (418, gh.GitHubError),
])
def test_every_error_keeps_the_status_and_githubs_message(status, cls):
    script = Script((status, {}, {"message": "Nope"}))
    with pytest.raises(cls) as info:
        client(script).request("GET", "/x")
    assert type(info.value) is cls  # pylint: disable=unidiomatic-typecheck
    assert (info.value.status, info.value.github_message) == (status, "Nope")
    assert info.value.message == str(info.value)


def test_error_messages_without_a_scope_or_a_credential_kind():
    c = gh.GitHubClient("https://h", auth=None, transport=Script())
    assert str(c.error_for(gh.Response(401, {}, b'{"message": "Bad credentials"}'), "list")) == (
        "list: HTTP 401 Bad credentials - the credentials were rejected")
    assert str(c.error_for(gh.Response(403, {}, b'{"message": "Forbidden"}'), "list")) == "list: HTTP 403 Forbidden"
    assert str(c.error_for(gh.Response(418, {}, b"{}"), "brew")) == "brew: HTTP 418 {}"
    app = gh.GitHubClient("https://h", auth=type("A", (), {"kind": "GitHub App"})(), transport=Script())
    assert str(app.error_for(gh.Response(401, {}, b'{"message": "Bad"}'), "list", ORG)) == (
        "list for organization 'acme': HTTP 401 Bad - the credentials (GitHub App) were rejected")
    assert str(app.error_for(gh.Response(403, {}, b'{"message": "No"}'), "list", gh.Scope("enterprise", "e"))) == (
        "list for enterprise 'e': HTTP 403 No - " + gh.PERMISSION_HINTS["enterprise"])
    assert str(app.error_for(gh.Response(409, {}, b'{"message": "Exists"}'), "make")) == "make: HTTP 409 Exists"
    assert str(app.error_for(gh.Response(404, {}, b'{"message": "Not Found"}'), "get")) == (
        "get: HTTP 404 Not Found - it does not exist or the credentials cannot see it")


def test_pagination_errors_say_which_call():
    script = Script((200, {}, {"total_count": 0}))
    with pytest.raises(gh.GitHubError) as info:
        client(script).paginate("/orgs/acme/actions/runners", "runners")
    assert str(info.value) == "GET /orgs/acme/actions/runners: unexpected response without 'runners'"
    assert info.value.status == 200
    script = Script((200, {}, ["not", "a", "dict"]))
    with pytest.raises(gh.GitHubError, match="^list runners: unexpected response without 'runners'$"):
        client(script).paginate("/x", "runners", what="list runners")
    same = "https://api.github.test/x?per_page=100"
    script = Script((200, {"Link": f'<{same}>; rel="next"'}, {"runners": []}))
    with pytest.raises(gh.GitHubError) as info:
        client(script).paginate("/x", "runners")
    assert str(info.value) == "/x: pagination loops back to https://api.github.test/x"
    script = Script((200, {}, {"runners": [1]}))
    client(script).paginate("/x", "runners", what="list them", scope=ORG)
    script = Script((500, {}, {}), (500, {}, {}))
    with pytest.raises(gh.GitHubGaveUp, match="^list them for organization 'acme': gave up"):
        client(script, max_retries=1).paginate("/x", "runners", what="list them", scope=ORG)
    script = Script((500, {}, {}), (500, {}, {}))
    with pytest.raises(gh.GitHubGaveUp, match="^GET /x: gave up"):
        client(script, max_retries=1).paginate("/x", "runners")


# ---------------------------------------------------------------- the default transport
class FakeOpenUrl:
    """Stands in for ansible's urls.Request (its open) and urls.make_context (counted)."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.calls = []
        self.contexts = []

    def request(self):
        fake = self

        class Request:  # pylint: disable=too-few-public-methods
            def open(self, method, url, **kwargs):
                fake.calls.append(dict(kwargs, method=method, url=url))
                if isinstance(fake.outcome, BaseException):
                    raise fake.outcome
                return fake.outcome
        return Request

    def make_context(self, **kwargs):
        self.contexts.append(kwargs)
        return f"context {len(self.contexts)}"


class Answer:
    def __init__(self, code, headers, body):
        self.code, self.headers, self.body = code, headers, body

    def getcode(self):
        return self.code

    def read(self):
        return self.body


@pytest.fixture
def open_url(monkeypatch):
    from ansible.module_utils import urls  # pylint: disable=import-outside-toplevel

    def install(outcome):
        fake = FakeOpenUrl(outcome)
        monkeypatch.setattr(urls, "Request", fake.request())
        monkeypatch.setattr(urls, "make_context", fake.make_context)
        return fake
    return install


def test_open_url_transport_passes_everything_through(open_url):
    from email.message import Message  # pylint: disable=import-outside-toplevel
    headers = Message()
    headers["X-RateLimit-Remaining"] = "7"
    fake = open_url(Answer(201, headers, b'{"ok": true}'))
    transport = gh.OpenUrlTransport(validate_certs=False, ca_path="/ca.pem")
    resp = transport("POST", "https://h/x?q=1", {"A": "b"}, b"{}", 9.0)
    assert (resp.status, resp.headers, resp.json()) == (201, {"x-ratelimit-remaining": "7"}, {"ok": True})
    assert fake.calls == [{"url": "https://h/x?q=1", "data": b"{}", "headers": {"A": "b"}, "method": "POST",
                           "timeout": 9.0, "validate_certs": False, "ca_path": "/ca.pem",
                           "follow_redirects": "safe", "use_netrc": False, "use_proxy": True,
                           "context": "context 1"}]
    assert fake.contexts == [{"cafile": "/ca.pem", "validate_certs": False}]


def test_open_url_transport_makes_one_tls_context_for_all_its_requests(open_url):
    from email.message import Message  # pylint: disable=import-outside-toplevel
    fake = open_url(Answer(200, Message(), b"{}"))
    transport = gh.OpenUrlTransport()
    for _attempt in range(3):
        transport("GET", "https://h/x", {}, None, 1.0)
    assert [call["context"] for call in fake.calls] == ["context 1"] * 3
    assert fake.contexts == [{"cafile": None, "validate_certs": True}]
    gh.OpenUrlTransport()("GET", "https://h/x", {}, None, 1.0)
    assert len(fake.contexts) == 2, "each transport has its own"


def test_open_url_transport_context_is_a_real_one_that_verifies():
    context = gh.OpenUrlTransport().context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0, "the system's CA certificates are loaded"
    relaxed = gh.OpenUrlTransport(validate_certs=False).context()
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname


def test_open_url_transport_turns_http_errors_into_responses(open_url):
    from email.message import Message  # pylint: disable=import-outside-toplevel
    headers = Message()
    headers["Retry-After"] = "3"
    open_url(HTTPError("https://h/x", 503, "busy", headers, __import__("io").BytesIO(b'{"message": "m"}')))
    resp = gh.OpenUrlTransport()("GET", "https://h/x", {}, None, 1.0)
    assert (resp.status, resp.headers, resp.json()) == (503, {"retry-after": "3"}, {"message": "m"})

    class Unreadable(HTTPError):
        def read(self, *args):
            raise OSError("gone")

    open_url(Unreadable("https://h/x", 502, "bad", None, None))
    resp = gh.OpenUrlTransport()("GET", "https://h/x", {}, None, 1.0)
    assert (resp.status, resp.headers, resp.body) == (502, {}, b"")


@pytest.mark.parametrize("exc, text, sent", [
    (URLError(ConnectionRefusedError(111, "Connection refused")), "[Errno 111] Connection refused", False),
    (URLError("no route"), "no route", True),
    (socket.timeout("timed out"), "timed out", True),
])
def test_open_url_transport_failures_say_what_and_whether_sent(open_url, exc, text, sent):
    open_url(exc)
    with pytest.raises(gh.TransportError) as info:
        gh.OpenUrlTransport()("GET", "https://h/x?token=secret", {}, None, 1.0)
    assert str(info.value) == f"GET https://h/x: {text}"
    assert info.value.sent is sent and "secret" not in str(info.value)
