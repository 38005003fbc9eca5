"""gh_runner_token, gh_runner and gh_runner_info through ansible-playbook against the fake GitHub.

The fake runs in this process (loopback, a free port); its URL goes to the playbooks as an extra
var. Every kind x scope x credential is run on github.com paths and under the GHES ``/api/v3``
prefix; rate limits and faults are injected through the fake's admin API.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

APP_ID = 4242
CLIENT_ID = "Iv23liRumPoolTest"
PAT = "ghp_rumpoolintegration0000000000000000"
FINE_PAT = "github_pat_rumpoolfinegrained000000000"
WORDS = {"repository": "repository 'acme/app'", "organization": "organization 'acme'",
         "enterprise": "enterprise 'ent'"}
SCOPES = {"repository": "acme/app", "organization": "acme", "enterprise": "ent"}
GROUPS = {"repository": "Default", "organization": "pool", "enterprise": "pool"}
# The plays run on localhost with a local connection; name it explicitly rather than rely on defaults.
INVENTORY = "localhost,"


def _pem_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def github(tmp_path_factory):
    """The fake GitHub with a classic PAT, a fine-grained PAT, an App installed on acme, groups."""
    private, public = _pem_pair()
    wrong_private, _unused = _pem_pair()
    keys = tmp_path_factory.mktemp("gh-keys")
    key_path = keys / "app.pem"
    key_path.write_text(private)
    key_path.chmod(0o600)
    wrong_path = keys / "wrong.pem"
    wrong_path.write_text(wrong_private)
    fake = FakeGitHub()
    url = fake.start()
    fake.admin("POST", "/setup", {
        "pats": [{"token": PAT, "scopes": ["org:acme", "enterprise:ent"]},
                 {"token": FINE_PAT, "scopes": ["*"], "classic": False}],
        "apps": [{"app_id": APP_ID, "client_id": CLIENT_ID, "public_key_pem": public}],
        "installations": [{"id": 901, "app_id": APP_ID, "account": "acme"}],
        "runner_groups": [{"scope": "org:acme", "name": "pool", "id": 3},
                          {"scope": "enterprise:ent", "name": "pool", "id": 4}],
    })
    fake.info = {"url": url, "key_path": str(key_path), "private": private, "wrong_path": str(wrong_path),
                 "cache_dir": str(keys / "token-cache")}
    yield fake
    fake.stop()


def auth_options(github, auth):
    if auth == "pat":
        return {"token": PAT}
    if auth == "app-id":  # numeric App id, key file, installation looked up
        return {"app_id": str(APP_ID), "app_private_key_path": github.info["key_path"]}
    # client id, key as a string, installation given, tokens cached on disk between tasks
    return {"app_id": CLIENT_ID, "app_private_key": github.info["private"], "app_installation_id": 901,
            "app_token_cache_dir": github.info["cache_dir"]}


def gh_vars(github, scope, auth, ghes, prefix):
    api_url = github.info["url"] + ("/api/v3" if ghes else "")
    options = dict({"api_url": api_url, scope: SCOPES[scope]}, **auth_options(github, auth))
    return {"gh": options, "prefix": prefix, "runner_group": GROUPS[scope], "scope_words": WORDS[scope],
            "fake_url": github.info["url"]}


def secrets_issued(github):
    state = github.model.state
    return list(state["registration_tokens"]) + list(state["installation_tokens"])


MATRIX = [(scope, auth, ghes)
          for ghes in (False, True)
          for scope in ("repository", "organization", "enterprise")
          for auth in ("pat", "app-id", "app-client-id")
          if not (scope == "enterprise" and auth != "pat") and not (ghes and auth == "app-client-id")]


@pytest.mark.parametrize("scope,auth,ghes", MATRIX,
                         ids=[f"{s}-{a}-{'ghes' if g else 'dotcom'}" for s, a, g in MATRIX])
def test_lifecycle(playbook, github, scope, auth, ghes):
    github.admin("DELETE", "/calls")
    prefix = f"it-{scope[:4]}-{auth}-{'ghes' if ghes else 'com'}-"
    run = playbook("gh_runner_token/lifecycle.yml", gh_vars(github, scope, auth, ghes, prefix), inventory=INVENTORY)
    assert "failed=0" in run.stdout
    calls = github.admin("GET", "/calls")["calls"]
    assert calls and all(c["path"].startswith("/api/v3/") == ghes for c in calls)
    assert all(c["api_version"] == "2022-11-28" and c["accept"] == "application/vnd.github+json"
               and c["user_agent"] for c in calls)
    used = {c["auth"] for c in calls}
    if auth == "pat":
        assert used == {"pat"}
    elif auth == "app-id":  # a fresh module run: JWT for the lookup and exchange, then the token
        assert used == {"app", "installation"}
    else:  # a token cached on disk by an earlier run may make the JWT unnecessary
        assert "installation" in used and used <= {"app", "installation"}
    for secret in secrets_issued(github):
        assert secret not in run.stdout + run.stderr
    if auth == "app-client-id":  # the token cache made later tasks skip the exchange
        exchanges = [c for c in calls if c["path"].endswith("/access_tokens")]
        assert len(exchanges) <= 1


def test_bad_credentials_fail_clearly(playbook, github):
    """Wrong token, no access, fine-grained PAT or App on an enterprise, wrong App key, no install."""
    run = playbook("gh_runner_token/bad_credentials.yml", {
        "fake_url": github.info["url"], "pat": PAT, "fine_pat": FINE_PAT, "app_id": str(APP_ID),
        "key_path": github.info["key_path"], "wrong_key_path": github.info["wrong_path"],
    }, inventory=INVENTORY)
    assert "failed=0" in run.stdout


def test_rate_limits_are_waited_out_within_the_bound(playbook, github):
    vars_ = gh_vars(github, "organization", "pat", False, "it-rate-")
    run = playbook("gh_runner_token/rate_limits.yml", vars_, inventory=INVENTORY)
    assert "failed=0" in run.stdout
    assert github.admin("GET", "/faults") == {"faults": []}


def test_prune_leaves_busy_online_kept_and_foreign_runners_alone(playbook, github):
    run = playbook("gh_runner/prune.yml", gh_vars(github, "organization", "app-id", False, "it-prune-h1-"),
                   diff=True, inventory=INVENTORY)
    assert "failed=0" in run.stdout
    runners = {r["name"]: r for r in github.admin("GET", "/runners?scope=org:acme")["runners"]}
    assert not [n for n in runners if n.startswith("it-prune-")]  # the playbook cleaned up after itself


def test_runner_slot_flow_with_a_stand_in_runner(playbook, github):
    """What the pool's runner_slot role does, with the fake standing in for the guest's runner."""
    run = playbook("gh_runner/slot_flow.yml", gh_vars(github, "repository", "pat", True, "it-slot-h1-"),
                   inventory=INVENTORY)
    assert "failed=0" in run.stdout
    assert json.dumps(github.admin("GET", "/runners?scope=repo:acme/app")).count("it-slot-") == 0


def test_a_jit_answer_that_comes_after_the_module_gave_up_leaves_no_orphan(playbook, github):
    github.admin("DELETE", "/calls")
    run = playbook("gh_runner_token/lost_answer.yml", gh_vars(github, "organization", "pat", False, "it-lost-h1-"),
                   inventory=INVENTORY)
    assert "failed=0" in run.stdout
    posts = [c for c in github.admin("GET", "/calls")["calls"] if c["path"].endswith("generate-jitconfig")]
    assert [c["status"] for c in posts] == [201, 201]  # the lost one, then the new one: never a 409
    assert not [r for r in github.admin("GET", "/runners?scope=org:acme")["runners"]
                if r["name"].startswith("it-lost-")]
