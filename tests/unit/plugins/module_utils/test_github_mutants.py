# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GitHub client's behaviour that mutants of `make mutate` showed untested (issue 14).

Each test pins one value, message or call sequence that a small slip in _github.py would change.
"""

from __future__ import annotations

import pytest

from test_github import Clock, Script

from ansible_collections.rum.pool.plugins.module_utils import _github as gh


def client(script, **policy):
    clock = Clock()
    policy.setdefault("rng", lambda: 1.0)
    return gh.GitHubClient("https://api.github.test", auth=gh.TokenAuth("ghp_x"), transport=script,
                           policy=gh.RetryPolicy(**policy), clock=clock, sleep=clock.sleep)


# ---------------------------------------------------------------- a server error with Retry-After
def test_a_server_error_with_retry_after_is_not_a_rate_limit():
    decision = gh.RetryPolicy().decide(gh.Response(503, {"Retry-After": "4"}), 0, 0.0)
    assert (decision.delay, decision.rate_limited) == (4.0, False)


def test_a_post_answered_503_with_retry_after_is_not_repeated():
    """GitHub may have done the POST before it failed: waiting as told must not send it again."""
    script = Script((503, {"Retry-After": "4"}, {"message": "busy"}), (201, {}, {}))
    with pytest.raises(gh.GitHubAmbiguous) as info:
        client(script).request("POST", "/x", body={}, expected=(201,))
    assert str(info.value) == ("POST /x: no usable answer from GitHub (HTTP 503 busy); the call may have been "
                               "done, so it is not repeated")
    assert len(script.requests) == 1


def test_server_errors_with_retry_after_count_against_max_retries():
    script = Script(*[(503, {"Retry-After": "1"}, {"message": "busy"})] * 3)
    with pytest.raises(gh.GitHubGaveUp) as info:
        client(script, max_retries=2).request("GET", "/x")
    assert str(info.value) == ("GET /x: gave up after 3 attempts and 2s of waiting (max_retries=2); "
                               "last: HTTP 503 server error, Retry-After 1s")
    assert len(script.requests) == 3


# ---------------------------------------------------------------- names that begin or end with X
def test_scope_names_keep_their_own_letters():
    assert gh.Scope("organization", "Xerox").name == "Xerox"
    assert gh.Scope("organization", "/fooX/").name == "fooX"
    assert gh.Scope("repository", "Xo/rX").path == "/repos/Xo/rX"


def test_api_urls_ending_in_x_keep_it():
    assert gh.GitHubClient("https://hostX/", transport=Script()).api_url == "https://hostX"
    assert gh.Scope("organization", "acme").web_url("https://hostX/") == "https://hostX/acme"


# ---------------------------------------------------------------- get_json passes its options on
def test_get_json_passes_allow_what_and_scope_to_the_request():
    script = Script((404, {}, {"message": "Not Found"}))
    assert client(script).get_json("/y", allow=(404,)) == {"message": "Not Found"}
    script = Script((404, {}, {"message": "Not Found"}))
    with pytest.raises(gh.GitHubNotFound) as info:
        client(script).get_json("/y", what="read the runner", scope=gh.Scope("organization", "acme"))
    assert str(info.value) == ("read the runner for organization 'acme': HTTP 404 Not Found - it does not exist "
                               "or the credentials cannot see it")


def test_scopes_hash_by_kind_and_name():
    """Equal scopes hash alike; different ones spread (a constant hash would make every set a list)."""
    hashes = {hash(gh.Scope(kind, name)) for kind in ("organization", "enterprise") for name in ("a", "b", "c")}
    assert len(hashes) == 6
    assert hash(gh.Scope("organization", "a")) == hash(gh.Scope("organization", " a/"))
