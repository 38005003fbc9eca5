# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the token cache's secret files are made: a hidden temporary file beside the target (so the
rename is atomic and nothing else lands anywhere), and nothing but the file in a bare-name write;
the installation remembered under a key of server, App and account (case folded)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from test_github_app import Clock, fake, keypair, model_transport  # noqa: F401  pylint: disable=unused-import

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_app as app


def test_a_bare_file_name_is_written_in_the_working_directory_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app._write_secret_json("here.json", {"v": 1})  # pylint: disable=protected-access
    assert sorted(os.listdir(tmp_path)) == ["here.json"]
    assert json.loads((tmp_path / "here.json").read_text(encoding="utf-8")) == {"v": 1}


def test_the_temporary_file_is_hidden_beside_the_target(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def replace(source, target):
        renamed.append((source, target))
        assert os.stat(source).st_mode & 0o777 == 0o600
        real_replace(source, target)

    monkeypatch.setattr(app.os, "replace", replace)
    target = tmp_path / "cache" / "gh-app-k.json"
    app._write_secret_json(str(target), {"token": "t", "expires_at": 5.0})  # pylint: disable=protected-access
    [(source, where)] = renamed
    assert where == str(target)
    assert os.path.dirname(source) == str(tmp_path / "cache")
    assert os.path.basename(source).startswith(".tmp-")
    assert sorted(os.listdir(tmp_path / "cache")) == ["gh-app-k.json"]


def test_the_remembered_installation_is_keyed_by_server_app_and_account(fake, keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    model, clock = fake
    cache = app.InstallationTokenCache(str(tmp_path))
    auth = app.AppAuth(4711, keypair[0], scope=gh.Scope("organization", "ACME"), clock=clock, cache=cache)
    client = gh.GitHubClient("https://api.github.tesX/", auth=auth, transport=model_transport(model),
                             clock=clock, sleep=clock.sleep)
    assert auth.authorization(client).startswith("Bearer ghs_")
    raw = "https://api.github.tesX|4711|organization|acme".encode()
    remembered = f"gh-app-inst-{hashlib.sha256(raw).hexdigest()[:32]}.json"
    token = f"gh-app-{app.InstallationTokenCache.key('https://api.github.tesX', '4711', 77)}.json"
    assert sorted(os.listdir(tmp_path)) == sorted([remembered, token])
    assert json.loads((tmp_path / remembered).read_text(encoding="utf-8")) == {"value": 77}


def test_without_a_scope_no_remembered_installation_is_read(keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    (tmp_path / "gh-app-None.json").write_text('{"value": 77}', encoding="utf-8")
    auth = app.AppAuth(4711, keypair[0], cache=app.InstallationTokenCache(str(tmp_path)), clock=Clock())
    client = gh.GitHubClient("https://api.github.test", auth=auth, transport=None)
    with pytest.raises(app.GitHubAppError) as info:
        auth.authorization(client)
    assert str(info.value) == "an App installation id or a scope to look it up is needed"


class Scripted:
    """GitHub as a table of (method, path) -> (status, JSON); anything else is a 404. Counts calls."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, method, url, headers, body, timeout):
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        self.calls.append((method, path))
        status, data = self.answers.get((method, path), (404, {"message": "Not Found"}))
        return gh.Response(status, {"content-type": "application/json"}, json.dumps(data).encode())


ACME = gh.Scope("organization", "acme")
TOKENS = "/app/installations/77/access_tokens"


def scripted_auth(keypair, tmp_path, answers, **kwargs):  # noqa: F811  pylint: disable=redefined-outer-name
    transport = Scripted(answers)
    kwargs.setdefault("scope", ACME)
    auth = app.AppAuth(4711, keypair[0], cache=app.InstallationTokenCache(str(tmp_path)), clock=Clock(), **kwargs)
    client = gh.GitHubClient("https://api.github.test", auth=auth, transport=transport,
                             policy=gh.RetryPolicy(max_retries=0, max_wait=0))
    return auth, client, transport


def remembered(tmp_path, account, value):
    raw = f"https://api.github.test|4711|organization|{account}".encode()
    path = tmp_path / f"gh-app-inst-{hashlib.sha256(raw).hexdigest()[:32]}.json"
    path.write_text(json.dumps({"value": value}), encoding="utf-8")
    return path


def test_an_enterprise_scope_is_refused_even_with_an_installation_id(keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    auth, client, transport = scripted_auth(keypair, tmp_path, {}, installation_id=77,
                                            scope=gh.Scope("enterprise", "big"))
    with pytest.raises(app.GitHubAppError) as info:
        auth.authorization(client)
    assert str(info.value) == ("enterprise 'big': GitHub App tokens cannot manage enterprise runners; use a classic "
                               "personal access token with manage_runners:enterprise")
    assert transport.calls == []


def test_a_token_exchange_refused_right_after_a_lookup_is_not_looked_up_again(keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    auth, client, transport = scripted_auth(keypair, tmp_path, {("GET", "/orgs/acme/installation"): (200, {"id": 77})})
    with pytest.raises(gh.GitHubNotFound):
        auth.authorization(client)
    assert transport.calls == [("GET", "/orgs/acme/installation"), ("POST", TOKENS)]


def test_a_remembered_installation_that_is_gone_is_forgotten_even_when_the_lookup_fails(keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    stale = remembered(tmp_path, "acme", 99)
    auth, client, transport = scripted_auth(keypair, tmp_path, {})
    with pytest.raises(gh.GitHubNotFound):
        auth.authorization(client)
    assert transport.calls == [("POST", "/app/installations/99/access_tokens"), ("GET", "/orgs/acme/installation")]
    assert not stale.exists() and os.listdir(tmp_path) == []


def test_after_a_reinstall_the_new_token_is_kept_under_the_new_installation(keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    stale = remembered(tmp_path, "acme", 99)
    answers = {("GET", "/orgs/acme/installation"): (200, {"id": 77}),
               ("POST", TOKENS): (201, {"token": "ghs_new", "expires_at": "2023-11-14T22:23:20Z"})}
    auth, client, _transport = scripted_auth(keypair, tmp_path, answers)
    assert auth.authorization(client) == "Bearer ghs_new"
    token_file = f"gh-app-{app.InstallationTokenCache.key('https://api.github.test', '4711', 77)}.json"
    assert sorted(os.listdir(tmp_path)) == sorted([stale.name, token_file])
    assert json.loads(stale.read_text(encoding="utf-8")) == {"value": 77}
    assert json.loads((tmp_path / token_file).read_text(encoding="utf-8")) == {
        "token": "ghs_new", "expires_at": 1_700_000_600.0}
    assert auth.invalidate() is True
    assert sorted(os.listdir(tmp_path)) == [stale.name]


def test_the_token_expiry_is_githubs_not_an_hour_from_now(keypair, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
    answers = {("POST", TOKENS): (201, {"token": "ghs_t", "expires_at": "2023-11-14T22:23:20Z"})}
    auth, client, _transport = scripted_auth(keypair, tmp_path, answers, installation_id=77)
    assert auth.installation_token(client) == "ghs_t"
    key = app.InstallationTokenCache.key("https://api.github.test", "4711", 77)
    assert auth.cache.get(key, 1_700_000_600.0 - 301) == "ghs_t"
    assert auth.cache.get(key, 1_700_000_600.0 - 300) is None


def test_base64url_keeps_a_final_x():
    assert app._b64url(b"\x00\x00\x17") == "AAAX"  # pylint: disable=protected-access
    assert app._b64url(b"\x00\x00\x17\x00") == "AAAXAA"  # pylint: disable=protected-access


def test_token_cache_keys_keep_a_final_x_of_the_server_address():
    raw = b"https://ghe.example.com/api/X|4711|77"
    assert app.InstallationTokenCache.key("https://ghe.example.com/api/X/", "4711", 77) == \
        hashlib.sha256(raw).hexdigest()[:32]


def test_a_time_without_a_zone_is_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        assert app.parse_github_time("2023-11-14T22:13:20") == 1_700_000_000.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_without_cryptography_a_key_cannot_be_loaded(monkeypatch):
    monkeypatch.setattr(app, "HAS_CRYPTOGRAPHY", False)
    with pytest.raises(app.GitHubAppError) as info:
        app.load_private_key("-----BEGIN PRIVATE KEY-----\n")
    assert str(info.value) == "the cryptography library is needed to sign GitHub App tokens"
