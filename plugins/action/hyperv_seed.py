# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum.pool.hyperv_seed: a NoCloud seed built on the controller, put on the task's host.

A Hyper-V host runs no Python, so neither rum_seed_iso nor the seed library can run there. This
plugin builds the ISO in memory on the controller with the same library (``_seed``) and hands the
bytes to the connection's own file transfer (WinRM, PSRP or SSH), so the pool needs no other
collection. Only the connection plugin and its shell see the host: the same code serves a POSIX
host (the test suite's stand-in), where the file is then made private to its owner.
"""

from __future__ import annotations

import hashlib
import re
import typing as t

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.rum.pool.plugins.module_utils import _seed

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")  # hyperv_vm's VM names
ARGUMENT_SPEC = {
    "path": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "user_data": {"type": "raw"},
    "meta_data": {"type": "dict", "default": {}},
    "instance_id": {"type": "str"},
}


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        name = args["name"]
        if not NAME.match(name):
            raise AnsibleActionFail(f"hyperv_seed: name {name!r}: a VM name, 1 to 100 characters from "
                                    "A-Z a-z 0-9 . _ -, starting with a letter or digit")
        if not args["path"].strip():
            raise AnsibleActionFail("hyperv_seed: path must name the folder on the host that holds the VMs")
        if not _seed.HAS_PYCDLIB:
            raise AnsibleActionFail("hyperv_seed: the pycdlib library is required on the controller "
                                    "(pip install pycdlib)")
        try:
            content = _seed.make_seed(args["user_data"], args["meta_data"], instance_id=args["instance_id"])
            data = _seed.build_iso_bytes(content)
        except _seed.SeedError as exc:  # names the field, never its value
            raise AnsibleActionFail(f"hyperv_seed: the seed of VM '{name}': {exc}") from None
        shell = self._connection._shell
        path = shell.join_path(args["path"], f"{name}-seed.iso")
        result.update(changed=True, path=path, instance_id=content.instance_id, size=len(data),
                      sha256=hashlib.sha256(data).hexdigest())
        if self._task.check_mode:
            return result
        host = (task_vars or {}).get("inventory_hostname", "the host")
        try:
            self._transfer_data(path, data)
            if shell.SHELL_FAMILY != "powershell":  # on Windows the file takes the folder's access list
                done = self._remote_chmod([path], "0600")
                if done.get("rc"):
                    raise AnsibleError(f"chmod 0600 failed: {done.get('stderr', '').strip()}")
        except AnsibleError as exc:
            raise AnsibleActionFail(f"hyperv_seed: cannot put the seed of VM '{name}' at '{path}' on {host} "
                                    f"(does the folder exist, writable by the connection's user?): {exc}") from None
        return result
