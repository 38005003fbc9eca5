# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load and validate the service's YAML configuration.

Every problem is reported as a ``ConfigError`` whose message starts with the key path
(``dispatcher.kind: ...``), so an operator can fix the file without reading code. Secrets (the
webhook secret, the AWX token) are read from files that must not be readable by group or
others, or from the environment; they never appear in ``repr()``, ``str()`` or an error.

Relative paths in the file (``secret_file``, ``state_dir``, ``dispatcher.inventory``,
``dispatcher.project_dir``, ``dispatcher.token_file``) are taken relative to the directory
of the config file. ``dispatcher.playbook`` is left as written: the dispatcher resolves a
relative playbook against the collection's ``playbooks/`` directory.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from .slot import MAX_POOL_LEN, POOL_NAME_RE

SECRET_ENV = "RUM_POOL_WEBHOOK_SECRET"
AWX_TOKEN_ENV = "RUM_POOL_AWX_TOKEN"
GITHUB_TOKEN_ENV = "RUM_POOL_GITHUB_TOKEN"
DISPATCHER_KINDS = ("ansible-runner", "awx")

_TOP_KEYS = (
    "listen", "secret_file", "state_dir", "pools", "max_parallel", "retry", "keep_runs",
    "dispatcher", "reconcile", "github", "stage",
)
_LISTEN_KEYS = ("host", "port", "backlog", "idle_timeout", "body_timeout", "max_body_bytes",
                "max_inflight_bytes")
_RECONCILE_KEYS = ("interval_minutes", "at_start", "playbook", "job_template")
_GITHUB_KEYS = ("api_url", "repository", "organization", "hook_id", "token_file", "app_id",
                "app_private_key_path", "app_installation_id", "validate_certs", "ca_path",
                "timeout", "interval_minutes", "lookback_hours", "max_redeliveries")
MIB = 1024 * 1024
_RUNNER_KEYS = ("kind", "playbook", "project_dir", "inventory", "extravars", "envvars", "timeout", "standby")
_AWX_KEYS = ("kind", "url", "token_file", "job_template", "validate_certs", "poll_seconds",
             "timeout")


class ConfigError(Exception):
    """The configuration is unusable; the message names the key path and the problem."""


class DispatcherConfig(dict[str, Any]):
    """A validated section (``dispatcher``, ``github``): a plain dict whose repr hides the
    token and the private key."""

    def __repr__(self) -> str:
        shown = {k: ("<hidden>" if k in ("token", "app_private_key") else v)
                 for k, v in self.items()}
        return "DispatcherConfig(%r)" % (shown,)

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    """The service configuration after validation (defaults filled in)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    secret: bytes = field(default=b"", repr=False)
    state_dir: str = "/var/lib/rum-pool-webhook"
    pools: list[str] = field(default_factory=list)
    max_parallel: int = 2
    retry_attempts: int = 3
    retry_backoff: float = 30.0
    keep_runs: int = 50
    dispatcher: dict[str, Any] = field(default_factory=DispatcherConfig)
    # The listener's limits: connections waiting to be accepted, seconds a connection may sit
    # between requests (or take to send its headers), seconds to send a body, bytes per body
    # (GitHub caps payloads at 25 MB) and bytes of bodies being received at once.
    listen_backlog: int = 1024
    idle_timeout: float = 30.0
    body_timeout: float = 30.0
    max_body_bytes: int = 25 * MIB
    max_inflight_bytes: int = 64 * MIB
    # The pool's reconcile run by the service itself: every ``interval_minutes`` (0: never) and
    # at start, with ``playbook`` (ansible-runner) or ``job_template`` (AWX).
    # (Off in a Config built in code; a config file turns it on unless it says otherwise.)
    reconcile: dict[str, Any] = field(default_factory=lambda: dict(RECONCILE_DEFAULTS,
                                                                   enabled=False))
    # Where the service may list its hook's deliveries and ask GitHub to redeliver failed ones.
    github: dict[str, Any] | None = None
    # Stage a slot's next generation when its job starts (workflow_job in_progress), so that the
    # recreate after the job only starts it; needs a pool with runner_pool_batch: true.
    stage: bool = False
    # Where things came from, for ``check-config`` (no secret values).
    source: str = ""
    secret_source: str = ""


# In this order: a bool is also an int.
_TYPE_NAMES = ((type(None), "null"), (bool, "a boolean"), (int, "an integer"), (float, "a number"),
               (str, "a string"), (list, "a list"), (dict, "a mapping"))


def _type_name(value: Any) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError("%s: must be a mapping, got %s" % (where, _type_name(value)))
    for key in value:
        if not isinstance(key, str):
            raise ConfigError("%s: keys must be strings, got %r" % (where, key))
    return value


def _no_unknown(value: Mapping[str, Any], allowed: tuple, where: str) -> None:
    unknown = sorted(k for k in value if k not in allowed)
    if unknown:
        prefix = where + "." if where else ""
        raise ConfigError(
            "%s%s: unknown key; allowed here: %s" % (prefix, unknown[0], ", ".join(allowed))
        )


def _int(value: Any, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("%s: must be an integer, got %s" % (where, _type_name(value)))
    if value < minimum or (maximum is not None and value > maximum):
        bounds = ">= %d" % minimum if maximum is None else "between %d and %d" % (minimum, maximum)
        raise ConfigError("%s: must be %s, got %d" % (where, bounds, value))
    return value


def _number(value: Any, where: str, minimum: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("%s: must be a number, got %s" % (where, _type_name(value)))
    if value < minimum or (strict and value == minimum):
        raise ConfigError(
            "%s: must be %s %g, got %g" % (where, ">" if strict else ">=", minimum, value)
        )
    return float(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("%s: must be a non-empty string, got %s" % (where, _type_name(value)))
    return value


def _path(value: Any, where: str, base_dir: str) -> str:
    text = _string(value, where)
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))


def read_secret_file(path: str, where: str) -> bytes:
    """Read a secret from ``path``; refuse files that group or others may read or write."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError("%s %s: cannot read: %s" % (where, path, exc.strerror or exc))
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("%s %s: not a regular file" % (where, path))
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        what = "readable" if mode & 0o044 else "accessible"
        raise ConfigError(
            "%s %s: mode %04o is %s by group/others; chmod 600 it" % (where, path, mode, what)
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError("%s %s: cannot read: %s" % (where, path, exc.strerror or exc))
    data = data.strip()
    if not data:
        raise ConfigError("%s %s: is empty" % (where, path))
    return data


def _listen(raw: Any) -> dict[str, Any]:
    """The ``listen`` section as ``Config`` field values."""
    listen = _mapping({} if raw is None else raw, "listen")
    _no_unknown(listen, _LISTEN_KEYS, "listen")
    defaults = Config()
    return {
        "listen_host": _string(listen.get("host", defaults.listen_host), "listen.host"),
        "listen_port": _int(listen.get("port", defaults.listen_port), "listen.port", 0, 65535),
        "listen_backlog": _int(listen.get("backlog", defaults.listen_backlog), "listen.backlog",
                               1, 65535),
        "idle_timeout": _number(listen.get("idle_timeout", defaults.idle_timeout),
                                "listen.idle_timeout", 0, strict=True),
        "body_timeout": _number(listen.get("body_timeout", defaults.body_timeout),
                                "listen.body_timeout", 0, strict=True),
        "max_body_bytes": _int(listen.get("max_body_bytes", defaults.max_body_bytes),
                               "listen.max_body_bytes", 1024),
        "max_inflight_bytes": _int(listen.get("max_inflight_bytes", defaults.max_inflight_bytes),
                                   "listen.max_inflight_bytes", 1024),
    }


def _pools(raw: Any) -> list[str]:
    if raw is None:
        raise ConfigError("pools: required; a non-empty list of pool names")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("pools: must be a non-empty list of pool names, got %s"
                          % ("an empty list" if raw == [] else _type_name(raw)))
    pools: list[str] = []
    for i, name in enumerate(raw):
        where = "pools[%d]" % i
        if not isinstance(name, str):
            raise ConfigError("%s: must be a string, got %s" % (where, _type_name(name)))
        if not POOL_NAME_RE.match(name):
            raise ConfigError(
                "%s: %r is not a pool name (1 to %d lower-case letters, digits and '-', starting "
                "with a letter or a digit)" % (where, name, MAX_POOL_LEN)
            )
        if name in pools:
            raise ConfigError("%s: %r is listed twice" % (where, name))
        pools.append(name)
    return pools


def _retry(raw: Any) -> tuple:
    if raw is None:
        return 3, 30.0
    retry = _mapping(raw, "retry")
    _no_unknown(retry, ("attempts", "backoff_seconds"), "retry")
    attempts = _int(retry.get("attempts", 3), "retry.attempts", 1)
    backoff = _number(retry.get("backoff_seconds", 30), "retry.backoff_seconds", 0)
    return attempts, backoff


def _str_mapping(raw: Any, where: str, scalars_only: bool) -> dict[str, Any]:
    if raw is None:
        return {}
    value = _mapping(raw, where)
    if scalars_only:
        out = {}
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                # The value itself is not echoed: environment variables often hold secrets.
                raise ConfigError(
                    "%s.%s: must be a string or number, got %s" % (where, key, _type_name(item))
                )
            out[key] = str(item)
        return out
    return dict(value)


def _runner_dispatcher(raw: Mapping[str, Any], base_dir: str) -> DispatcherConfig:
    _no_unknown(raw, _RUNNER_KEYS, "dispatcher")
    if raw.get("inventory") is None:
        raise ConfigError("dispatcher.inventory: required for kind 'ansible-runner'")
    out = DispatcherConfig(kind="ansible-runner")
    out["playbook"] = _string(raw.get("playbook", "recreate.yml"), "dispatcher.playbook")
    out["project_dir"] = (
        _path(raw["project_dir"], "dispatcher.project_dir", base_dir)
        if raw.get("project_dir") is not None else None
    )
    out["inventory"] = _path(raw["inventory"], "dispatcher.inventory", base_dir)
    out["extravars"] = _str_mapping(raw.get("extravars"), "dispatcher.extravars", False)
    out["envvars"] = _str_mapping(raw.get("envvars"), "dispatcher.envvars", True)
    out["timeout"] = _number(raw.get("timeout", 1800), "dispatcher.timeout", 0, strict=True)
    out["standby"] = _bool(raw.get("standby", False), "dispatcher.standby")
    return out


def _awx_dispatcher(raw: Mapping[str, Any], base_dir: str,
                    environ: Mapping[str, str]) -> DispatcherConfig:
    _no_unknown(raw, _AWX_KEYS, "dispatcher")
    if raw.get("url") is None:
        raise ConfigError("dispatcher.url: required for kind 'awx'")
    url = _string(raw["url"], "dispatcher.url").rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError("dispatcher.url: must be an http:// or https:// URL, got %r" % url)
    if raw.get("job_template") is None:
        raise ConfigError("dispatcher.job_template: required for kind 'awx' (an id or a name)")
    template = _template(raw["job_template"], "dispatcher.job_template")
    validate = _bool(raw.get("validate_certs", True), "dispatcher.validate_certs")
    out = DispatcherConfig(kind="awx", url=url, job_template=template, validate_certs=validate)
    out["poll_seconds"] = _number(raw.get("poll_seconds", 5), "dispatcher.poll_seconds", 0,
                                  strict=True)
    out["timeout"] = _number(raw.get("timeout", 1800), "dispatcher.timeout", 0, strict=True)
    out["token"], out["token_file"] = _token(raw, "dispatcher", base_dir, environ, AWX_TOKEN_ENV,
                                             "kind 'awx'")
    return out


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("%s: must be true or false, got %s" % (where, _type_name(value)))
    return value


def _template(value: Any, where: str) -> int | str:
    """An AWX job template: its id or its name."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError("%s: must be an id or a name, got %s" % (where, _type_name(value)))
    if isinstance(value, int):
        return _int(value, where, 1)
    return _string(value, where)


def _token(raw: Mapping[str, Any], section: str, base_dir: str, environ: Mapping[str, str],
           env_name: str, needed_for: str) -> tuple[str, str | None]:
    """(token, its file or None) from ``<section>.token_file`` or the environment."""
    where = "%s.token_file" % section
    if raw.get("token_file") is not None:
        token_file: str | None = _path(raw["token_file"], where, base_dir)
        token = read_secret_file(token_file, where)
    elif environ.get(env_name, "").strip():
        token_file, token = None, environ[env_name].strip().encode("utf-8")
    else:
        raise ConfigError("%s: required for %s (or set %s)" % (where, needed_for, env_name))
    try:
        return token.decode("utf-8"), token_file
    except UnicodeDecodeError:
        raise ConfigError("%s: the token is not UTF-8 text" % where) from None


RECONCILE_DEFAULTS: dict[str, Any] = {"interval_minutes": 15.0, "at_start": True,
                                      "playbook": "pool.yml", "job_template": None}


def _reconcile(raw: Any, kind: str) -> dict[str, Any]:
    """The ``reconcile`` section; the AWX dispatcher needs a job template for it, or it is off."""
    section = _mapping({} if raw is None else raw, "reconcile")
    _no_unknown(section, _RECONCILE_KEYS, "reconcile")
    out = dict(RECONCILE_DEFAULTS)
    out["interval_minutes"] = _number(section.get("interval_minutes", out["interval_minutes"]),
                                      "reconcile.interval_minutes", 0)
    out["at_start"] = _bool(section.get("at_start", out["at_start"]), "reconcile.at_start")
    out["playbook"] = _string(section.get("playbook", out["playbook"]), "reconcile.playbook")
    if section.get("job_template") is not None:
        out["job_template"] = _template(section["job_template"], "reconcile.job_template")
    # Off when it has nothing to run: an AWX dispatcher without the pool's job template.
    out["enabled"] = (out["interval_minutes"] > 0 or out["at_start"]) and (
        kind != "awx" or out["job_template"] is not None)
    return out


def _github(raw: Any, base_dir: str, environ: Mapping[str, str]) -> DispatcherConfig | None:
    """The optional ``github`` section: the webhook's scope and hook id, and a credential
    (a token, or a GitHub App), as the collection's GitHub options name them."""
    if raw is None:
        return None
    section = _mapping(raw, "github")
    _no_unknown(section, _GITHUB_KEYS, "github")
    out = DispatcherConfig()
    url = _string(section.get("api_url", "https://api.github.com"), "github.api_url").rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError("github.api_url: must be an http:// or https:// URL, got %r" % url)
    out["api_url"] = url
    scopes = [k for k in ("repository", "organization") if section.get(k) is not None]
    if len(scopes) != 1:
        raise ConfigError("github: set exactly one of repository (owner/name) or organization, "
                          "where the webhook is")
    name = _string(section[scopes[0]], "github." + scopes[0]).strip("/")
    if scopes[0] == "repository" and not re.match(r"^[^/\s]+/[^/\s]+$", name):
        raise ConfigError("github.repository: must be 'owner/name', got %r" % name)
    if scopes[0] == "organization" and not re.match(r"^[^/\s]+$", name):
        raise ConfigError("github.organization: must be one name, got %r" % name)
    out[scopes[0]] = name
    if section.get("hook_id") is None:
        raise ConfigError("github.hook_id: required; the webhook's id (Settings -> Webhooks: the "
                          "number at the end of the hook's address)")
    out["hook_id"] = _int(section["hook_id"], "github.hook_id", 1)
    if section.get("app_id") is not None:
        if section.get("token_file") is not None:
            raise ConfigError("github: token_file and app_id are mutually exclusive")
        out["app_id"] = str(_template(section["app_id"], "github.app_id"))
        if section.get("app_private_key_path") is None:
            raise ConfigError("github.app_private_key_path: required with app_id")
        key_path = _path(section["app_private_key_path"], "github.app_private_key_path", base_dir)
        out["app_private_key"] = read_secret_file(key_path, "github.app_private_key_path").decode(
            "utf-8", "replace")
        out["app_private_key_path"] = key_path
        if section.get("app_installation_id") is not None:
            out["app_installation_id"] = _int(section["app_installation_id"],
                                              "github.app_installation_id", 1)
    else:
        out["token"], out["token_file"] = _token(section, "github", base_dir, environ,
                                                 GITHUB_TOKEN_ENV, "github (or set app_id)")
    out["validate_certs"] = _bool(section.get("validate_certs", True), "github.validate_certs")
    if section.get("ca_path") is not None:
        out["ca_path"] = _path(section["ca_path"], "github.ca_path", base_dir)
    out["timeout"] = _number(section.get("timeout", 30), "github.timeout", 0, strict=True)
    out["interval_minutes"] = _number(section.get("interval_minutes", 5),
                                      "github.interval_minutes", 0)
    out["lookback_hours"] = _number(section.get("lookback_hours", 24), "github.lookback_hours", 0,
                                    strict=True)
    out["max_redeliveries"] = _int(section.get("max_redeliveries", 3), "github.max_redeliveries", 1)
    return out


def _dispatcher(raw: Any, base_dir: str, environ: Mapping[str, str]) -> DispatcherConfig:
    if raw is None:
        raise ConfigError("dispatcher: required; a mapping with kind 'ansible-runner' or 'awx'")
    disp = _mapping(raw, "dispatcher")
    kind = disp.get("kind")
    if kind not in DISPATCHER_KINDS:
        if kind is None:
            raise ConfigError("dispatcher.kind: required; 'ansible-runner' or 'awx'")
        raise ConfigError("dispatcher.kind: must be 'ansible-runner' or 'awx', got %r" % (kind,))
    if kind == "awx":
        return _awx_dispatcher(disp, base_dir, environ)
    return _runner_dispatcher(disp, base_dir)


def parse_config(data: Any, base_dir: str, environ: Mapping[str, str],
                 source: str = "") -> Config:
    """Validate an already-parsed YAML document; ``base_dir`` anchors relative paths."""
    if data is None:
        raise ConfigError("the file is empty; pools and dispatcher are required")
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping, got %s" % _type_name(data))
    _mapping(data, "top level")
    _no_unknown(data, _TOP_KEYS, "")
    listen = _listen(data.get("listen"))
    if data.get("secret_file") is not None:
        secret_file = _path(data["secret_file"], "secret_file", base_dir)
        secret = read_secret_file(secret_file, "secret_file")
        secret_source = "secret_file %s" % secret_file
    elif environ.get(SECRET_ENV, "").strip():
        secret = environ[SECRET_ENV].strip().encode("utf-8")
        secret_source = "environment %s" % SECRET_ENV
    else:
        raise ConfigError("secret_file: required (or set %s)" % SECRET_ENV)
    state_dir = _path(data.get("state_dir", "/var/lib/rum-pool-webhook"), "state_dir", base_dir)
    pools = _pools(data.get("pools"))
    max_parallel = _int(data.get("max_parallel", 2), "max_parallel", 1)
    attempts, backoff = _retry(data.get("retry"))
    keep_runs = _int(data.get("keep_runs", 50), "keep_runs", 1)
    dispatcher = _dispatcher(data.get("dispatcher"), base_dir, environ)
    if listen["max_inflight_bytes"] < listen["max_body_bytes"]:
        raise ConfigError("listen.max_inflight_bytes: must be at least listen.max_body_bytes (%d)"
                          % listen["max_body_bytes"])
    return Config(
        secret=secret, state_dir=state_dir, pools=pools,
        max_parallel=max_parallel, retry_attempts=attempts, retry_backoff=backoff,
        keep_runs=keep_runs, dispatcher=dispatcher, source=source, secret_source=secret_source,
        reconcile=_reconcile(data.get("reconcile"), dispatcher["kind"]),
        github=_github(data.get("github"), base_dir, environ),
        stage=_bool(data.get("stage", False), "stage"), **listen,
    )


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``; raise ``ConfigError`` on any problem."""
    if environ is None:
        environ = os.environ
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("config %s: cannot read: %s" % (path, exc.strerror or exc))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        where = " at line %d column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        # The offending snippet is not quoted: it could be a secret pasted into the file.
        raise ConfigError("config %s: not valid YAML%s: %s" % (path, where, problem)) from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_config(data, base_dir, environ, source=os.path.abspath(path))
