"""Runner operations and decisions: JIT 409 handling, deleting, pruning, filters, module tasks."""

from __future__ import annotations

import json
import os
import sys

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_options as options
from ansible_collections.rum.pool.plugins.module_utils import _github_runners as runners
from ansible_collections.rum.pool.plugins.module_utils import _github_tasks as tasks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools"))
from fake_github import FakeGitHubModel, decode_jit_config  # noqa: E402  pylint: disable=wrong-import-position

R = runners.Runner


def model_transport(model):
    def transport(method, url, headers, body, timeout):
        path = url.split("://", 1)[1]
        path = path[path.index("/"):]
        reply = model.handle(method, path, headers, body or b"")
        return gh.Response(reply.status, reply.headers, reply.body)
    return transport


@pytest.fixture
def model():
    m = FakeGitHubModel()
    m.public_url = "https://api.github.test"
    m.handle("POST", "/_fake/setup", {}, json.dumps({
        "pats": [{"token": "ghp_all"}, {"token": "github_pat_fine", "scopes": ["org:acme"]}],
        "runner_groups": [{"scope": "org:acme", "name": "ci-pool", "id": 7}],
    }).encode())
    return m


def api_for(model, scope="organization", name="acme", token="ghp_all", **params):
    params = dict({scope: name, "token": token, "api_url": "https://api.github.test", "max_wait": 5}, **params)
    return options.connect(params, transport=model_transport(model), sleep=lambda s: None)


def admin(model, method, path, data=None):
    reply = model.handle(method, "/_fake" + path, {}, json.dumps(data).encode() if data is not None else b"")
    assert reply.status < 400, reply.body
    return reply.json()


def api_calls(model, method=None):
    return [c for c in model.state["calls"] if method is None or c["method"] == method]


# ---------------------------------------------------------------- pure decisions
def test_plan_prune_deletes_only_offline_idle_prefixed_runners_not_kept():
    listed = [
        R(1, "pool-h1-0", status="offline"),
        R(2, "pool-h1-1", status="online"),
        R(3, "pool-h1-2", status="online", busy=True),
        R(4, "pool-h1-3", status="offline", busy=True),  # busy flag lags: still left alone
        R(5, "pool-h1-4", status="offline"),  # VM booting, in keep
        R(6, "pool-h2-0", status="offline"),  # another host's prefix
        R(7, "other", status="offline"),
    ]
    plan = runners.plan_prune(listed, "pool-h1-", keep=["pool-h1-4"])
    assert [r.id for r in plan.delete] == [1]
    assert {r.id: why for r, why in plan.kept} == {2: "online", 3: "busy", 4: "busy", 5: "in keep list"}


def test_plan_prune_needs_a_prefix():
    with pytest.raises(runners.RunnerError, match="prefix"):
        runners.plan_prune([R(1, "x")], "")


def test_select_runners_filters_combine():
    listed = [R(1, "a-1", labels=["self-hosted", "gpu"], status="online"),
              R(2, "a-2", labels=["self-hosted"], status="online", busy=True),
              R(3, "b-1", labels=["gpu"], status="offline")]
    assert [r.id for r in runners.select_runners(listed, name_prefix="a-")] == [1, 2]
    assert [r.id for r in runners.select_runners(listed, labels=["gpu"])] == [1, 3]
    assert [r.id for r in runners.select_runners(listed, status="online", busy=False)] == [1]
    assert [r.id for r in runners.select_runners(listed, name="b-1")] == [3]


def test_labels_are_validated():
    assert runners.validate_labels(["self-hosted", "linux", "self-hosted"]) == ["self-hosted", "linux"]
    with pytest.raises(runners.RunnerError, match="at least one label"):
        runners.validate_labels([])
    with pytest.raises(runners.RunnerError, match="at most 100"):
        runners.validate_labels([f"l{i}" for i in range(101)])


# ---------------------------------------------------------------- against the fake model
@pytest.mark.parametrize("scope,name", [("repository", "acme/app"), ("organization", "acme"),
                                        ("enterprise", "ent")])
def test_jit_config_has_githubs_shape(model, scope, name):
    api = api_for(model, scope, name)
    made = runners.create_jit_runner(api, "pool-h1-0", ["self-hosted", "linux"], 1)
    runner, blob = made.runner, made.config
    assert made.replaced is None and made.recovery is None
    assert runner.status == "offline" and runner.ephemeral is True
    files = decode_jit_config(blob)
    assert set(files) == {".runner", ".credentials", ".credentials_rsaparams"}
    assert files[".runner"]["AgentId"] == str(runner.id)
    assert files[".runner"]["AgentName"] == "pool-h1-0"
    assert files[".credentials"]["Scheme"] == "OAuth"


def test_jit_409_fails_clearly_by_default(model):
    api = api_for(model)
    runners.create_jit_runner(api, "pool-h1-0", ["self-hosted"], 1)
    with pytest.raises(gh.GitHubConflict) as info:
        runners.create_jit_runner(api, "pool-h1-0", ["self-hosted"], 1)
    assert "organization 'acme'" in str(info.value) and "pool-h1-0" in str(info.value)
    assert "on_conflict=replace" in str(info.value)


def test_jit_409_replaces_a_stale_offline_runner(model):
    api = api_for(model)
    old = runners.create_jit_runner(api, "pool-h1-0", ["self-hosted"], 1).runner
    made = runners.create_jit_runner(api, "pool-h1-0", ["self-hosted"], 1, on_conflict="replace")
    new, replaced = made.runner, made.replaced
    assert replaced.id == old.id and new.id != old.id
    assert [r.id for r in api.list_runners()] == [new.id]


@pytest.mark.parametrize("state", [{"status": "online"}, {"busy": True}])
def test_jit_409_never_replaces_a_live_runner(model, state):
    api = api_for(model)
    old = runners.create_jit_runner(api, "pool-h1-0", ["self-hosted"], 1).runner
    admin(model, "POST", f"/runners/{old.id}/status", state)
    with pytest.raises(gh.GitHubConflict, match="not replacing a live runner"):
        runners.create_jit_runner(api, "pool-h1-0", ["self-hosted"], 1, on_conflict="replace")
    assert [r.id for r in api.list_runners()] == [old.id]
    assert not api_calls(model, "DELETE")


def test_runner_group_is_resolved_by_name(model):
    api = api_for(model)
    assert api.resolve_runner_group("ci-pool") == 7
    assert api.resolve_runner_group("default") == 1
    with pytest.raises(runners.RunnerError, match="known: Default, ci-pool"):
        api.resolve_runner_group("nope")
    assert api_for(model, "repository", "acme/app").resolve_runner_group("Default") == 1


def test_list_runners_follows_pages(model):
    for i in range(230):
        model.add_runner("org:acme", f"r-{i:03d}")
    listed = api_for(model).list_runners()
    assert len(listed) == 230 and len({r.id for r in listed}) == 230
    assert len(api_calls(model, "GET")) == 3


def test_delete_runner_is_idempotent_and_refuses_busy(model):
    api = api_for(model)
    busy = admin(model, "POST", "/runners", {"scope": "org:acme", "name": "busy-1", "busy": True})
    admin(model, "POST", "/runners", {"scope": "org:acme", "name": "idle-1", "status": "online"})
    with pytest.raises(runners.RunnerError, match=r"runner 'busy-1' \(id \d+, online, busy\) is running a job"):
        runners.delete_runner(api, name="busy-1")
    assert runners.delete_runner(api, name="idle-1").name == "idle-1"
    assert runners.delete_runner(api, name="idle-1") is None
    assert runners.delete_runner(api, runner_id=busy["id"] + 1000) is None
    with pytest.raises(runners.RunnerError, match="is named 'busy-1'"):
        runners.delete_runner(api, name="x", runner_id=busy["id"])


def test_prune_rechecks_each_runner_before_deleting(model):
    api = api_for(model)
    a = model.add_runner("org:acme", "pool-h1-0")
    b = model.add_runner("org:acme", "pool-h1-1")
    plan = runners.plan_prune(api.list_runners(), "pool-h1-")
    assert len(plan.delete) == 2
    model.state["runners"][str(b["id"])].update(status="online", busy=True)  # woke up meanwhile
    deleted, skipped = runners.prune_runners(api, plan)
    assert [r.id for r in deleted] == [a["id"]]
    assert [(r.id, why) for r, why in skipped] == [(b["id"], "now online, busy")]


# ---------------------------------------------------------------- module tasks
def test_token_task_check_mode_creates_nothing(model):
    api = api_for(model)
    result = tasks.token_task(api, {"kind": "registration"}, check_mode=True)
    assert result["changed"] and "token" not in result
    result = tasks.token_task(api, {"kind": "jit", "name": "r", "labels": ["x"]}, check_mode=True)
    assert result["changed"] and "encoded_jit_config" not in result
    assert not api_calls(model, "POST")


def test_token_task_kinds(model):
    api = api_for(model)
    reg = tasks.token_task(api, {"kind": "registration"})
    rem = tasks.token_task(api, {"kind": "remove"})
    assert reg["token"] != rem["token"] and reg["expires_at"].endswith("Z")
    assert reg["runner_url"] == api.scope.web_url(api.client.api_url) and reg["runner_url"].endswith("/acme")
    jit = tasks.token_task(api, {"kind": "jit", "name": "r1", "labels": ["self-hosted"], "runner_group": "ci-pool"})
    assert jit["runner_group_id"] == 7 and jit["runner"]["runner_group_id"] == 7
    assert jit["runner_id"] == jit["runner"]["id"] and jit["encoded_jit_config"]


def test_token_task_check_mode_predicts_a_conflict(model):
    api = api_for(model)
    tasks.token_task(api, {"kind": "jit", "name": "r1", "labels": ["x"]})
    with pytest.raises(gh.GitHubConflict, match="already exists"):
        tasks.token_task(api, {"kind": "jit", "name": "r1", "labels": ["x"]}, check_mode=True)
    result = tasks.token_task(api, {"kind": "jit", "name": "r1", "labels": ["x"], "on_conflict": "replace"},
                              check_mode=True)
    assert result["replaced_runner"]["name"] == "r1"


def test_runner_task_prune_and_absent(model):
    api = api_for(model)
    model.add_runner("org:acme", "pool-h1-0")
    model.add_runner("org:acme", "pool-h1-1", status="online")
    check = tasks.runner_task(api, {"state": "pruned", "name_prefix": "pool-h1-"}, check_mode=True)
    assert check["changed"] and [r["name"] for r in check["deleted"]] == ["pool-h1-0"]
    assert len(api.list_runners()) == 2
    done = tasks.runner_task(api, {"state": "pruned", "name_prefix": "pool-h1-"})
    assert [r["name"] for r in done["deleted"]] == ["pool-h1-0"]
    assert done["diff"]["after"]["runners"] == ["pool-h1-1"]
    again = tasks.runner_task(api, {"state": "pruned", "name_prefix": "pool-h1-"})
    assert not again["changed"] and again["kept"][0]["reason"] == "online"
    gone = tasks.runner_task(api, {"state": "absent", "name": "pool-h1-1"})
    assert gone["changed"] and not tasks.runner_task(api, {"state": "absent", "name": "pool-h1-1"})["changed"]


def test_info_task_filters_and_groups(model):
    model.add_runner("org:acme", "pool-h1-0", labels=["self-hosted", "gpu"], status="online")
    model.add_runner("org:acme", "pool-h2-0", labels=["self-hosted"])
    result = tasks.info_task(api_for(model), {"name_prefix": "pool-h1-", "labels": ["gpu"],
                                              "runner_groups": True})
    assert [r["name"] for r in result["runners"]] == ["pool-h1-0"]
    assert result["runners"][0]["labels"] == ["self-hosted", "gpu"]
    assert {g["name"] for g in result["runner_groups"]} == {"Default", "ci-pool"}


# ---------------------------------------------------------------- credentials and options
def test_fine_grained_token_cannot_manage_an_enterprise(model):
    api = api_for(model, "enterprise", "ent", token="github_pat_fine")
    with pytest.raises(gh.GitHubAuthError) as info:
        api.list_runners()
    assert "enterprise 'ent': HTTP 403" in str(info.value)
    assert "manage_runners:enterprise" in str(info.value)


def test_bad_token_names_scope_and_status(model):
    with pytest.raises(gh.GitHubAuthError) as info:
        tasks.token_task(api_for(model, "repository", "acme/app", token="ghp_wrong"), {"kind": "registration"})
    assert "repository 'acme/app': HTTP 401 Bad credentials" in str(info.value)
    assert "ghp_wrong" not in str(info.value)


def test_options_need_a_key_for_an_app(tmp_path):
    with pytest.raises(options.OptionError, match="app_private_key"):
        options.connect({"organization": "acme", "app_id": "1"})
    with pytest.raises(options.OptionError, match="cannot read the GitHub App private key file"):
        options.connect({"organization": "acme", "app_id": "1",
                         "app_private_key_path": str(tmp_path / "missing.pem")})
    with pytest.raises(gh.GitHubError, match="classic personal access token"):
        options.connect({"enterprise": "ent", "app_id": "1", "app_private_key": "x"})


def test_rate_limited_jit_waits_and_succeeds(model):
    slept = []
    admin(model, "POST", "/faults", {"path": "generate-jitconfig", "status": 429, "retry_after": 1, "times": 2})
    api = options.connect({"organization": "acme", "token": "ghp_all", "api_url": "https://api.github.test",
                           "max_wait": 5}, transport=model_transport(model), sleep=slept.append)
    result = tasks.token_task(api, {"kind": "jit", "name": "r1", "labels": ["x"]})
    assert result["runner_id"] and slept == [1.0, 1.0]
    assert options.api_summary(api)["retries"] == 2


# ---------------------------------------------------------------- answers that never came
class LosingTransport:
    """Passes calls to the model; the calls a test picks are done but their answers are lost
    (``after``), or lost before they reach GitHub (``before``), or refused (``refused``)."""

    def __init__(self, model, **plan):
        self.inner = model_transport(model)
        self.plan = {kind: list(paths) for kind, paths in plan.items()}
        self.seen = []

    def _take(self, kind, path):
        for pattern in self.plan.get(kind, []):
            if pattern in path:
                self.plan[kind].remove(pattern)
                return True
        return False

    def __call__(self, method, url, headers, body, timeout):
        self.seen.append((method, url.split("/", 3)[-1]))
        key = f"{method} {url}"
        if self._take("refused", key):
            raise gh.TransportError(f"{method} {url}: [Errno 111] Connection refused", sent=False)
        if self._take("before", key):
            raise gh.TransportError(f"{method} {url}: timed out", sent=True)
        resp = self.inner(method, url, headers, body, timeout)
        if self._take("after", key):
            raise gh.TransportError(f"{method} {url}: The read operation timed out", sent=True)
        return resp


def lossy_api(model, **plan):
    transport = LosingTransport(model, **plan)
    params = {"organization": "acme", "token": "ghp_all", "api_url": "https://api.github.test", "max_wait": 5}
    return options.connect(params, transport=transport, sleep=lambda s: None), transport


def test_a_jit_answer_lost_after_github_made_the_runner_leaves_no_orphan(model):
    api, transport = lossy_api(model, after=["POST https://api.github.test/orgs/acme/actions/runners/generate-jitconfig"])
    made = runners.create_jit_runner(api, "pool-h1-1-aaaaaa", ["self-hosted"], 1)
    records = [r for r in api.list_runners() if r.name == "pool-h1-1-aaaaaa"]
    assert [r.id for r in records] == [made.runner.id]  # one record: the one whose JIT config we hold
    assert decode_jit_config(made.config)[".runner"]["AgentId"] == str(made.runner.id)
    assert made.recovery == (
        f"the JIT request for 'pool-h1-1-aaaaaa' got no answer, but GitHub had created the runner "
        f"(id {made.runner.id - 1}); without its JIT config it is unusable, so it was removed and "
        f"'pool-h1-1-aaaaaa' created again (id {made.runner.id})")
    assert [m for m, _p in transport.seen].count("DELETE") == 1


def test_a_jit_request_lost_before_github_saw_it_is_asked_again(model):
    api, _transport = lossy_api(model, before=["generate-jitconfig"])
    made = runners.create_jit_runner(api, "pool-h1-1-bbbbbb", ["self-hosted"], 1)
    assert made.recovery == ("the JIT request for 'pool-h1-1-bbbbbb' got no answer, and GitHub had "
                             f"created no runner; it was asked again (id {made.runner.id})")
    assert [r.name for r in api.list_runners()] == ["pool-h1-1-bbbbbb"]


def test_two_lost_jit_answers_in_a_row_fail_but_leave_nothing(model):
    api, _transport = lossy_api(model, after=["generate-jitconfig", "generate-jitconfig"])
    with pytest.raises(gh.GitHubAmbiguous) as info:
        runners.create_jit_runner(api, "pool-h1-1-cccccc", ["self-hosted"], 1)
    assert "it happened twice in a row; the runner GitHub created (id 2) was removed, so nothing is left" \
        in info.value.message
    assert api.list_runners() == []


def test_a_refused_connection_is_simply_retried(model):
    api, transport = lossy_api(model, refused=["generate-jitconfig"])
    made = runners.create_jit_runner(api, "pool-h1-1-dddddd", ["self-hosted"], 1)
    assert made.recovery is None and [r.name for r in api.list_runners()] == ["pool-h1-1-dddddd"]
    assert [m for m, _p in transport.seen].count("POST") == 2


def test_a_server_error_to_a_jit_request_is_not_blindly_repeated(model):
    admin(model, "POST", "/faults", {"path": "generate-jitconfig$", "status": 502, "times": 1})
    api = api_for(model)
    made = runners.create_jit_runner(api, "pool-h1-1-eeeeee", ["self-hosted"], 1)
    assert "got no answer, and GitHub had created no runner" in made.recovery
    assert api.client.stats.retries == 0  # looked up and asked again, not retried


def test_token_requests_are_safe_to_repeat(model):
    api, transport = lossy_api(model, after=["registration-token"])
    assert api.registration_token()["token"]
    assert [m for m, _p in transport.seen].count("POST") == 2


def test_a_repeated_delete_that_finds_nothing_was_done_by_the_first(model):
    api, _transport = lossy_api(model, after=["DELETE"])
    runner = runners.create_jit_runner(api, "pool-h1-1-ffffff", ["self-hosted"], 1).runner
    gone = runners.delete_runner(api, name="pool-h1-1-ffffff")
    assert gone.id == runner.id  # reported deleted (changed), though the second answer was a 404
    assert api.list_runners() == []


def test_the_token_task_reports_the_recovery(model):
    api, _transport = lossy_api(model, after=["generate-jitconfig"])
    result = tasks.token_task(api, {"kind": "jit", "name": "pool-h1-1-gggggg", "labels": ["self-hosted"]})
    assert "it was removed and 'pool-h1-1-gggggg' created again" in result["recovery"]
    assert result["runner"]["name"] == "pool-h1-1-gggggg"


def test_over_http_the_fake_answers_only_after_the_client_gave_up(model):
    """The real transport and the fake GitHub over HTTP: GitHub makes the runner, but answers
    after the client's timeout. The client neither retries blindly nor leaves the record behind."""
    from fake_github import FakeGitHub  # pylint: disable=import-outside-toplevel

    with FakeGitHub() as fake:
        fake.admin("POST", "/setup", {"pats": [{"token": "ghp_http"}]})
        fake.admin("POST", "/faults", {"path": "generate-jitconfig$", "kind": "delay", "delay": 2.5,
                                       "times": 1})
        api = options.connect({"organization": "acme", "token": "ghp_http", "api_url": fake.url,
                               "timeout": 1, "max_wait": 30})
        made = runners.create_jit_runner(api, "pool-h1-1-hhhhhh", ["self-hosted"], 1)
        assert "GitHub had created the runner (id 1)" in made.recovery
        assert "it was removed and 'pool-h1-1-hhhhhh' created again (id 2)" in made.recovery
        names = [r["name"] for r in fake.admin("GET", "/runners?scope=org:acme")["runners"]]
        assert names == ["pool-h1-1-hhhhhh"] and made.runner.id == 2
        posts = fake.admin("GET", "/calls?path=generate-jitconfig")["calls"]
        assert [c["status"] for c in posts] == [201, 201]  # the lost one and the new one; no 409
