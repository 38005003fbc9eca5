# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum.pool.rum_standby: wait on the controller for a warm standby's request (see the module's docs)."""

from __future__ import annotations

import json
import os
import time
import typing as t

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.validation import check_type_float, check_type_int
from ansible.plugins.action import ActionBase


def read_request(path: str) -> dict[str, t.Any] | None:
    """The request at ``path``, checked; None while there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AnsibleActionFail(f"rum_standby: {path}: not a JSON request: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("slot"), str):
        raise AnsibleActionFail(f"rum_standby: {path}: the request must be an object with a slot")
    runner = data.get("runner_name")
    if runner is not None and not isinstance(runner, str):
        raise AnsibleActionFail(f"rum_standby: {path}: runner_name must be a string or null")
    return {"slot": data["slot"], "runner_name": runner or None, "stage": data.get("stage") is True}


def wait(path: str, timeout: float, poll: float, *, clock: t.Callable[[], float] = time.monotonic,
         sleep: t.Callable[[float], None] = time.sleep) -> tuple[dict[str, t.Any] | None, float]:
    """Look for the request every ``poll`` seconds until ``timeout``; (request or None, seconds waited)."""
    start = clock()
    ready = path + ".ready"
    with open(os.open(ready, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    try:
        while True:
            found = read_request(path)
            if found is not None or clock() - start >= timeout:
                return found, round(clock() - start, 3)
            sleep(poll)
    finally:
        try:
            os.unlink(ready)
        except OSError:
            pass


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        path = args.get("path")
        if not isinstance(path, str) or not path:
            raise AnsibleActionFail("rum_standby: path is required (where the request appears)")
        try:
            timeout = check_type_int(args.get("timeout", 3600))
            poll = check_type_float(args.get("poll", 0.01))
        except TypeError as exc:
            raise AnsibleActionFail(f"rum_standby: {exc}") from None
        warm = args.get("warm") or []
        if not isinstance(warm, list) or not all(isinstance(name, str) and name for name in warm):
            raise AnsibleActionFail("rum_standby: warm must be a list of module names")
        warmed = {}
        for name in warm:
            start = time.monotonic()
            try:  # Ansible keeps the built payload for this process: the task after the request finds it
                self._configure_module(name, {}, task_vars or {})
            except Exception as exc:  # pylint: disable=broad-except  # the task builds it then, or says why
                raise AnsibleActionFail(f"rum_standby: warm: cannot build {name}: {exc}") from None
            warmed[name] = round(time.monotonic() - start, 3)
        request, waited = wait(os.path.expanduser(path), timeout, max(poll, 0.001))
        result.update(changed=False, request=request, waited=waited, warmed=warmed)
        return result
