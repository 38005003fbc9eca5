# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of rum.pool.rum_slots: GitHub here, the slots' VMs on the host (two module calls at most).

The work is ``module_utils/_slots_controller.py``'s ``Batch``; this plugin gives it the module runner,
a GitHub client built from the pool's ``github`` settings (they never leave the controller), and the
identity of this ``ansible-playbook`` process for the slot locks (as rum_lock records it).
"""

from __future__ import annotations

import os
import typing as t

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.rum.pool.plugins.module_utils import _github_options as github_options
from ansible_collections.rum.pool.plugins.module_utils._github import GitHubError
from ansible_collections.rum.pool.plugins.module_utils._lock import local_holder
from ansible_collections.rum.pool.plugins.module_utils._slots_controller import Batch, BatchError, holder_alive

display = Display()

MODULE = "rum.pool.rum_slots"


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        pool = args.get("pool")
        if not isinstance(pool, dict):
            raise AnsibleActionFail("rum_slots: pool must be the pool's settings, lookup('rum.pool.pool_settings') "
                                    f"(got {type(pool).__name__})")
        try:
            api = github_options.connect(dict(_github_defaults(), **(pool.get("github") or {})))
        except GitHubError as exc:
            raise AnsibleActionFail(f"rum_slots: runner_pool_github: {exc.message}") from None
        me = local_holder(os.getppid())  # the worker's parent is the ansible-playbook process

        def call(phase: str, **more: t.Any) -> dict[str, t.Any]:
            module_args = {k: v for k, v in more.items() if v is not None}
            module_args["phase"] = phase
            for key in ("lock_dir",):
                if key in args:
                    module_args[key] = args[key]
            answer = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
            if answer.get("failed"):
                raise AnsibleActionFail(answer.get("msg") or f"rum_slots: the {phase} call failed", result=answer)
            return answer

        try:
            batch = Batch(pool, call=call, api=api, holder=me, check_mode=self._task.check_mode,
                          alive=holder_alive(me), warn=display.warning)
            done = batch.run(args.get("mode") or "converge", args.get("slot"), args.get("runner_name"))
        except BatchError as exc:
            raise AnsibleActionFail(str(exc)) from None
        except GitHubError as exc:
            raise AnsibleActionFail(f"rum_slots: GitHub: {exc.message}") from None
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        result.update(done)
        return result


def _github_defaults() -> dict[str, t.Any]:
    return {key: spec["default"] for key, spec in github_options.argument_spec().items() if "default" in spec}
