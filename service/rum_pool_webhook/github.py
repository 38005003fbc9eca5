# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few GitHub REST calls the service makes: its webhook's deliveries, and redeliveries.

``HookDeliveries`` lists the deliveries of one repository or organization webhook (newest first,
following GitHub's cursor pagination), reads one, and asks GitHub to redeliver one. It
authenticates with a token, or as a GitHub App installation (an RS256 JWT exchanged for an
installation token, which needs the ``cryptography`` library: ``pip install
'rum-pool-webhook[github-app]'``). The collection's modules have a fuller client; the service
carries this small one so that it installs without the collection.

Errors name the call and GitHub's answer; a token or key never appears in one.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator, Mapping

from . import __version__

API_VERSION = "2022-11-28"
# Re-use an installation token until this many seconds before it expires.
TOKEN_MARGIN = 300


class GitHubError(Exception):
    """A call to GitHub failed; ``status`` is GitHub's HTTP status, if it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _next_link(header: str | None) -> str | None:
    for part in (header or "").split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


def parse_time(text: str) -> float:
    """GitHub's ISO 8601 timestamps (``...Z``) as Unix time."""
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt(app_id: str, private_key_pem: str, now: float) -> str:
    """The App's RS256 JWT: issued 60 s in the past (clock skew), valid 9 minutes."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives.asymmetric import padding  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise GitHubError("github.app_id: the cryptography library is needed to sign the App's "
                          "token; pip install 'rum-pool-webhook[github-app]'") from None
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise GitHubError("github.app_private_key_path: not a readable unencrypted PEM private "
                          "key") from None
    issuer: Any = int(app_id) if app_id.isdigit() else app_id
    claims = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": issuer}
    head = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signed = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}." + _b64url(key.sign(signed, padding.PKCS1v15(), hashes.SHA256()))


class HookDeliveries:
    """The deliveries of one webhook (``github`` section of the config)."""

    def __init__(self, settings: Mapping[str, Any], opener: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.api_url = str(settings.get("api_url") or "https://api.github.com").rstrip("/")
        if settings.get("repository"):
            self.scope = "/repos/" + str(settings["repository"])
        else:
            self.scope = "/orgs/" + str(settings["organization"])
        self.hook = f"{self.scope}/hooks/{int(settings['hook_id'])}"
        self.settings = settings
        self.timeout = float(settings.get("timeout") or 30)
        self.clock = clock
        if opener is None:
            context = ssl.create_default_context(cafile=settings.get("ca_path"))
            if not settings.get("validate_certs", True):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
        self.opener = opener
        self._installation: int | None = settings.get("app_installation_id")
        self._token: tuple[str, float] | None = None

    def describe(self) -> str:
        return f"webhook {self.settings.get('hook_id')} of {self.scope[1:]}"

    # -- HTTP ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, authorization: str | None = None) -> tuple[Any, dict[str, str]]:
        """One call; (parsed JSON, lower-cased headers), or GitHubError naming the call."""
        url = path if path.startswith(("http://", "https://")) else self.api_url + path
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": f"rum-pool-webhook/{__version__}",
                   "Authorization": authorization or self._authorization()}
        data = b"" if method == "POST" else None
        where = f"GitHub {method} {urllib.parse.urlsplit(url).path}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
                answer_headers = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}").get("message") or exc.reason
            except (ValueError, AttributeError):
                detail = exc.reason
            raise GitHubError(f"{where}: HTTP {exc.code} {' '.join(str(detail).split())[:200]}",
                              exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise GitHubError(f"{where}: cannot connect: {getattr(exc, 'reason', exc)}") from None
        try:
            return (json.loads(raw) if raw else None), answer_headers
        except ValueError:
            raise GitHubError(f"{where}: the answer is not JSON") from None

    def _authorization(self) -> str:
        if self.settings.get("token"):
            return "Bearer " + str(self.settings["token"])
        now = self.clock()
        if self._token is None or self._token[1] - TOKEN_MARGIN <= now:
            self._token = self._installation_token(now)
        return "Bearer " + self._token[0]

    def _installation_token(self, now: float) -> tuple[str, float]:
        jwt = "Bearer " + app_jwt(str(self.settings["app_id"]), str(self.settings["app_private_key"]),
                                  now)
        if self._installation is None:
            found, _headers = self.request("GET", f"{self.scope}/installation", jwt)
            if not isinstance(found, dict) or not isinstance(found.get("id"), int):
                raise GitHubError(f"GitHub GET {self.scope}/installation: no installation id")
            self._installation = found["id"]
        answer, _headers = self.request(
            "POST", f"/app/installations/{self._installation}/access_tokens", jwt)
        if not isinstance(answer, dict) or not answer.get("token"):
            raise GitHubError("GitHub answered the installation token request without a token")
        try:
            expires = parse_time(str(answer.get("expires_at")))
        except ValueError:
            expires = now + 3600
        return str(answer["token"]), expires

    # -- the hook's deliveries -----------------------------------------------------------------

    def deliveries(self, since: float, per_page: int = 100) -> Iterator[dict[str, Any]]:
        """The hook's deliveries delivered at or after ``since``, newest first."""
        url: str | None = f"{self.hook}/deliveries?per_page={per_page}"
        while url:
            page, headers = self.request("GET", url)
            if not isinstance(page, list):
                raise GitHubError(f"GitHub GET {self.hook}/deliveries: the answer is not a list")
            for item in page:
                if not isinstance(item, dict):
                    continue
                try:
                    when = parse_time(str(item.get("delivered_at")))
                except ValueError:
                    continue
                if when < since:
                    return  # newest first: everything after this is older
                yield item
            url = _next_link(headers.get("link"))

    def delivery(self, delivery_id: int) -> dict[str, Any]:
        answer, _headers = self.request("GET", f"{self.hook}/deliveries/{int(delivery_id)}")
        if not isinstance(answer, dict):
            raise GitHubError(f"GitHub GET {self.hook}/deliveries/{delivery_id}: not an object")
        return answer

    def redeliver(self, delivery_id: int) -> None:
        self.request("POST", f"{self.hook}/deliveries/{int(delivery_id)}/attempts")
