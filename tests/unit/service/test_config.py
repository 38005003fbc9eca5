# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Config loading and validation: defaults, key-path errors, secret files, no secret leaks."""

from __future__ import annotations

import os

import pytest
import yaml

from rum_pool_webhook.config import Config, ConfigError, load_config

SECRET = "super-secret-webhook-value"
TOKEN = "awx-token-value-1234"


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture()
def cfgdir(tmp_path):
    write(tmp_path / "secret", SECRET + "\n")
    write(tmp_path / "token", TOKEN + "\n")
    (tmp_path / "inventory").write_text("localhost\n")
    return tmp_path


def load(cfgdir, data, environ=None):
    path = cfgdir / "webhook.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(str(path), environ=environ if environ is not None else {})


def base(**over):
    data = {
        "secret_file": "secret",
        "pools": ["ci"],
        "dispatcher": {"kind": "ansible-runner", "inventory": "inventory"},
    }
    data.update(over)
    return data


def error_of(cfgdir, data, environ=None):
    with pytest.raises(ConfigError) as info:
        load(cfgdir, data, environ)
    return str(info.value)


def test_minimal_config_gets_the_documented_defaults(cfgdir):
    config = load(cfgdir, base())
    assert config.listen_host == "127.0.0.1" and config.listen_port == 8080
    assert config.secret == SECRET.encode()
    assert config.state_dir == "/var/lib/rum-pool-webhook"
    assert config.pools == ["ci"]
    assert (config.max_parallel, config.retry_attempts, config.retry_backoff) == (2, 3, 30.0)
    assert config.keep_runs == 50
    assert config.dispatcher == {
        "kind": "ansible-runner", "playbook": "recreate.yml", "project_dir": None,
        "inventory": str(cfgdir / "inventory"), "extravars": {}, "envvars": {},
        "timeout": 1800.0, "standby": False,
    }
    assert config.secret_source == "secret_file %s" % (cfgdir / "secret")


def test_full_ansible_runner_config(cfgdir):
    config = load(cfgdir, base(
        listen={"host": "0.0.0.0", "port": 9000}, state_dir="state", pools=["ci", "gpu"],
        max_parallel=4, retry={"attempts": 5, "backoff_seconds": 2.5}, keep_runs=7,
        dispatcher={"kind": "ansible-runner", "playbook": "/opt/pb/recreate.yml",
                    "project_dir": "proj", "inventory": "/etc/rum-pool/inventory",
                    "extravars": {"a": [1, 2]}, "envvars": {"X": 1}, "timeout": 60},
    ))
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 9000)
    assert config.state_dir == str(cfgdir / "state")  # relative to the config file
    assert config.pools == ["ci", "gpu"]
    assert (config.max_parallel, config.retry_attempts, config.retry_backoff) == (4, 5, 2.5)
    assert config.keep_runs == 7
    assert config.dispatcher["playbook"] == "/opt/pb/recreate.yml"
    assert config.dispatcher["project_dir"] == str(cfgdir / "proj")
    assert config.dispatcher["inventory"] == "/etc/rum-pool/inventory"
    assert config.dispatcher["extravars"] == {"a": [1, 2]}
    assert config.dispatcher["envvars"] == {"X": "1"}
    assert config.dispatcher["timeout"] == 60.0


def test_awx_config_reads_the_token_file(cfgdir):
    config = load(cfgdir, base(dispatcher={
        "kind": "awx", "url": "https://awx.example.com/", "token_file": "token",
        "job_template": "recreate slot"}))
    assert config.dispatcher["token"] == TOKEN
    assert config.dispatcher["url"] == "https://awx.example.com"
    assert config.dispatcher["job_template"] == "recreate slot"
    assert config.dispatcher["validate_certs"] is True
    assert config.dispatcher["poll_seconds"] == 5.0
    assert config.dispatcher["timeout"] == 1800.0


def test_secrets_can_come_from_the_environment(cfgdir):
    data = base(dispatcher={"kind": "awx", "url": "http://awx:8052", "job_template": 42})
    del data["secret_file"]
    config = load(cfgdir, data, environ={"RUM_POOL_WEBHOOK_SECRET": " envsecret\n",
                                         "RUM_POOL_AWX_TOKEN": "envtoken"})
    assert config.secret == b"envsecret"
    assert config.dispatcher["token"] == "envtoken"
    assert config.dispatcher["job_template"] == 42
    assert config.secret_source == "environment RUM_POOL_WEBHOOK_SECRET"


def test_secret_and_token_never_show_in_repr_or_str(cfgdir):
    config = load(cfgdir, base(dispatcher={
        "kind": "awx", "url": "https://awx.example.com", "token_file": "token",
        "job_template": 1}))
    for text in (repr(config), str(config), repr(config.dispatcher), str(config.dispatcher)):
        assert SECRET not in text
        assert TOKEN not in text
    assert "<hidden>" in repr(config.dispatcher)
    assert "awx.example.com" in repr(config)  # the rest is still shown


def test_secret_file_readable_by_others_is_refused(cfgdir):
    os.chmod(cfgdir / "secret", 0o644)
    msg = error_of(cfgdir, base())
    assert msg == ("secret_file %s: mode 0644 is readable by group/others; chmod 600 it"
                   % (cfgdir / "secret"))
    assert SECRET not in msg


def test_token_file_group_writable_is_refused(cfgdir):
    os.chmod(cfgdir / "token", 0o620)
    msg = error_of(cfgdir, base(dispatcher={
        "kind": "awx", "url": "https://awx", "token_file": "token", "job_template": 1}))
    assert msg.startswith("dispatcher.token_file %s: mode 0620 is" % (cfgdir / "token"))
    assert "chmod 600" in msg


@pytest.mark.parametrize("data, expected", [
    (base(dispatcher={"kind": "x", "inventory": "i"}),
     "dispatcher.kind: must be 'ansible-runner' or 'awx', got 'x'"),
    (base(dispatcher={"inventory": "i"}), "dispatcher.kind: required; 'ansible-runner' or 'awx'"),
    (base(dispatcher=None), "dispatcher: required; a mapping with kind 'ansible-runner' or 'awx'"),
    (base(dispatcher=[1]), "dispatcher: must be a mapping, got a list"),
    (base(dispatcher={"kind": "ansible-runner"}),
     "dispatcher.inventory: required for kind 'ansible-runner'"),
    (base(dispatcher={"kind": "ansible-runner", "inventory": "i", "url": "x"}),
     "dispatcher.url: unknown key; allowed here: kind, playbook, project_dir, inventory, "
     "extravars, envvars, timeout, standby"),
    (base(dispatcher={"kind": "awx", "url": "ftp://x", "token_file": "token", "job_template": 1}),
     "dispatcher.url: must be an http:// or https:// URL, got 'ftp://x'"),
    (base(dispatcher={"kind": "awx", "url": "https://x", "token_file": "token"}),
     "dispatcher.job_template: required for kind 'awx' (an id or a name)"),
    (base(dispatcher={"kind": "awx", "url": "https://x", "job_template": 1}),
     "dispatcher.token_file: required for kind 'awx' (or set RUM_POOL_AWX_TOKEN)"),
    (base(dispatcher={"kind": "awx", "url": "https://x", "token_file": "token", "job_template": 1,
                      "validate_certs": "no"}),
     "dispatcher.validate_certs: must be true or false, got a string"),
    (base(dispatcher={"kind": "ansible-runner", "inventory": "i", "envvars": {"A": [1]}}),
     "dispatcher.envvars.A: must be a string or number, got a list"),
    (base(dispatcher={"kind": "ansible-runner", "inventory": "i", "timeout": 0}),
     "dispatcher.timeout: must be > 0, got 0"),
    (base(pools=[]), "pools: must be a non-empty list of pool names, got an empty list"),
    (base(pools="ci"), "pools: must be a non-empty list of pool names, got a string"),
    (base(pools=["ci", "Bad_Pool"]),
     "pools[1]: 'Bad_Pool' is not a pool name (1 to 20 lower-case letters, digits and '-', "
     "starting with a letter or a digit)"),
    (base(pools=["p" * 21]),  # the collection caps pool names at 20 characters too (the slot contract)
     "pools[0]: '%s' is not a pool name (1 to 20 lower-case letters, digits and '-', "
     "starting with a letter or a digit)" % ("p" * 21)),
    (base(pools=["ci", "ci"]), "pools[1]: 'ci' is listed twice"),
    ({k: v for k, v in base().items() if k != "pools"},
     "pools: required; a non-empty list of pool names"),
    (base(listen={"port": 70000}), "listen.port: must be between 0 and 65535, got 70000"),
    (base(listen={"port": "80"}), "listen.port: must be an integer, got a string"),
    (base(listen={"host": ""}), "listen.host: must be a non-empty string, got a string"),
    (base(max_parallel=0), "max_parallel: must be >= 1, got 0"),
    (base(max_parallel=True), "max_parallel: must be an integer, got a boolean"),
    (base(retry={"attempts": 0}), "retry.attempts: must be >= 1, got 0"),
    (base(retry={"backoff_seconds": -1}), "retry.backoff_seconds: must be >= 0, got -1"),
    (base(retry={"tries": 2}), "retry.tries: unknown key; allowed here: attempts, backoff_seconds"),
    (base(keep_runs=0), "keep_runs: must be >= 1, got 0"),
    (base(secret="inline"), "secret: unknown key; allowed here: listen, secret_file, state_dir, "
                            "pools, max_parallel, retry, keep_runs, dispatcher, reconcile, github, stage"),
    ({k: v for k, v in base().items() if k != "secret_file"},
     "secret_file: required (or set RUM_POOL_WEBHOOK_SECRET)"),
])
def test_errors_name_the_key_path(cfgdir, data, expected):
    assert error_of(cfgdir, data) == expected


def test_missing_secret_file(cfgdir):
    msg = error_of(cfgdir, base(secret_file="/nonexistent/secret"))
    assert msg == "secret_file /nonexistent/secret: cannot read: No such file or directory"


def test_empty_secret_file(cfgdir):
    write(cfgdir / "secret", "\n")
    assert error_of(cfgdir, base()) == "secret_file %s: is empty" % (cfgdir / "secret")


def test_unreadable_yaml_names_the_line_without_quoting_it(tmp_path):
    path = tmp_path / "webhook.yml"
    path.write_text("pools: [ci\nsecret_file: hunter2-pasted-here: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert str(info.value).startswith("config %s: not valid YAML at line " % path)
    assert "hunter2" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^config .*/nope.yml: cannot read: No such file"):
        load_config(str(tmp_path / "nope.yml"), environ={})


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty; pools and dispatcher are required"),
    ("- a\n- b\n", "the top level must be a mapping, got a list"),
])
def test_top_level_shape(tmp_path, text, expected):
    path = tmp_path / "webhook.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert str(info.value) == expected


def test_config_defaults_are_usable_in_tests():
    config = Config(secret=b"x", pools=["ci"])
    assert config.listen_port == 8080 and config.dispatcher == {}
    assert "secret" not in repr(config).replace("secret_source", "")


def test_the_new_sections_have_defaults(cfgdir):
    config = load(cfgdir, base())
    assert (config.listen_backlog, config.idle_timeout, config.body_timeout) == (1024, 30.0, 30.0)
    assert (config.max_body_bytes, config.max_inflight_bytes) == (25 * 1024 * 1024, 64 * 1024 * 1024)
    assert config.reconcile == {"interval_minutes": 15.0, "at_start": True, "playbook": "pool.yml",
                                "job_template": None, "enabled": True}
    assert config.github is None


def test_reconcile_and_github_sections(cfgdir):
    token = cfgdir / "gh-token"
    token.write_text("ghp_cfgtoken\n")
    token.chmod(0o600)
    config = load(cfgdir, base(
        listen={"backlog": 4096, "body_timeout": 5, "max_body_bytes": 1048576,
                "max_inflight_bytes": 4194304},
        reconcile={"interval_minutes": 0, "at_start": False},
        github={"organization": "acme", "hook_id": 12, "token_file": "gh-token",
                "interval_minutes": 2}))
    assert config.listen_backlog == 4096 and config.max_inflight_bytes == 4194304
    assert config.reconcile["enabled"] is False
    assert config.github["organization"] == "acme" and config.github["token"] == "ghp_cfgtoken"
    assert "ghp_cfgtoken" not in repr(config) and "ghp_cfgtoken" not in str(config.github)
    env = {"RUM_POOL_GITHUB_TOKEN": "ghp_env"}
    assert load(cfgdir, base(github={"repository": "acme/app", "hook_id": 3}),
                env).github["token"] == "ghp_env"


@pytest.mark.parametrize("data, expected", [
    (base(listen={"backlog": 0}), "listen.backlog: must be between 1 and 65535, got 0"),
    (base(listen={"max_body_bytes": 4096, "max_inflight_bytes": 2048}),
     "listen.max_inflight_bytes: must be at least listen.max_body_bytes (4096)"),
    (base(reconcile={"every": 3}), "reconcile.every: unknown key; allowed here: interval_minutes, "
                                   "at_start, playbook, job_template"),
    (base(reconcile={"interval_minutes": -1}), "reconcile.interval_minutes: must be >= 0, got -1"),
    (base(github={"hook_id": 1}), "github: set exactly one of repository (owner/name) or "
                                  "organization, where the webhook is"),
    (base(github={"repository": "acme", "hook_id": 1}), "github.repository: must be 'owner/name', got 'acme'"),
    (base(github={"repository": "acme/app"}), "github.hook_id: required; the webhook's id"),
    (base(github={"repository": "acme/app", "hook_id": 1}),
     "github.token_file: required for github (or set app_id) (or set RUM_POOL_GITHUB_TOKEN)"),
    (base(github={"repository": "acme/app", "hook_id": 1, "app_id": 5}),
     "github.app_private_key_path: required with app_id"),
])
def test_new_section_errors_name_the_key(cfgdir, data, expected):
    assert error_of(cfgdir, data).startswith(expected)
