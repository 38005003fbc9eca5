# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dispatchers: how the service has one slot recreated (or the pool reconciled).

A dispatcher takes a ``Task`` and runs the collection's ``recreate.yml`` for it (``pool.yml`` for
a reconcile), locally through ansible-runner (``dispatch_runner``) or as an AWX / automation
controller job (``dispatch_awx``). It reports progress through ``log``, records the handle of
what it started through ``record`` before it counts as launched, and ends with a one-line
``Result``. Neither a ``Result`` message nor a progress line ever holds a secret.

This module holds what both share and ``make_dispatcher``, which builds the configured one.
"""

from __future__ import annotations

from typing import Any, Mapping

from .tasks import Dispatcher, LogFn

MESSAGE_DETAIL_MAX = 300
# Environment variables through which the service itself may receive its secrets; they are
# blanked for the playbook so they reach neither Ansible nor ansible-runner's artifact files.
SERVICE_SECRET_ENV = ("RUM_POOL_WEBHOOK_SECRET", "RUM_POOL_AWX_TOKEN", "RUM_POOL_GITHUB_TOKEN")


class DispatchError(Exception):
    """A dispatcher cannot be set up, or cannot reach what it dispatches to."""


def one_line(text: Any, limit: int = MESSAGE_DETAIL_MAX) -> str:
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return flat


def safe_log(log: LogFn, line: str) -> None:
    try:
        log(line)
    except Exception:  # pylint: disable=broad-except  # a broken log sink must not stop a run
        pass


def make_dispatcher(dispatcher_config: Mapping[str, Any], state_dir: str, keep_runs: int,
                    reconcile: Mapping[str, Any] | None = None, **deps: Any) -> Dispatcher:
    """Build the dispatcher the (validated) ``dispatcher`` config mapping asks for.

    ``reconcile`` is the validated ``reconcile`` section (which playbook or job template
    converges the pool). ``deps`` are passed on to the constructor (tests inject
    ``runner_module``, ``spawn``, ``opener``, ``clock``, ``sleep``).
    """
    kind = dispatcher_config.get("kind")
    reconcile = reconcile or {}
    if kind == "ansible-runner":
        from .dispatch_runner import AnsibleRunnerDispatcher  # pylint: disable=import-outside-toplevel
        from .standby import StandbyRunnerDispatcher  # pylint: disable=import-outside-toplevel

        cls = StandbyRunnerDispatcher if dispatcher_config.get("standby") else AnsibleRunnerDispatcher
        return cls(
            playbook=dispatcher_config.get("playbook") or "recreate.yml",
            inventory=dispatcher_config["inventory"],
            extravars=dispatcher_config.get("extravars") or {},
            envvars=dispatcher_config.get("envvars") or {},
            state_dir=state_dir, keep_runs=keep_runs,
            timeout=dispatcher_config.get("timeout", 1800),
            project_dir=dispatcher_config.get("project_dir"),
            reconcile_playbook=reconcile.get("playbook") or "pool.yml", **deps)
    if kind == "awx":
        from .dispatch_awx import AwxDispatcher  # pylint: disable=import-outside-toplevel

        token = dispatcher_config.get("token")
        if not token:
            raise DispatchError("dispatcher.token_file: no AWX token was loaded")
        return AwxDispatcher(
            url=dispatcher_config["url"], token=token,
            job_template=dispatcher_config["job_template"],
            validate_certs=dispatcher_config.get("validate_certs", True),
            poll_seconds=dispatcher_config.get("poll_seconds", 5),
            timeout=dispatcher_config.get("timeout", 1800),
            reconcile_job_template=reconcile.get("job_template"), **deps)
    raise DispatchError(f"dispatcher.kind: must be 'ansible-runner' or 'awx', got {kind!r}")
