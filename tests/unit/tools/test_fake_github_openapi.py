"""The fake GitHub answers as GitHub's own OpenAPI description says GitHub does.

Every response of every scenario (repository, organization and enterprise scopes; github.com and
the GHES ``/api/v3`` prefix; success and error paths) is checked against the operation in
``@octokit/openapi``: the path and method exist, the status is documented (or is one GitHub sends
on any endpoint: 401, 403, 429, 5xx), and the body validates against that status's schema. The
request bodies our client sends and the 422s the fake gives are checked against the request schema.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import urllib.error
import urllib.request

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_app as gh_app
from ansible_collections.rum.pool.plugins.module_utils import _github_runners as gh_runners

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

OPENAPI_DIR = os.path.join(ROOT, ".cache", "npm", "node_modules", "@octokit", "openapi", "generated")
HINT = "GitHub's OpenAPI description is missing: run: bash tools/fetch-test-data.sh"

# Paths the fake implements (templates as in the description).
WANTED = re.compile(r"^/(repos/\{owner\}/\{repo\}|orgs/\{org\}|enterprises/\{enterprise\})/actions/"
                    r"(runners(/registration-token|/remove-token|/generate-jitconfig|/\{runner_id\})?|runner-groups)$"
                    r"|^/app/installations/\{installation_id\}/access_tokens$"
                    r"|^/(repos/\{owner\}/\{repo\}|orgs/\{org\})/installation$"
                    r"|^/(repos/\{owner\}/\{repo\}|orgs/\{org\})/hooks/\{hook_id\}/deliveries"
                    r"(/\{delivery_id\}(/attempts)?)?$")
# Statuses GitHub may answer on any endpoint without the description listing them.
GENERIC_ERRORS = {400, 401, 403, 404, 422, 429, 500, 502, 503}
# Known gaps between the description and what GitHub really sends, allowed here on purpose.
KNOWN_GAPS = {
    # GitHub sends "suspended_by": null for an installation that is not suspended, but the
    # description types it as a non-nullable Simple User.
    "suspended_by": "nullable",
}


def _to_json_schema(schema):
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes a null type, OpenAPI-only keys go."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("nullable", "example", "examples", "discriminator", "xml", "externalDocs", "deprecated",
                   "readOnly", "writeOnly"):
            continue
        if key == "properties":
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
            for name in out[key]:
                if KNOWN_GAPS.get(name) == "nullable":
                    out[key][name] = {"anyOf": [out[key][name], {"type": "null"}]}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _to_json_schema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_to_json_schema(v) for v in value]
        else:
            out[key] = value
    if schema.get("nullable"):
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _load(name):
    path = os.path.join(OPENAPI_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} not found. {HINT}")
    with open(path, encoding="utf-8") as fh:
        spec = json.load(fh)
    paths = {p: ops for p, ops in spec["paths"].items() if WANTED.match(p)}
    return paths


class Spec:
    """The operations of one description that the fake implements, and a response checker."""

    def __init__(self, name, paths):
        self.name = name
        self.paths = paths
        self.basic_error = None
        for ops in paths.values():
            for op in ops.values():
                for resp in op.get("responses", {}).values():
                    schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
                    if schema.get("title") == "Basic Error":
                        self.basic_error = _to_json_schema(schema)
        assert self.basic_error, f"{name}: no Basic Error schema found"

    def operation(self, method, path):
        path = path.split("?")[0]
        matches = []
        for template, ops in self.paths.items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path) and method.lower() in ops:
                matches.append((template.count("{"), template))
        assert matches, f"{self.name}: {method} {path} is not in GitHub's description"
        template = sorted(matches)[0][1]
        return template, self.paths[template][method.lower()]

    def check(self, method, path, status, headers, body):
        template, op = self.operation(method, path)
        for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset",
                     "x-ratelimit-resource"):
            assert name in headers, f"{method} {path}: no {name} header"
        documented = op["responses"].get(str(status))
        where = f"{self.name} {method} {template} -> {status}"
        if documented is None:
            assert status in GENERIC_ERRORS, f"{where}: status not documented"
            jsonschema.Draft7Validator(self.basic_error).validate(body)
            assert body["message"], where
            return
        content = documented.get("content")
        if not content:
            assert body is None, f"{where}: documented without a body, got {body!r}"
            return
        schema = _to_json_schema(content["application/json"]["schema"])
        try:
            jsonschema.Draft7Validator(schema).validate(body)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: body does not match the description: {exc.message} at {list(exc.path)}")

    def request_schema(self, method, path):
        _unused, op = self.operation(method, path)
        return _to_json_schema(op["requestBody"]["content"]["application/json"]["schema"])


@pytest.fixture(scope="module")
def dotcom():
    return Spec("api.github.com", _load("api.github.com.deref.json"))


@pytest.fixture(scope="module")
def ghec():
    return Spec("ghec", _load("ghec.deref.json"))


def _ghes_names():
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(OPENAPI_DIR, "ghes-*.deref.json")))
    return names or ["ghes-3.17.deref.json"]  # missing data: the test fails with the hint


@pytest.fixture(scope="module", params=_ghes_names())
def ghes(request):
    return Spec(request.param.replace(".deref.json", ""), _load(request.param))


@pytest.fixture(scope="module")
def keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def fake(keypair):
    server = FakeGitHub()
    url = server.start()
    server.admin("POST", "/setup", {
        "pats": [{"token": "ghp_conformance"}],
        "apps": [{"app_id": 99, "client_id": "Iv23liConf", "public_key_pem": keypair[1]}],
        "installations": [{"id": 501, "app_id": 99, "account": "acme"}],
        "runner_groups": [{"scope": "org:acme", "name": "pool", "id": 5},
                          {"scope": "enterprise:ent", "name": "pool", "id": 6}],
    })
    server.base = url
    yield server
    server.stop()


def call(fake, method, path, body=None, token="ghp_conformance", headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fake.base + path, data=data, method=method)
    request.add_header("User-Agent", "rum.pool-conformance")
    request.add_header("Accept", "application/vnd.github+json")
    request.add_header("X-GitHub-Api-Version", "2022-11-28")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, hdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, raw = exc.code, exc.headers, exc.read()
    headers_out = {k.lower(): v for k, v in hdrs.items()}
    return status, headers_out, (json.loads(raw) if raw else None)


def exercise(fake, spec, prefix, scope_path, group_id):
    """Every runner endpoint of one scope, success and error paths; each answer is checked."""
    seen = []

    def go(method, path, body=None, expect=None, **kwargs):
        status, headers, data = call(fake, method, prefix + path, body, **kwargs)
        spec.check(method, path, status, headers, data)
        if expect is not None:
            assert status == expect, f"{method} {prefix}{path}: {status} {data}"
        seen.append((method, path, status))
        return status, headers, data

    base = f"{scope_path}/actions/runners"
    go("POST", base + "/registration-token", expect=201)
    go("POST", base + "/remove-token", expect=201)
    name = f"conf-{abs(hash((prefix, scope_path))) % 10**6}"
    jit_body = {"name": name, "runner_group_id": group_id, "labels": ["self-hosted", "linux"], "work_folder": "_work"}
    _unused, _unused, jit = go("POST", base + "/generate-jitconfig", jit_body, expect=201)
    runner_id = jit["runner"]["id"]
    go("POST", base + "/generate-jitconfig",
       {"name": name, "runner_group_id": group_id, "labels": ["self-hosted"]}, expect=409)
    go("POST", base + "/generate-jitconfig",
       {"name": name + "-x", "runner_group_id": group_id, "labels": []}, expect=422)
    go("POST", base + "/generate-jitconfig",
       {"name": name + "-y", "runner_group_id": 424242, "labels": ["x"]}, expect=404)
    go("GET", base, expect=200)
    go("GET", base + f"?name={name}&per_page=1", expect=200)
    go("GET", base + f"/{runner_id}", expect=200)
    fake.admin("POST", f"/runners/{runner_id}/job", {})
    go("DELETE", base + f"/{runner_id}", expect=422)
    fake.admin("POST", f"/runners/{runner_id}/status", {"busy": False})
    go("DELETE", base + f"/{runner_id}", expect=204)
    go("DELETE", base + f"/{runner_id}", expect=404)
    go("GET", base, token="ghp_wrong", expect=401)
    go("GET", base, token=None, expect=401)
    if not scope_path.startswith("/repos/"):
        go("GET", f"{scope_path}/actions/runner-groups", expect=200)
    for fault in ({"status": 403, "retry_after": 1}, {"status": 429, "retry_after": 1}, {"status": 502},
                  {"status": 403, "kind": "primary", "reset_in": 1}):
        fake.admin("POST", "/faults", dict(fault, path=re.escape(base) + "$", times=1))
        status, headers, _unused = go("GET", base, expect=fault["status"])
        if "retry_after" in fault:
            assert headers["retry-after"] == "1"
        if fault.get("kind") == "primary":
            assert headers["x-ratelimit-remaining"] == "0"
    return seen


SCOPES = [("/repos/acme/app", 1), ("/orgs/acme", 5)]


@pytest.mark.parametrize("scope_path,group_id", SCOPES)
def test_dotcom_runner_endpoints_match_the_description(fake, dotcom, scope_path, group_id):
    seen = exercise(fake, dotcom, "", scope_path, group_id)
    assert {s for _unused, _unused, s in seen} >= {200, 201, 204, 401, 404, 409, 422}


def test_dotcom_enterprise_endpoints_match_ghec(fake, ghec):
    exercise(fake, ghec, "", "/enterprises/ent", 6)


@pytest.mark.parametrize("scope_path,group_id", SCOPES + [("/enterprises/ent", 6)])
def test_ghes_prefix_endpoints_match_the_ghes_description(fake, ghes, scope_path, group_id):
    exercise(fake, ghes, "/api/v3", scope_path, group_id)


def test_pagination_link_headers(fake, dotcom):
    for i in range(5):
        fake.model.add_runner("org:pages", f"p-{i}")
    status, headers, body = call(fake, "GET", "/orgs/pages/actions/runners?per_page=2")
    dotcom.check("GET", "/orgs/pages/actions/runners", status, headers, body)
    links = gh.parse_link_header(headers["link"])
    assert body["total_count"] == 5 and len(body["runners"]) == 2
    assert set(links) == {"next", "last"} and links["last"].endswith("page=3")
    status, headers, body = call(fake, "GET", links["next"].replace(fake.base, ""))
    assert set(gh.parse_link_header(headers["link"])) == {"next", "last", "prev", "first"}
    status, headers, body = call(fake, "GET", "/api/v3/orgs/pages/actions/runners?per_page=2&page=3")
    assert len(body["runners"]) == 1
    assert "/api/v3/orgs/pages" in headers["link"]


def test_app_endpoints_match_the_description(fake, dotcom, keypair):
    jwt = gh_app.build_app_jwt("Iv23liConf", keypair[0], __import__("time").time())
    for path in ("/orgs/acme/installation", "/repos/acme/app/installation"):
        status, headers, body = call(fake, "GET", path, token=jwt)
        dotcom.check("GET", path, status, headers, body)
        assert status == 200 and body["id"] == 501
    status, headers, body = call(fake, "GET", "/orgs/nobody/installation", token=jwt)
    dotcom.check("GET", "/orgs/nobody/installation", status, headers, body)
    assert status == 404
    path = "/app/installations/501/access_tokens"
    status, headers, body = call(fake, "POST", path, token=jwt)
    dotcom.check("POST", path, status, headers, body)
    assert status == 201 and body["token"].startswith("ghs_")
    status, headers, body = call(fake, "POST", path, token="ghp_conformance")  # a PAT is not an App JWT
    dotcom.check("POST", path, status, headers, body)
    assert status == 401
    expired = gh_app.build_app_jwt(99, keypair[0], __import__("time").time() - 3600)
    status, headers, body = call(fake, "POST", path, token=expired)
    dotcom.check("POST", path, status, headers, body)
    assert status == 401 and "Expiration time" in body["message"]


def test_missing_user_agent_is_refused_like_github(fake):
    request = urllib.request.Request(fake.base + "/orgs/acme/actions/runners", method="GET")
    request.add_header("Authorization", "Bearer ghp_conformance")
    request.add_header("User-Agent", "")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403


class Recorder:
    def __init__(self, inner):
        self.inner = inner
        self.sent = []

    def __call__(self, method, url, headers, body, timeout):
        self.sent.append((method, url, body))
        return self.inner(method, url, headers, body, timeout)


@pytest.mark.parametrize("scope", [gh.Scope("repository", "acme/app"), gh.Scope("organization", "acme")])
def test_client_request_bodies_match_the_description(fake, dotcom, scope):
    recorder = Recorder(gh.OpenUrlTransport())
    client = gh.GitHubClient(fake.base, auth=gh.TokenAuth("ghp_conformance"), transport=recorder)
    api = gh_runners.RunnerAPI(client, scope)
    api.generate_jit_config(f"body-{scope.kind}", ["self-hosted", "linux"], 1, work_folder="w")
    method, url, body = recorder.sent[-1]
    path = url[len(fake.base):]
    jsonschema.validate(json.loads(body), dotcom.request_schema(method, path))


@pytest.mark.parametrize("body", [
    {"runner_group_id": 1, "labels": ["x"]},
    {"name": "n", "labels": ["x"]},
    {"name": "n", "runner_group_id": 1},
    {"name": "n", "runner_group_id": 1, "labels": []},
    {"name": "n", "runner_group_id": "1", "labels": ["x"]},
    {"name": "n", "runner_group_id": 1, "labels": ["x"] * 101},
])
def test_fake_rejects_exactly_what_the_description_forbids(fake, dotcom, body):
    path = "/orgs/acme/actions/runners/generate-jitconfig"
    schema = dotcom.request_schema("POST", path)
    assert not jsonschema.Draft7Validator(schema).is_valid(body)
    status, headers, answer = call(fake, "POST", path, body)
    dotcom.check("POST", path, status, headers, answer)
    assert status == 422 and answer["errors"]


class _Receiver:
    """A webhook receiver on loopback that answers a status a test picks (or refuses to)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # pylint: disable=import-outside-toplevel
        import threading  # pylint: disable=import-outside-toplevel
        receiver = self
        self.status = 200
        self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _wait(predicate, what, seconds=10):
    import time  # pylint: disable=import-outside-toplevel
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("scope,hook_scope", [("/repos/acme/hooked", "repo:acme/hooked"),
                                              ("/orgs/acme", "org:acme")])
def test_hook_deliveries_list_get_and_redeliver_match_the_description(fake, dotcom, ghes, scope,
                                                                      hook_scope):
    receiver = _Receiver()
    try:
        hook = fake.admin("POST", "/hooks", {"url": receiver.url, "secret": "s", "scope": hook_scope})
        base = f"{scope}/hooks/{hook['id']}/deliveries"
        jobs = []
        for status in (200, 500, 200):  # the second delivery fails
            receiver.status = status
            jobs.append(fake.admin("POST", "/jobs", {"scope": "repo:acme/hooked", "labels": ["x"]}))
        for spec, prefix in ((dotcom, ""), (ghes, "/api/v3")):
            status, headers, page = call(fake, "GET", prefix + base + "?per_page=2")
            spec.check("GET", base, status, headers, page)
            assert status == 200 and len(page) == 2 and page[0]["id"] > page[1]["id"]  # newest first
            assert [d["status_code"] for d in page] == [200, 500]
            assert page[1]["status"] == "Invalid HTTP Response: 500" and page[1]["action"] == "queued"
            link = gh.parse_link_header(headers["link"])["next"]
            assert "cursor=v1_" in link and (prefix + base) in link
            status, headers, rest = call(fake, "GET", link.replace(fake.base, ""))
            spec.check("GET", base, status, headers, rest)
            assert len(rest) == 1 and "link" not in headers
            status, headers, failed = call(fake, "GET", prefix + base + "?status=failure")
            assert [d["id"] for d in failed] == [page[1]["id"]]
            one = f"{base}/{page[1]['id']}"
            status, headers, detail = call(fake, "GET", prefix + one)
            spec.check("GET", one, status, headers, detail)
            assert detail["guid"] == page[1]["guid"] and detail["request"]["payload"]["action"] == "queued"
            assert "X-Hub-Signature-256" not in detail["request"]["headers"]
        receiver.status = 200
        status, headers, body = call(fake, "POST", f"{base}/{page[1]['id']}/attempts")
        dotcom.check("POST", f"{base}/{page[1]['id']}/attempts", status, headers, body)
        assert status == 202
        _wait(lambda: len(call(fake, "GET", base)[2]) == 4, "the redelivery was never sent")
        newest = call(fake, "GET", base)[2][0]
        assert (newest["guid"], newest["redelivery"], newest["status_code"]) == (page[1]["guid"], True, 200)
        assert receiver.bodies[-1] == receiver.bodies[1]  # the same bytes again
        for path, expect in ((f"{scope}/hooks/999/deliveries", 404), (f"{base}/999999", 404),
                             (base + "?cursor=nope", 400), (base + "?per_page=500", 422)):
            status, headers, body = call(fake, "GET", path)
            dotcom.check("GET", path.split("?", maxsplit=1)[0], status, headers, body)
            assert status == expect, (path, status, body)
        assert call(fake, "GET", base, token="ghp_wrong")[0] == 401
    finally:
        fake.admin("DELETE", "/hooks")
        receiver.close()


def test_a_delay_fault_answers_after_the_work_is_done(fake):
    fake.admin("POST", "/faults", {"path": "generate-jitconfig$", "kind": "delay", "delay": 0.3,
                                   "times": 1})
    import time  # pylint: disable=import-outside-toplevel
    started = time.monotonic()
    status, _headers, body = call(fake, "POST", "/orgs/acme/actions/runners/generate-jitconfig",
                                  {"name": "late-1", "runner_group_id": 1, "labels": ["x"]})
    assert status == 201 and body["runner"]["name"] == "late-1"
    assert time.monotonic() - started >= 0.3
    fake.admin("POST", "/faults", {"path": "generate-jitconfig$", "kind": "reset", "times": 1})
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        call(fake, "POST", "/orgs/acme/actions/runners/generate-jitconfig",
             {"name": "late-2", "runner_group_id": 1, "labels": ["x"]})
    assert [r["name"] for r in fake.admin("GET", "/runners?scope=org:acme")["runners"]
            if r["name"].startswith("late-")] == ["late-1", "late-2"]
