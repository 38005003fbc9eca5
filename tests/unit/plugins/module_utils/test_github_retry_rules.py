# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GitHub client's retry rules, each pinned by a call sequence that a slip in it would change.

Every transport here answers from a finite list: a client that loops (for example through token
exchanges on a lasting 401) runs out of answers and fails the test instead of hanging it.
"""

from __future__ import annotations

import json

import pytest

from test_github import Clock

from ansible_collections.rum.pool.plugins.module_utils import _github as gh


class Finite:
    """Answers from a list; one request more than the list holds fails the test."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[dict] = []

    def __call__(self, method, url, headers, body, timeout):
        self.requests.append({"method": method, "headers": dict(headers), "body": body})
        if not self.answers:
            pytest.fail(f"request {len(self.requests)} was not expected: the client should have stopped")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers_out, data = answer
        return gh.Response(status, headers_out, json.dumps(data).encode())


class EndlessTokens:
    """An App-like auth that can always mint a new token (as a real App can)."""

    kind = "GitHub App"

    def __init__(self):
        self.minted = 0

    def authorization(self, client):  # pylint: disable=unused-argument
        return f"Bearer token-{self.minted}"

    def invalidate(self):
        self.minted += 1
        return True


def make(transport, clock, auth=None, **policy):
    policy.setdefault("rng", lambda: 1.0)
    return gh.GitHubClient("https://api.github.test", auth=auth or gh.TokenAuth("ghp_x"),
                           transport=transport, policy=gh.RetryPolicy(**policy), clock=clock,
                           sleep=clock.sleep)


BAD_CREDENTIALS = (401, {}, {"message": "Bad credentials"})


def test_a_lasting_401_refreshes_the_token_once_then_fails():
    clock = Clock()
    auth = EndlessTokens()
    transport = Finite(*[BAD_CREDENTIALS] * 6)
    with pytest.raises(gh.GitHubAuthError, match="HTTP 401 Bad credentials") as info:
        make(transport, clock, auth).request("GET", "/orgs/acme/actions/runners")
    assert auth.minted == 1
    assert [r["headers"]["Authorization"] for r in transport.requests] == ["Bearer token-0",
                                                                           "Bearer token-1"]
    assert "GitHub App" in str(info.value)
    assert clock.sleeps == []  # a 401 is not waited on


def test_a_401_with_a_fixed_token_is_final_at_once():
    transport = Finite(BAD_CREDENTIALS, BAD_CREDENTIALS)
    with pytest.raises(gh.GitHubAuthError):
        make(transport, Clock()).request("GET", "/x")
    assert len(transport.requests) == 1


def test_a_401_to_a_call_with_its_own_authorization_is_not_refreshed():
    auth = EndlessTokens()
    transport = Finite(BAD_CREDENTIALS, BAD_CREDENTIALS)
    with pytest.raises(gh.GitHubAuthError):
        make(transport, Clock(), auth).request("POST", "/app/installations/1/access_tokens",
                                               expected=(201,), authorization="Bearer jwt")
    assert auth.minted == 0 and len(transport.requests) == 1


def test_rate_limit_waits_do_not_use_up_max_retries():
    clock = Clock()
    limited = (429, {"Retry-After": "3"}, {"message": "slow down"})
    transport = Finite(limited, limited, limited, (200, {}, {"ok": True}))
    resp = make(transport, clock, max_retries=1).request("GET", "/x")
    assert resp.json() == {"ok": True}
    assert clock.sleeps == [3.0, 3.0, 3.0]


def test_rate_limit_waits_do_not_use_up_retries_left_for_server_errors():
    clock = Clock()
    limited = (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(clock.now) + 4)},
               {"message": "API rate limit exceeded"})
    transport = Finite(limited, (502, {}, {"message": "bad gateway"}), limited, (200, {}, {"ok": 1}))
    assert make(transport, clock, max_retries=1).request("GET", "/x").json() == {"ok": 1}
    assert len(transport.requests) == 4


def test_server_errors_beyond_max_retries_give_up_even_between_rate_limits():
    clock = Clock()
    limited = (429, {"Retry-After": "1"}, {"message": "slow down"})
    failing = (500, {}, {"message": "boom"})
    transport = Finite(failing, limited, failing, (200, {}, {}))
    with pytest.raises(gh.GitHubGaveUp, match="max_retries=1"):
        make(transport, clock, max_retries=1).request("GET", "/x")
    assert len(transport.requests) == 3


def test_backoff_is_capped():
    policy = gh.RetryPolicy(backoff_base=1.0, backoff_cap=5.0, rng=lambda: 1.0)
    assert [policy.backoff(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert gh.RetryPolicy(backoff_cap=5.0, rng=lambda: 0.0).backoff(10) == 2.5


def test_the_client_never_sleeps_longer_than_the_backoff_cap():
    clock = Clock()
    transport = Finite(*[(503, {}, {"message": "unavailable"})] * 9, (200, {}, {"ok": 1}))
    make(transport, clock, max_retries=9, max_wait=10_000).request("GET", "/x")
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_retry_after_on_a_server_error_is_honoured(status):
    clock = Clock()
    transport = Finite((status, {"Retry-After": "17"}, {"message": "try later"}), (200, {}, {"ok": 1}))
    make(transport, clock).request("GET", "/x")
    assert clock.sleeps == [17.0]
    decision = gh.RetryPolicy(rng=lambda: 1.0).decide(
        gh.Response(status, {"Retry-After": "17"}, b""), attempt=3, now=0.0)
    assert decision.delay == 17.0 and not decision.rate_limited and "Retry-After" in decision.reason


def test_retry_after_date_on_a_server_error_counts_from_now():
    decision = gh.RetryPolicy(rng=lambda: 1.0).decide(
        gh.Response(503, {"Retry-After": "Thu, 01 Jan 1970 00:16:50 GMT"}, b""), attempt=0, now=1000.0)
    assert decision.delay == pytest.approx(10.0)


def test_an_unreadable_retry_after_falls_back_to_backoff():
    decision = gh.RetryPolicy(rng=lambda: 1.0).decide(
        gh.Response(503, {"Retry-After": "soon"}, b""), attempt=2, now=0.0)
    assert decision.delay == 4.0


def test_a_retry_after_in_the_past_is_no_wait():
    decision = gh.RetryPolicy().decide(
        gh.Response(429, {"Retry-After": "Thu, 01 Jan 1970 00:00:10 GMT"}, b""), attempt=0, now=1000.0)
    assert decision.delay == 0.0


def test_a_bad_reset_header_waits_the_secondary_minimum():
    decision = gh.RetryPolicy(secondary_min_wait=42.0).decide(
        gh.Response(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "never"},
                    b'{"message": "API rate limit exceeded"}'), attempt=0, now=1000.0)
    assert decision.delay == 43.0 and decision.rate_limited


def test_stats_count_requests_retries_and_waits():
    clock = Clock()
    transport = Finite((502, {}, {}), (429, {"Retry-After": "2"}, {}), (200, {}, {}))
    client = make(transport, clock)
    client.request("GET", "/x")
    assert client.stats.as_dict() == {"requests": 3, "retries": 2, "waited_seconds": 3.0,
                                      "rate_limit": {}}


def test_max_wait_counts_every_wait_of_one_call():
    clock = Clock()
    transport = Finite(*[(500, {}, {})] * 5)
    with pytest.raises(gh.GitHubGaveUp, match="max_wait=6") as info:
        make(transport, clock, max_wait=6, max_retries=10).request("GET", "/x")
    assert clock.sleeps == [1.0, 2.0]  # 1 + 2 + 4 > 6
    assert "already waited 3s over 3 attempts" in str(info.value)
