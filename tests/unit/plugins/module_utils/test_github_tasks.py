# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each gh_runner* module returns (token_task, runner_task, info_task), as whole results,
against the fake GitHub's model used as the client's transport (no socket)."""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_runners as ghr
from ansible_collections.rum.pool.plugins.module_utils import _github_tasks as tasks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github.model import FakeGitHubModel, decode_jit_config  # noqa: E402  pylint: disable=wrong-import-position

ORG = "organization 'acme'"


class Transport:
    def __init__(self, model):
        self.model = model
        self.calls = []

    def __call__(self, method, url, headers, body, timeout):
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        # (method, path, query, JSON body)
        self.calls.append((method, parts.path, parse_qs(parts.query), json.loads(body) if body else None))
        reply = self.model.handle(method, target, headers, body or b"")
        return gh.Response(reply.status, reply.headers, reply.body)


@pytest.fixture
def model():
    fake = FakeGitHubModel(clock=lambda: 1_750_000_000.0)
    fake.handle("POST", "/_fake/pats", {}, b'{"token": "ghp_tasks"}')
    return fake


def api_for(model, scope=gh.Scope("organization", "acme")):
    client = gh.GitHubClient("https://api.github.com", auth=gh.TokenAuth("ghp_tasks"), transport=Transport(model),
                             policy=gh.RetryPolicy(max_retries=0, max_wait=0))
    return ghr.RunnerAPI(client, scope)


def admin(model, method, path, body=None):
    reply = model.handle(method, "/_fake" + path, {}, json.dumps(body).encode() if body is not None else b"")
    assert reply.status < 300, reply
    return reply.json()


def runner(model, name, status="offline", busy=False, labels=("self-hosted",), scope="org:acme"):
    made = admin(model, "POST", "/runners", {"scope": scope, "name": name, "status": status, "busy": busy,
                                             "labels": list(labels)})
    return made["id"]


def as_dict(ident, name, status="offline", busy=False, labels=("self-hosted",), ephemeral=False, os_name="Linux"):
    return {"id": ident, "name": name, "os": os_name, "status": status, "busy": busy, "ephemeral": ephemeral,
            "labels": list(labels), "runner_group_id": 1}


# ---------------------------------------------------------------- token_task
@pytest.mark.parametrize("kind", ["registration", "remove"])
def test_registration_and_remove_tokens(model, kind):
    api = api_for(model)
    result = tasks.token_task(api, {"kind": kind})
    assert result.pop("token").startswith("A") and result.pop("expires_at").endswith("Z")
    assert result == {"changed": True, "kind": kind, "scope": ORG, "runner_url": "https://github.com/acme"}
    assert api.client.transport.calls[-1][:2] == ("POST", f"/orgs/acme/actions/runners/{kind}-token")
    checked = tasks.token_task(api_for(model), {"kind": kind}, check_mode=True)
    assert checked == {"changed": True, "kind": kind, "scope": ORG, "runner_url": "https://github.com/acme"}


def test_jit_needs_a_name(model):
    with pytest.raises(ghr.RunnerError) as info:
        tasks.token_task(api_for(model), {"labels": ["x"]})
    assert str(info.value) == "kind=jit needs a runner name"


def test_jit_in_check_mode_makes_nothing_and_shows_the_runner(model):
    api = api_for(model)
    result = tasks.token_task(api, {"name": "ci-1", "labels": ["self-hosted", "linux"]}, check_mode=True)
    wanted = {"name": "ci-1", "labels": ["self-hosted", "linux"], "runner_group_id": 1}
    assert result == {"changed": True, "kind": "jit", "scope": ORG, "runner_group_id": 1,
                      "diff": {"before": {"runner": None}, "after": {"runner": wanted}}}
    assert admin(model, "GET", "/runners")["runners"] == []


def test_jit_check_mode_with_a_runner_of_that_name(model):
    ident = runner(model, "ci-1")
    with pytest.raises(gh.GitHubConflict) as info:
        tasks.token_task(api_for(model), {"name": "ci-1", "labels": ["x"]}, check_mode=True)
    assert str(info.value) == (f"{ORG}: a runner named 'ci-1' already exists; delete it first or use "
                               "on_conflict=replace")
    assert info.value.status == 409
    result = tasks.token_task(api_for(model), {"name": "ci-1", "labels": ["x"], "on_conflict": "replace"},
                              check_mode=True)
    assert result["replaced_runner"] == as_dict(ident, "ci-1")
    assert result["diff"] == {"before": {"runner": as_dict(ident, "ci-1")},
                              "after": {"runner": {"name": "ci-1", "labels": ["x"], "runner_group_id": 1}}}
    runner(model, "ci-2", status="online")
    with pytest.raises(gh.GitHubConflict) as info:
        tasks.token_task(api_for(model), {"name": "ci-2", "labels": ["x"], "on_conflict": "replace"},
                         check_mode=True)
    assert str(info.value) == (f"{ORG}: runner 'ci-2' (id {ident + 1}, online) already exists and is not "
                               "offline and idle; not replacing a live runner")
    assert info.value.status == 409


def test_jit_creates_the_runner_with_its_group_and_work_folder(model):
    admin(model, "POST", "/runner-groups", {"scope": "org:acme", "name": "Pool", "id": 5})
    result = tasks.token_task(api_for(model), {"name": "ci-1", "labels": ["a"], "runner_group": "pool",
                                               "work_folder": "_w"})
    config = result.pop("encoded_jit_config")
    made = as_dict(result["runner_id"], "ci-1", labels=["a"], ephemeral=True, os_name="unknown")
    made["runner_group_id"] = 5
    assert result == {"changed": True, "kind": "jit", "scope": ORG, "runner_group_id": 5, "runner": made,
                      "runner_id": made["id"], "diff": {"before": {"runner": None}, "after": {"runner": made}}}
    settings = decode_jit_config(config)[".runner"]
    assert (settings["AgentName"], settings["PoolId"], settings["WorkFolder"]) == ("ci-1", "5", "_w")
    by_id = tasks.token_task(api_for(model), {"name": "ci-2", "labels": ["a"], "runner_group_id": "5"})
    assert by_id["runner_group_id"] == 5 and by_id["runner"]["runner_group_id"] == 5
    default = tasks.token_task(api_for(model), {"name": "ci-3", "labels": ["a"]})
    assert default["runner_group_id"] == 1


def test_jit_replaces_a_stale_runner_and_says_so(model):
    old = runner(model, "ci-1")
    with pytest.raises(gh.GitHubConflict):
        tasks.token_task(api_for(model), {"name": "ci-1", "labels": ["a"]})
    result = tasks.token_task(api_for(model), {"name": "ci-1", "labels": ["a"], "on_conflict": "replace"})
    assert result["replaced_runner"] == as_dict(old, "ci-1")
    assert result["diff"]["before"] == {"runner": as_dict(old, "ci-1")}
    assert result["diff"]["after"] == {"runner": result["runner"]} and result["runner_id"] != old
    assert "recovery" not in result


def test_jit_after_a_lost_answer_reports_the_recovery(model):
    admin(model, "POST", "/faults", {"path": "generate-jitconfig$", "status": 502, "times": 1, "kind": "error"})
    result = tasks.token_task(api_for(model), {"name": "ci-9", "labels": ["a"]})
    assert result["recovery"] == (f"the JIT request for 'ci-9' got no answer, and GitHub had created no runner; "
                                  f"it was asked again (id {result['runner_id']})")


# ---------------------------------------------------------------- runner_task
def test_absent_deletes_one_runner_by_name_or_id(model):
    first, second = runner(model, "ci-1"), runner(model, "ci-2")
    result = tasks.runner_task(api_for(model), {"name": "ci-1"})
    assert result == {"changed": True, "state": "absent", "scope": ORG, "runner": as_dict(first, "ci-1"),
                      "diff": {"before": {"runner": "ci-1"}, "after": {"runner": None}}}
    checked = tasks.runner_task(api_for(model), {"state": "absent", "runner_id": second}, check_mode=True)
    assert checked["changed"] is True and checked["runner"] == as_dict(second, "ci-2")
    assert [r["name"] for r in admin(model, "GET", "/runners")["runners"]] == ["ci-2"]
    gone = tasks.runner_task(api_for(model), {"runner_id": first})
    assert gone == {"changed": False, "state": "absent", "scope": ORG, "runner": None,
                    "diff": {"before": {"runner": None}, "after": {"runner": None}}}


def test_pruned_needs_a_prefix(model):
    with pytest.raises(ghr.RunnerError) as info:
        tasks.runner_task(api_for(model), {"state": "pruned"})
    assert str(info.value) == "state=pruned needs name_prefix"


def test_pruned_deletes_orphans_and_says_why_it_kept_the_others(model):
    idle = runner(model, "ci-1")
    kept = runner(model, "ci-2")
    busy = runner(model, "ci-3", status="online", busy=True)
    runner(model, "other-1")
    params = {"state": "pruned", "name_prefix": "ci-", "keep": ["ci-2"]}
    checked = tasks.runner_task(api_for(model), params, check_mode=True)
    assert checked["deleted"] == [as_dict(idle, "ci-1")] and checked["changed"] is True
    assert len(admin(model, "GET", "/runners")["runners"]) == 4
    result = tasks.runner_task(api_for(model), params)
    assert result == {
        "changed": True, "state": "pruned", "scope": ORG, "deleted": [as_dict(idle, "ci-1")],
        "kept": [dict(as_dict(kept, "ci-2"), reason="in keep list"),
                 dict(as_dict(busy, "ci-3", status="online", busy=True), reason="busy")],
        "diff": {"before": {"runners": ["ci-1", "ci-2", "ci-3"]}, "after": {"runners": ["ci-2", "ci-3"]}},
    }
    again = tasks.runner_task(api_for(model), params)
    assert again["changed"] is False and again["deleted"] == []


# ---------------------------------------------------------------- info_task
def test_info_filters_runners(model):
    one = runner(model, "ci-1", labels=("self-hosted", "gpu"))
    two = runner(model, "ci-2", status="online", busy=True)
    runner(model, "x-3")
    api = api_for(model)
    assert tasks.info_task(api, {}) == {"changed": False, "scope": ORG, "runners": [
        as_dict(one, "ci-1", labels=("self-hosted", "gpu")), as_dict(two, "ci-2", status="online", busy=True),
        as_dict(one + 2, "x-3")]}
    assert [r["name"] for r in tasks.info_task(api, {"name": "ci-2"})["runners"]] == ["ci-2"]
    assert api.client.transport.calls[-1][:3] == ("GET", "/orgs/acme/actions/runners",
                                                  {"name": ["ci-2"], "per_page": ["100"]})
    assert [r["name"] for r in tasks.info_task(api, {"name_prefix": "ci-"})["runners"]] == ["ci-1", "ci-2"]
    assert [r["name"] for r in tasks.info_task(api, {"labels": ["gpu"]})["runners"]] == ["ci-1"]
    assert [r["name"] for r in tasks.info_task(api, {"status": "online"})["runners"]] == ["ci-2"]
    assert [r["name"] for r in tasks.info_task(api, {"busy": False})["runners"]] == ["ci-1", "x-3"]
    assert "runner_groups" not in tasks.info_task(api, {})
    assert tasks.info_task(api, {"runner_groups": True})["runner_groups"] == [
        {"id": 1, "name": "Default", "default": True}]
