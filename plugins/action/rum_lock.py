# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of rum.pool.rum_lock: notice a lock whose holder died on this controller.

The lock lives on the target, but who holds it is a question about the controller: the module
records the ``ansible-playbook`` process that runs the task (this worker's parent), and while a run
waits, this plugin looks at the holder between rounds of at most ROUND seconds. A holder that ran on
this controller and whose process is gone (killed, so its release in ``always:`` never ran), or that
ran here before a reboot, is taken over at once by its lock_id instead of after ``stale_after``.
"""

from __future__ import annotations

import math
import os
import time
import typing as t

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.validation import check_type_int
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

from ansible_collections.rum.pool.plugins.module_utils._lock import (
    dead_reason,
    describe_holder,
    held_message,
    holder_alive,
    local_holder,
    process_start_time,
)

display = Display()

MODULE = "rum.pool.rum_lock"
ROUND = 15  # seconds a module run waits before the holder is looked at again


class ActionModule(ActionBase):
    # check mode and async are left to the module, exactly as without this plugin
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        try:
            if self._task.check_mode or args.get("state", "locked") != "locked":
                return merge_hash(result, self._module(args, task_vars))
            return merge_hash(result, self._lock(args, task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _module(self, args: dict[str, t.Any], task_vars: dict[str, t.Any] | None) -> dict[str, t.Any]:
        return self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)

    def _lock(self, args: dict[str, t.Any], task_vars: dict[str, t.Any] | None) -> dict[str, t.Any]:
        name = args.get("name")
        try:
            timeout = max(check_type_int(args.get("timeout", 600)), 0)
        except TypeError as exc:
            raise AnsibleActionFail(f"rum_lock '{name}': timeout must be a whole number of seconds: {exc}") from exc
        me = local_holder(os.getppid())  # the worker's parent is the ansible-playbook process
        args["holder"] = me
        take_over = args.pop("take_over", None)
        tried: set[str] = set()
        start = time.monotonic()
        deadline = start + timeout
        round_timeout = 0  # an uncontended lock costs one round trip
        while True:
            call = dict(args, timeout=round_timeout)
            if take_over:
                call["take_over"] = take_over
            res = self._module(call, task_vars)
            waited = round(time.monotonic() - start, 3)
            if not res.get("failed"):
                if "waited_seconds" in res:
                    res["waited_seconds"] = waited
                self._warn_takeover(name, res.get("took_over"), take_over, me)
                return res
            held = res.get("held_by")
            if not isinstance(held, dict):
                return res  # failed for another reason than a held lock
            remaining = deadline - time.monotonic()
            lid = held.get("lock_id") or ""
            take_over = None
            if holder_alive(held.get("holder"), me, process_start_time) is False and lid:
                if remaining > 0 or lid not in tried:  # a dead holder is taken over even at timeout 0
                    tried.add(lid)
                    take_over = lid
            if take_over is None and remaining <= 0:
                res["msg"] = "rum_lock: " + held_message(str(name), held, float(held.get("held_for") or 0), timeout)
                res["waited_seconds"] = waited
                return res
            round_timeout = min(ROUND, max(math.ceil(remaining), 0))

    @staticmethod
    def _warn_takeover(name: t.Any, took_over: t.Any, take_over: str | None, me: dict) -> None:
        if not take_over or not isinstance(took_over, dict) or took_over.get("lock_id") != take_over:
            return  # nothing taken over, or a stale lock the module has warned about itself
        holder = took_over.get("holder") if isinstance(took_over.get("holder"), dict) else {}
        display.warning(f"rum_lock: took over lock '{name}' from {describe_holder(took_over)}: "
                        f"{dead_reason(holder, me)}")
