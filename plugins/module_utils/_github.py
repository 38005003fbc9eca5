# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small GitHub REST client: scopes, errors, retries and rate limits, pagination.

Internal to the rum.pool collection: not a public API. The HTTP transport, the clock, the sleep
function and the random source are passed in, so every retry decision is unit-testable without a
network. The default transport is ``ansible.module_utils.urls.Request`` (what ``open_url`` uses),
with one TLS context per transport.

A call that creates something (a POST) is never sent twice blindly: when it may have reached
GitHub without its answer reaching us (a timeout or a dropped connection after the request went
out, or a server error), the client raises ``GitHubAmbiguous`` and the caller looks for what it
may have created. Calls that are safe to repeat (GET, DELETE, and POSTs the caller marks so) are
retried as before; a response that follows such an ambiguous failure says so
(``Response.after_ambiguous``), so that a 404 to a repeated DELETE is read as "deleted by the
first attempt".
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import socket
import ssl
import threading
import time
import typing as t
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
USER_AGENT = "rum.pool-ansible-collection"
MEDIA_TYPE = "application/vnd.github+json"

# What each scope needs, for error hints (GitHub's documented permissions).
PERMISSION_HINTS = {
    "repository": "a fine-grained token or App needs Administration: write on the repository "
                  "(a classic PAT needs the repo scope)",
    "organization": "a fine-grained token or App needs Self-hosted runners: write on the organization "
                    "(a classic PAT needs admin:org)",
    "enterprise": "only a classic PAT with manage_runners:enterprise can manage enterprise runners",
}


class GitHubError(Exception):
    """A GitHub call failed; the message names the call, the scope and GitHub's answer."""

    def __init__(self, message: str, status: int | None = None, github_message: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.github_message = github_message


class GitHubAuthError(GitHubError):
    """401, or 403 that is not a rate limit: the credentials are wrong or lack permission."""


class GitHubNotFound(GitHubError):
    """404: the object does not exist, or the credentials cannot see it."""


class GitHubConflict(GitHubError):
    """409: for example a runner with that name already exists."""


class GitHubValidationError(GitHubError):
    """422: GitHub rejected the request body or the action (e.g. deleting a busy runner)."""


class GitHubGaveUp(GitHubError):
    """Rate limits or server errors persisted beyond the configured bound on waiting/retrying."""


class GitHubAmbiguous(GitHubError):
    """A call that is not safe to repeat may have been done by GitHub, but its answer was lost."""


class TransportError(Exception):
    """The HTTP request did not get a response at all (connection refused, timeout, TLS).

    ``sent`` is False when the request certainly never reached the server (refused, no such
    host, TLS handshake), True when it may have (a timeout or a reset after it was sent).
    """

    def __init__(self, message: str, sent: bool = True):
        super().__init__(message)
        self.sent = sent


# Methods GitHub treats as safe to repeat: doing them twice is the same as doing them once.
IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")


def _never_sent(exc: BaseException) -> bool:
    """Whether a transport error happened before the request could reach the server."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror, ssl.SSLError))


class Scope:
    """Where runners live: a repository ``owner/repo``, an organization or an enterprise."""

    KINDS = ("repository", "organization", "enterprise")

    def __init__(self, kind: str, name: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown scope kind {kind!r}")
        name = (name or "").strip().strip("/")
        if kind == "repository":
            parts = name.split("/")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"repository must be 'owner/repo', got {name!r}")
        elif not name or "/" in name:
            raise ValueError(f"{kind} name must be a single path segment, got {name!r}")
        self.kind = kind
        self.name = name

    @classmethod
    def from_options(cls, repository: str | None = None, organization: str | None = None,
                     enterprise: str | None = None) -> Scope:
        given = [(k, v) for k, v in (("repository", repository), ("organization", organization),
                                     ("enterprise", enterprise)) if v]
        if len(given) != 1:
            raise ValueError("exactly one of repository, organization or enterprise is required")
        return cls(*given[0])

    @property
    def path(self) -> str:
        prefix = {"repository": "/repos/", "organization": "/orgs/", "enterprise": "/enterprises/"}
        return prefix[self.kind] + self.name

    def describe(self) -> str:
        return f"{self.kind} '{self.name}'"

    def web_url(self, api_url: str) -> str:
        """The scope's web address, which the runner's ``config.sh --url`` takes.

        ``https://api.github.com`` -> ``https://github.com/...``; ``https://api.X.ghe.com`` ->
        ``https://X.ghe.com/...``; a GHES ``https://HOST/api/v3`` -> ``https://HOST/...``; any
        other API address is taken as the web address itself (a test server).
        """
        parts = urlsplit((api_url or DEFAULT_API_URL).rstrip("/"))
        host, path = parts.netloc, parts.path
        if host.lower() == "api.github.com":
            host = "github.com"
        elif host.lower().startswith("api.") and host.lower().endswith(".ghe.com"):
            host = host[len("api."):]
        if path.endswith("/api/v3"):
            path = path[:-len("/api/v3")]
        suffix = {"repository": "/", "organization": "/", "enterprise": "/enterprises/"}[self.kind] + self.name
        return f"{parts.scheme}://{host}{path}{suffix}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scope) and (self.kind, self.name) == (other.kind, other.name)

    def __hash__(self) -> int:
        return hash((self.kind, self.name))

    def __repr__(self) -> str:
        return f"Scope({self.kind!r}, {self.name!r})"


class Response:
    """An HTTP answer: status, headers (lower-case names) and the raw body."""

    def __init__(self, status: int, headers: t.Mapping[str, str] | None = None, body: bytes = b""):
        self.status = int(status)
        self.headers = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
        self.body = body or b""
        # True when an earlier attempt of the same call may have been done by GitHub.
        self.after_ambiguous = False

    def json(self) -> t.Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def message(self) -> str:
        """GitHub's error message from the body (``message``), or a short excerpt of the body."""
        data = self.json()
        if isinstance(data, dict) and data.get("message"):
            text = str(data["message"])
            errors = data.get("errors")
            if errors:
                text += " (" + "; ".join(str(e.get("message", e) if isinstance(e, dict) else e)
                                         for e in errors) + ")"
            return text
        excerpt = self.body[:200].decode("utf-8", "replace").strip()
        return excerpt or "(empty body)"


Transport = t.Callable[[str, str, t.Dict[str, str], t.Optional[bytes], float], Response]


class OpenUrlTransport:
    """The default transport: Ansible's ``Request`` (``open_url``'s engine: urllib underneath, no
    extra dependency), with one TLS context for all its requests.

    ``open_url`` builds a new TLS context for every request, and building one reads and parses
    the system's CA certificates: tens of milliseconds of CPU each time, the larger part of a
    request to GitHub, and seconds for a batch that mints and deletes a runner per slot. The
    context is made on the first request, from the same settings (``validate_certs``,
    ``ca_path``), and shared by the threads that use this transport.
    """

    def __init__(self, validate_certs: bool = True, ca_path: str | None = None):
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self._context: ssl.SSLContext | None = None
        self._context_lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        """The TLS context of this transport's requests, made once."""
        from ansible.module_utils import urls  # imported late: unit tests inject fakes

        with self._context_lock:
            if self._context is None:
                self._context = urls.make_context(cafile=self.ca_path, validate_certs=self.validate_certs)
            return self._context

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                 timeout: float) -> Response:
        from ansible.module_utils import urls  # imported late: unit tests inject fakes

        try:
            resp = urls.Request().open(method, url, data=body, headers=headers, timeout=timeout,
                                       validate_certs=self.validate_certs, ca_path=self.ca_path,
                                       follow_redirects="safe", use_netrc=False, use_proxy=True,
                                       context=self.context())
            return Response(resp.getcode(), dict(resp.headers.items()), resp.read())
        except HTTPError as exc:
            try:
                data = exc.read()
            except Exception:  # pylint: disable=broad-except  # a body is optional on errors
                data = b""
            return Response(exc.code, dict(exc.headers.items()) if exc.headers else {}, data)
        except (URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TransportError(f"{method} {_strip_query(url)}: {reason}", sent=not _never_sent(exc)) from None


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def parse_link_header(value: str | None) -> dict[str, str]:
    """``Link: <url>; rel="next", <url>; rel="last"`` -> {"next": url, "last": url}."""
    links: dict[str, str] = {}
    if not value:
        return links
    for part in value.split(","):
        match = re.match(r'\s*<([^>]*)>\s*;(.*)$', part)
        if not match:
            continue
        rels = re.findall(r'rel\s*=\s*"?([^";]+)"?', match.group(2))
        for rel in rels:
            for name in rel.split():
                links[name] = match.group(1)
    return links


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class Decision:
    """The outcome of looking at one failed attempt: wait ``delay`` seconds and retry, or not."""

    def __init__(self, delay: float, reason: str, rate_limited: bool):
        self.delay = delay
        self.reason = reason
        self.rate_limited = rate_limited

    def __repr__(self) -> str:
        return f"Decision({self.delay:.2f}, {self.reason!r}, rate_limited={self.rate_limited})"


class RetryPolicy:
    """GitHub's rules for when and how long to wait before trying a call again.

    - 403/429 with ``Retry-After``: wait that long.
    - 403/429 with ``x-ratelimit-remaining: 0``: wait until ``x-ratelimit-reset`` (plus 1 s).
    - other secondary rate limits: ``secondary_min_wait`` doubling per attempt up to
      ``secondary_cap``, plus up to 10 % jitter (never less than a minute by default).
    - 5xx and connection errors: exponential backoff with jitter, at most ``max_retries`` times.
    - never more than ``max_wait`` seconds of waiting in total for one call.
    """

    SERVER_ERRORS = (500, 502, 503, 504)

    def __init__(self, max_wait: float = 300.0, max_retries: int = 5, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, secondary_min_wait: float = 60.0, secondary_cap: float = 900.0,
                 rng: t.Callable[[], float] = random.random):
        self.max_wait = float(max_wait)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.secondary_min_wait = float(secondary_min_wait)
        self.secondary_cap = float(secondary_cap)
        self.rng = rng

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2^attempt (capped)."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** attempt))
        return ceiling * (0.5 + 0.5 * self.rng())

    @staticmethod
    def is_rate_limited(resp: Response) -> bool:
        if resp.status == 429:
            return True
        if resp.status != 403:
            return False
        if resp.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in resp.headers:
            return True
        return "rate limit" in resp.message.lower()

    def decide(self, resp: Response | None, attempt: int, now: float) -> Decision | None:
        """How long to wait after a failed attempt (``attempt`` counts from 0), or None to stop."""
        if resp is None:
            return Decision(self.backoff(attempt), "no response from GitHub", False)
        retry_after = _retry_after_seconds(resp.headers.get("retry-after"), now)
        if self.is_rate_limited(resp):
            if retry_after is not None:
                return Decision(retry_after, f"HTTP {resp.status} rate limited, Retry-After {retry_after:g}s",
                                True)
            if resp.headers.get("x-ratelimit-remaining") == "0" and resp.headers.get("x-ratelimit-reset"):
                try:
                    reset = float(resp.headers["x-ratelimit-reset"])
                except ValueError:
                    reset = now + self.secondary_min_wait
                delay = max(0.0, reset - now) + 1.0
                resource = resp.headers.get("x-ratelimit-resource", "core")
                return Decision(delay, f"HTTP {resp.status} rate limit for '{resource}' exhausted until reset",
                                True)
            delay = min(self.secondary_cap, self.secondary_min_wait * (2 ** attempt)) * (1.0 + 0.1 * self.rng())
            return Decision(delay, f"HTTP {resp.status} secondary rate limit", True)
        if resp.status in self.SERVER_ERRORS:
            if retry_after is not None:
                return Decision(retry_after, f"HTTP {resp.status} server error, Retry-After {retry_after:g}s",
                                False)
            return Decision(self.backoff(attempt), f"HTTP {resp.status} server error", False)
        return None


class Stats:
    """What a client did, for a module's return value: requests, retries, seconds waited."""

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.waited = 0.0
        self.rate_limit: dict[str, str] = {}

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "waited_seconds": round(self.waited, 3),
            "rate_limit": dict(self.rate_limit),
        }


class TokenAuth:
    """A personal access token (classic or fine-grained), or any other fixed bearer token."""

    kind = "personal access token"

    def __init__(self, token: str):
        if not token:
            raise ValueError("an empty token was given")
        self._token = token

    def authorization(self, client: GitHubClient) -> str:  # pylint: disable=unused-argument
        return "Bearer " + self._token

    def invalidate(self) -> bool:
        """A fixed token cannot be refreshed: a 401 is final."""
        return False


class GitHubClient:
    """Calls GitHub's REST API with auth, GitHub's headers, retries and pagination."""

    def __init__(self, api_url: str = DEFAULT_API_URL, auth: t.Any = None,
                 transport: Transport | None = None, policy: RetryPolicy | None = None,
                 clock: t.Callable[[], float] = time.time, sleep: t.Callable[[float], None] = time.sleep,
                 timeout: float = 30.0, user_agent: str = USER_AGENT):
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.auth = auth
        self.transport = transport or OpenUrlTransport()
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.sleep = sleep
        self.timeout = timeout
        self.user_agent = user_agent
        self.stats = Stats()

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return self.api_url + (path if path.startswith("/") else "/" + path)

    def _headers(self, authorization: str | None, has_body: bool) -> dict[str, str]:
        headers = {
            "Accept": MEDIA_TYPE,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": self.user_agent,
        }
        if authorization:
            headers["Authorization"] = authorization
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    def request(self, method: str, path: str, body: t.Any = None, expected: t.Sequence[int] = (200,),
                what: str | None = None, authorization: str | None = None, scope: Scope | None = None,
                allow: t.Sequence[int] = (), repeatable: bool | None = None) -> Response:
        """Send one call, retrying as the policy allows; return the response or raise GitHubError.

        ``expected`` statuses are success; ``allow`` statuses are returned to the caller instead
        of raising (e.g. 404 when looking something up). ``authorization`` overrides the client's
        auth (used for the App JWT). ``what`` and ``scope`` only make error messages better.
        ``repeatable`` says whether doing the call twice is harmless (default: the method is
        idempotent); a call that is not is never retried after it may have reached GitHub: that
        raises ``GitHubAmbiguous`` instead.
        """
        if repeatable is None:
            repeatable = method.upper() in IDEMPOTENT
        url = self.url(path)
        data = json.dumps(body).encode("utf-8") if body is not None else None
        what = what or f"{method} {urlsplit(url).path}"
        label = what + (f" for {scope.describe()}" if scope else "")
        attempt = 0
        retries = 0
        refreshed = False
        waited = 0.0
        ambiguous = False
        while True:
            auth_value = authorization
            if auth_value is None and self.auth is not None:
                auth_value = self.auth.authorization(self)
            headers = self._headers(auth_value, data is not None)
            self.stats.requests += 1
            error: TransportError | None = None
            try:
                resp: Response | None = self.transport(method, url, headers, data, self.timeout)
            except TransportError as exc:
                resp, error = None, exc
            if resp is not None:
                self._note_rate_limit(resp)
                if resp.status in expected or resp.status in allow:
                    resp.after_ambiguous = ambiguous
                    return resp
                if (resp.status == 401 and authorization is None and not refreshed
                        and self.auth is not None and self.auth.invalidate()):
                    refreshed = True  # e.g. an installation token revoked early: get a new one once
                    continue
            decision = self.policy.decide(resp, attempt, self.clock())
            if decision is None:
                raise self.error_for(resp, what, scope)  # type: ignore[arg-type]
            if decision.rate_limited is False and (error is None or error.sent):
                # GitHub may have done it (a server error, or no answer after the request went out)
                if not repeatable:
                    cause = str(error) if error else f"HTTP {resp.status} {resp.message}"  # type: ignore[union-attr]
                    raise GitHubAmbiguous(
                        f"{label}: no usable answer from GitHub ({cause}); the call may have been done, "
                        "so it is not repeated", status=resp.status if resp is not None else None)
                ambiguous = True
            if not decision.rate_limited:
                retries += 1
            last = f"{decision.reason}" + (f" ({error})" if error else "")
            if not decision.rate_limited and retries > self.policy.max_retries:
                raise GitHubGaveUp(
                    f"{label}: gave up after {retries} attempts and {waited:.0f}s of waiting "
                    f"(max_retries={self.policy.max_retries}); last: {last}",
                    status=resp.status if resp is not None else None,
                    github_message=resp.message if resp is not None else None)
            if waited + decision.delay > self.policy.max_wait:
                raise GitHubGaveUp(
                    f"{label}: gave up: waiting {decision.delay:.0f}s more would exceed max_wait="
                    f"{self.policy.max_wait:g}s (already waited {waited:.0f}s over {attempt + 1} "
                    f"attempts); last: {last}",
                    status=resp.status if resp is not None else None,
                    github_message=resp.message if resp is not None else None)
            self.sleep(decision.delay)
            waited += decision.delay
            self.stats.waited += decision.delay
            self.stats.retries += 1
            attempt += 1

    def _note_rate_limit(self, resp: Response) -> None:
        for name in ("limit", "remaining", "used", "reset", "resource"):
            value = resp.headers.get("x-ratelimit-" + name)
            if value is not None:
                self.stats.rate_limit[name] = value

    def error_for(self, resp: Response, what: str, scope: Scope | None = None) -> GitHubError:
        """Turn a final error response into the matching GitHubError with a helpful message."""
        where = f" for {scope.describe()}" if scope else ""
        text = f"{what}{where}: HTTP {resp.status} {resp.message}"
        kind = getattr(self.auth, "kind", None)
        if resp.status == 401:
            who = f" ({kind})" if kind else ""
            return GitHubAuthError(f"{text} - the credentials{who} were rejected", resp.status, resp.message)
        if resp.status == 403:
            hint = PERMISSION_HINTS.get(scope.kind) if scope else None
            return GitHubAuthError(f"{text}" + (f" - {hint}" if hint else ""), resp.status, resp.message)
        if resp.status == 404:
            return GitHubNotFound(f"{text} - it does not exist or the credentials cannot see it",
                                  resp.status, resp.message)
        if resp.status == 409:
            return GitHubConflict(text, resp.status, resp.message)
        if resp.status == 422:
            return GitHubValidationError(text, resp.status, resp.message)
        return GitHubError(text, resp.status, resp.message)

    def get_json(self, path: str, **kwargs: t.Any) -> t.Any:
        return self.request("GET", path, **kwargs).json()

    def paginate(self, path: str, item_key: str, params: t.Mapping[str, t.Any] | None = None,
                 what: str | None = None, scope: Scope | None = None, per_page: int = 100) -> list[t.Any]:
        """All items of a list endpoint, following ``Link: rel="next"`` verbatim."""
        query = dict(params or {})
        query.setdefault("per_page", per_page)
        url: str | None = self.url(path) + "?" + urlencode(query)
        items: list[t.Any] = []
        seen: set[str] = set()
        while url:
            if url in seen:  # a broken server repeating a page must not loop forever
                raise GitHubError(f"{what or path}: pagination loops back to {_strip_query(url)}")
            seen.add(url)
            resp = self.request("GET", url, what=what or f"GET {path}", scope=scope)
            data = resp.json()
            if not isinstance(data, dict) or not isinstance(data.get(item_key), list):
                raise GitHubError(f"{what or 'GET ' + path}: unexpected response without '{item_key}'",
                                  resp.status)
            items.extend(data[item_key])
            url = parse_link_header(resp.headers.get("link")).get("next")
        return items
