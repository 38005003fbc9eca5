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
from typing import Any, Dict, List, Mapping, Optional

import yaml

SECRET_ENV = "RUM_POOL_WEBHOOK_SECRET"
AWX_TOKEN_ENV = "RUM_POOL_AWX_TOKEN"
DISPATCHER_KINDS = ("ansible-runner", "awx")
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")

_TOP_KEYS = (
    "listen", "secret_file", "state_dir", "pools", "max_parallel", "retry", "keep_runs",
    "dispatcher",
)
_RUNNER_KEYS = ("kind", "playbook", "project_dir", "inventory", "extravars", "envvars", "timeout")
_AWX_KEYS = ("kind", "url", "token_file", "job_template", "validate_certs", "poll_seconds",
             "timeout")


class ConfigError(Exception):
    """The configuration is unusable; the message names the key path and the problem."""


class DispatcherConfig(Dict[str, Any]):
    """The validated ``dispatcher`` mapping: a plain dict whose repr hides the AWX token."""

    def __repr__(self) -> str:
        shown = {k: ("<hidden>" if k == "token" else v) for k, v in self.items()}
        return "DispatcherConfig(%r)" % (shown,)

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    """The service configuration after validation (defaults filled in)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    secret: bytes = field(default=b"", repr=False)
    state_dir: str = "/var/lib/rum-pool-webhook"
    pools: List[str] = field(default_factory=list)
    max_parallel: int = 2
    retry_attempts: int = 3
    retry_backoff: float = 30.0
    keep_runs: int = 50
    dispatcher: Dict[str, Any] = field(default_factory=DispatcherConfig)
    # Where things came from, for ``check-config`` (no secret values).
    source: str = ""
    secret_source: str = ""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
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


def _int(value: Any, where: str, minimum: int, maximum: Optional[int] = None) -> int:
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


def _listen(raw: Any) -> tuple:
    if raw is None:
        return "127.0.0.1", 8080
    listen = _mapping(raw, "listen")
    _no_unknown(listen, ("host", "port"), "listen")
    host = _string(listen.get("host", "127.0.0.1"), "listen.host")
    port = _int(listen.get("port", 8080), "listen.port", 0, 65535)
    return host, port


def _pools(raw: Any) -> List[str]:
    if raw is None:
        raise ConfigError("pools: required; a non-empty list of pool names")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("pools: must be a non-empty list of pool names, got %s"
                          % ("an empty list" if raw == [] else _type_name(raw)))
    pools: List[str] = []
    for i, name in enumerate(raw):
        where = "pools[%d]" % i
        if not isinstance(name, str):
            raise ConfigError("%s: must be a string, got %s" % (where, _type_name(name)))
        if not POOL_NAME.match(name):
            raise ConfigError(
                "%s: %r is not a pool name (lower-case letters, digits and '-')" % (where, name)
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


def _str_mapping(raw: Any, where: str, scalars_only: bool) -> Dict[str, Any]:
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
    return out


def _awx_dispatcher(raw: Mapping[str, Any], base_dir: str,
                    environ: Mapping[str, str]) -> DispatcherConfig:
    _no_unknown(raw, _AWX_KEYS, "dispatcher")
    if raw.get("url") is None:
        raise ConfigError("dispatcher.url: required for kind 'awx'")
    url = _string(raw["url"], "dispatcher.url").rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError("dispatcher.url: must be an http:// or https:// URL, got %r" % url)
    template = raw.get("job_template")
    if template is None:
        raise ConfigError("dispatcher.job_template: required for kind 'awx' (an id or a name)")
    if isinstance(template, bool) or not isinstance(template, (int, str)):
        raise ConfigError("dispatcher.job_template: must be an id or a name, got %s"
                          % _type_name(template))
    if isinstance(template, int):
        _int(template, "dispatcher.job_template", 1)
    else:
        template = _string(template, "dispatcher.job_template")
    validate = raw.get("validate_certs", True)
    if not isinstance(validate, bool):
        raise ConfigError("dispatcher.validate_certs: must be true or false, got %s"
                          % _type_name(validate))
    out = DispatcherConfig(kind="awx", url=url, job_template=template, validate_certs=validate)
    out["poll_seconds"] = _number(raw.get("poll_seconds", 5), "dispatcher.poll_seconds", 0,
                                  strict=True)
    out["timeout"] = _number(raw.get("timeout", 1800), "dispatcher.timeout", 0, strict=True)
    if raw.get("token_file") is not None:
        token_file = _path(raw["token_file"], "dispatcher.token_file", base_dir)
        token = read_secret_file(token_file, "dispatcher.token_file")
        out["token_file"] = token_file
    elif environ.get(AWX_TOKEN_ENV, "").strip():
        token = environ[AWX_TOKEN_ENV].strip().encode("utf-8")
        out["token_file"] = None
    else:
        raise ConfigError(
            "dispatcher.token_file: required for kind 'awx' (or set %s)" % AWX_TOKEN_ENV
        )
    try:
        out["token"] = token.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("dispatcher.token_file: the token is not UTF-8 text") from None
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
    host, port = _listen(data.get("listen"))
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
    return Config(
        listen_host=host, listen_port=port, secret=secret, state_dir=state_dir, pools=pools,
        max_parallel=max_parallel, retry_attempts=attempts, retry_backoff=backoff,
        keep_runs=keep_runs, dispatcher=dispatcher, source=source, secret_source=secret_source,
    )


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
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
