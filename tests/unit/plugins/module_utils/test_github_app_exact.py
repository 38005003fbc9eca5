# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GitHub App auth's exact words and values: key errors, the JWT's bytes, GitHub's times, the
token cache's keys, files and margins, and what each App call sends."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from test_github_app import NOW, Clock, fake, keypair, make_client, model_transport  # noqa: F401  pylint: disable=unused-import

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_app as app

ORG = gh.Scope("organization", "acme")


def b64(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# ---------------------------------------------------------------- keys and the JWT
def test_b64url_has_no_padding_and_is_url_safe():
    assert app._b64url(b"\xfb\xff") == "-_8"  # pylint: disable=protected-access
    assert app._b64url(b"a") == "YQ" and app._b64url(b"") == ""  # pylint: disable=protected-access


def test_key_errors_never_quote_the_key():
    with pytest.raises(app.GitHubAppError) as info:
        app.load_private_key("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")
    assert str(info.value) == "the GitHub App private key is not a readable unencrypted PEM private key"
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(app.GitHubAppError) as info:
        app.load_private_key(ec_key)
    assert str(info.value) == "the GitHub App private key must be an RSA key (GitHub signs with RS256)"


def test_a_key_without_its_final_newline_or_as_bytes_loads(keypair):
    assert app.load_private_key(keypair[0].strip()).key_size == 2048
    assert app.load_private_key(("\n  " + keypair[0]).encode("utf-8")).key_size == 2048


def test_the_jwt_is_compact_json_signed_over_its_two_segments(keypair):
    token = app.build_app_jwt("4711", keypair[0], NOW)
    header, claims, signature = token.split(".")
    assert b64(header) == b'{"alg":"RS256","typ":"JWT"}'
    assert b64(claims) == b'{"iat":%d,"exp":%d,"iss":4711}' % (NOW - 60, NOW + 540)
    assert "=" not in token
    public = serialization.load_pem_public_key(keypair[1].encode())
    from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import padding  # pylint: disable=import-outside-toplevel
    public.verify(b64(signature), f"{header}.{claims}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    assert json.loads(b64(app.build_app_jwt("Iv23li", keypair[0], NOW).split(".")[1]))["iss"] == "Iv23li"


@pytest.mark.parametrize("text, stamp", [
    ("2024-05-01T12:00:00Z", 1714564800.0),
    ("2024-05-01T14:00:00+02:00", 1714564800.0),
    ("2024-05-01T12:00:00", 1714564800.0),
    ("2024-05-01T12:00:00.5Z", 1714564800.5),
    (" 2024-05-01T12:00:00.1234567+00:00 ", 1714564800.123456),
    ("2024-05-01T14:00:00.12x+02:00", 1714564800.0),  # a fraction Python cannot read is dropped
])
def test_github_times(text, stamp):
    assert app.parse_github_time(text) == pytest.approx(stamp, abs=0.001)


def test_a_lowercase_z_is_not_githubs():
    with pytest.raises(ValueError):
        app.parse_github_time("2024-05-01T12:00:00z.")


# ---------------------------------------------------------------- the token cache
def test_cache_keys_are_short_hashes_of_server_app_and_installation():
    key = app.InstallationTokenCache.key("https://api.github.com/", "4711", 77)
    assert key == app.InstallationTokenCache.key("https://api.github.com", "4711", 77)
    assert len(key) == 32 and int(key, 16) >= 0
    assert key != app.InstallationTokenCache.key("https://api.github.com", "4711", 78)
    assert key != app.InstallationTokenCache.key("https://api.github.com", "4712", 77)


def test_cache_margin_and_memory(tmp_path):
    cache = app.InstallationTokenCache()
    assert (cache.directory, cache.margin) == (None, app.TOKEN_REFRESH_MARGIN)
    cache.put("k", "tok", 1000.0)
    assert cache.get("k", 1000.0 - 300 - 0.001) == "tok"
    assert cache.get("k", 1000.0 - 300) is None  # reused until five minutes before expiry, not at it
    assert cache.get_value("k") is None
    cache.put_value("k", 1)  # no directory: nothing kept
    cache.drop("k")
    assert cache.get("k", 0.0) is None


def test_cache_files(tmp_path):
    directory = tmp_path / "cache"
    cache = app.InstallationTokenCache(str(directory), margin=10)
    cache.put("k", "tok", 1000.0)
    path = directory / "gh-app-k.json"
    assert json.loads(path.read_text()) == {"token": "tok", "expires_at": 1000.0}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert [p.name for p in directory.iterdir()] == ["gh-app-k.json"]  # no temporary file left
    assert app.InstallationTokenCache(str(directory), margin=10).get("k", 989.0) == "tok"
    cache.put_value("inst", 77)
    assert app.InstallationTokenCache(str(directory)).get_value("inst") == 77
    (directory / "gh-app-bad.json").write_text("[1, 2]")
    assert cache.get_value("bad") is None and cache.get("bad", 0.0) is None
    (directory / "gh-app-noexp.json").write_text('{"token": "t"}')
    assert cache.get("noexp", 0.0) is None
    cache.drop("k")
    assert not path.exists()
    cache.drop("k")  # already gone: no error


def test_secret_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "s.json"
    app._write_secret_json(str(target), {"a": "caf\u00e9"})  # pylint: disable=protected-access
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "caf\u00e9"}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(app.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        app._write_secret_json(str(target), {"a": 2})  # pylint: disable=protected-access
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # the temp file went
    assert json.loads(target.read_text()) == {"a": "caf\u00e9"}


def test_a_secret_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app._write_secret_json("here.json", {"v": 1})  # pylint: disable=protected-access
    assert json.loads((tmp_path / "here.json").read_text()) == {"v": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ---------------------------------------------------------------- AppAuth
def test_app_auth_needs_an_id(keypair):
    with pytest.raises(app.GitHubAppError) as info:
        app.AppAuth("  ", keypair[0])
    assert str(info.value) == "the GitHub App id (or client id) is empty"
    auth = app.AppAuth(4711, keypair[0])
    assert (auth.installation_id, auth.scope, auth.token_source) == (None, None, None)
    assert auth.invalidate() is False


def test_an_installation_lookup_needs_a_scope_that_apps_can_use(fake, keypair):
    model, clock = fake
    client = make_client(model, clock, None)
    with pytest.raises(app.GitHubAppError) as info:
        app.AppAuth(4711, keypair[0], clock=clock).find_installation(client)
    assert str(info.value) == "an App installation id or a scope to look it up is needed"
    with pytest.raises(app.GitHubAppError) as info:
        app.AppAuth(4711, keypair[0], scope=gh.Scope("enterprise", "big"), clock=clock).find_installation(client)
    assert str(info.value) == ("enterprise 'big': GitHub App tokens cannot manage enterprise runners; use a "
                               "classic personal access token with manage_runners:enterprise")
    with pytest.raises(gh.GitHubNotFound) as info:
        app.AppAuth(4711, keypair[0], scope=gh.Scope("organization", "nobody"), clock=clock).find_installation(client)
    assert str(info.value).startswith("look up the installation of GitHub App 4711 for organization 'nobody': "
                                      "HTTP 404")


def test_an_installation_answer_without_an_id(fake, keypair, monkeypatch):
    model, clock = fake
    client = make_client(model, clock, None)
    monkeypatch.setattr(client, "request", lambda *a, **k: gh.Response(200, {}, b'{"id": "77"}'))
    with pytest.raises(app.GitHubAppError) as info:
        app.AppAuth(4711, keypair[0], scope=ORG, clock=clock).find_installation(client)
    assert str(info.value) == "organization 'acme': GitHub's installation answer has no id"


class Recorder:
    def __init__(self, inner):
        self.inner = inner
        self.headers = []

    def __call__(self, method, url, headers, body, timeout):
        self.headers.append((method, url.split("api.github.test", 1)[1], headers.get("Authorization", "")))
        return self.inner(method, url, headers, body, timeout)


def test_what_each_app_call_sends(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], scope=ORG, clock=clock)
    recorder = Recorder(model_transport(model))
    client = gh.GitHubClient("https://api.github.test", auth=auth, transport=recorder, clock=clock,
                             sleep=clock.sleep)
    assert auth.authorization(client).startswith("Bearer ghs_")
    (m1, p1, a1), (m2, p2, a2) = recorder.headers
    assert (m1, p1, m2, p2) == ("GET", "/orgs/acme/installation", "POST", "/app/installations/77/access_tokens")
    assert a1.startswith("Bearer ey") and a2.startswith("Bearer ey") and a1.count(".") == 2


def test_a_failed_token_exchange_names_app_and_installation(fake, keypair):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], installation_id=99, scope=ORG, clock=clock)
    with pytest.raises(gh.GitHubNotFound) as info:
        auth.installation_token(make_client(model, clock, None))
    assert str(info.value).startswith("create an installation token for GitHub App 4711 installation 99 for "
                                      "organization 'acme': HTTP 404")


def test_a_token_answer_without_a_token_or_a_readable_expiry(fake, keypair, monkeypatch):
    model, clock = fake
    auth = app.AppAuth(4711, keypair[0], installation_id=77, scope=ORG, clock=clock)
    client = make_client(model, clock, None)
    monkeypatch.setattr(auth, "_exchange", lambda c: gh.Response(201, {}, b'{"expires_at": "x"}'))
    with pytest.raises(app.GitHubAppError) as info:
        auth.installation_token(client)
    assert str(info.value) == "GitHub answered the installation token request without a token"
    monkeypatch.setattr(auth, "_exchange", lambda c: gh.Response(201, {}, b'{"token": "ghs_x", "expires_at": "soon"}'))
    assert auth.installation_token(client) == "ghs_x" and auth.token_source == "new"
    key = app.InstallationTokenCache.key("https://api.github.test", "4711", 77)
    assert auth.cache.get(key, clock.now + 3600 - 301) == "ghs_x"
    assert auth.cache.get(key, clock.now + 3600 - 300) is None
    again = app.AppAuth(4711, keypair[0], installation_id=77, scope=ORG, clock=clock, cache=auth.cache)
    assert again.installation_token(client) == "ghs_x" and again.token_source == "cache"
    assert again.invalidate() is True and again.invalidate() is False
    assert auth.cache.get(key, clock.now) is None


def test_the_remembered_installation_is_per_server_app_and_scope(fake, keypair, tmp_path):
    model, clock = fake
    cache = app.InstallationTokenCache(str(tmp_path))
    auth = app.AppAuth(4711, keypair[0], scope=gh.Scope("organization", "ACME"), clock=clock, cache=cache)
    client = make_client(model, clock, None)
    key = auth._installation_key(client)  # pylint: disable=protected-access
    assert key.startswith("inst-") and len(key) == len("inst-") + 32
    other = app.AppAuth(4711, keypair[0], scope=gh.Scope("organization", "acme"), clock=clock, cache=cache)
    assert other._installation_key(make_client(model, clock, None)) == key  # pylint: disable=protected-access
    slash = gh.GitHubClient("https://api.github.test/", transport=model_transport(model))
    assert other._installation_key(slash) == key  # pylint: disable=protected-access
    assert app.AppAuth(4711, keypair[0], scope=gh.Scope("repository", "acme/x"), clock=clock, cache=cache
                       )._installation_key(client) != key  # pylint: disable=protected-access
    assert app.AppAuth(4711, keypair[0], clock=clock, cache=cache)._installation_key(client) is None  # pylint: disable=protected-access
    assert app.AppAuth(4711, keypair[0], scope=ORG, clock=clock)._installation_key(client) is None  # pylint: disable=protected-access
    cache.put_value(key, "77")  # not an id: ignored
    assert auth._cached_installation(client) is None  # pylint: disable=protected-access
    cache.put_value(key, 77)
    assert auth._cached_installation(client) == 77  # pylint: disable=protected-access
