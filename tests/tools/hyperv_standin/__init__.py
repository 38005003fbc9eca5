# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in Hyper-V host for the pool's ``hyperv`` path (test tooling; see README.md beside this file).

``HyperVStandIn(folder)`` makes, under ``folder``:

- ``collections/ansible_collections/rum/pool``: a test-only copy of the collection in which the two
  Windows modules are replaced by Python stand-ins (``standin_host.py``) that keep their real
  DOCUMENTATION (so their argument specs), and nothing else is changed: the roles, playbooks, filters,
  the seed plugin and the rest run as shipped;
- ``host/``: the stand-in host's disk (``templates/windows-runner.vhdx``, ``vms/``);
- ``state/``: ``host.json`` (switches and VMs) and ``calls.jsonl`` (every call and its parameters).
"""

from __future__ import annotations

import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
MODULES = ("hyperv_vm", "hyperv_vm_info")
SWITCH = "rum"
BANNER = "# TEST STAND-IN: made by tests/tools/hyperv_standin; this module never touches Hyper-V.\n"


class HyperVStandIn:
    def __init__(self, folder) -> None:
        self.folder = str(folder)
        self.collections = os.path.join(self.folder, "collections")
        self.copy = os.path.join(self.collections, "ansible_collections", "rum", "pool")
        self.state = os.path.join(self.folder, "state")
        self.host = os.path.join(self.folder, "host")
        self.template = os.path.join(self.host, "templates", "windows-runner.vhdx")
        self.vm_folder = os.path.join(self.host, "vms")
        for path in (self.state, os.path.dirname(self.template), self.vm_folder):
            os.makedirs(path, exist_ok=True)
        with open(self.template, "w", encoding="utf-8") as handle:
            handle.write("stand-in template VHDX\n")
        self._write_state({"switches": [SWITCH], "vms": {}})
        self._copy_collection()

    def _copy_collection(self) -> None:
        os.makedirs(self.copy)
        for part in ("galaxy.yml", "meta", "plugins", "roles", "playbooks"):
            source = os.path.join(ROOT, part)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(self.copy, part), ignore=shutil.ignore_patterns("molecule", "__pycache__"))
            else:
                shutil.copy(source, os.path.join(self.copy, part))
        with open(os.path.join(HERE, "standin_host.py"), encoding="utf-8") as handle:
            code = handle.read()
        setting = 'STATE_DIR = os.environ.get("RUM_HYPERV_STANDIN_DIR", "")'
        assert setting in code
        utils = os.path.join(self.copy, "plugins", "module_utils", "_hyperv_standin.py")
        with open(utils, "w", encoding="utf-8") as handle:
            handle.write(code.replace(setting, f"STATE_DIR = {self.state!r}"))
        for name in MODULES:
            os.remove(os.path.join(self.copy, "plugins", "modules", f"{name}.ps1"))
            path = os.path.join(self.copy, "plugins", "modules", f"{name}.py")
            with open(path, encoding="utf-8") as handle:
                docs = handle.read()
            assert "DOCUMENTATION = " in docs and "def main" not in docs, f"{name}.py is no longer documentation only"
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(BANNER + docs + "\n\nfrom ansible_collections.rum.pool.plugins.module_utils._hyperv_standin import main"
                             f"  # noqa: E402\n\nif __name__ == '__main__':\n    main({name!r}, DOCUMENTATION)\n")
        with open(os.path.join(self.copy, "STAND-IN.md"), "w", encoding="utf-8") as handle:
            handle.write("A test-only copy of rum.pool: hyperv_vm and hyperv_vm_info are stand-ins "
                         "(tests/tools/hyperv_standin). Never install or ship it.\n")

    def _write_state(self, state: dict) -> None:
        with open(os.path.join(self.state, "host.json"), "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)

    def read_state(self) -> dict:
        with open(os.path.join(self.state, "host.json"), encoding="utf-8") as handle:
            return json.load(handle)

    def vms(self) -> dict:
        return self.read_state()["vms"]

    def calls(self, module: str | None = None, since: int = 0) -> list:
        """The calls recorded so far (from the ``since``-th on), optionally of one module."""
        path = os.path.join(self.state, "calls.jsonl")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as handle:
            entries = [json.loads(line) for line in handle if line.strip()][since:]
        return [e for e in entries if module is None or e["module"] == module]

    def count(self) -> int:
        return len(self.calls())

    def power_off(self, name: str) -> None:
        """What a runner guest does after its one job: the VM is off."""
        state = self.read_state()
        state["vms"][name]["power_state"] = "Off"
        self._write_state(state)

    def notes(self, name: str) -> dict:
        """The record in the VM's Notes (first line the marker, then JSON), as the real module writes it."""
        first, _newline, body = self.read_state()["vms"][name]["notes"].partition("\n")
        assert first == "#rum.pool v1", first
        return json.loads(body)
