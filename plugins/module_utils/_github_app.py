# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GitHub App authentication: the RS256 app JWT and installation tokens with a cache.

Internal to the rum.pool collection: not a public API. Signing needs ``cryptography``; the clock
is passed in. Installation tokens are kept in memory and, when a cache directory is given, in
0600 files written atomically, and reused until five minutes before they expire.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import tempfile
import time
import traceback
import typing as t

from ansible_collections.rum.pool.plugins.module_utils._github import (
    GitHubClient,
    GitHubError,
    GitHubNotFound,
    Scope,
)

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the host
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

# GitHub rejects an iat even slightly in the future, and an exp more than 10 minutes after iat.
JWT_BACKDATE = 60
JWT_LIFETIME = 540
# Reuse an installation token until this many seconds before it expires.
TOKEN_REFRESH_MARGIN = 300


class GitHubAppError(GitHubError):
    """The App credentials cannot be used (bad key, no installation, unsupported scope)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_claims(issuer: str | int, now: float) -> dict[str, t.Any]:
    """The claims GitHub wants: iat 60 s in the past, exp 9 min ahead, iss = App id or client id."""
    issuer_s = str(issuer).strip()
    iss: str | int = int(issuer_s) if issuer_s.isdigit() else issuer_s
    now_i = int(now)
    return {"iat": now_i - JWT_BACKDATE, "exp": now_i + JWT_LIFETIME, "iss": iss}


def load_private_key(pem: str | bytes) -> t.Any:
    """Parse a PEM RSA private key; the error never quotes the key."""
    if not HAS_CRYPTOGRAPHY:
        raise GitHubAppError("the cryptography library is needed to sign GitHub App tokens")
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data.strip() + b"\n", password=None)
    except (ValueError, TypeError):
        raise GitHubAppError("the GitHub App private key is not a readable unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise GitHubAppError("the GitHub App private key must be an RSA key (GitHub signs with RS256)")
    return key


def build_app_jwt(issuer: str | int, private_key: t.Any, now: float) -> str:
    """A signed RS256 JWT for ``Authorization: Bearer`` on GitHub's /app endpoints."""
    if isinstance(private_key, (str, bytes)):
        private_key = load_private_key(private_key)
    header = {"alg": "RS256", "typ": "JWT"}
    segments = [
        _b64url(json.dumps(header, separators=(",", ":")).encode()),
        _b64url(json.dumps(jwt_claims(issuer, now), separators=(",", ":")).encode()),
    ]
    signing_input = ".".join(segments).encode("ascii")
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return ".".join(segments + [_b64url(signature)])


def parse_github_time(value: str) -> float:
    """GitHub's ``expires_at`` (ISO 8601, ``Z`` or an offset) as a Unix timestamp."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        # Python < 3.11 does not read fractional seconds of every width.
        when = datetime.datetime.fromisoformat(text.split(".")[0] + text[-6:])
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class InstallationTokenCache:
    """Installation tokens by (API URL, App, installation), in memory and optionally on disk."""

    def __init__(self, directory: str | None = None, margin: float = TOKEN_REFRESH_MARGIN):
        self.directory = directory
        self.margin = margin
        self._memory: dict[str, dict[str, t.Any]] = {}

    @staticmethod
    def key(api_url: str, issuer: str, installation_id: int) -> str:
        raw = f"{api_url.rstrip('/')}|{issuer}|{installation_id}".encode()
        return hashlib.sha256(raw).hexdigest()[:32]

    def _path(self, key: str) -> str | None:
        return os.path.join(self.directory, f"gh-app-{key}.json") if self.directory else None

    def get(self, key: str, now: float) -> str | None:
        entry = self._memory.get(key)
        path = self._path(key)
        if entry is None and path:
            try:
                with open(path, encoding="utf-8") as fh:
                    entry = json.load(fh)
            except (OSError, ValueError):
                entry = None
        if not isinstance(entry, dict) or not entry.get("token"):
            return None
        try:
            expires = float(entry["expires_at"])
        except (KeyError, TypeError, ValueError):
            return None
        if expires - self.margin <= now:
            return None
        self._memory[key] = entry
        return str(entry["token"])

    def put(self, key: str, token: str, expires_at: float) -> None:
        entry = {"token": token, "expires_at": expires_at}
        self._memory[key] = entry
        path = self._path(key)
        if path:
            _write_secret_json(path, entry)

    def get_value(self, key: str) -> t.Any:
        """A non-expiring entry (e.g. an installation id found by lookup), or None."""
        path = self._path(key)
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh).get("value")
        except (OSError, ValueError, AttributeError):
            return None

    def put_value(self, key: str, value: t.Any) -> None:
        path = self._path(key)
        if path:
            _write_secret_json(path, {"value": value})

    def drop(self, key: str) -> None:
        self._memory.pop(key, None)
        path = self._path(key)
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


def _write_secret_json(path: str, data: t.Mapping[str, t.Any]) -> None:
    """Write a 0600 file atomically: a temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class AppAuth:
    """Authenticate as a GitHub App installation: JWT -> installation token (cached)."""

    kind = "GitHub App"

    def __init__(self, issuer: str | int, private_key: str | bytes, installation_id: int | None = None,
                 scope: Scope | None = None, cache: InstallationTokenCache | None = None,
                 clock: t.Callable[[], float] = time.time):
        self.issuer = str(issuer).strip()
        if not self.issuer:
            raise GitHubAppError("the GitHub App id (or client id) is empty")
        self._key = load_private_key(private_key)
        self.installation_id = int(installation_id) if installation_id else None
        self.scope = scope
        self.cache = cache or InstallationTokenCache()
        self.clock = clock
        self._cache_key: str | None = None
        self.token_source: str | None = None  # "cache" or "new", for module results and tests

    def jwt(self) -> str:
        return build_app_jwt(self.issuer, self._key, self.clock())

    def find_installation(self, client: GitHubClient) -> int:
        """Look up the installation of this App on the scope's account."""
        scope = self.scope
        if scope is None:
            raise GitHubAppError("an App installation id or a scope to look it up is needed")
        if scope.kind == "enterprise":
            raise GitHubAppError(
                f"{scope.describe()}: GitHub App tokens cannot manage enterprise runners; "
                "use a classic personal access token with manage_runners:enterprise")
        resp = client.request("GET", f"{scope.path}/installation", authorization="Bearer " + self.jwt(),
                              what=f"look up the installation of GitHub App {self.issuer}", scope=scope)
        data = resp.json() or {}
        if not isinstance(data.get("id"), int):
            raise GitHubAppError(f"{scope.describe()}: GitHub's installation answer has no id")
        return int(data["id"])

    def authorization(self, client: GitHubClient) -> str:
        return "Bearer " + self.installation_token(client)

    def installation_token(self, client: GitHubClient) -> str:
        if self.scope is not None and self.scope.kind == "enterprise":
            raise GitHubAppError(
                f"{self.scope.describe()}: GitHub App tokens cannot manage enterprise runners; "
                "use a classic personal access token with manage_runners:enterprise")
        looked_up = False
        if self.installation_id is None:
            self.installation_id = self._cached_installation(client)
        if self.installation_id is None:
            self.installation_id = self.find_installation(client)
            looked_up = True
            self._remember_installation(client)
        key = InstallationTokenCache.key(client.api_url, self.issuer, self.installation_id)
        self._cache_key = key
        token = self.cache.get(key, self.clock())
        if token:
            self.token_source = self.token_source or "cache"
            return token
        try:
            resp = self._exchange(client)
        except GitHubNotFound:
            if looked_up or self.scope is None or self._installation_key(client) is None:
                raise
            # The remembered installation is gone (the App was reinstalled): look it up again.
            self.cache.drop(self._installation_key(client) or "")
            self.installation_id = self.find_installation(client)
            self._remember_installation(client)
            key = InstallationTokenCache.key(client.api_url, self.issuer, self.installation_id)
            self._cache_key = key
            resp = self._exchange(client)
        data = resp.json() or {}
        token = data.get("token")
        if not token:
            raise GitHubAppError("GitHub answered the installation token request without a token")
        try:
            expires = parse_github_time(str(data.get("expires_at", "")))
        except ValueError:
            expires = self.clock() + 3600
        self.cache.put(key, token, expires)
        self.token_source = "new"
        return token

    def _exchange(self, client: GitHubClient) -> t.Any:
        return client.request(
            "POST", f"/app/installations/{self.installation_id}/access_tokens", expected=(201,),
            authorization="Bearer " + self.jwt(), scope=self.scope,
            what=f"create an installation token for GitHub App {self.issuer} installation {self.installation_id}")

    def _installation_key(self, client: GitHubClient) -> str | None:
        if self.scope is None or not self.cache.directory:
            return None
        raw = f"{client.api_url.rstrip('/')}|{self.issuer}|{self.scope.kind}|{self.scope.name.lower()}".encode()
        return "inst-" + hashlib.sha256(raw).hexdigest()[:32]

    def _cached_installation(self, client: GitHubClient) -> int | None:
        """The installation id found for this scope by an earlier run (file cache only)."""
        key = self._installation_key(client)
        value = self.cache.get_value(key) if key else None
        return int(value) if isinstance(value, int) else None

    def _remember_installation(self, client: GitHubClient) -> None:
        key = self._installation_key(client)
        if key and self.installation_id is not None:
            self.cache.put_value(key, self.installation_id)

    def invalidate(self) -> bool:
        """Forget the cached installation token (GitHub said 401); True if there was one."""
        if self._cache_key is None:
            return False
        self.cache.drop(self._cache_key)
        self._cache_key = None
        return True
