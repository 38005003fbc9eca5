# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runner API's exact words and values (errors a user reads, defaults, what each call asks),
against the fake GitHub's model as the client's transport (no socket)."""

from __future__ import annotations

import pytest

from test_github_tasks import Transport, admin, model  # noqa: F401  pylint: disable=unused-import

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_runners as ghr

ORG = gh.Scope("organization", "acme")


def api_for(model, scope=ORG, retries=0):
    client = gh.GitHubClient("https://api.github.com", auth=gh.TokenAuth("ghp_tasks"), transport=Transport(model),
                             policy=gh.RetryPolicy(max_retries=retries, max_wait=0))
    return ghr.RunnerAPI(client, scope)


def add(model, name, status="offline", busy=False):
    return admin(model, "POST", "/runners", {"scope": "org:acme", "name": name, "status": status, "busy": busy})["id"]


def fault(model, path, status=502, times=1):
    admin(model, "POST", "/faults", {"path": path, "status": status, "times": times, "kind": "error"})


# ---------------------------------------------------------------- Runner
def test_runner_from_a_sparse_answer_takes_githubs_defaults():
    runner = ghr.Runner.from_api({"id": "7", "labels": [{"name": "a"}, "b", {"name": ""}, None]})
    assert runner.as_dict() == {"id": 7, "name": "", "os": "unknown", "status": "offline", "busy": False,
                                "ephemeral": None, "labels": ["a", "b", "None"], "runner_group_id": None}
    plain = ghr.Runner(1, "x")
    assert (plain.os, plain.status, plain.busy, plain.ephemeral, plain.labels) == (
        "unknown", "offline", False, None, [])
    assert ghr.Runner(2, "y", os="Linux").os == "Linux"


def test_runner_words():
    assert ghr.Runner(3, "r", status="online", busy=True).describe() == "runner 'r' (id 3, online, busy)"
    assert ghr.Runner(3, "r").describe() == "runner 'r' (id 3, offline)"
    assert repr(ghr.Runner(3, "r", busy=True)) == "Runner(3, 'r', 'offline', busy=True)"
    assert ghr.Runner(1, "a").idle_offline and not ghr.Runner(1, "a", busy=True).idle_offline


# ---------------------------------------------------------------- labels
def test_label_rules_and_their_messages():
    assert ghr.validate_labels(["a", " b ", "a"]) == ["a", "b"]
    assert len(ghr.validate_labels([f"l{n}" for n in range(100)])) == 100
    for labels, message in (
            (["a", " "], "runner labels must not be empty strings"),
            ([], "a JIT runner needs at least one label (GitHub adds none for JIT runners: include self-hosted "
                 "and the OS/arch labels your workflows use)"),
            ([f"l{n}" for n in range(101)], "a runner can have at most 100 labels, got 101")):
        with pytest.raises(ghr.RunnerError) as info:
            ghr.validate_labels(labels)
        assert str(info.value) == message


# ---------------------------------------------------------------- the API's calls
def test_tokens_are_dicts_of_token_and_expiry(model):
    api = api_for(model)
    for token in (api.registration_token(), api.remove_token()):
        assert sorted(token) == ["expires_at", "token"] and token["token"] and token["expires_at"]
    assert [c[1] for c in api.client.transport.calls] == [
        "/orgs/acme/actions/runners/registration-token", "/orgs/acme/actions/runners/remove-token"]


def test_token_calls_are_repeated_after_a_server_error(model):
    fault(model, "remove-token$")
    fault(model, "registration-token$")
    api = api_for(model, retries=1)
    api.client.sleep = lambda s: None
    api.client.policy.max_wait = 100
    assert api.remove_token()["token"] and api.registration_token()["token"]


def test_failed_calls_name_what_they_did(model):
    fault(model, "remove-token$", status=404)
    with pytest.raises(gh.GitHubNotFound, match="^create a runner remove token for organization 'acme': HTTP 404"):
        api_for(model).remove_token()
    fault(model, "registration-token$", status=404)
    with pytest.raises(gh.GitHubNotFound, match="^create a runner registration token for organization 'acme'"):
        api_for(model).registration_token()
    fault(model, "actions/runners$", status=404)
    with pytest.raises(gh.GitHubNotFound, match="^list self-hosted runners for organization 'acme': HTTP 404"):
        api_for(model).list_runners()
    fault(model, "actions/runners/5$", status=403)
    with pytest.raises(gh.GitHubError, match="^get runner 5 for organization 'acme': HTTP 403"):
        api_for(model).get_runner(5)
    fault(model, "actions/runners/6$", status=409)
    with pytest.raises(gh.GitHubError, match="^delete runner 6 for organization 'acme': HTTP 409"):
        api_for(model).delete_runner(6)
    fault(model, "runner-groups$", status=404)
    with pytest.raises(gh.GitHubError, match="^list runner groups for organization 'acme': HTTP 404"):
        api_for(model).runner_groups()
    fault(model, "generate-jitconfig$", status=422)
    with pytest.raises(gh.GitHubValidationError, match="^create a JIT runner config for 'j' for organization"):
        api_for(model).generate_jit_config("j", ["a"], 1)


def test_list_runners_asks_github_to_filter_by_name(model):
    add(model, "a")
    add(model, "b")
    api = api_for(model)
    assert [r.name for r in api.list_runners(name="b")] == ["b"]
    assert api.client.transport.calls[-1][2] == {"name": ["b"], "per_page": ["100"]}
    assert [r.name for r in api.list_runners()] == ["a", "b"]
    assert api.client.transport.calls[-1][2] == {"per_page": ["100"]}
    assert api.find_runner("c") is None and api.find_runner("a").name == "a"


def test_runner_groups_of_a_repository_and_an_organization(model):
    repo = api_for(model, gh.Scope("repository", "acme/app"))
    assert repo.runner_groups() == [{"id": 1, "name": "Default", "default": True}]
    assert repo.client.transport.calls == []
    admin(model, "POST", "/runner-groups", {"scope": "org:acme", "name": "Big", "id": 4})
    assert api_for(model).runner_groups() == [{"id": 1, "name": "Default", "default": True},
                                              {"id": 4, "name": "Big", "default": False}]


def test_a_runner_group_by_name(model):
    admin(model, "POST", "/runner-groups", {"scope": "org:acme", "name": "Big", "id": 4})
    api = api_for(model)
    assert api.resolve_runner_group("Big") == 4 and api.resolve_runner_group("big") == 4
    with pytest.raises(ghr.RunnerError) as info:
        api.resolve_runner_group("small")
    assert str(info.value) == "organization 'acme': no runner group named 'small' (known: Big, Default)"
    admin(model, "POST", "/runner-groups", {"scope": "org:acme", "name": "BIG", "id": 5})
    assert api.resolve_runner_group("BIG") == 5
    with pytest.raises(ghr.RunnerError, match="no runner group named 'bIg'"):
        api.resolve_runner_group("bIg")  # two differ only in case: ambiguous


def test_no_runner_group_at_all(monkeypatch, model):
    api = api_for(model)
    monkeypatch.setattr(api, "runner_groups", lambda: [])
    with pytest.raises(ghr.RunnerError) as info:
        api.resolve_runner_group("x")
    assert str(info.value) == "organization 'acme': no runner group named 'x' (known: none)"


def test_a_jit_answer_without_its_config_is_refused(monkeypatch, model):
    api = api_for(model)
    monkeypatch.setattr(api, "_post", lambda *a, **k: {"runner": {"id": 1, "name": "x"}})
    with pytest.raises(ghr.RunnerError) as info:
        api.generate_jit_config("x", ["a"], 1)
    assert str(info.value) == ("organization 'acme': GitHub's JIT answer for 'x' lacks encoded_jit_config or "
                               "runner")


def test_jit_request_body(model):
    api = api_for(model)
    api.generate_jit_config("x", ("a", "b"), "1", work_folder="_w")
    assert api.client.transport.calls[-1][3] == {"name": "x", "runner_group_id": 1, "labels": ["a", "b"],
                                                 "work_folder": "_w"}
    api.generate_jit_config("y", ["a"], 1)
    assert "work_folder" not in api.client.transport.calls[-1][3]


# ---------------------------------------------------------------- create, delete, prune
def test_a_name_that_exists_is_a_conflict_unless_replaced(model):
    add(model, "x")
    with pytest.raises(gh.GitHubConflict) as info:
        ghr.create_jit_runner(api_for(model), "x", ["a"], 1)
    assert str(info.value) == ("organization 'acme': a runner named 'x' already exists (HTTP 409 Already exists - "
                               "A runner with the name x already exists.); delete it first or use "
                               "on_conflict=replace to replace it when it is offline and idle")
    assert info.value.status == 409 and info.value.github_message.startswith("Already exists")
    add(model, "live", status="online")
    with pytest.raises(gh.GitHubConflict) as info:
        ghr.create_jit_runner(api_for(model), "live", ["a"], 1, on_conflict="replace")
    assert str(info.value).endswith("runner 'live' (id 2, online) already exists and is not offline and idle; "
                                    "not replacing a live runner")
    assert info.value.status == 409
    made = ghr.create_jit_runner(api_for(model), "x", ["a"], 1, work_folder="_w", on_conflict="replace")
    assert made.replaced.name == "x" and made.replaced.id == 1 and made.runner.id == 3 and made.recovery is None


def test_two_lost_answers_in_a_row_leave_nothing_behind(model):
    fault(model, "generate-jitconfig$", times=2)
    with pytest.raises(gh.GitHubAmbiguous) as info:
        ghr.create_jit_runner(api_for(model), "x", ["a"], 1)
    assert str(info.value).endswith("; it happened twice in a row; GitHub created no runner, so nothing is left "
                                    "behind: try again later")
    assert info.value.status == 502


def test_a_runner_made_by_a_lost_request_is_removed(model, monkeypatch):
    api = api_for(model)
    real = api.generate_jit_config
    answers = []

    def lose_the_answer(*args, **kwargs):
        made = real(*args, **kwargs)  # GitHub did it ...
        answers.append(made)
        if len(answers) < 3:
            raise gh.GitHubAmbiguous("create a JIT runner config for 'x': no usable answer", status=504)
        return made

    monkeypatch.setattr(api, "generate_jit_config", lose_the_answer)
    with pytest.raises(gh.GitHubAmbiguous) as info:
        ghr.create_jit_runner(api, "x", ["a"], 1)
    assert str(info.value) == (f"create a JIT runner config for 'x': no usable answer; it happened twice in a row; "
                               f"the runner GitHub created (id {answers[1][0].id}) was removed, so nothing is left "
                               "behind: try again later")
    assert info.value.status == 504
    assert admin(model, "GET", "/runners")["runners"] == []
    made = ghr.create_jit_runner(api, "x", ["a"], 1)
    assert made.recovery is None
    answers.clear()
    admin(model, "DELETE", "/runners?prefix=x")
    answers.append(None)  # the next call is the second: its answer is lost once
    made = ghr.create_jit_runner(api, "x", ["a"], 1, work_folder="_w")
    assert made.recovery == (f"the JIT request for 'x' got no answer, but GitHub had created the runner "
                             f"(id {answers[1][0].id}); without its JIT config it is unusable, so it was removed and "
                             f"'x' created again (id {made.runner.id})")


def test_a_live_runner_after_a_lost_answer_is_not_removed(model, monkeypatch):
    add(model, "x", status="online")
    api = api_for(model)

    def lost(*args, **kwargs):
        raise gh.GitHubAmbiguous("lost", status=502)

    monkeypatch.setattr(api, "generate_jit_config", lost)
    with pytest.raises(gh.GitHubConflict) as info:
        ghr.create_jit_runner(api, "x", ["a"], 1)
    assert str(info.value) == ("organization 'acme': runner 'x' (id 1, online) exists after a JIT request for it "
                               "got no answer, and it is not offline and idle; not removing it")
    assert info.value.status == 409


def test_when_looking_for_a_lost_runner_fails_too(model, monkeypatch):
    api = api_for(model)

    def lost(*args, **kwargs):
        raise gh.GitHubAmbiguous("first lost", status=504)

    monkeypatch.setattr(api, "generate_jit_config", lost)
    fault(model, "actions/runners$", status=404)
    with pytest.raises(gh.GitHubAmbiguous) as info:
        ghr.create_jit_runner(api, "x", ["a"], 1)
    assert str(info.value).startswith("first lost; looking for a runner named 'x' it may have created failed too "
                                      "(list self-hosted runners for organization 'acme': HTTP 404")
    assert str(info.value).endswith("): check the scope's runners before trying again")
    assert info.value.status == 504


def test_delete_runner_words(model):
    add(model, "x")
    with pytest.raises(ghr.RunnerError) as info:
        ghr.delete_runner(api_for(model))
    assert str(info.value) == "a runner name or id is needed"
    with pytest.raises(ghr.RunnerError) as info:
        ghr.delete_runner(api_for(model), name="y", runner_id=1)
    assert str(info.value) == "organization 'acme': runner id 1 is named 'x', not 'y'"
    assert ghr.delete_runner(api_for(model), name=None, runner_id=1).name == "x"
    assert ghr.delete_runner(api_for(model), runner_id=1) is None
    add(model, "busy", status="online", busy=True)
    with pytest.raises(ghr.RunnerError) as info:
        ghr.delete_runner(api_for(model), name="busy")
    assert str(info.value) == "organization 'acme': runner 'busy' (id 2, online, busy) is running a job; not deleting it"


def test_prune_plan_and_its_reasons(model):
    runners = [ghr.Runner(1, "p-b"), ghr.Runner(2, "p-a", status="online"), ghr.Runner(3, "p-c", busy=True),
               ghr.Runner(4, "p-d"), ghr.Runner(5, "q-x")]
    plan = ghr.plan_prune(runners, "p-", keep=["p-d"])
    assert plan.as_dict() == {
        "delete": [runners[0].as_dict()],
        "kept": [dict(runners[1].as_dict(), reason="online"), dict(runners[2].as_dict(), reason="busy"),
                 dict(runners[3].as_dict(), reason="in keep list")]}
    with pytest.raises(ghr.RunnerError) as info:
        ghr.plan_prune(runners, "")
    assert str(info.value) == "pruning needs a non-empty runner name prefix"


def test_prune_goes_on_past_each_skipped_runner(model):
    gone, woke, refused, last = (add(model, n) for n in ("p-1", "p-2", "p-3", "p-4"))
    api = api_for(model)
    plan = ghr.plan_prune(api.list_runners(), "p-")
    admin(model, "DELETE", f"/runners/{gone}")
    admin(model, "POST", f"/runners/{woke}/status", {"status": "online", "busy": True})
    fault(model, f"actions/runners/{refused}$", status=422)
    model.state["faults"][-1]["method"] = "DELETE"
    deleted, skipped = ghr.prune_runners(api, plan)
    assert [r.name for r in deleted] == ["p-4"]
    assert [(r.name, why) for r, why in skipped] == [
        ("p-1", "already gone"), ("p-2", "now online, busy"), ("p-3", "GitHub refused: Unprocessable Entity")]
    assert last


def test_prune_stops_on_any_other_error(model):
    add(model, "p-1")
    api = api_for(model)
    plan = ghr.plan_prune(api.list_runners(), "p-")
    fault(model, "actions/runners/1$", status=409)
    model.state["faults"][-1]["method"] = "DELETE"
    with pytest.raises(gh.GitHubConflict):
        ghr.prune_runners(api, plan)


def test_prune_counts_a_runner_deleted_meanwhile_as_gone(model, monkeypatch):
    add(model, "p-1")
    api = api_for(model)
    plan = ghr.plan_prune(api.list_runners(), "p-")
    monkeypatch.setattr(api, "delete_runner", lambda runner_id: False)
    assert ghr.prune_runners(api, plan) == ([], [(plan.delete[0], "already gone")])
