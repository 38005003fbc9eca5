"""GitHub App auth: JWT claims and signature, installation lookup, token exchange and cache."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_app as app

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools"))
from fake_github import FakeGitHubModel  # noqa: E402  pylint: disable=wrong-import-position
from fake_github import rs256  # noqa: E402  pylint: disable=wrong-import-position

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def other_keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def model_transport(model):
    def transport(method, url, headers, body, timeout):
        path = url.split("://", 1)[1]
        path = path[path.index("/"):]
        reply = model.handle(method, path, headers, body or b"")
        return gh.Response(reply.status, reply.headers, reply.body)
    return transport


@pytest.fixture
def fake(keypair):
    clock = Clock()
    model = FakeGitHubModel(clock=clock)
    model.public_url = "https://api.github.test"
    model.handle("POST", "/_fake/setup", {}, json.dumps({
        "apps": [{"app_id": 4711, "client_id": "Iv23liTest", "public_key_pem": keypair[1]}],
        "installations": [{"id": 77, "app_id": 4711, "account": "acme"},
                          {"id": 78, "app_id": 4711, "account": "solo", "target_type": "User",
                           "repositories": ["tool"]}],
    }).encode())
    return model, clock


def make_client(model, clock, auth):
    return gh.GitHubClient("https://api.github.test", auth=auth, transport=model_transport(model),
                           clock=clock, sleep=clock.sleep)


# ---------------------------------------------------------------- the JWT
def test_claims_backdate_iat_and_expire_within_ten_minutes():
    claims = app.jwt_claims("4711", NOW)
    assert claims == {"iat": int(NOW) - 60, "exp": int(NOW) + 540, "iss": 4711}
    assert claims["exp"] - claims["iat"] <= 600
    assert app.jwt_claims("Iv23liTest", NOW)["iss"] == "Iv23liTest"


def test_jwt_is_rs256_and_verifies_with_the_public_key(keypair):
    token = app.build_app_jwt("Iv23liTest", keypair[0], NOW)
    header, claims = rs256.decode_unverified(token)
    assert header == {"alg": "RS256", "typ": "JWT"}
    assert rs256.verify_jwt(token, rs256.load_public_key(keypair[1]))["iss"] == "Iv23liTest"


def test_jwt_signed_by_another_key_does_not_verify(keypair, other_keypair):
    token = app.build_app_jwt(4711, other_keypair, NOW)
    with pytest.raises(rs256.JWTError, match="signature"):
        rs256.verify_jwt(token, rs256.load_public_key(keypair[1]))


def test_bad_private_key_error_does_not_quote_the_key():
    secret_text = "-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END PRIVATE KEY-----"
    with pytest.raises(app.GitHubAppError) as info:
        app.load_private_key(secret_text)
    assert "TOPSECRET" not in str(info.value)


def test_github_times_parse():
    assert app.parse_github_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert app.parse_github_time("2023-11-14T14:13:20.123-08:00") == pytest.approx(1_700_000_000.123)


# ---------------------------------------------------------------- installation tokens
def test_installation_is_looked_up_and_token_reused(fake, keypair):
    model, clock = fake
    auth = app.AppAuth("Iv23liTest", keypair[0], scope=gh.Scope("organization", "acme"), clock=clock)
    c = make_client(model, clock, auth)
    c.request("GET", "/orgs/acme/actions/runners")
    c.request("GET", "/orgs/acme/actions/runners")
    calls = [(x["method"], x["path"], x["auth"]) for x in model.state["calls"]]
    assert calls == [
        ("GET", "/orgs/acme/installation", "app"),
        ("POST", "/app/installations/77/access_tokens", "app"),
        ("GET", "/orgs/acme/actions/runners", "installation"),
        ("GET", "/orgs/acme/actions/runners", "installation"),
    ]
    assert auth.installation_id == 77 and auth.token_source == "new"


def test_repository_installation_lookup_for_a_user_account(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], scope=gh.Scope("repository", "solo/tool"), clock=clock)
    make_client(model, clock, auth).request("GET", "/repos/solo/tool/actions/runners")
    assert auth.installation_id == 78


def test_token_is_renewed_close_to_expiry(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], installation_id=77, clock=clock)
    c = make_client(model, clock, auth)
    c.request("GET", "/orgs/acme/actions/runners")
    clock.now += 3600 - app.TOKEN_REFRESH_MARGIN - 1  # still 301 s left: reused
    c.request("GET", "/orgs/acme/actions/runners")
    clock.now += 2  # 299 s left: a new token
    c.request("GET", "/orgs/acme/actions/runners")
    exchanges = [x for x in model.state["calls"] if x["path"].endswith("/access_tokens")]
    assert len(exchanges) == 2


def test_revoked_token_is_replaced_once_on_401(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], installation_id=77, clock=clock)
    c = make_client(model, clock, auth)
    c.request("GET", "/orgs/acme/actions/runners")
    model.state["installation_tokens"].clear()  # GitHub forgot/revoked it
    c.request("GET", "/orgs/acme/actions/runners")
    statuses = [x["status"] for x in model.state["calls"]]
    assert statuses == [201, 200, 401, 201, 200]


def test_file_cache_is_0600_and_shared_between_runs(fake, keypair, tmp_path):
    model, clock = fake
    cache_dir = str(tmp_path / "cache")
    for _unused in range(2):  # two module runs: the second finds the token on disk
        auth = app.AppAuth(4711, keypair[0], installation_id=77, clock=clock,
                           cache=app.InstallationTokenCache(cache_dir))
        make_client(model, clock, auth).request("GET", "/orgs/acme/actions/runners")
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].startswith("gh-app-")
    assert stat.S_IMODE(os.stat(os.path.join(cache_dir, files[0])).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert auth.token_source == "cache"
    assert len([x for x in model.state["calls"] if x["path"].endswith("/access_tokens")]) == 1


def test_cache_ignores_expired_and_corrupt_entries(tmp_path):
    cache = app.InstallationTokenCache(str(tmp_path))
    key = cache.key("https://api.github.test", "1", 2)
    cache.put(key, "ghs_x", NOW + 100)  # inside the margin already
    assert app.InstallationTokenCache(str(tmp_path)).get(key, NOW) is None
    (tmp_path / f"gh-app-{key}.json").write_text("{not json")
    assert app.InstallationTokenCache(str(tmp_path)).get(key, NOW) is None


def test_expired_jwt_is_rejected_by_the_fake(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], installation_id=77, clock=Clock(NOW - 3600))  # our clock is late
    with pytest.raises(gh.GitHubAuthError, match="HTTP 401 'Expiration time'"):
        make_client(model, clock, auth).request("GET", "/orgs/acme/actions/runners")


def test_wrong_key_is_rejected_by_the_fake(fake, other_keypair):
    model, clock = fake
    auth = app.AppAuth(4711, other_keypair, installation_id=77, clock=clock)
    with pytest.raises(gh.GitHubAuthError, match="JSON web token could not be decoded"):
        make_client(model, clock, auth).request("GET", "/orgs/acme/actions/runners")


def test_app_not_installed_on_the_org_names_it(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], scope=gh.Scope("organization", "other"), clock=clock)
    with pytest.raises(gh.GitHubNotFound, match="organization 'other': HTTP 404"):
        make_client(model, clock, auth).request("GET", "/orgs/other/actions/runners")


def test_enterprise_scope_is_refused_before_any_call(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], scope=gh.Scope("enterprise", "ent"), clock=clock)
    with pytest.raises(app.GitHubAppError, match="classic personal access token"):
        make_client(model, clock, auth).request("GET", "/enterprises/ent/actions/runners")
    assert model.state["calls"] == []


def test_installation_token_cannot_reach_another_org(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], installation_id=77, clock=clock)
    with pytest.raises(gh.GitHubAuthError, match="not accessible by integration"):
        make_client(model, clock, auth).request("GET", "/orgs/elsewhere/actions/runners",
                                                scope=gh.Scope("organization", "elsewhere"))


def test_file_cache_remembers_the_installation_found_by_lookup(fake, keypair, tmp_path):
    model, clock = fake
    scope = gh.Scope("organization", "acme")
    for _run in range(2):
        auth = app.AppAuth(4711, keypair[0], scope=scope, clock=clock,
                           cache=app.InstallationTokenCache(str(tmp_path)))
        make_client(model, clock, auth).request("GET", "/orgs/acme/actions/runners")
    lookups = [c for c in model.state["calls"] if c["path"] == "/orgs/acme/installation"]
    assert len(lookups) == 1 and auth.installation_id == 77


def test_a_reinstalled_app_is_looked_up_again(fake, keypair, tmp_path):
    model, clock = fake
    scope = gh.Scope("organization", "acme")
    first = app.AppAuth(4711, keypair[0], scope=scope, clock=clock, cache=app.InstallationTokenCache(str(tmp_path)))
    make_client(model, clock, first).request("GET", "/orgs/acme/actions/runners")
    # The App is uninstalled and installed again: a new installation id, the old token is gone.
    del model.state["installations"]["77"]
    model.state["installation_tokens"].clear()
    model.handle("POST", "/_fake/installations", {}, json.dumps({"id": 90, "app_id": 4711, "account": "acme"}).encode())
    clock.now += 3600  # the cached token expired too
    second = app.AppAuth(4711, keypair[0], scope=scope, clock=clock, cache=app.InstallationTokenCache(str(tmp_path)))
    make_client(model, clock, second).request("GET", "/orgs/acme/actions/runners")
    assert second.installation_id == 90
    statuses = [(c["path"], c["status"]) for c in model.state["calls"]][3:]
    assert statuses == [("/app/installations/77/access_tokens", 404), ("/orgs/acme/installation", 200),
                        ("/app/installations/90/access_tokens", 201), ("/orgs/acme/actions/runners", 200)]
