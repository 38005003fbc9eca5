# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the fake GitHub knows and how it answers: a pure request -> reply function over a state.

No sockets here (``server.py`` adds HTTP): ``FakeGitHubModel.handle(method, path, headers, body)``
returns a ``Reply``. The state is plain JSON-able data so it can be saved to and loaded from disk.
Paths, status codes, headers and bodies follow GitHub's REST API for the self-hosted runner
endpoints (repository, organization and enterprise scopes, also under ``/api/v3`` as on GHES) and
for a webhook's deliveries (list with cursor pagination, get one, redeliver);
``tests/unit/tools/test_fake_github_openapi.py`` checks them against GitHub's OpenAPI description.

The runner's own classic registration is modelled too (it is not in the OpenAPI description):
``POST /actions/runner-registration`` (``Authorization: RemoteAuth <registration token>``) trades
a registration token for an Actions-service URL and access token, and the admin route
``POST /_fake/runners/register`` plays the Actions service that ``config.sh`` registers with.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import typing as t
import urllib.error
import urllib.request
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs, urlencode, urlsplit

from . import rs256

DOCS = "https://docs.github.com/rest"
DOCS_RUNNERS = "https://docs.github.com/rest/actions/self-hosted-runners"
DOCS_RATE = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
SUPPORTED_API_VERSIONS = ("2022-11-28",)
GHES_PREFIX = "/api/v3"
REGISTRATION_RESOURCE = "actions_runner_registration"
REGISTRATION_ROUTES = ("registration-token", "remove-token", "jit", "runner-registration")
SERVICE_TOKEN_TTL = 3600
# Labels GitHub itself marks read-only when a runner is configured the classic way.
READ_ONLY_LABELS = {"self-hosted", "linux", "windows", "macos", "x64", "arm", "arm64"}
MAX_CALLS_KEPT = 5000
DOCS_HOOKS = "https://docs.github.com/rest/repos/webhooks"
REPOSITORY_ID = 1296269


def _now_iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64json(data: t.Any) -> str:
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def _invalid(field: str, wanted: str) -> dict[str, str]:
    """One entry of a Validation Error's ``errors``."""
    return {"resource": "HookDelivery", "field": field, "code": "invalid", "message": f"{field} must be {wanted}"}


def decode_jit_config(blob: str) -> dict[str, t.Any]:
    """Undo ``encoded_jit_config`` the way the runner does: {file name: parsed JSON content}."""
    files = json.loads(base64.b64decode(blob))
    return {name: json.loads(base64.b64decode(content)) for name, content in files.items()}


class Reply:
    """One HTTP answer from the model."""

    def __init__(self, status: int, body: t.Any = None, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = dict(headers or {})
        self.delay = 0.0  # seconds the HTTP server waits before answering (a "delay" fault)
        self.reset = False  # the HTTP server drops the connection instead (a "reset" fault)
        if body is None:
            self.body = b""
        elif isinstance(body, bytes):
            self.body = body
        else:
            self.body = json.dumps(body, indent=None).encode()
            self.headers.setdefault("Content-Type", "application/json; charset=utf-8")

    def json(self) -> t.Any:
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:120]!r})"


class _Problem(Exception):
    """Raised inside a handler to answer with a GitHub-shaped error body."""

    def __init__(self, status: int, message: str, doc: str = DOCS, errors: list | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.doc = doc
        self.errors = errors
        self.headers = headers or {}

    def reply(self) -> Reply:
        body: dict[str, t.Any] = {"message": self.message, "documentation_url": self.doc,
                                  "status": str(self.status)}
        if self.errors is not None:
            body["errors"] = self.errors
        return Reply(self.status, body, self.headers)


class _AdminConflict(Exception):
    """An admin call that lost a race (e.g. a job another runner took first): answered with 409."""


class Principal:
    """Who is calling: a PAT, an App (JWT), an installation token, or nobody."""

    def __init__(self, kind: str, ident: str = "", entry: dict | None = None):
        self.kind = kind  # "anonymous", "pat", "app", "installation", "registration" (RemoteAuth)
        self.ident = ident
        self.entry = entry or {}

    @property
    def bucket(self) -> str:
        return "anonymous" if self.kind == "anonymous" else "authenticated"


def empty_state() -> dict[str, t.Any]:
    return {
        "pats": {},
        "apps": {},
        "installations": {},
        "installation_tokens": {},
        "registration_tokens": {},
        "service_tokens": {},
        "runner_groups": {},
        "runners": {},
        "labels": {},
        "next": {"runner": 1, "label": 1, "group": 2, "installation": 1000, "delivery": 1, "job": 1},
        "faults": [],
        "ratelimits": {},
        "calls": [],
        "hooks": [],
        "deliveries": [],
        "jobs": {},
        "settings": {
            "installation_token_ttl": 3600,
            "registration_token_ttl": 3600,
            "limits": {"core": 5000, REGISTRATION_RESOURCE: 10000, "anonymous": 60},
            "require_user_agent": True,
            # GitHub's runner list lags behind the runners: for this long after a change, the API
            # still shows a runner's previous status and busy flag, and a finished ephemeral
            # runner stays listed (its record is gone: deleting it is a 404).
            "status_lag": 0,
            # An ephemeral runner that never connected is removed by GitHub after a day.
            "unused_ephemeral_ttl": 86400,
        },
        "gone": {},
    }


class FakeGitHubModel:
    """The fake's state and request handling. Thread-safe: one lock around every request."""

    def __init__(self, clock: t.Callable[[], float] = time.time, state: dict | None = None,
                 on_change: t.Callable[[dict], None] | None = None):
        self.clock = clock
        self.state = state or empty_state()
        for key, value in empty_state().items():  # states saved by older versions
            self.state.setdefault(key, value)
        for key, value in empty_state()["settings"].items():
            self.state["settings"].setdefault(key, value)
        self.on_change = on_change
        self.public_url = "http://127.0.0.1"
        self.lock = threading.RLock()
        self._outbox: list[dict] = []

    # ------------------------------------------------------------------ entry point
    def handle(self, method: str, raw_path: str, headers: t.Mapping[str, str], body: bytes = b"") -> Reply:
        headers = {k.lower(): v for k, v in headers.items()}
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            if path.startswith("/_fake/") or path == "/_fake":
                reply = self._admin(method, path[len("/_fake"):] or "/", query, body)
                self._changed()
            else:
                prefix = ""
                if path == GHES_PREFIX or path.startswith(GHES_PREFIX + "/"):
                    prefix, path = GHES_PREFIX, path[len(GHES_PREFIX):] or "/"
                reply = self._api(method, prefix, path, query, headers, body)
                self._changed()
            outbox, self._outbox = self._outbox, []
        for delivery in outbox:  # webhooks are sent outside the lock
            self._deliver(delivery)
        return reply

    def _changed(self) -> None:
        if self.on_change:
            self.on_change(self.state)

    # ------------------------------------------------------------------ GitHub API
    def _api(self, method: str, prefix: str, path: str, query: dict, headers: dict, body: bytes) -> Reply:
        now = self.clock()
        principal: Principal | None = None
        resource = "core"
        try:
            if self.state["settings"].get("require_user_agent", True) and not headers.get("user-agent"):
                raise _Problem(403, "Request forbidden by administrative rules. Please make sure your "
                                    "request has a User-Agent header (https://docs.github.com/en/rest/"
                                    "overview/resources-in-the-rest-api#user-agent-required).")
            version = headers.get("x-github-api-version")
            if version and version not in SUPPORTED_API_VERSIONS:
                raise _Problem(400, f"API version {version} is not supported.")
            route, args = self._route(method, path)
            resource = REGISTRATION_RESOURCE if route in REGISTRATION_ROUTES else "core"
            if route == "runner-registration":  # the runner's own call: RemoteAuth, not Bearer
                principal = self._authenticate_remote(headers.get("authorization"), now)
            else:
                principal = self._authenticate(headers.get("authorization"), now)
            self._check_rate_limit(principal, resource, now)
            fault = self._take_fault(method, path)
            if fault is not None and fault.get("kind") not in ("delay", "reset"):
                reply = self._fault_reply(fault, now)
            else:
                reply = getattr(self, "_api_" + route.replace("-", "_"))(
                    principal=principal, prefix=prefix, query=query, body=body, now=now, **args)
                if fault is not None:  # done, but the answer comes late or never
                    reply.delay = float(fault.get("delay") or 0)
                    reply.reset = fault.get("kind") == "reset"
        except _Problem as problem:
            reply = problem.reply()
        self._rate_headers(reply, principal or Principal("anonymous"), resource, now)
        reply.headers.setdefault("X-GitHub-Request-Id", uuid.uuid4().hex[:20].upper())
        reply.headers.setdefault("X-GitHub-Api-Version-Selected", SUPPORTED_API_VERSIONS[0])
        self._log_call(method, prefix + path, query, headers, principal, reply.status, now)
        return reply

    _SCOPE_RE = r"/(?:repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)|orgs/(?P<org>[^/]+)|enterprises/(?P<ent>[^/]+))"
    _HOOK_RE = r"/(?:repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)|orgs/(?P<org>[^/]+))/hooks/(?P<hook_id>\d+)"
    _ROUTES = [
        ("POST", r"/app/installations/(?P<installation_id>\d+)/access_tokens", "access-tokens"),
        ("GET", r"/app", "app"),
        ("GET", r"/(?:repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)|orgs/(?P<org>[^/]+))/installation", "installation"),
        ("GET", _SCOPE_RE + r"/actions/runners", "list-runners"),
        ("POST", _SCOPE_RE + r"/actions/runners/registration-token", "registration-token"),
        ("POST", _SCOPE_RE + r"/actions/runners/remove-token", "remove-token"),
        ("POST", _SCOPE_RE + r"/actions/runners/generate-jitconfig", "jit"),
        ("GET", _SCOPE_RE + r"/actions/runners/(?P<runner_id>\d+)", "get-runner"),
        ("DELETE", _SCOPE_RE + r"/actions/runners/(?P<runner_id>\d+)", "delete-runner"),
        ("GET", r"/(?:orgs/(?P<org>[^/]+)|enterprises/(?P<ent>[^/]+))/actions/runner-groups", "runner-groups"),
        ("GET", r"/rate_limit", "rate-limit"),
        ("POST", r"/actions/runner-registration", "runner-registration"),
        ("GET", _HOOK_RE + r"/deliveries", "hook-deliveries"),
        ("GET", _HOOK_RE + r"/deliveries/(?P<delivery_id>\d+)", "hook-delivery"),
        ("POST", _HOOK_RE + r"/deliveries/(?P<delivery_id>\d+)/attempts", "hook-redeliver"),
    ]

    def _route(self, method: str, path: str) -> tuple[str, dict]:
        for verb, pattern, name in self._ROUTES:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return name, {k: v for k, v in match.groupdict().items() if v is not None}
        raise _Problem(404, "Not Found")

    @staticmethod
    def scope_key(owner: str | None = None, repo: str | None = None, org: str | None = None,
                  ent: str | None = None) -> str:
        if owner and repo:
            return f"repo:{owner.lower()}/{repo.lower()}"
        if org:
            return f"org:{org.lower()}"
        return f"enterprise:{(ent or '').lower()}"

    # ------------------------------------------------------------------ authentication
    def _authenticate(self, value: str | None, now: float) -> Principal:
        if not value:
            return Principal("anonymous")
        scheme, _unused, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("bearer", "token") or not credential:
            raise _Problem(401, "Bad credentials")
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            return self._authenticate_jwt(credential, now)
        token = self.state["installation_tokens"].get(credential)
        if token is not None:
            if token["expires_at"] <= now:
                raise _Problem(401, "Bad credentials")
            inst = self.state["installations"].get(str(token["installation_id"]))
            if inst is None:
                raise _Problem(401, "Bad credentials")
            return Principal("installation", str(inst["id"]), inst)
        pat = self.state["pats"].get(credential)
        if pat is not None:
            if pat.get("expires_at") and pat["expires_at"] <= now:
                raise _Problem(401, "Bad credentials")
            return Principal("pat", pat.get("login", "octocat"), pat)
        raise _Problem(401, "Bad credentials")

    def _authenticate_remote(self, value: str | None, now: float) -> Principal:
        """``RemoteAuth <registration token>``: anything else, or an expired token, is 404 as on GitHub."""
        scheme, _unused, credential = (value or "").strip().partition(" ")
        entry = self.state["registration_tokens"].get(credential.strip()) if scheme.lower() == "remoteauth" else None
        if entry is None or entry.get("kind") != "registration" or entry["expires_at"] <= now:
            raise _Problem(404, "Not Found")
        return Principal("registration", entry["scope"], entry)

    def _authenticate_jwt(self, token: str, now: float) -> Principal:
        undecodable = _Problem(401, "A JSON web token could not be decoded")
        try:
            _unused, claims = rs256.decode_unverified(token)
        except rs256.JWTError:
            raise undecodable from None
        app = self._find_app(claims.get("iss"))
        if app is None:
            raise undecodable
        try:
            key = rs256.load_public_key(app["public_key_pem"])
            claims = rs256.verify_jwt(token, key)
        except (rs256.JWTError, ValueError):
            raise undecodable from None
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(exp, int) or exp <= now:
            raise _Problem(401, "'Expiration time' claim ('exp') must be a numeric value representing "
                                "the future time at which the assertion expires")
        if not isinstance(iat, int) or iat > now:
            raise _Problem(401, "'Issued at' claim ('iat') must be an Integer representing the time "
                                "that the assertion was issued")
        if exp - iat > 600:
            raise _Problem(401, "'Expiration time' claim ('exp') is too far in the future")
        return Principal("app", str(app["app_id"]), app)

    def _find_app(self, issuer: t.Any) -> dict | None:
        for app in self.state["apps"].values():
            if str(issuer) == str(app["app_id"]) or (app.get("client_id") and issuer == app["client_id"]):
                return app
        return None

    def _require_app(self, principal: Principal) -> dict:
        if principal.kind == "anonymous":
            raise _Problem(401, "A JSON web token could not be decoded")
        if principal.kind != "app":
            raise _Problem(401, "A JSON web token could not be decoded")
        return principal.entry

    def _authorize_scope(self, principal: Principal, key: str) -> None:
        kind, _unused, name = key.partition(":")
        if principal.kind == "anonymous":
            raise _Problem(401, "Requires authentication")
        if principal.kind == "app":
            raise _Problem(403, "Resource not accessible by integration")
        if principal.kind == "pat":
            pat = principal.entry
            if kind == "enterprise" and not pat.get("classic", True):
                raise _Problem(403, "Resource not accessible by personal access token")
            grants = {g.lower() for g in pat.get("scopes", ["*"])}
            owner_org = "org:" + name.split("/")[0] if kind == "repo" else None
            if "*" in grants or key in grants or (owner_org and owner_org in grants):
                return
            if kind == "repo" and name not in {v.lower() for v in pat.get("visible", [])}:
                # A repository the token cannot see does not exist for it: 404, as on GitHub.
                raise _Problem(404, "Not Found", DOCS_RUNNERS)
            if kind == "repo":
                raise _Problem(403, "Must have admin rights to Repository.", DOCS_RUNNERS)
            raise _Problem(403, "Resource not accessible by personal access token")
        inst = principal.entry
        account = inst["account"].lower()
        if kind == "org" and inst.get("target_type", "Organization") == "Organization" and name == account:
            return
        if kind == "repo":
            owner, _unused, repo = name.partition("/")
            repos = inst.get("repositories")
            if owner == account and (repos is None or repo in [r.lower() for r in repos]):
                return
            raise _Problem(404, "Not Found", DOCS_RUNNERS)  # not installed there: invisible
        raise _Problem(403, "Resource not accessible by integration")

    # ------------------------------------------------------------------ rate limits and faults
    def _bucket(self, principal: Principal, resource: str, now: float) -> dict:
        key = f"{principal.bucket}:{resource}"
        limits = self.state["settings"]["limits"]
        limit = limits["anonymous"] if principal.kind == "anonymous" else limits.get(resource, 5000)
        bucket = self.state["ratelimits"].get(key)
        if bucket is None or bucket["reset"] <= now:
            bucket = {"limit": bucket["limit"] if bucket else limit, "used": 0, "reset": int(now) + 3600}
            self.state["ratelimits"][key] = bucket
        return bucket

    def _check_rate_limit(self, principal: Principal, resource: str, now: float) -> None:
        bucket = self._bucket(principal, resource, now)
        if bucket["used"] >= bucket["limit"]:
            who = {"pat": "user ID 1", "installation": f"installation ID {principal.ident}",
                   "app": "app", "anonymous": "127.0.0.1", "registration": "runner registration"}[principal.kind]
            raise _Problem(403, f"API rate limit exceeded for {who}. If you reach out to GitHub Support for "
                                "help, please include the request ID.", DOCS_RATE)
        bucket["used"] += 1

    def _rate_headers(self, reply: Reply, principal: Principal, resource: str, now: float) -> None:
        bucket = self._bucket(principal, resource, now)
        reply.headers.setdefault("x-ratelimit-limit", str(bucket["limit"]))
        reply.headers.setdefault("x-ratelimit-remaining", str(max(0, bucket["limit"] - bucket["used"])))
        reply.headers.setdefault("x-ratelimit-used", str(bucket["used"]))
        reply.headers.setdefault("x-ratelimit-reset", str(bucket["reset"]))
        reply.headers.setdefault("x-ratelimit-resource", resource)

    def _take_fault(self, method: str, path: str) -> dict | None:
        for fault in list(self.state["faults"]):
            if fault.get("method") and fault["method"].upper() != method:
                continue
            if fault.get("path") and not re.search(fault["path"], path):
                continue
            if fault.get("times", 1) > 0:
                fault["times"] = fault.get("times", 1) - 1
                if fault["times"] == 0:
                    self.state["faults"].remove(fault)
            fault["hits"] = fault.get("hits", 0) + 1
            return fault
        return None

    def _fault_reply(self, fault: dict, now: float) -> Reply:
        status = int(fault.get("status", 403))
        kind = fault.get("kind") or ("secondary" if status in (403, 429) else "error")
        headers: dict[str, str] = {}
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(fault["retry_after"])
        if kind == "primary":
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-used"] = headers["x-ratelimit-limit"] = "5000"
            headers["x-ratelimit-reset"] = str(int(now + float(fault.get("reset_in", 1))) + 1)
            message = fault.get("message") or "API rate limit exceeded for user ID 1."
            return _Problem(status, message, DOCS_RATE, headers=headers).reply()
        if kind == "secondary":
            message = fault.get("message") or (
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                "again. If you reach out to GitHub Support for help, please include the request ID.")
            return _Problem(status, message, DOCS_RATE + "#about-secondary-rate-limits", headers=headers).reply()
        try:
            default = HTTPStatus(status).phrase
        except ValueError:
            default = "Error"
        message = fault.get("message") or ("Server Error" if status >= 500 else default)
        return _Problem(status, message, headers=headers).reply()

    def _log_call(self, method: str, path: str, query: dict, headers: dict, principal: Principal | None,
                  status: int, now: float) -> None:
        calls = self.state["calls"]
        calls.append({
            "method": method, "path": path, "query": query, "status": status, "time": now,
            "auth": principal.kind if principal else None,
            "user_agent": headers.get("user-agent"), "accept": headers.get("accept"),
            "api_version": headers.get("x-github-api-version"),
        })
        del calls[:-MAX_CALLS_KEPT]

    # ------------------------------------------------------------------ App endpoints
    def _installation_body(self, inst: dict, prefix: str) -> dict:
        app = self.state["apps"].get(str(inst["app_id"]), {})
        base = self.public_url + prefix
        account = {
            "login": inst["account"], "id": inst.get("account_id", 4242), "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
            "avatar_url": "https://avatars.githubusercontent.com/u/4242?v=4", "gravatar_id": "",
            "url": f"{base}/users/{inst['account']}", "html_url": f"https://github.com/{inst['account']}",
            "followers_url": f"{base}/users/{inst['account']}/followers",
            "following_url": f"{base}/users/{inst['account']}/following{{/other_user}}",
            "gists_url": f"{base}/users/{inst['account']}/gists{{/gist_id}}",
            "starred_url": f"{base}/users/{inst['account']}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/users/{inst['account']}/subscriptions",
            "organizations_url": f"{base}/users/{inst['account']}/orgs",
            "repos_url": f"{base}/users/{inst['account']}/repos",
            "events_url": f"{base}/users/{inst['account']}/events{{/privacy}}",
            "received_events_url": f"{base}/users/{inst['account']}/received_events",
            "type": inst.get("target_type", "Organization"), "site_admin": False,
        }
        created = _now_iso(inst.get("created", 1700000000))
        return {
            "id": inst["id"], "app_id": inst["app_id"], "client_id": app.get("client_id"),
            "app_slug": app.get("slug", "rum-pool-test"), "target_id": account["id"],
            "target_type": inst.get("target_type", "Organization"), "account": account,
            "single_file_name": None,
            "repository_selection": "all" if inst.get("repositories") is None else "selected",
            "access_tokens_url": f"{base}/app/installations/{inst['id']}/access_tokens",
            "repositories_url": f"{base}/installation/repositories",
            "html_url": f"https://github.com/organizations/{inst['account']}/settings/installations/{inst['id']}",
            "events": ["workflow_job"],
            "permissions": {"administration": "write", "organization_self_hosted_runners": "write"},
            "created_at": created, "updated_at": created, "suspended_by": None, "suspended_at": None,
        }

    def _api_app(self, principal: Principal, prefix: str, **_kwargs: t.Any) -> Reply:
        app = self._require_app(principal)
        return Reply(200, {"id": app["app_id"], "slug": app.get("slug", "rum-pool-test"),
                           "client_id": app.get("client_id"), "name": app.get("slug", "rum-pool-test")})

    def _api_installation(self, principal: Principal, prefix: str, owner: str | None = None,
                          repo: str | None = None, org: str | None = None, **_kwargs: t.Any) -> Reply:
        app = self._require_app(principal)
        account = (owner or org or "").lower()
        for inst in self.state["installations"].values():
            if inst["app_id"] != app["app_id"] or inst["account"].lower() != account:
                continue
            if org and inst.get("target_type", "Organization") != "Organization":
                continue
            repos = inst.get("repositories")
            if repo and repos is not None and repo.lower() not in [r.lower() for r in repos]:
                continue
            return Reply(200, self._installation_body(inst, prefix))
        raise _Problem(404, "Not Found", "https://docs.github.com/rest/apps/apps")

    def _api_access_tokens(self, principal: Principal, installation_id: str, body: bytes, now: float,
                           **_kwargs: t.Any) -> Reply:
        app = self._require_app(principal)
        inst = self.state["installations"].get(str(int(installation_id)))
        if inst is None or inst["app_id"] != app["app_id"]:
            raise _Problem(404, "Not Found", "https://docs.github.com/rest/apps/apps")
        request = self._json_body(body, required=False) or {}
        token = "ghs_" + secrets.token_hex(18)
        expires = now + float(self.state["settings"]["installation_token_ttl"])
        self.state["installation_tokens"][token] = {"installation_id": inst["id"], "expires_at": expires}
        answer = {
            "token": token, "expires_at": _now_iso(expires),
            "permissions": request.get("permissions") or {"administration": "write",
                                                          "organization_self_hosted_runners": "write"},
            "repository_selection": "all" if inst.get("repositories") is None else "selected",
        }
        return Reply(201, answer)

    # ------------------------------------------------------------------ runner endpoints
    def _scope_of(self, principal: Principal, args: dict) -> str:
        key = self.scope_key(args.get("owner"), args.get("repo"), args.get("org"), args.get("ent"))
        self._authorize_scope(principal, key)
        return key

    def _label_objects(self, names: t.Iterable[str]) -> list[dict]:
        out = []
        for name in names:
            if name not in self.state["labels"]:
                self.state["labels"][name] = self.state["next"]["label"]
                self.state["next"]["label"] += 1
            kind = "read-only" if name.lower() in READ_ONLY_LABELS else "custom"
            out.append({"id": self.state["labels"][name], "name": name, "type": kind})
        return out

    def _lagging(self, since: float | None) -> bool:
        lag = float(self.state["settings"].get("status_lag") or 0)
        return bool(lag) and since is not None and self.clock() - since < lag

    def note_change(self, runner: dict, **changes: t.Any) -> None:
        """Change a runner's status/busy; the API shows the old values for ``status_lag`` more."""
        if not self._lagging(runner.get("changed_at")):
            runner["shown"] = {"status": runner["status"], "busy": runner["busy"]}
        runner.update(changes)
        runner["changed_at"] = self.clock()
        if runner["status"] == "online":
            runner["connected"] = True

    def runner_body(self, runner: dict, lagging: bool = True) -> dict:
        """The API's view of a runner (``lagging``: as GitHub shows it, ``status_lag`` behind)."""
        shown = runner.get("shown") if lagging and self._lagging(runner.get("changed_at")) else None
        shown = shown or runner
        return {
            "id": runner["id"], "name": runner["name"], "os": runner.get("os", "unknown"),
            "status": shown["status"], "busy": shown["busy"], "ephemeral": runner.get("ephemeral", False),
            "labels": self._label_objects(runner.get("labels", [])),
            "runner_group_id": runner.get("runner_group_id", 1),
        }

    def _sweep(self) -> None:
        """GitHub's own clean-up: ephemeral runners that never connected go after a day; finished
        ones stop being listed once the lag is over."""
        now = self.clock()
        ttl = float(self.state["settings"].get("unused_ephemeral_ttl") or 0)
        for ident, runner in list(self.state["runners"].items()):
            if (ttl and runner.get("ephemeral") and not runner.get("connected")
                    and now - float(runner.get("created_at") or now) >= ttl):
                del self.state["runners"][ident]
        for ident, runner in list(self.state["gone"].items()):
            if not self._lagging(runner.get("gone_at")):
                del self.state["gone"][ident]

    def _listed(self) -> list[dict]:
        """The runners the API shows: the real ones and, while the lag lasts, the gone ones."""
        self._sweep()
        return list(self.state["runners"].values()) + list(self.state["gone"].values())

    def _runners_in(self, key: str) -> list[dict]:
        return sorted((r for r in self._listed() if r["scope"] == key), key=lambda r: r["id"])

    def _page(self, items: list, query: dict, prefix: str, path: str) -> tuple[list, dict[str, str]]:
        try:
            per_page = max(1, min(100, int(query.get("per_page", 30))))
            page = max(1, int(query.get("page", 1)))
        except ValueError:
            raise _Problem(422, "Invalid request.", errors=["per_page and page must be integers"]) from None
        last = max(1, (len(items) + per_page - 1) // per_page)
        chunk = items[(page - 1) * per_page: page * per_page]

        def link(number: int) -> str:
            params = dict(query, per_page=per_page, page=number)
            return f"<{self.public_url}{prefix}{path}?{urlencode(params)}>"

        rels = []
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels += [f'{link(page - 1)}; rel="prev"', f'{link(1)}; rel="first"']
        return chunk, ({"Link": ", ".join(rels)} if rels else {})

    def _api_list_runners(self, principal: Principal, prefix: str, query: dict, **args: t.Any) -> Reply:
        key = self._scope_of(principal, args)
        runners = self._runners_in(key)
        if query.get("name"):
            runners = [r for r in runners if r["name"] == query["name"]]
        path = self._scope_path(key) + "/actions/runners"
        chunk, headers = self._page(runners, query, prefix, path)
        return Reply(200, {"total_count": len(runners), "runners": [self.runner_body(r) for r in chunk]}, headers)

    @staticmethod
    def _scope_path(key: str) -> str:
        kind, _unused, name = key.partition(":")
        return {"repo": "/repos/", "org": "/orgs/", "enterprise": "/enterprises/"}[kind] + name

    def _runner_in(self, key: str, runner_id: str) -> dict:
        self._sweep()
        runner = self.state["runners"].get(str(int(runner_id))) or self.state["gone"].get(str(int(runner_id)))
        if runner is None or runner["scope"] != key:
            raise _Problem(404, "Not Found", DOCS_RUNNERS)
        return runner

    def _api_get_runner(self, principal: Principal, runner_id: str, **args: t.Any) -> Reply:
        key = self._scope_of(principal, args)
        return Reply(200, self.runner_body(self._runner_in(key, runner_id)))

    def _api_delete_runner(self, principal: Principal, runner_id: str, **args: t.Any) -> Reply:
        key = self._scope_of(principal, args)
        runner = self._runner_in(key, runner_id)
        if str(runner["id"]) in self.state["gone"]:  # listed a while longer, but its record is gone
            raise _Problem(404, "Not Found", DOCS_RUNNERS)
        if runner["busy"]:
            raise _Problem(422, f'Bad request - Runner "{runner["name"]}" is still running a job"', DOCS_RUNNERS)
        del self.state["runners"][str(runner["id"])]
        return Reply(204)

    def _token_reply(self, key: str, kind: str, now: float) -> Reply:
        token = "A" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _unused in range(28))
        expires = now + float(self.state["settings"]["registration_token_ttl"])
        self.state["registration_tokens"][token] = {"scope": key, "kind": kind, "expires_at": expires}
        return Reply(201, {"token": token, "expires_at": _now_iso(expires)})

    def _api_registration_token(self, principal: Principal, now: float, **args: t.Any) -> Reply:
        return self._token_reply(self._scope_of(principal, args), "registration", now)

    def _api_remove_token(self, principal: Principal, now: float, **args: t.Any) -> Reply:
        return self._token_reply(self._scope_of(principal, args), "remove", now)

    @staticmethod
    def scope_of_web_url(url: str) -> str | None:
        """The scope key a runner's ``--url`` names (``/OWNER/REPO``, ``/ORG``, ``/enterprises/ENT``)."""
        parts = [p for p in urlsplit(url).path.split("/") if p]
        if len(parts) == 1:
            return FakeGitHubModel.scope_key(org=parts[0])
        if len(parts) == 2 and parts[0].lower() == "enterprises":
            return FakeGitHubModel.scope_key(ent=parts[1])
        if len(parts) == 2:
            return FakeGitHubModel.scope_key(owner=parts[0], repo=parts[1])
        return None

    def _api_runner_registration(self, principal: Principal, body: bytes, now: float, **_kwargs: t.Any) -> Reply:
        """The runner's ``config.sh`` trades its registration token for the Actions service's URL and token."""
        data = self._json_body(body)
        if not isinstance(data, dict):
            raise _Problem(400, "Problems parsing JSON")
        url, event = data.get("url"), data.get("runner_event")
        if not isinstance(url, str) or not url:
            raise _Problem(422, "Invalid request.\n\n\"url\" wasn't supplied.", errors=['"url" wasn\'t supplied.'])
        if event != "register":
            raise _Problem(422, f"Invalid request.\n\nrunner_event {event!r} is not supported here.",
                           errors=[f"runner_event {event!r} is not supported here."])
        if self.scope_of_web_url(url) != principal.ident:
            raise _Problem(404, "Not Found")
        token = "fake_svc_" + secrets.token_hex(20)
        self.state["service_tokens"][token] = {"scope": principal.ident, "url": url,
                                               "expires_at": now + SERVICE_TOKEN_TTL}
        return Reply(200, {"url": f"{self.public_url}/_fake/", "token": token, "token_schema": "OAuthAccessToken"})

    @staticmethod
    def _json_body(body: bytes, required: bool = True) -> t.Any:
        if not body:
            if required:
                raise _Problem(400, "Problems parsing JSON")
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise _Problem(400, "Problems parsing JSON") from None

    def groups_of(self, key: str) -> list[dict]:
        groups = self.state["runner_groups"].setdefault(key, [])
        if not any(g["id"] == 1 for g in groups) and not key.startswith("repo:"):
            groups.insert(0, {"id": 1, "name": "Default", "default": True, "visibility": "all"})
        return groups

    def _api_jit(self, principal: Principal, body: bytes, now: float, **args: t.Any) -> Reply:
        key = self._scope_of(principal, args)
        data = self._json_body(body)
        errors = []
        if not isinstance(data, dict):
            raise _Problem(400, "Problems parsing JSON")
        name = data.get("name")
        group_id = data.get("runner_group_id")
        labels = data.get("labels")
        if not isinstance(name, str) or not name.strip():
            errors.append('"name" wasn\'t supplied.' if name is None else "name must be a non-empty string.")
        if isinstance(group_id, bool) or not isinstance(group_id, int):
            errors.append('"runner_group_id" wasn\'t supplied.' if group_id is None
                          else "runner_group_id must be an integer.")
        if labels is None:
            errors.append('"labels" wasn\'t supplied.')
        elif (not isinstance(labels, list) or not 1 <= len(labels) <= 100
              or not all(isinstance(x, str) and x for x in labels)):
            errors.append("labels must be a list of 1 to 100 non-empty strings.")
        if "work_folder" in data and not isinstance(data["work_folder"], str):
            errors.append("work_folder must be a string.")
        if errors:
            raise _Problem(422, "Invalid request.\n\n" + "\n".join(errors), DOCS_RUNNERS, errors=errors)
        if key.startswith("repo:"):
            group = {"id": 1, "name": "Default"} if group_id == 1 else None
        else:
            group = next((g for g in self.groups_of(key) if g["id"] == group_id), None)
        if group is None:
            raise _Problem(404, f"Runner group {group_id} not found", DOCS_RUNNERS)
        if any(r["name"] == name for r in self._runners_in(key)):
            raise _Problem(409, f"Already exists - A runner with the name {name} already exists.", DOCS_RUNNERS)
        runner = self.add_runner(key, name, labels=labels, runner_group_id=group_id, ephemeral=True, jit=True,
                                 work_folder=data.get("work_folder") or "_work")
        return Reply(201, {"runner": self.runner_body(runner),
                           "encoded_jit_config": self._jit_blob(runner, group, key)})

    def _jit_blob(self, runner: dict, group: dict, key: str) -> str:
        files = self.settings_files(runner, group, key)
        files[".runner"]["UseV2Flow"] = "True"
        return _b64json({name: _b64json(content) for name, content in files.items()})

    def settings_files(self, runner: dict, group: dict, key: str, github_url: str | None = None,
                       ephemeral: bool = True, disable_update: bool = True) -> dict[str, dict]:
        """The runner's settings files, ``{".runner": {...}, ".credentials": {...}, ".credentials_rsaparams": {...}}``.

        Shared by JIT configs and classic registration. ``ServerUrl`` is the fake's admin API
        (``{public_url}/_fake/``), where a stand-in runner goes online and takes its job.
        """
        kind, _unused, name = key.partition(":")
        web = self.public_url
        if github_url is None:
            github_url = f"{web}/{name}" if kind != "enterprise" else f"{web}/enterprises/{name}"
        settings = {
            "AgentId": str(runner["id"]), "AgentName": runner["name"], "PoolId": str(group["id"]),
            "PoolName": group["name"], "ServerUrl": f"{self.public_url}/_fake/", "GitHubUrl": github_url,
            "WorkFolder": runner.get("work_folder", "_work"), "Ephemeral": str(bool(ephemeral)),
            "DisableUpdate": str(bool(disable_update)),
        }
        credentials = {"Scheme": "OAuth", "Data": {
            "clientId": runner["client_id"], "authorizationUrl": f"{self.public_url}/_fake/oauth/{runner['id']}",
            "requireFipsCryptography": "False"}}

        def b64(size: int) -> str:
            return base64.b64encode(secrets.token_bytes(size)).decode()

        rsaparams = {"d": b64(256), "dp": b64(128), "dq": b64(128), "exponent": "AQAB", "inverseQ": b64(128),
                     "modulus": b64(256), "p": b64(128), "q": b64(128)}
        return {".runner": settings, ".credentials": credentials, ".credentials_rsaparams": rsaparams}

    def _api_runner_groups(self, principal: Principal, prefix: str, query: dict, **args: t.Any) -> Reply:
        key = self._scope_of(principal, args)
        base = self.public_url + prefix + self._scope_path(key) + "/actions/runner-groups"
        groups = []
        for g in self.groups_of(key):
            groups.append({
                "id": g["id"], "name": g["name"], "visibility": g.get("visibility", "all"),
                "default": bool(g.get("default", False)), "runners_url": f"{base}/{g['id']}/runners",
                "inherited": False, "allows_public_repositories": False, "restricted_to_workflows": False,
                "selected_workflows": [], "workflow_restrictions_read_only": False,
            })
        chunk, headers = self._page(groups, query, prefix, self._scope_path(key) + "/actions/runner-groups")
        return Reply(200, {"total_count": len(groups), "runner_groups": chunk}, headers)

    def _api_rate_limit(self, principal: Principal, now: float, **_kwargs: t.Any) -> Reply:
        resources = {}
        for resource in ("core", REGISTRATION_RESOURCE):
            bucket = self._bucket(principal, resource, now)
            resources[resource] = {"limit": bucket["limit"], "used": bucket["used"],
                                   "remaining": max(0, bucket["limit"] - bucket["used"]), "reset": bucket["reset"]}
        return Reply(200, {"resources": resources, "rate": resources["core"]})

    # ------------------------------------------------------------------ state changes (admin and API)
    def add_runner(self, key: str, name: str, labels: t.Sequence[str] = ("self-hosted",), status: str = "offline",
                   busy: bool = False, ephemeral: bool = False, runner_group_id: int = 1, jit: bool = False,
                   os_name: str = "unknown", work_folder: str = "_work", runner_id: int | None = None) -> dict:
        if runner_id is None:
            runner_id = self.state["next"]["runner"]
        self.state["next"]["runner"] = max(self.state["next"]["runner"], int(runner_id) + 1)
        runner = {
            "id": int(runner_id), "name": name, "os": os_name, "status": status, "busy": bool(busy),
            "ephemeral": bool(ephemeral), "labels": list(labels), "runner_group_id": int(runner_group_id),
            "scope": key, "jit": jit, "work_folder": work_folder, "client_id": str(uuid.uuid4()),
            "job": None, "created_at": self.clock(),
        }
        self.state["runners"][str(runner["id"])] = runner
        return runner

    # ------------------------------------------------------------------ admin API
    def _admin(self, method: str, path: str, query: dict, body: bytes) -> Reply:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return Reply(400, {"error": "body is not JSON"})
        try:
            for verb, pattern, name in self._ADMIN_ROUTES:
                match = re.fullmatch(pattern, path)
                if match and verb == method:
                    return getattr(self, "_admin_" + name)(data=data, query=query, **match.groupdict())
            return Reply(404, {"error": f"no admin route {method} /_fake{path}"})
        except _AdminConflict as exc:
            return Reply(409, {"error": str(exc)})
        except (KeyError, TypeError, ValueError) as exc:
            return Reply(400, {"error": f"bad admin request: {exc!r}"})
        except LookupError as exc:
            return Reply(404, {"error": str(exc)})

    _ADMIN_ROUTES = [
        ("GET", r"/state", "state"),
        ("POST", r"/reset", "reset"),
        ("POST", r"/setup", "setup"),
        ("POST", r"/settings", "settings"),
        ("POST", r"/pats", "pat"),
        ("POST", r"/apps", "app"),
        ("POST", r"/installations", "installation"),
        ("POST", r"/runner-groups", "runner_group"),
        ("GET", r"/runners", "list_runners"),
        ("POST", r"/runners", "create_runner"),
        ("DELETE", r"/runners", "delete_runners"),
        ("POST", r"/runners/register", "register_runner"),
        ("GET", r"/runners/(?P<ref>[^/]+)", "get_runner"),
        ("DELETE", r"/runners/(?P<ref>[^/]+)", "delete_runner"),
        ("POST", r"/runners/(?P<ref>[^/]+)/status", "runner_status"),
        ("POST", r"/runners/(?P<ref>[^/]+)/job", "runner_job"),
        ("POST", r"/runners/(?P<ref>[^/]+)/done", "runner_done"),
        ("GET", r"/faults", "list_faults"),
        ("POST", r"/faults", "add_fault"),
        ("DELETE", r"/faults", "clear_faults"),
        ("POST", r"/ratelimit", "ratelimit"),
        ("GET", r"/calls", "calls"),
        ("DELETE", r"/calls", "clear_calls"),
        ("POST", r"/hooks", "add_hook"),
        ("DELETE", r"/hooks", "delete_hooks"),
        ("GET", r"/deliveries", "deliveries"),
        ("POST", r"/deliveries/(?P<guid>[0-9a-fA-F-]+)/redeliver", "redeliver"),
        ("POST", r"/jobs", "queue_job"),
        ("GET", r"/jobs", "list_jobs"),
        ("GET", r"/jobs/(?P<job_id>\d+)", "get_job"),
    ]

    def _admin_state(self, **_kwargs: t.Any) -> Reply:
        return Reply(200, self.state)

    def _admin_reset(self, **_kwargs: t.Any) -> Reply:
        self.state.clear()
        self.state.update(empty_state())
        return Reply(200, {"reset": True})

    def _admin_setup(self, data: dict, **_kwargs: t.Any) -> Reply:
        if data.get("reset"):
            self._admin_reset()
        if data.get("settings"):
            self._admin_settings(data["settings"])
        for pat in data.get("pats", []):
            self._admin_pat(pat)
        for app in data.get("apps", []):
            self._admin_app(app)
        for inst in data.get("installations", []):
            self._admin_installation(inst)
        for group in data.get("runner_groups", []):
            self._admin_runner_group(group)
        for runner in data.get("runners", []):
            self._admin_create_runner(runner)
        return Reply(200, {"ok": True})

    def _admin_settings(self, data: dict, **_kwargs: t.Any) -> Reply:
        settings = self.state["settings"]
        for key, value in data.items():
            if key == "limits":
                settings["limits"].update(value)
            elif key in settings:
                settings[key] = value
            else:
                raise KeyError(key)
        return Reply(200, settings)

    def _admin_pat(self, data: dict, **_kwargs: t.Any) -> Reply:
        token = data["token"]
        self.state["pats"][token] = {"scopes": list(data.get("scopes", ["*"])),
                                     # repositories it may read but not administer (403, not 404)
                                     "visible": list(data.get("visible", [])),
                                     "classic": bool(data.get("classic", not token.startswith("github_pat_"))),
                                     "login": data.get("login", "octocat"), "expires_at": data.get("expires_at")}
        return Reply(201, {"token": token})

    def _admin_app(self, data: dict, **_kwargs: t.Any) -> Reply:
        rs256.load_public_key(data["public_key_pem"])  # fail early on a bad key
        app = {"app_id": int(data["app_id"]), "client_id": data.get("client_id"),
               "slug": data.get("slug", f"app-{data['app_id']}"), "public_key_pem": data["public_key_pem"]}
        self.state["apps"][str(app["app_id"])] = app
        return Reply(201, {k: v for k, v in app.items() if k != "public_key_pem"})

    def _admin_installation(self, data: dict, **_kwargs: t.Any) -> Reply:
        inst_id = int(data.get("id") or self.state["next"]["installation"])
        self.state["next"]["installation"] = max(self.state["next"]["installation"], inst_id + 1)
        inst = {"id": inst_id, "app_id": int(data["app_id"]), "account": data["account"],
                "target_type": data.get("target_type", "Organization"), "repositories": data.get("repositories"),
                "created": self.clock()}
        self.state["installations"][str(inst_id)] = inst
        return Reply(201, inst)

    def _admin_runner_group(self, data: dict, **_kwargs: t.Any) -> Reply:
        key = data["scope"].lower()
        groups = self.groups_of(key)
        group_id = int(data.get("id") or self.state["next"]["group"])
        self.state["next"]["group"] = max(self.state["next"]["group"], group_id + 1)
        group = {"id": group_id, "name": data["name"], "default": bool(data.get("default", False)),
                 "visibility": data.get("visibility", "all")}
        groups[:] = [g for g in groups if g["id"] != group_id] + [group]
        return Reply(201, group)

    def _find(self, ref: str) -> dict:
        if ref.isdigit():
            runner = self.state["runners"].get(str(int(ref)))
            if runner is None:
                raise LookupError(f"no runner with id {ref}")
            return runner
        matches = [r for r in self.state["runners"].values() if r["name"] == ref]
        if not matches:
            raise LookupError(f"no runner named {ref!r}")
        if len(matches) > 1:
            raise ValueError(f"runner name {ref!r} exists in several scopes: use its id")
        return matches[0]

    def _admin_view(self, runner: dict) -> dict:
        return dict(self.runner_body(runner, lagging=False), scope=runner["scope"], jit=runner.get("jit", False),
                    job=runner.get("job"))

    def _admin_list_runners(self, query: dict, **_kwargs: t.Any) -> Reply:
        runners = sorted(self.state["runners"].values(), key=lambda r: r["id"])
        if query.get("scope"):
            runners = [r for r in runners if r["scope"] == query["scope"].lower()]
        if query.get("name"):
            runners = [r for r in runners if r["name"] == query["name"]]
        return Reply(200, {"runners": [self._admin_view(r) for r in runners]})

    def _admin_create_runner(self, data: dict, **_kwargs: t.Any) -> Reply:
        runner = self.add_runner(data["scope"].lower(), data["name"], labels=data.get("labels", ["self-hosted"]),
                                 status=data.get("status", "online"), busy=data.get("busy", False),
                                 ephemeral=data.get("ephemeral", False),
                                 runner_group_id=data.get("runner_group_id", 1), os_name=data.get("os", "Linux"),
                                 runner_id=data.get("id"))
        return Reply(201, self._admin_view(runner))

    def _admin_delete_runners(self, query: dict, **_kwargs: t.Any) -> Reply:
        """Bulk delete (busy ones too), e.g. a test's cleanup: ``?prefix=`` and/or ``?scope=``."""
        if not query.get("prefix") and not query.get("scope"):
            raise ValueError("give prefix and/or scope (use /_fake/reset to clear everything)")
        gone = []
        for key, runner in list(self.state["runners"].items()):
            if query.get("prefix") and not runner["name"].startswith(query["prefix"]):
                continue
            if query.get("scope") and runner["scope"] != query["scope"].lower():
                continue
            gone.append(self._admin_view(runner))
            del self.state["runners"][key]
        for key, runner in list(self.state["gone"].items()):
            if (not query.get("prefix") or runner["name"].startswith(query["prefix"])) and (
                    not query.get("scope") or runner["scope"] == query["scope"].lower()):
                del self.state["gone"][key]
        return Reply(200, {"deleted": gone})

    def _admin_register_runner(self, data: dict, **_kwargs: t.Any) -> Reply:
        """The Actions service's side of ``config.sh``: register a runner with a service token.

        401 for an unknown or expired service token, 404 for a runner group the scope lacks, 409
        when the name is taken (without ``replace``) or the runner to replace is busy.
        """
        entry = self.state["service_tokens"].get(data.get("token")) if isinstance(data.get("token"), str) else None
        if entry is None or entry["expires_at"] <= self.clock():
            return Reply(401, {"error": "the service token is unknown or expired: register again with a "
                                        "registration token"})
        key = entry["scope"]
        name, labels = data.get("name"), data.get("labels", [])
        if not isinstance(name, str) or not name.strip():
            raise ValueError("name must be a non-empty string")
        if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
            raise ValueError("labels must be a list of non-empty strings")
        work_folder = data.get("work_folder") or "_work"
        if not isinstance(work_folder, str):
            raise ValueError("work_folder must be a string")
        os_name, arch = str(data.get("os") or "Linux"), str(data.get("arch") or "X64")
        defaults = [] if data.get("no_default_labels") else ["self-hosted", os_name, arch]
        wanted: dict[str, str] = {}
        for label in defaults + [x.strip() for x in labels]:
            wanted.setdefault(label.casefold(), label)
        if not wanted:
            raise ValueError("a runner needs at least one label (no labels and no_default_labels)")
        group_name = data.get("runner_group") or "Default"
        groups = [{"id": 1, "name": "Default"}] if key.startswith("repo:") else self.groups_of(key)
        group = next((g for g in groups if str(g["name"]).casefold() == str(group_name).casefold()), None)
        if group is None:
            raise LookupError(f"Could not find any self-hosted runner group named {group_name!r} in {key}")
        old = next((r for r in self._runners_in(key) if r["name"] == name), None)
        if old is not None:
            if not data.get("replace"):
                raise _AdminConflict(f"A runner exists with the same name {name} in {key}")
            if old["busy"]:
                raise _AdminConflict(f"runner {name} (id {old['id']}) is busy running a job: cannot replace it")
            del self.state["runners"][str(old["id"])]
        ephemeral = bool(data.get("ephemeral", False))
        runner = self.add_runner(key, name, labels=list(wanted.values()), runner_group_id=group["id"],
                                 ephemeral=ephemeral, jit=False, os_name=os_name, work_folder=work_folder)
        files = self.settings_files(runner, group, key, github_url=entry.get("url"), ephemeral=ephemeral,
                                    disable_update=bool(data.get("disable_update", False)))
        return Reply(200, {"runner": self.runner_body(runner), "files": files})

    def _admin_get_runner(self, ref: str, **_kwargs: t.Any) -> Reply:
        return Reply(200, self._admin_view(self._find(ref)))

    def _admin_delete_runner(self, ref: str, **_kwargs: t.Any) -> Reply:
        runner = self._find(ref)
        del self.state["runners"][str(runner["id"])]
        return Reply(200, self._admin_view(runner))

    def _admin_runner_status(self, ref: str, data: dict, **_kwargs: t.Any) -> Reply:
        runner = self._find(ref)
        changes: dict[str, t.Any] = {}
        if "status" in data:
            if data["status"] not in ("online", "offline"):
                raise ValueError("status must be online or offline")
            changes["status"] = data["status"]
        if "busy" in data:
            changes["busy"] = bool(data["busy"])
        if changes:
            self.note_change(runner, **changes)
        if data.get("os"):
            runner["os"] = data["os"]
        return Reply(200, self._admin_view(runner))

    def _admin_runner_job(self, ref: str, data: dict, **_kwargs: t.Any) -> Reply:
        """The runner takes a job. Taking a job that is no longer queued is a lost race: 409.

        Atomic (every request holds the model's lock), so of two runners claiming the same
        queued job exactly one gets it, as with GitHub's job assignment.
        """
        runner = self._find(ref)
        if runner["busy"]:
            raise ValueError(f"runner {runner['name']} is already busy")
        taken = self.state["jobs"].get(str(data.get("job_id")))
        if taken is not None and taken["status"] != "queued":
            by = f" by runner {taken['runner_name']}" if taken.get("runner_name") else ""
            raise _AdminConflict(f"job {taken['id']} is already {taken['status']}{by}")
        job = self._job(data.get("job_id"), runner["scope"], runner["labels"])
        job.update(status="in_progress", runner_id=runner["id"], runner_name=runner["name"],
                   runner_group_id=runner["runner_group_id"], started_at=self.clock())
        self.note_change(runner, status="online", busy=True)
        runner["job"] = {"id": job["id"], "name": job["name"]}
        self._emit("in_progress", job)
        return Reply(200, self._admin_view(runner))

    def _admin_runner_done(self, ref: str, data: dict, **_kwargs: t.Any) -> Reply:
        runner = self._find(ref)
        job_ref = runner.get("job")
        view = self._admin_view(runner)
        if runner.get("ephemeral"):  # GitHub removes an ephemeral runner after its one job
            del self.state["runners"][str(runner["id"])]
            if self._lagging(self.clock()):  # ... but lists it, as it was, a while longer
                self.state["gone"][str(runner["id"])] = dict(runner, gone_at=self.clock())
            runner.update(busy=False, job=None)
            view.update(busy=False, job=None, removed=True)
        else:
            self.note_change(runner, busy=False)
            runner["job"] = None
            view.update(busy=False, job=None, removed=False)
        if job_ref:
            job = self.state["jobs"].get(str(job_ref["id"]))
            if job is not None:
                job.update(status="completed", conclusion=data.get("conclusion", "success"),
                           completed_at=self.clock())
                self._emit("completed", job)
        return Reply(200, view)

    def _admin_list_faults(self, **_kwargs: t.Any) -> Reply:
        return Reply(200, {"faults": self.state["faults"]})

    def _admin_add_fault(self, data: dict, **_kwargs: t.Any) -> Reply:
        fault = {"id": uuid.uuid4().hex[:8], "method": data.get("method"), "path": data.get("path"),
                 "status": int(data.get("status", 403)), "kind": data.get("kind"),
                 "delay": data.get("delay"),
                 "retry_after": data.get("retry_after"), "reset_in": data.get("reset_in", 1),
                 "times": int(data.get("times", 1)), "message": data.get("message"), "hits": 0}
        if fault["path"]:
            re.compile(fault["path"])
        self.state["faults"].append(fault)
        return Reply(201, fault)

    def _admin_clear_faults(self, **_kwargs: t.Any) -> Reply:
        self.state["faults"] = []
        return Reply(200, {"faults": []})

    def _admin_ratelimit(self, data: dict, **_kwargs: t.Any) -> Reply:
        now = self.clock()
        resource = data.get("resource", "core")
        bucket = self._bucket(Principal("pat"), resource, now)
        if "limit" in data:
            bucket["limit"] = int(data["limit"])
        if "remaining" in data:
            bucket["used"] = max(0, bucket["limit"] - int(data["remaining"]))
        if "reset_in" in data:
            bucket["reset"] = int(now + float(data["reset_in"]))
        return Reply(200, dict(bucket, resource=resource))

    def _admin_calls(self, query: dict, **_kwargs: t.Any) -> Reply:
        calls = self.state["calls"]
        if query.get("path"):
            calls = [c for c in calls if re.search(query["path"], c["path"])]
        if query.get("method"):
            calls = [c for c in calls if c["method"] == query["method"].upper()]
        return Reply(200, {"calls": calls})

    def _admin_clear_calls(self, **_kwargs: t.Any) -> Reply:
        self.state["calls"] = []
        return Reply(200, {"calls": []})

    # ------------------------------------------------------------------ jobs and webhooks
    def _job(self, job_id: t.Any, key: str, labels: t.Sequence[str]) -> dict:
        jobs = self.state["jobs"]
        if job_id is not None and str(job_id) in jobs:
            return jobs[str(job_id)]
        number = int(job_id) if job_id is not None else self.state["next"]["job"]
        self.state["next"]["job"] = max(self.state["next"]["job"], number + 1)
        job = {"id": number, "run_id": 100000 + number, "name": f"job-{number}", "scope": key,
               "labels": list(labels), "status": "queued", "conclusion": None, "runner_id": None,
               "runner_name": None, "runner_group_id": None, "created_at": self.clock(), "started_at": None,
               "completed_at": None}
        jobs[str(number)] = job
        return job

    def _admin_queue_job(self, data: dict, **_kwargs: t.Any) -> Reply:
        known = self.state["jobs"].get(str(data.get("job_id")))
        if known is not None:  # GitHub never queues a job id twice; a re-run gets a new job
            raise _AdminConflict(f"job {known['id']} exists already ({known['status']}); "
                                 "omit job_id to queue a new job")
        seconds = data.get("run_seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0):
            raise ValueError(f"run_seconds must be a number of seconds >= 0, got {seconds!r}")
        job = self._job(data.get("job_id"), data["scope"].lower(), data.get("labels", ["self-hosted"]))
        if data.get("name"):
            job["name"] = data["name"]
        if data.get("repository"):
            job["repository"] = data["repository"]
        if seconds is not None:  # how long the stand-in runner "runs" it (test-only)
            job["run_seconds"] = seconds
        self._emit("queued", job)
        return Reply(201, job)

    def _admin_list_jobs(self, query: dict, **_kwargs: t.Any) -> Reply:
        """Jobs by id, filtered by ``?status=`` (queued, in_progress, completed) and ``?scope=``."""
        jobs = sorted(self.state["jobs"].values(), key=lambda j: j["id"])
        if query.get("status"):
            jobs = [j for j in jobs if j["status"] == query["status"]]
        if query.get("scope"):
            jobs = [j for j in jobs if j["scope"] == query["scope"].lower()]
        return Reply(200, {"jobs": jobs})

    def _admin_get_job(self, job_id: str, **_kwargs: t.Any) -> Reply:
        job = self.state["jobs"].get(str(int(job_id)))
        if job is None:
            raise LookupError(f"no job with id {job_id}")
        return Reply(200, job)

    def _admin_add_hook(self, data: dict, **_kwargs: t.Any) -> Reply:
        self.state["next"]["hook"] = self.state["next"].get("hook", len(self.state["hooks"]) + 1)
        hook = {"id": self.state["next"]["hook"], "url": data["url"], "secret": data.get("secret", ""),
                "scope": (data.get("scope") or "").lower() or None}
        self.state["next"]["hook"] += 1
        self.state["hooks"].append(hook)
        return Reply(201, {"id": hook["id"], "url": hook["url"], "scope": hook["scope"]})

    def _admin_delete_hooks(self, **_kwargs: t.Any) -> Reply:
        gone, self.state["hooks"] = len(self.state["hooks"]), []
        return Reply(200, {"deleted": gone})

    def _admin_deliveries(self, **_kwargs: t.Any) -> Reply:
        return Reply(200, {"deliveries": self.state["deliveries"]})

    def _admin_redeliver(self, guid: str, **_kwargs: t.Any) -> Reply:
        """Send a delivery again as GitHub's "Redeliver" button does: same body, same delivery id."""
        first = next((d for d in self.state["deliveries"] if d["guid"] == guid and "body" in d), None)
        if first is None:
            return Reply(404, {"error": f"no delivery {guid} (or it predates stored bodies)"})
        record = self._again(first)
        self._outbox.append({"record": record, "url": record["url"], "headers": dict(record["headers"]),
                             "body": record["body"].encode()})
        return Reply(202, {"guid": guid})

    @staticmethod
    def _user(login: str, ident: int, kind: str = "User") -> dict:
        api = f"https://api.github.com/users/{login}"
        return {
            "login": login, "id": ident, "node_id": f"MDQ6VXNlcnt{ident}", "avatar_url":
            f"https://avatars.githubusercontent.com/u/{ident}?v=4", "gravatar_id": "", "url": api,
            "html_url": f"https://github.com/{login}", "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}", "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs", "repos_url": f"{api}/repos", "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events", "type": kind, "site_admin": False,
        }

    @staticmethod
    def _organization(login: str) -> dict:
        api = f"https://api.github.com/orgs/{login}"
        return {"login": login, "id": 4242, "node_id": "MDEyOk9yZ2FuaXphdGlvbjQyNDI=", "url": api,
                "repos_url": f"{api}/repos", "events_url": f"{api}/events", "hooks_url": f"{api}/hooks",
                "issues_url": f"{api}/issues", "members_url": f"{api}/members{{/member}}",
                "public_members_url": f"{api}/public_members{{/member}}",
                "avatar_url": "https://avatars.githubusercontent.com/u/4242?v=4", "description": None}

    def _repository(self, full_name: str, stamp: str) -> dict:
        owner, _unused, name = full_name.partition("/")
        api = f"https://api.github.com/repos/{full_name}"
        plain = ["forks", "teams", "hooks", "events", "tags", "languages", "stargazers", "contributors",
                 "subscribers", "subscription", "merges", "downloads", "deployments"]
        templated = {"keys": "{/key_id}", "collaborators": "{/collaborator}", "issue_events": "{/number}",
                     "assignees": "{/user}", "branches": "{/branch}", "blobs": "{/sha}", "git_tags": "{/sha}",
                     "git_refs": "{/sha}", "trees": "{/sha}", "statuses": "{sha}", "commits": "{/sha}",
                     "git_commits": "{/sha}", "comments": "{/number}", "issue_comment": "{/number}",
                     "contents": "{+path}", "compare": "{base}...{head}", "archive": "{archive_format}{/ref}",
                     "issues": "{/number}", "pulls": "{/number}", "milestones": "{/number}",
                     "notifications": "{?since,all,participating}", "labels": "{/name}", "releases": "{/id}"}
        repo: dict[str, t.Any] = {
            "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": name, "full_name": full_name,
            "private": True, "owner": self._user(owner, 4242, "Organization"),
            "html_url": f"https://github.com/{full_name}", "description": None, "fork": False, "url": api,
        }
        for key in plain:
            repo[f"{key}_url"] = f"{api}/{key}"
        for key, suffix in templated.items():
            path = key.replace("git_", "git/").replace("issue_events", "issues/events").replace(
                "issue_comment", "issues/comments").replace("statuses", "statuses/")
            repo[f"{key}_url"] = f"{api}/{path}{suffix}".replace("statuses//", "statuses/")
        repo.update({
            "created_at": stamp, "updated_at": stamp, "pushed_at": stamp,
            "git_url": f"git://github.com/{full_name}.git", "ssh_url": f"git@github.com:{full_name}.git",
            "clone_url": f"https://github.com/{full_name}.git", "svn_url": f"https://github.com/{full_name}",
            "homepage": None, "size": 1, "stargazers_count": 0, "watchers_count": 0, "language": None,
            "has_issues": True, "has_projects": False, "has_downloads": True, "has_wiki": False,
            "has_pages": False, "forks_count": 0, "mirror_url": None, "archived": False, "open_issues_count": 0,
            "license": None, "forks": 0, "open_issues": 0, "watchers": 0, "default_branch": "main",
            "is_template": False, "web_commit_signoff_required": False, "topics": [], "visibility": "private",
            "custom_properties": {},
        })
        return repo

    def workflow_job_payload(self, action: str, job: dict) -> dict:
        """A ``workflow_job`` webhook body with every field GitHub's webhook schema requires."""
        full_name = job.get("repository") or self._job_repository(job["scope"])
        owner = full_name.split("/")[0]
        api = f"https://api.github.com/repos/{full_name}"
        stamp = _now_iso(job["created_at"])
        workflow_job = {
            "id": job["id"], "run_id": job["run_id"], "run_attempt": 1, "name": job["name"],
            "workflow_name": "CI", "head_branch": "main", "head_sha": "0" * 40,
            "run_url": f"{api}/actions/runs/{job['run_id']}",
            "html_url": f"https://github.com/{full_name}/actions/runs/{job['run_id']}/job/{job['id']}",
            "url": f"{api}/actions/jobs/{job['id']}", "check_run_url": f"{api}/check-runs/{job['id']}",
            "node_id": f"CR_kwDOABCD{job['id']}", "status": job["status"], "conclusion": job["conclusion"],
            "created_at": stamp, "started_at": _now_iso(job["started_at"] or job["created_at"]),
            "completed_at": _now_iso(job["completed_at"]) if job["completed_at"] else None,
            "labels": list(job["labels"]), "runner_id": job["runner_id"], "runner_name": job["runner_name"],
            "runner_group_id": job["runner_group_id"],
            "runner_group_name": "Default" if job["runner_group_id"] else None, "steps": [],
        }
        payload = {"action": action, "workflow_job": workflow_job,
                   "repository": self._repository(full_name, stamp), "sender": self._user("octocat", 1)}
        if not job["scope"].startswith("enterprise:"):
            payload["organization"] = self._organization(owner)
        return payload

    @staticmethod
    def _job_repository(key: str) -> str:
        kind, _unused, name = key.partition(":")
        return name if kind == "repo" else f"{name}/app"

    @staticmethod
    def hook_sees(hook: dict, scope: str) -> bool:
        """A hook without a scope sees everything; an organization's hook sees its repositories."""
        if not hook["scope"] or hook["scope"] == scope:
            return True
        kind, _unused, name = hook["scope"].partition(":")
        return kind == "org" and scope.startswith(f"repo:{name}/")

    def _emit(self, action: str, job: dict) -> None:
        for hook in self.state["hooks"]:
            if not self.hook_sees(hook, job["scope"]):
                continue
            # GitHub's bytes: compact JSON, characters as UTF-8 (not \u escapes).
            body = json.dumps(self.workflow_job_payload(action, job), separators=(",", ":"),
                              ensure_ascii=False).encode()
            guid = str(uuid.uuid4())
            headers = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/fake",
                       "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": guid,
                       "X-GitHub-Hook-ID": str(hook["id"])}
            if hook["secret"]:
                digest = hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
                headers["X-Hub-Signature-256"] = "sha256=" + digest
            record = {"guid": guid, "hook_id": hook["id"], "action": action, "job_id": job["id"],
                      "url": hook["url"], "status": None, "error": None, "redelivery": False,
                      "headers": headers, "body": body.decode(), "event": "workflow_job",
                      "id": self._delivery_id(), "scope": job["scope"]}
            self.state["deliveries"].append(record)
            self._outbox.append({"record": record, "url": hook["url"], "headers": headers, "body": body})

    def _again(self, record: dict) -> dict:
        """A new attempt of a delivery: same body and delivery id (guid), no outcome yet."""
        again = dict(record, status=None, error=None, redelivery=True, id=self._delivery_id())
        for key in ("delivered_at", "duration", "response"):
            again.pop(key, None)
        self.state["deliveries"].append(again)
        return again

    def _delivery_id(self) -> int:
        number = self.state["next"]["delivery"]
        self.state["next"]["delivery"] = number + 1
        return number

    def _deliver(self, delivery: dict) -> None:
        request = urllib.request.Request(delivery["url"], data=delivery["body"], headers=delivery["headers"],
                                         method="POST")
        started = self.clock()
        answer, answer_headers = None, {}
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - test tool, local URLs
                status, error = resp.status, None
                answer, answer_headers = resp.read(), dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            status, error = exc.code, None
            answer, answer_headers = exc.read(), dict(exc.headers.items())
        except (urllib.error.URLError, OSError) as exc:
            status, error = None, str(exc)
        with self.lock:
            delivery["record"].update(
                status=status, error=error, delivered_at=started,
                duration=round(max(0.0, self.clock() - started), 3),
                response={"headers": answer_headers,
                          "payload": answer.decode("utf-8", "replace") if answer is not None else None})
            self._changed()

    # ------------------------------------------------------------------ a webhook's deliveries
    def _hook_of(self, principal: Principal, args: dict) -> dict:
        key = self._scope_of(principal, args)
        hook = next((h for h in self.state["hooks"] if h["id"] == int(args["hook_id"])
                     and h["scope"] == key), None)
        if hook is None:
            raise _Problem(404, "Not Found", DOCS_HOOKS)
        return hook

    @staticmethod
    def delivery_status(record: dict) -> tuple[str, int]:
        """GitHub's (status, status_code) of one attempt: "OK", the HTTP code, or a failure to
        connect (code 0)."""
        code = record.get("status")
        if code is None:
            return "failed to connect to host", 0
        return ("OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"), int(code)

    def delivery_item(self, record: dict) -> dict:
        """A delivery as ``GET .../hooks/{id}/deliveries`` lists it."""
        status, code = self.delivery_status(record)
        repo = record.get("scope", "").startswith("repo:")
        return {
            "id": record["id"], "guid": record["guid"],
            "delivered_at": _now_iso(record.get("delivered_at") or 0), "redelivery": record["redelivery"],
            "duration": record.get("duration", 0.0), "status": status, "status_code": code,
            "event": record.get("event", "workflow_job"), "action": record.get("action"),
            "installation_id": None, "repository_id": REPOSITORY_ID if repo else None,
            "throttled_at": None,
        }

    def _deliveries_of(self, hook: dict) -> list[dict]:
        """The hook's attempts that have an outcome, newest first."""
        done = [d for d in self.state["deliveries"] if d.get("hook_id") == hook["id"] and "id" in d
                and "delivered_at" in d]
        return sorted(done, key=lambda d: d["id"], reverse=True)

    def _api_hook_deliveries(self, principal: Principal, prefix: str, query: dict, **args: t.Any) -> Reply:
        hook = self._hook_of(principal, args)
        try:
            per_page = int(query.get("per_page", 30))
        except ValueError:
            per_page = 0
        if not 1 <= per_page <= 100:
            raise _Problem(422, "Invalid request.", DOCS_HOOKS, errors=[_invalid("per_page", "an integer from 1 to 100")])
        items = self._deliveries_of(hook)
        status = query.get("status")
        if status in ("success", "failure"):
            items = [d for d in items if (self.delivery_status(d)[0] == "OK") == (status == "success")]
        elif status is not None:
            raise _Problem(422, "Invalid request.", DOCS_HOOKS, errors=[_invalid("status", "success or failure")])
        cursor = query.get("cursor")
        if cursor is not None:
            if not re.fullmatch(r"v1_\d+", cursor):
                raise _Problem(400, "Invalid cursor", DOCS_HOOKS)
            items = [d for d in items if d["id"] < int(cursor[3:])]
        page, more = items[:per_page], len(items) > per_page
        headers = {}
        if more:
            params = dict(query, per_page=per_page, cursor=f"v1_{page[-1]['id']}")
            path = self._scope_path(self._scope_of(principal, args)) + f"/hooks/{hook['id']}/deliveries"
            headers["Link"] = f'<{self.public_url}{prefix}{path}?{urlencode(params)}>; rel="next"'
        return Reply(200, [self.delivery_item(d) for d in page], headers)

    def _delivery_in(self, hook: dict, delivery_id: str) -> dict:
        record = next((d for d in self._deliveries_of(hook) if d["id"] == int(delivery_id)), None)
        if record is None:
            raise _Problem(404, "Not Found", DOCS_HOOKS)
        return record

    def _api_hook_delivery(self, principal: Principal, delivery_id: str, **args: t.Any) -> Reply:
        record = self._delivery_in(self._hook_of(principal, args), delivery_id)
        body = dict(self.delivery_item(record))
        body["url"] = f"{self.public_url}/_fake/deliveries/{record['guid']}"
        body["request"] = {"headers": {k: v for k, v in record["headers"].items()
                                       if k.lower() != "x-hub-signature-256"},
                           "payload": json.loads(record["body"])}
        body["response"] = record.get("response") or {"headers": None, "payload": None}
        return Reply(200, body)

    def _api_hook_redeliver(self, principal: Principal, delivery_id: str, **args: t.Any) -> Reply:
        """GitHub queues the redelivery and answers 202 at once; it is sent in the background."""
        record = self._delivery_in(self._hook_of(principal, args), delivery_id)
        again = self._again(record)
        job = {"record": again, "url": again["url"], "headers": dict(again["headers"]),
               "body": again["body"].encode()}
        threading.Thread(target=self._deliver, args=(job,), name="fake-github-redeliver",
                         daemon=True).start()
        return Reply(202, {})

    def snapshot(self) -> dict:
        with self.lock:
            return copy.deepcopy(self.state)
