"""The fake GitHub as a tool: admin API, runner life cycle, webhooks, state on disk, the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub, FakeGitHubModel, decode_jit_config  # noqa: E402  pylint: disable=wrong-import-position

WEBHOOK_SCHEMA = os.path.join(ROOT, ".cache", "npm", "node_modules", "@octokit", "webhooks-schemas", "schema.json")
PAT = {"Authorization": "Bearer ghp_t", "User-Agent": "test"}


def http(url, method="GET", body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, exc.headers
    return status, {k.lower(): v for k, v in hdrs.items()}, json.loads(raw) if raw else None


@pytest.fixture
def fake():
    server = FakeGitHub()
    server.start()
    server.admin("POST", "/pats", {"token": "ghp_t"})
    yield server
    server.stop()


class Receiver:
    """A tiny webhook receiver that records deliveries."""

    def __init__(self):
        self.got = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_only_loopback_by_default(fake):
    assert fake.url.startswith("http://127.0.0.1:")


def test_jit_config_decodes_like_the_runner_does_and_points_at_the_admin_api(fake):
    status, _unused, body = http(fake.url + "/orgs/acme/actions/runners/generate-jitconfig", "POST",
                                 {"name": "pool-h1-0", "runner_group_id": 1, "labels": ["self-hosted"]}, PAT)
    assert status == 201
    files = decode_jit_config(body["encoded_jit_config"])
    runner = files[".runner"]
    assert runner["AgentId"] == str(body["runner"]["id"]) and runner["AgentName"] == "pool-h1-0"
    assert runner["PoolId"] == "1" and runner["PoolName"] == "Default" and runner["Ephemeral"] == "True"
    assert runner["ServerUrl"] == fake.url + "/_fake/"
    assert all(isinstance(v, str) for v in runner.values())
    assert files[".credentials"]["Data"]["clientId"]
    assert set(files[".credentials_rsaparams"]) == {"d", "dp", "dq", "exponent", "inverseQ", "modulus", "p", "q"}


def test_stand_in_runner_life_cycle_through_the_admin_api(fake):
    """What a stand-in runner in a guest does: online, takes a job, done (then GitHub drops it)."""
    _unused, _unused, body = http(fake.url + "/repos/acme/app/actions/runners/generate-jitconfig", "POST",
                                  {"name": "pool-h1-1", "runner_group_id": 1, "labels": ["self-hosted"]}, PAT)
    server_url = decode_jit_config(body["encoded_jit_config"])[".runner"]["ServerUrl"]
    rid = body["runner"]["id"]
    status, _unused, view = http(f"{server_url}runners/{rid}/status", "POST", {"status": "online", "os": "Linux"})
    assert status == 200 and view["status"] == "online" and not view["busy"]
    _unused, _unused, view = http(f"{server_url}runners/{rid}/job", "POST", {"job_id": 31})
    assert view["busy"] and view["job"]["id"] == 31
    _unused, _unused, listed = http(fake.url + "/repos/acme/app/actions/runners", headers=PAT)
    assert listed["runners"][0]["busy"] is True and listed["runners"][0]["os"] == "Linux"
    status, _unused, view = http(f"{server_url}runners/{rid}/done", "POST", {"conclusion": "success"})
    assert status == 200 and view["removed"] is True
    _unused, _unused, listed = http(fake.url + "/repos/acme/app/actions/runners", headers=PAT)
    assert listed["total_count"] == 0


def test_admin_runners_by_name_and_errors(fake):
    fake.admin("POST", "/runners", {"scope": "org:acme", "name": "other-host-0", "busy": True})
    status, _unused, view = http(fake.url + "/_fake/runners/other-host-0")
    assert status == 200 and view["scope"] == "org:acme" and view["busy"]
    assert http(fake.url + "/_fake/runners/nope")[0] == 404
    assert http(fake.url + "/_fake/runners/other-host-0/status", "POST", {"status": "sleepy"})[0] == 400
    assert http(fake.url + "/_fake/nothing")[0] == 404


def test_faults_are_counted_and_expire(fake):
    fake.admin("POST", "/faults", {"method": "GET", "path": "/actions/runners$", "status": 503, "times": 2})
    codes = [http(fake.url + "/orgs/acme/actions/runners", headers=PAT)[0] for _unused in range(3)]
    assert codes == [503, 503, 200]
    assert fake.admin("GET", "/faults") == {"faults": []}


def test_primary_rate_limit_is_enforced_until_reset(fake):
    clock = {"now": 1000.0}
    fake.model.clock = lambda: clock["now"]
    fake.admin("POST", "/ratelimit", {"resource": "core", "remaining": 1, "reset_in": 30})
    assert http(fake.url + "/orgs/acme/actions/runners", headers=PAT)[0] == 200
    status, headers, body = http(fake.url + "/orgs/acme/actions/runners", headers=PAT)
    assert status == 403 and headers["x-ratelimit-remaining"] == "0" and "rate limit" in body["message"]
    assert headers["x-ratelimit-reset"] == "1030"
    # the registration bucket is separate
    assert http(fake.url + "/orgs/acme/actions/runners/registration-token", "POST", None, PAT)[0] == 201
    clock["now"] = 1031.0
    status, headers, _unused = http(fake.url + "/orgs/acme/actions/runners", headers=PAT)
    assert status == 200 and int(headers["x-ratelimit-remaining"]) > 4000


def test_calls_are_recorded_without_secrets(fake):
    http(fake.url + "/api/v3/orgs/acme/actions/runners?per_page=5",
         headers=dict(PAT, Accept="application/vnd.github+json"))
    calls = fake.admin("GET", "/calls")["calls"]
    assert calls[-1]["path"] == "/api/v3/orgs/acme/actions/runners"
    assert calls[-1]["query"] == {"per_page": "5"} and calls[-1]["auth"] == "pat"
    assert "ghp_t" not in json.dumps(calls)


def test_webhooks_are_signed_and_match_githubs_schema(fake):
    if not os.path.exists(WEBHOOK_SCHEMA):
        pytest.fail("webhook schemas missing: run: bash tools/fetch-test-data.sh")
    with open(WEBHOOK_SCHEMA, encoding="utf-8") as fh:
        definitions = json.load(fh)["definitions"]
    receiver = Receiver()
    try:
        fake.admin("POST", "/hooks", {"url": receiver.url, "secret": "s3cret"})
        job = fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["self-hosted", "linux"]})
        runner = fake.admin("POST", "/runners", {"scope": "org:acme", "name": "pool-h1-2", "ephemeral": True})
        fake.admin("POST", f"/runners/{runner['id']}/job", {"job_id": job["id"]})
        fake.admin("POST", f"/runners/{runner['id']}/done", {"conclusion": "failure"})
    finally:
        receiver.close()
    assert [json.loads(body)["action"] for _unused, body in receiver.got] == ["queued", "in_progress", "completed"]
    guids = set()
    for headers, body in receiver.got:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["x-hub-signature-256"] == expected
        assert headers["x-github-event"] == "workflow_job"
        guids.add(headers["x-github-delivery"])
        payload = json.loads(body)
        schema = {"$ref": f"#/definitions/workflow_job${payload['action']}", "definitions": definitions}
        jsonschema.Draft7Validator(schema).validate(payload)  # no metaschema check: the schema is large
    assert len(guids) == 3
    done = json.loads(receiver.got[-1][1])["workflow_job"]
    assert done["runner_name"] == "pool-h1-2" and done["conclusion"] == "failure"
    assert [d["status"] for d in fake.admin("GET", "/deliveries")["deliveries"]] == [202, 202, 202]


def test_redelivery_sends_the_same_body_and_delivery_id(fake):
    receiver = Receiver()
    try:
        fake.admin("POST", "/hooks", {"url": receiver.url, "secret": "s3cret"})
        fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["self-hosted"]})
        first = fake.admin("GET", "/deliveries")["deliveries"][-1]
        assert fake.admin("POST", f"/deliveries/{first['guid']}/redeliver") == {"guid": first["guid"]}
        with pytest.raises(RuntimeError, match="redeliver: 404"):
            fake.admin("POST", "/deliveries/0000-0000/redeliver")
    finally:
        receiver.close()
    assert len(receiver.got) == 2
    (h1, b1), (h2, b2) = receiver.got
    assert b1 == b2 and h1["x-github-delivery"] == h2["x-github-delivery"]
    assert h1["x-hub-signature-256"] == h2["x-hub-signature-256"]
    records = fake.admin("GET", "/deliveries")["deliveries"]
    assert [r["redelivery"] for r in records] == [False, True] and records[-1]["status"] == 202


def test_hooks_can_be_forgotten(fake):
    first = fake.admin("POST", "/hooks", {"url": "http://127.0.0.1:9/a", "secret": "x"})
    assert fake.admin("DELETE", "/hooks") == {"deleted": 1}
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["self-hosted"]})
    assert fake.admin("GET", "/deliveries")["deliveries"] == []
    assert fake.admin("POST", "/hooks", {"url": "http://127.0.0.1:9/b"})["id"] == first["id"] + 1


def test_state_survives_a_restart(tmp_path):
    first = FakeGitHub(state_dir=str(tmp_path))
    first.start()
    first.admin("POST", "/pats", {"token": "ghp_keep"})
    first.admin("POST", "/runners", {"scope": "repo:a/b", "name": "kept"})
    first.stop()
    assert oct(os.stat(tmp_path / "state.json").st_mode & 0o777) == "0o600"
    second = FakeGitHub(state_dir=str(tmp_path))
    url = second.start()
    try:
        keep_headers = {"Authorization": "token ghp_keep", "User-Agent": "t"}
        status, _unused, body = http(url + "/repos/a/b/actions/runners", headers=keep_headers)
        assert status == 200 and [r["name"] for r in body["runners"]] == ["kept"]
        assert (tmp_path / "url").read_text().strip() == url
    finally:
        second.stop()


def test_cli_prints_its_url_and_serves(tmp_path):
    setup = tmp_path / "setup.json"
    setup.write_text(json.dumps({"pats": [{"token": "ghp_cli"}]}))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "tools", "fake_github", "server.py"),
                             "--port", "0", "--state", str(tmp_path / "state"), "--setup", str(setup)],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        cli_headers = {"Authorization": "Bearer ghp_cli", "User-Agent": "t"}
        status, _unused, _unused = http(url + "/orgs/x/actions/runners", headers=cli_headers)
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_model_is_usable_without_http():
    model = FakeGitHubModel(clock=lambda: 5.0)
    model.handle("POST", "/_fake/pats", {}, b'{"token": "ghp_m", "scopes": ["repo:a/b"]}')
    ok = model.handle("GET", "/repos/a/b/actions/runners", {"Authorization": "Bearer ghp_m", "User-Agent": "t"})
    unseen = model.handle("GET", "/repos/a/c/actions/runners", {"Authorization": "Bearer ghp_m", "User-Agent": "t"})
    denied = model.handle("GET", "/orgs/a/actions/runners", {"Authorization": "Bearer ghp_m", "User-Agent": "t"})
    assert ok.status == 200 and denied.status == 403
    assert denied.json()["message"] == "Resource not accessible by personal access token"
    # A repository the token cannot see is not there for it: 404, as GitHub answers (not 403).
    assert unseen.status == 404 and unseen.json()["message"] == "Not Found"


def test_raw_examples_are_the_published_bytes():
    """GitHub's example bodies are used as they are published, byte for byte (a signature covers
    exactly those bytes), and retargeting changes the runner name and nothing else."""
    from fake_github.examples import INDEX, example, raw_examples, retarget  # pylint: disable=import-outside-toplevel

    with open(INDEX, "rb") as fh:
        published = fh.read()
    raws = raw_examples("workflow_job")
    assert len(raws) >= 8 and all(raw in published for raw in raws)
    assert all(json.loads(raw)["workflow_job"] for raw in raws)
    done = example("completed")
    moved = retarget(done, "ci-hv1-1-k3x9qa")
    assert json.loads(moved)["workflow_job"]["runner_name"] == "ci-hv1-1-k3x9qa"
    old = json.loads(done)["workflow_job"]["runner_name"]
    assert moved.replace(b'"ci-hv1-1-k3x9qa"', json.dumps(old).encode()) == done
