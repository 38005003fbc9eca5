# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every gh_runner* module shares, the client they build and a module's whole run
(run_module, against the fake GitHub over HTTP)."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_options as opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position


def test_scope_from_names_what_is_wrong():
    assert opts.scope_from({"organization": "acme"}) == gh.Scope("organization", "acme")
    with pytest.raises(opts.OptionError, match="exactly one of repository, organization or enterprise"):
        opts.scope_from({"organization": "acme", "repository": "a/b"})
    with pytest.raises(opts.OptionError, match="owner/repo"):
        opts.scope_from({"repository": "justowner"})


def test_a_token_is_a_bearer_token():
    auth = opts.auth_from({"token": "ghp_x"}, gh.Scope("organization", "acme"), lambda: 0.0)
    assert isinstance(auth, gh.TokenAuth) and auth.kind == "personal access token"


def test_neither_token_nor_app_is_refused():
    with pytest.raises(opts.OptionError, match="either token or app_id"):
        opts.auth_from({}, gh.Scope("organization", "acme"), lambda: 0.0)


def test_an_app_cannot_manage_enterprise_runners():
    with pytest.raises(opts.GitHubAppError, match="GitHub App tokens cannot manage enterprise runners"):
        opts.auth_from({"app_id": "1", "app_private_key": "k"}, gh.Scope("enterprise", "big"), lambda: 0.0)


def test_the_app_key_comes_from_the_option_or_its_file(tmp_path):
    assert opts._read_key({"app_private_key": "PEM"}) == "PEM"  # pylint: disable=protected-access
    key = tmp_path / "app.pem"
    key.write_text("FROM FILE")
    assert opts._read_key({"app_private_key_path": str(key)}) == "FROM FILE"  # pylint: disable=protected-access
    with pytest.raises(opts.OptionError, match="app_id needs app_private_key or app_private_key_path"):
        opts._read_key({})  # pylint: disable=protected-access
    with pytest.raises(opts.OptionError, match=f"cannot read the GitHub App private key file {tmp_path}/nope.pem: "
                                               "No such file or directory"):
        opts._read_key({"app_private_key_path": str(tmp_path / "nope.pem")})  # pylint: disable=protected-access


@pytest.mark.parametrize("option", ["max_wait", "max_retries"])
def test_negative_bounds_are_refused(option):
    with pytest.raises(opts.OptionError, match="must not be negative"):
        opts.connect({"organization": "acme", "token": "t", option: -1})


def test_connect_builds_the_client_from_the_options():
    def transport(method, url, headers, body, timeout):
        raise AssertionError("not called")

    api = opts.connect({"organization": "acme", "token": "t", "api_url": "https://ghes.example/api/v3",
                        "max_wait": 12, "max_retries": 3, "timeout": 7}, transport=transport)
    assert api.scope == gh.Scope("organization", "acme")
    assert api.client.api_url == "https://ghes.example/api/v3"
    assert (api.client.policy.max_wait, api.client.policy.max_retries, api.client.timeout) == (12.0, 3, 7.0)
    assert api.client.transport is transport
    plain = opts.connect({"organization": "acme", "token": "t", "validate_certs": False, "ca_path": "/ca.pem"})
    assert isinstance(plain.client.transport, gh.OpenUrlTransport)
    assert (plain.client.transport.validate_certs, plain.client.transport.ca_path) == (False, "/ca.pem")
    assert plain.client.api_url == gh.DEFAULT_API_URL and plain.client.timeout == 30.0
    summary = opts.api_summary(plain)
    assert summary == {"requests": 0, "retries": 0, "waited_seconds": 0.0, "rate_limit": {},
                       "auth": "personal access token"}


# ---------------------------------------------------------------- a module's whole run
@pytest.fixture
def fake():
    server = FakeGitHub()
    server.start()
    server.admin("POST", "/pats", {"token": "ghp_mod"})
    yield server
    server.stop()


def run(monkeypatch, args, task, **kwargs):
    """run_module as Ansible runs a module: arguments in, one JSON document out."""
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(SystemExit) as info:
        opts.run_module("gh_test", {"name": {"type": "str"}}, task, **kwargs)
    return info.value.code, json.loads(out.getvalue())


def test_run_module_returns_the_task_result_and_the_api_summary(fake, monkeypatch, capsys):
    def task(api, params, check_mode):
        return {"changed": False, "runners": [r.name for r in api.list_runners()], "check": check_mode,
                "diff": {"before": "", "after": ""}, "recovery": "a lost answer was recovered"}

    code, result = run(monkeypatch, {"organization": "acme", "token": "ghp_mod", "api_url": fake.url}, task)
    assert code == 0
    assert result["runners"] == [] and result["check"] is False
    assert result["api"]["requests"] == 1 and result["api"]["auth"] == "personal access token"
    assert "diff" not in result  # not asked for
    # the recovery is a warning: in the result, or shown at once where Ansible's display is set up
    # (an earlier test in the same process may have done that)
    shown = json.dumps(result.get("warnings", [])) + capsys.readouterr().err
    assert "a lost answer was recovered" in shown


def test_run_module_fails_with_githubs_answer_and_what_was_sent(fake, monkeypatch):
    def task(api, params, check_mode):
        api.list_runners()
        raise AssertionError("not reached")

    code, result = run(monkeypatch, {"repository": "acme/app", "token": "ghp_unknown", "api_url": fake.url,
                                     "max_retries": 0}, task)
    assert code == 1 and result["failed"]
    assert result["msg"].startswith("gh_test: list self-hosted runners for repository 'acme/app': HTTP 401")
    assert result["status"] == 401 and result["api"]["requests"] == 1
    assert "ghp_unknown" not in json.dumps(result)


def test_run_module_refuses_bad_options_before_any_call(fake, monkeypatch):
    code, result = run(monkeypatch, {"organization": "acme", "token": "ghp_mod", "api_url": fake.url,
                                     "max_wait": -5}, lambda *a: {"changed": False})
    assert code == 1 and result["msg"] == "gh_test: max_wait and max_retries must not be negative"
    assert result["api"] == {}
    code, result = run(monkeypatch, {"organization": "acme", "repository": "a/b", "token": "ghp_mod"},
                       lambda *a: {"changed": False})
    assert code == 1 and "mutually exclusive" in result["msg"]
