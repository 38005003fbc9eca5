# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every gh_runner* module shares (scope, auth, retries) and the client they build.

Internal to the rum.pool collection: not a public API. ``connect`` takes a plain dict of option
values, so modules, future plugins and unit tests use the same code path. The documentation of
these options is the ``rum.pool.github`` doc fragment; keep the two in step.
"""

from __future__ import annotations

import time
import typing as t

from ansible_collections.rum.pool.plugins.module_utils._github import (
    DEFAULT_API_URL,
    GitHubClient,
    GitHubError,
    OpenUrlTransport,
    RetryPolicy,
    Scope,
    TokenAuth,
    Transport,
)
from ansible_collections.rum.pool.plugins.module_utils._github_app import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    AppAuth,
    GitHubAppError,
    InstallationTokenCache,
)
from ansible_collections.rum.pool.plugins.module_utils._github_runners import RunnerAPI


def argument_spec() -> dict[str, t.Any]:
    return dict(
        api_url=dict(type="str", default=DEFAULT_API_URL),
        repository=dict(type="str"),
        organization=dict(type="str"),
        enterprise=dict(type="str"),
        token=dict(type="str", no_log=True),
        app_id=dict(type="str"),
        app_private_key=dict(type="str", no_log=True),
        app_private_key_path=dict(type="path", no_log=False),
        app_installation_id=dict(type="int"),
        app_token_cache_dir=dict(type="path", no_log=False),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="int", default=30),
        max_wait=dict(type="int", default=300),
        max_retries=dict(type="int", default=5),
    )


MUTUALLY_EXCLUSIVE = [
    ("repository", "organization", "enterprise"),
    ("token", "app_id"),
    ("app_private_key", "app_private_key_path"),
]
REQUIRED_ONE_OF = [
    ("repository", "organization", "enterprise"),
    ("token", "app_id"),
]


class OptionError(GitHubError):
    """The options do not describe a usable scope or credential."""


def scope_from(params: t.Mapping[str, t.Any]) -> Scope:
    try:
        return Scope.from_options(params.get("repository"), params.get("organization"), params.get("enterprise"))
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _read_key(params: t.Mapping[str, t.Any]) -> str:
    if params.get("app_private_key"):
        return params["app_private_key"]
    path = params.get("app_private_key_path")
    if not path:
        raise OptionError("app_id needs app_private_key or app_private_key_path")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise OptionError(f"cannot read the GitHub App private key file {path}: {exc.strerror}") from None


def auth_from(params: t.Mapping[str, t.Any], scope: Scope, clock: t.Callable[[], float]) -> t.Any:
    if params.get("token"):
        return TokenAuth(params["token"])
    if params.get("app_id"):
        if scope.kind == "enterprise":
            raise GitHubAppError(
                f"{scope.describe()}: GitHub App tokens cannot manage enterprise runners; use a "
                "classic personal access token with manage_runners:enterprise (option token)")
        cache = InstallationTokenCache(params.get("app_token_cache_dir"))
        return AppAuth(params["app_id"], _read_key(params), installation_id=params.get("app_installation_id"),
                       scope=scope, cache=cache, clock=clock)
    raise OptionError("either token or app_id (with a private key) is needed")


def connect(params: t.Mapping[str, t.Any], transport: Transport | None = None,
            clock: t.Callable[[], float] | None = None, sleep: t.Callable[[float], None] | None = None
            ) -> RunnerAPI:
    """A RunnerAPI for the scope and credentials in ``params`` (the shared option values)."""
    clock = clock or time.time
    scope = scope_from(params)
    if (params.get("max_wait") or 0) < 0 or (params.get("max_retries") or 0) < 0:
        raise OptionError("max_wait and max_retries must not be negative")
    policy = RetryPolicy(max_wait=params.get("max_wait", 300), max_retries=params.get("max_retries", 5))
    if transport is None:
        transport = OpenUrlTransport(validate_certs=params.get("validate_certs", True),
                                     ca_path=params.get("ca_path"))
    client = GitHubClient(api_url=params.get("api_url") or DEFAULT_API_URL, auth=auth_from(params, scope, clock),
                          transport=transport, policy=policy, clock=clock, sleep=sleep or time.sleep,
                          timeout=float(params.get("timeout") or 30))
    return RunnerAPI(client, scope)


def api_summary(api: RunnerAPI) -> dict[str, t.Any]:
    """The ``api`` return value: calls made, retries, seconds waited, last rate-limit headers."""
    summary = api.client.stats.as_dict()
    summary["auth"] = getattr(api.client.auth, "kind", "unknown")
    source = getattr(api.client.auth, "token_source", None)
    if source:
        summary["installation_token"] = source
    return summary


def run_module(name: str, options: dict, task: t.Callable[..., dict], *,
               mutually_exclusive: t.Sequence = (), required_if: t.Sequence = ()) -> None:
    """The whole life of a gh_* module: its options plus the shared ones, connect, run ``task``, exit.

    ``task(api, params, check_mode)`` returns the result; GitHub errors fail the module with the
    message, the HTTP status and what was sent.
    """
    from ansible.module_utils.basic import AnsibleModule, missing_required_lib

    spec = argument_spec()
    spec.update(options)
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=MUTUALLY_EXCLUSIVE + list(mutually_exclusive),
        required_one_of=REQUIRED_ONE_OF,
        required_if=list(required_if),
        supports_check_mode=True,
    )
    if module.params["app_id"] and not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    api = None
    try:
        api = connect(module.params)
        result = task(api, module.params, module.check_mode)
    except GitHubError as exc:
        module.fail_json(msg=f"{name}: {exc.message}", status=exc.status, api=api_summary(api) if api else {})
    result["api"] = api_summary(api)
    if result.get("recovery"):
        module.warn(result["recovery"])
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)
