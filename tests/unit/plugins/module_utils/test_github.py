"""The GitHub client without a network: headers, retry decisions, bounds, errors, pagination."""

from __future__ import annotations

import json

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _github as gh


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """A transport answering from a list of (status, headers, body) and recording the requests."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[dict] = []

    def __call__(self, method, url, headers, body, timeout):
        self.requests.append({"method": method, "url": url, "headers": dict(headers), "body": body,
                              "timeout": timeout})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers_out, data = answer
        raw = data if isinstance(data, bytes) else json.dumps(data).encode() if data is not None else b""
        return gh.Response(status, headers_out, raw)


def client(script, clock=None, **policy):
    clock = clock or Clock()
    policy.setdefault("rng", lambda: 1.0)
    return gh.GitHubClient("https://api.github.test", auth=gh.TokenAuth("ghp_secret"), transport=script,
                           policy=gh.RetryPolicy(**policy), clock=clock, sleep=clock.sleep)


ORG = gh.Scope("organization", "acme")


# ---------------------------------------------------------------- scopes and small parsers
def test_scope_paths_and_words():
    assert gh.Scope("repository", "o/r").path == "/repos/o/r"
    assert ORG.path == "/orgs/acme"
    assert gh.Scope("enterprise", "ent").path == "/enterprises/ent"
    assert gh.Scope.from_options(repository="o/r").describe() == "repository 'o/r'"


@pytest.mark.parametrize("api_url,scope,web", [
    ("https://api.github.com", gh.Scope("repository", "acme/app"), "https://github.com/acme/app"),
    ("https://api.github.com/", ORG, "https://github.com/acme"),
    ("https://api.github.com", gh.Scope("enterprise", "big"), "https://github.com/enterprises/big"),
    ("https://ghes.example.com/api/v3", ORG, "https://ghes.example.com/acme"),
    ("https://api.octo.ghe.com", gh.Scope("repository", "o/r"), "https://octo.ghe.com/o/r"),
    ("http://192.168.122.1:18080", gh.Scope("repository", "o/r"), "http://192.168.122.1:18080/o/r"),
])
def test_scope_web_url_is_what_config_sh_takes(api_url, scope, web):
    assert scope.web_url(api_url) == web


@pytest.mark.parametrize("kwargs", [{}, {"repository": "o/r", "organization": "x"}])
def test_scope_needs_exactly_one(kwargs):
    with pytest.raises(ValueError, match="exactly one"):
        gh.Scope.from_options(**kwargs)


@pytest.mark.parametrize("name", ["justowner", "a/b/c", "/r"])
def test_scope_rejects_bad_repository(name):
    with pytest.raises(ValueError, match="owner/repo"):
        gh.Scope("repository", name)


def test_parse_link_header_keeps_urls_verbatim():
    value = ('<https://api.github.test/orgs/acme/actions/runners?per_page=100&page=2>; rel="next", '
             '<https://api.github.test/orgs/acme/actions/runners?per_page=100&page=5>; rel="last"')
    links = gh.parse_link_header(value)
    assert links["next"].endswith("per_page=100&page=2")
    assert links["last"].endswith("page=5")
    assert gh.parse_link_header(None) == {}


# ---------------------------------------------------------------- request conventions
def test_request_sends_github_headers_and_bearer_token():
    script = Script((200, {}, {"ok": True}))
    client(script).request("GET", "/orgs/acme/actions/runners")
    sent = script.requests[0]
    assert sent["url"] == "https://api.github.test/orgs/acme/actions/runners"
    assert sent["headers"]["Accept"] == "application/vnd.github+json"
    assert sent["headers"]["X-GitHub-Api-Version"] == "2022-11-28"
    assert sent["headers"]["User-Agent"]
    assert sent["headers"]["Authorization"] == "Bearer ghp_secret"
    assert "Content-Type" not in sent["headers"]


def test_request_body_is_json():
    script = Script((201, {}, {"token": "x"}))
    client(script).request("POST", "/x", body={"name": "r"}, expected=(201,))
    assert json.loads(script.requests[0]["body"]) == {"name": "r"}
    assert script.requests[0]["headers"]["Content-Type"] == "application/json"


# ---------------------------------------------------------------- retry decisions
def decide(status, headers=None, body=None, attempt=0, now=1000.0, **policy):
    policy.setdefault("rng", lambda: 1.0)
    raw = json.dumps(body).encode() if body is not None else b""
    return gh.RetryPolicy(**policy).decide(gh.Response(status, headers or {}, raw), attempt, now)


def test_retry_after_on_429_is_honoured():
    d = decide(429, {"Retry-After": "7"})
    assert d.delay == 7 and d.rate_limited


def test_retry_after_on_403_secondary_is_honoured():
    d = decide(403, {"retry-after": "3"}, {"message": "You have exceeded a secondary rate limit."})
    assert d.delay == 3 and d.rate_limited


def test_retry_after_as_http_date():
    d = decide(429, {"Retry-After": "Thu, 01 Jan 1970 00:16:50 GMT"}, now=1000.0)
    assert d.delay == pytest.approx(10.0)


def test_remaining_zero_waits_until_reset():
    d = decide(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030",
                     "x-ratelimit-resource": "core"}, {"message": "API rate limit exceeded"}, now=1000.0)
    assert d.delay == pytest.approx(31.0)
    assert "core" in d.reason


def test_secondary_without_retry_after_waits_at_least_a_minute_then_backs_off():
    body = {"message": "You have exceeded a secondary rate limit"}
    no_jitter = {"rng": lambda: 0.0}
    assert decide(403, {}, body, attempt=0, **no_jitter).delay == 60
    assert decide(403, {}, body, attempt=1, **no_jitter).delay == 120
    assert decide(403, {}, body, attempt=9, **no_jitter).delay == 900  # capped
    assert decide(403, {}, body, attempt=0).delay == pytest.approx(66.0)  # full jitter: +10 %
    assert decide(429, {}, {"message": "Too Many Requests"}, attempt=0, **no_jitter).delay == 60


def test_backoff_has_jitter_between_half_and_full():
    low = gh.RetryPolicy(rng=lambda: 0.0).backoff(3)
    high = gh.RetryPolicy(rng=lambda: 1.0).backoff(3)
    assert (low, high) == (4.0, 8.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_back_off_exponentially(status):
    assert decide(status, attempt=0).delay == 1.0
    assert decide(status, attempt=2).delay == 4.0
    assert not decide(status).rate_limited


@pytest.mark.parametrize("status,body", [
    (403, {"message": "Resource not accessible by integration"}),
    (401, {"message": "Bad credentials"}),
    (404, {"message": "Not Found"}),
    (409, {"message": "Already exists"}),
    (422, {"message": "Validation Failed"}),
])
def test_permanent_errors_are_not_retried(status, body):
    assert decide(status, {}, body) is None


# ---------------------------------------------------------------- the retry loop
def test_client_waits_as_told_then_succeeds():
    clock = Clock()
    script = Script((429, {"Retry-After": "2"}, {"message": "slow down"}),
                    (403, {"Retry-After": "1"}, {"message": "You have exceeded a secondary rate limit"}),
                    (200, {"x-ratelimit-remaining": "4990"}, {"ok": 1}))
    c = client(script, clock)
    resp = c.request("GET", "/x")
    assert resp.json() == {"ok": 1}
    assert clock.sleeps == [2.0, 1.0]
    assert c.stats.as_dict()["retries"] == 2
    assert c.stats.rate_limit["remaining"] == "4990"


def test_client_gives_up_when_max_wait_would_be_passed():
    clock = Clock()
    script = Script(*[(429, {"Retry-After": "4"}, {"message": "slow down"})] * 5)
    with pytest.raises(gh.GitHubGaveUp) as info:
        client(script, clock, max_wait=10).request("GET", "/x", what="list runners", scope=ORG)
    assert clock.sleeps == [4.0, 4.0]  # a third wait would make 12 s > 10 s
    assert "max_wait=10" in str(info.value) and "HTTP 429" in str(info.value)
    assert info.value.status == 429


def test_client_does_not_wait_for_a_reset_beyond_the_bound():
    clock = Clock(1000.0)
    script = Script((403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "4600"},
                     {"message": "API rate limit exceeded for user ID 1."}))
    with pytest.raises(gh.GitHubGaveUp, match="exhausted until reset"):
        client(script, clock, max_wait=300).request("GET", "/x")
    assert clock.sleeps == []


def test_server_errors_are_retried_max_retries_times():
    clock = Clock()
    script = Script(*[(502, {}, b"<html>bad gateway</html>")] * 4)
    with pytest.raises(gh.GitHubGaveUp, match="max_retries=2") as info:
        client(script, clock, max_retries=2).request("GET", "/x")
    assert len(script.requests) == 3
    assert "bad gateway" in info.value.github_message


def test_transport_errors_are_retried_then_reported():
    clock = Clock()
    script = Script(gh.TransportError("GET https://x/: connection refused"), (200, {}, {"ok": True}))
    assert client(script, clock).request("GET", "/x").json() == {"ok": True}
    script = Script(*[gh.TransportError("GET https://x/: connection refused")] * 3)
    with pytest.raises(gh.GitHubGaveUp, match="connection refused"):
        client(script, clock, max_retries=2).request("GET", "/x")


@pytest.mark.parametrize("status,cls,words", [
    (401, gh.GitHubAuthError, "were rejected"),
    (403, gh.GitHubAuthError, "Self-hosted runners: write"),
    (404, gh.GitHubNotFound, "cannot see it"),
    (409, gh.GitHubConflict, "HTTP 409"),
    (422, gh.GitHubValidationError, "HTTP 422"),
])
def test_errors_name_the_call_the_scope_and_the_status(status, cls, words):
    script = Script((status, {}, {"message": "Nope", "documentation_url": "https://docs"}))
    with pytest.raises(cls) as info:
        client(script).request("POST", "/orgs/acme/actions/runners/registration-token", expected=(201,),
                               what="create a runner registration token", scope=ORG)
    text = str(info.value)
    assert text.startswith("create a runner registration token for organization 'acme': ")
    assert f"HTTP {status} Nope" in text and words in text
    assert "ghp_secret" not in text


def test_validation_errors_list_githubs_details():
    script = Script((422, {}, {"message": "Invalid request.", "errors": ["labels must be a list"]}))
    with pytest.raises(gh.GitHubValidationError, match="labels must be a list"):
        client(script).request("POST", "/x", expected=(201,))


def test_allowed_statuses_are_returned_not_raised():
    resp = client(Script((404, {}, {"message": "Not Found"}))).request("GET", "/x", allow=(404,))
    assert resp.status == 404


class RefreshingAuth:
    kind = "GitHub App"

    def __init__(self):
        self.tokens = ["old", "new"]
        self.invalidated = 0

    def authorization(self, client):
        return "Bearer " + self.tokens[0]

    def invalidate(self):
        self.invalidated += 1
        self.tokens.pop(0)
        return True


def test_a_401_refreshes_a_refreshable_token_once():
    script = Script((401, {}, {"message": "Bad credentials"}), (200, {}, {"ok": 1}))
    auth = RefreshingAuth()
    c = gh.GitHubClient("https://api.github.test", auth=auth, transport=script, clock=Clock())
    assert c.request("GET", "/x").json() == {"ok": 1}
    assert [r["headers"]["Authorization"] for r in script.requests] == ["Bearer old", "Bearer new"]
    assert auth.invalidated == 1


# ---------------------------------------------------------------- pagination
def test_paginate_follows_next_links_verbatim():
    page2 = "https://api.github.test/orgs/acme/actions/runners?per_page=100&page=2&cursor=abc"
    script = Script(
        (200, {"Link": f'<{page2}>; rel="next"'}, {"total_count": 3, "runners": [{"id": 1}, {"id": 2}]}),
        (200, {}, {"total_count": 3, "runners": [{"id": 3}]}),
    )
    items = client(script).paginate("/orgs/acme/actions/runners", "runners", params={"name": "r"})
    assert [i["id"] for i in items] == [1, 2, 3]
    assert "per_page=100" in script.requests[0]["url"] and "name=r" in script.requests[0]["url"]
    assert script.requests[1]["url"] == page2


def test_paginate_stops_a_loop():
    same = "https://api.github.test/x?page=1"
    script = Script(*[(200, {"Link": f'<{same}>; rel="next"'}, {"runners": []})] * 3)
    with pytest.raises(gh.GitHubError, match="loops back"):
        client(script).paginate("/x", "runners", per_page=1, params={"page": 1})
