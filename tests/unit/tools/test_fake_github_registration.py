"""The fake GitHub's classic runner registration: registration token -> runner-registration -> register.

This is what the real runner's ``config.sh`` does with a registration token (the GHES flow without
JIT configs): ``POST /actions/runner-registration`` with ``Authorization: RemoteAuth <token>``
gives the Actions service's URL and an access token, and the fake's admin route
``POST /_fake/runners/register`` plays the Actions service the runner registers with.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub, FakeGitHubModel  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.model import empty_state  # noqa: E402  pylint: disable=wrong-import-position

PAT = {"Authorization": "Bearer ghp_reg", "User-Agent": "test"}
WEB = "http://192.168.122.1:18080"


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def model(clock):
    fake = FakeGitHubModel(clock=clock)
    fake.public_url = WEB
    fake.handle("POST", "/_fake/pats", {}, b'{"token": "ghp_reg"}')
    return fake


def registration_token(model, scope_path="/repos/acme/widgets", prefix=""):
    reply = model.handle("POST", f"{prefix}{scope_path}/actions/runners/registration-token", PAT)
    assert reply.status == 201, reply
    return reply.json()["token"]


def trade(model, token, url, event="register", prefix="", scheme="RemoteAuth"):
    headers = {"User-Agent": "GitHubActionsRunner-linux-x64/2.317.0", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    body = json.dumps({"url": url, "runner_event": event}).encode()
    return model.handle("POST", f"{prefix}/actions/runner-registration", headers, body)


def register(model, service_token, **fields):
    body = dict({"token": service_token, "name": "pool-h1-0", "labels": ["pool-a"], "runner_group": "Default",
                 "ephemeral": True, "replace": False, "work_folder": "_work", "os": "Linux"}, **fields)
    return model.handle("POST", "/_fake/runners/register", {"Content-Type": "application/json"},
                        json.dumps(body).encode())


def service_token(model, scope_path="/repos/acme/widgets", web_path="/acme/widgets"):
    reply = trade(model, registration_token(model, scope_path), WEB + web_path)
    assert reply.status == 200, reply
    return reply.json()["token"]


def test_token_to_runner_listed_through_the_public_api(model):
    token = registration_token(model)
    traded = trade(model, token, f"{WEB}/acme/widgets")
    assert traded.status == 200
    answer = traded.json()
    assert answer["url"] == f"{WEB}/_fake/" and answer["token_schema"] == "OAuthAccessToken"
    assert answer["token"] and answer["token"] != token
    assert traded.headers["x-ratelimit-resource"] == "actions_runner_registration"

    reply = register(model, answer["token"], labels=["pool-a", "LINUX", "Pool-A", "gpu"])
    assert reply.status == 200, reply
    runner, files = reply.json()["runner"], reply.json()["files"]

    listed = model.handle("GET", "/repos/acme/widgets/actions/runners", PAT).json()
    assert listed["total_count"] == 1
    public = listed["runners"][0]
    assert public == runner
    # defaults first, then the given ones; a case-insensitive set keeping the first spelling
    assert [label["name"] for label in public["labels"]] == ["self-hosted", "Linux", "X64", "pool-a", "gpu"]
    assert public["ephemeral"] is True and public["runner_group_id"] == 1
    assert public["status"] == "offline" and public["busy"] is False and public["os"] == "Linux"
    settings = files[".runner"]
    assert settings["AgentId"] == str(runner["id"]) and settings["AgentName"] == "pool-h1-0"
    assert settings["PoolId"] == "1" and settings["PoolName"] == "Default"
    assert settings["ServerUrl"] == f"{WEB}/_fake/" and settings["GitHubUrl"] == f"{WEB}/acme/widgets"
    assert settings["WorkFolder"] == "_work" and settings["Ephemeral"] == "True"
    assert all(isinstance(value, str) for value in settings.values())
    assert files[".credentials"]["Scheme"] == "OAuth" and files[".credentials"]["Data"]["clientId"]
    assert set(files[".credentials_rsaparams"]) == {"d", "dp", "dq", "exponent", "inverseQ", "modulus", "p", "q"}
    view = model.handle("GET", f"/_fake/runners/{runner['id']}", {}).json()
    assert view["jit"] is False and view["scope"] == "repo:acme/widgets"


def test_org_runner_in_a_named_group_and_not_ephemeral(model):
    model.handle("POST", "/_fake/runner-groups", {}, b'{"scope": "org:acme", "name": "Pool", "id": 7}')
    token = service_token(model, "/orgs/acme", "/acme")
    reply = register(model, token, runner_group="pool", ephemeral=False, disable_update=True,
                     work_folder="jobs", os="Linux", arch="ARM64")
    assert reply.status == 200, reply
    runner = reply.json()["runner"]
    assert runner["runner_group_id"] == 7 and runner["ephemeral"] is False
    assert [label["name"] for label in runner["labels"]][:3] == ["self-hosted", "Linux", "ARM64"]
    settings = reply.json()["files"][".runner"]
    assert settings["PoolId"] == "7" and settings["PoolName"] == "Pool" and settings["WorkFolder"] == "jobs"
    assert settings["Ephemeral"] == "False" and settings["DisableUpdate"] == "True"
    listed = model.handle("GET", "/orgs/acme/actions/runners", PAT).json()
    assert [r["id"] for r in listed["runners"]] == [runner["id"]]


def test_enterprise_scope_and_no_default_labels(model):
    token = service_token(model, "/enterprises/Big", "/enterprises/big")
    reply = register(model, token, labels=["only-this"], no_default_labels=True)
    assert reply.status == 200, reply
    assert [label["name"] for label in reply.json()["runner"]["labels"]] == ["only-this"]
    assert reply.json()["files"][".runner"]["GitHubUrl"] == f"{WEB}/enterprises/big"
    assert model.handle("GET", "/_fake/runners?scope=enterprise:big", {}).json()["runners"][0]["name"] == "pool-h1-0"
    assert register(model, token, name="x", labels=[], no_default_labels=True).status == 400


@pytest.mark.parametrize("token, scheme", [
    ("not-a-token", "RemoteAuth"),
    (None, "RemoteAuth"),
    ("REAL", "Bearer"),
    ("REMOVE", "RemoteAuth"),
])
def test_bad_tokens_get_404_like_github(model, token, scheme):
    real = registration_token(model)
    remove = model.handle("POST", "/repos/acme/widgets/actions/runners/remove-token", PAT).json()["token"]
    token = {"REAL": real, "REMOVE": remove}.get(token, token)
    reply = trade(model, token, f"{WEB}/acme/widgets", scheme=scheme)
    assert reply.status == 404
    assert reply.json()["message"] == "Not Found" and reply.json()["documentation_url"]
    assert model.state["service_tokens"] == {}


def test_an_expired_registration_token_gets_404(model, clock):
    token = registration_token(model)
    clock.now += 3599
    assert trade(model, token, f"{WEB}/acme/widgets").status == 200
    clock.now += 2
    assert trade(model, token, f"{WEB}/acme/widgets").status == 404


@pytest.mark.parametrize("url", [
    f"{WEB}/acme/other",  # another repository
    f"{WEB}/acme",  # the organization, not the repository
    f"{WEB}/enterprises/acme",
    f"{WEB}/a/b/c",
    f"{WEB}/",
])
def test_a_url_naming_another_scope_gets_404(model, url):
    assert trade(model, registration_token(model), url).status == 404


def test_scope_comparison_ignores_case_and_host(model):
    token = registration_token(model, "/repos/Acme/Widgets")
    assert trade(model, token, "https://github.example.com/ACME/widgets/").status == 200


def test_wrong_runner_event_or_body_is_refused(model):
    token = registration_token(model)
    reply = trade(model, token, f"{WEB}/acme/widgets", event="remove")
    assert reply.status == 422 and "runner_event" in reply.json()["message"]
    headers = {"Authorization": f"RemoteAuth {token}", "User-Agent": "t"}
    assert model.handle("POST", "/actions/runner-registration", headers, b'{"runner_event": "register"}').status == 422
    assert model.handle("POST", "/actions/runner-registration", headers, b"{nope").status == 400
    assert model.handle("GET", "/actions/runner-registration", headers).status == 404


def test_ghes_prefix_and_call_log_without_secrets(model):
    token = registration_token(model, prefix="/api/v3")
    reply = trade(model, token, f"{WEB}/acme/widgets", prefix="/api/v3")
    assert reply.status == 200
    call = model.state["calls"][-1]
    assert call["path"] == "/api/v3/actions/runner-registration" and call["status"] == 200
    assert call["auth"] == "registration"
    logged = json.dumps(model.state["calls"])
    assert token not in logged and reply.json()["token"] not in logged


def test_counts_against_the_registration_rate_limit(model):
    token = registration_token(model)
    model.handle("POST", "/_fake/ratelimit", {}, json.dumps(
        {"resource": "actions_runner_registration", "remaining": 1, "reset_in": 60}).encode())
    first = trade(model, token, f"{WEB}/acme/widgets")
    assert first.status == 200 and first.headers["x-ratelimit-remaining"] == "0"
    limited = trade(model, token, f"{WEB}/acme/widgets")
    assert limited.status == 403 and "rate limit" in limited.json()["message"]
    assert model.handle("GET", "/orgs/acme/actions/runners", PAT).status == 200  # core is separate


def test_unknown_or_expired_service_token_gets_401(model, clock):
    assert register(model, "fake_svc_nope").status == 401
    assert register(model, None).status == 401
    token = service_token(model)
    clock.now += 3601
    reply = register(model, token)
    assert reply.status == 401 and "expired" in reply.json()["error"]
    assert model.state["runners"] == {}


def test_unknown_runner_group_gets_404(model):
    token = service_token(model)
    reply = register(model, token, runner_group="gpu-pool")
    assert reply.status == 404 and "gpu-pool" in reply.json()["error"]
    org_token = service_token(model, "/orgs/acme", "/acme")
    assert register(model, org_token, runner_group="Nope").status == 404
    assert register(model, org_token, runner_group="default").status == 200


def test_a_taken_name_conflicts_unless_replace(model):
    token = service_token(model)
    first = register(model, token, labels=["old"]).json()["runner"]
    conflict = register(model, token, labels=["new"])
    assert conflict.status == 409 and "same name" in conflict.json()["error"]
    replaced = register(model, token, labels=["new"], replace=True)
    assert replaced.status == 200
    second = replaced.json()["runner"]
    assert second["id"] != first["id"]
    listed = model.handle("GET", "/repos/acme/widgets/actions/runners", PAT).json()["runners"]
    assert [r["id"] for r in listed] == [second["id"]]
    assert [label["name"] for label in listed[0]["labels"]][-1] == "new"
    # the same name in another scope is another runner
    other = service_token(model, "/repos/acme/gadgets", "/acme/gadgets")
    assert register(model, other).status == 200


def test_a_busy_runner_is_not_replaced(model):
    token = service_token(model)
    busy = register(model, token).json()["runner"]
    model.handle("POST", f"/_fake/runners/{busy['id']}/job", {}, b'{"job_id": 3}')
    reply = register(model, token, replace=True)
    assert reply.status == 409 and "busy" in reply.json()["error"]
    assert model.handle("GET", f"/_fake/runners/{busy['id']}", {}).json()["busy"] is True


def test_bad_register_bodies_are_400(model):
    token = service_token(model)
    assert register(model, token, name="").status == 400
    assert register(model, token, labels="a,b").status == 400
    assert register(model, token, work_folder=5).status == 400


def test_state_gains_service_tokens_and_survives_a_restart(tmp_path):
    old = empty_state()
    del old["service_tokens"]
    assert "service_tokens" in FakeGitHubModel(state=old).state
    assert empty_state()["service_tokens"] == {}
    first = FakeGitHub(state_dir=str(tmp_path))
    first.start()
    try:
        first.admin("POST", "/pats", {"token": "ghp_reg"})
        token = service_token(first.model)
    finally:
        first.stop()
    second = FakeGitHub(state_dir=str(tmp_path))
    second.start()
    try:
        assert register(second.model, token).status == 200
    finally:
        second.stop()
