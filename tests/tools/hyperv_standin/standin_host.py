# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TEST STAND-IN for a Hyper-V host: what rum.pool.hyperv_vm and rum.pool.hyperv_vm_info do there.

Not part of the collection. tests/tools/hyperv_standin copies the collection for a test and puts this
file into the copy as ``plugins/module_utils/_hyperv_standin.py``, with ``STATE_DIR`` set; the copy's
``hyperv_vm.py`` and ``hyperv_vm_info.py`` keep their real DOCUMENTATION and run ``main`` below in
place of the PowerShell. So the pool's real role tasks run against an inventory host on this machine
(the local connection) and every call is recorded.

It keeps the "host" in ``STATE_DIR/host.json`` (the virtual switches and the VMs, each with its Notes
as the real module writes them: the ``#rum.pool v1`` line and a JSON record), logs each call with its
parameters to ``STATE_DIR/calls.jsonl``, and makes and removes the files the real module would (the
VM's folder and a small stand-in for its differencing disk) under the ``path`` it is given. It checks
what the real one checks before creating (template, seed and switch exist) with the same messages.
It boots nothing: a VM is a record whose power state the test can change.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid

import yaml
from ansible.module_utils.basic import AnsibleModule

STATE_DIR = os.environ.get("RUM_HYPERV_STANDIN_DIR", "")  # the copy sets it in this file
MARKER = "#rum.pool v1"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
LIBVIRT_STATE = {"Running": "running", "Off": "shutoff", "Paused": "paused", "Saved": "shutoff"}
SETTINGS = ("vcpus", "memory_mb", "dynamic_memory", "memory_minimum_mb", "memory_maximum_mb", "switch_name",
            "vlan_id", "secure_boot", "secure_boot_template", "seed_iso", "kvp_items")


class StandInError(Exception):
    """What the real module would fail with (its message, without the module name)."""


def argument_spec(documentation: str) -> dict:
    """The module's argument spec from its DOCUMENTATION, so the stand-in takes exactly the documented options."""
    spec = {}
    for name, option in yaml.safe_load(documentation)["options"].items():
        entry = {"type": option.get("type", "str")}
        for key in ("default", "choices", "required", "elements", "no_log"):
            if key in option:
                entry[key] = option[key]
        spec[name] = entry
    return spec


class Host:
    """host.json under an exclusive lock: ``with Host() as host: host.state[...]``; written back on success."""

    def __init__(self, state_dir: str = "") -> None:
        self.dir = state_dir or STATE_DIR
        if not self.dir or not os.path.isdir(self.dir):
            raise StandInError(f"the Hyper-V stand-in has no state folder ({self.dir!r})")
        self.path = os.path.join(self.dir, "host.json")
        self.state: dict = {}
        self._lock = None
        self.dirty = False

    def __enter__(self) -> "Host":
        self._lock = open(os.path.join(self.dir, "host.lock"), "a", encoding="utf-8")  # pylint: disable=consider-using-with
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                self.state = json.load(handle)
        self.state.setdefault("switches", [])
        self.state.setdefault("vms", {})
        return self

    def __exit__(self, kind, *_rest) -> None:
        try:
            if kind is None and self.dirty:
                with open(self.path + ".tmp", "w", encoding="utf-8") as handle:
                    json.dump(self.state, handle, indent=1, sort_keys=True)
                os.replace(self.path + ".tmp", self.path)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def log(self, module: str, params: dict, check_mode: bool, result: dict) -> None:
        entry = {"t": time.time(), "module": module, "check_mode": check_mode,
                 "params": {k: v for k, v in params.items() if not k.startswith("_")},
                 "changed": result.get("changed", False), "failed": bool(result.get("failed")),
                 "msg": result.get("msg")}
        with open(os.path.join(self.dir, "calls.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")


def record(vm: dict) -> dict | None:
    """The JSON record of the VM's Notes; None for a VM rum.pool did not make."""
    lines = (vm.get("notes") or "").split("\n", 1)
    if lines[0].strip() != MARKER:
        return None
    return json.loads(lines[1]) if len(lines) > 1 else {"labels": {}, "files": {}}


def facts(vm: dict) -> dict:
    """What hyperv_vm_info reports for one VM (rum_vm_info's keys, libvirt's state words)."""
    rec = record(vm) or {}
    running = vm["power_state"] == "Running"
    return {
        "name": vm["name"], "uuid": vm["uuid"], "state": LIBVIRT_STATE.get(vm["power_state"], "nostate"),
        "power_state": vm["power_state"], "domain_type": "hyperv",
        "heartbeat": "OkApplicationsHealthy" if running else "NoContact", "autostart": False,
        "mac": vm["mac"], "macs": [vm["mac"]], "ip": None, "ip_source": None, "ips": [],
        "labels": {k: str(v) for k, v in rec.get("labels", {}).items()}, "managed": True,
        "ssh": None, "ssh_command": None, "ssh_config": None, "paths": rec.get("files", {}), "config_hash": None,
        "generation": 2, "vcpus": vm["settings"]["vcpus"], "memory_mb": vm["settings"]["memory_mb"],
        "switch_name": vm["settings"]["switch_name"],
    }


def _desired(params: dict) -> dict:
    out = {key: params.get(key) for key in SETTINGS}
    if not out["dynamic_memory"]:
        out["memory_minimum_mb"] = out["memory_maximum_mb"] = out["memory_mb"]
    out["kvp_items"] = {str(k): str(v) for k, v in (out["kvp_items"] or {}).items()}
    return out


def _create(host: Host, params: dict, check_mode: bool) -> tuple[dict | None, list]:
    name = params["name"]
    for required in ("template", "path", "switch_name"):
        if not params.get(required):
            raise StandInError(f"VM '{name}' does not exist: '{required}' is needed to create it")
    if not os.path.isfile(params["template"]):
        raise StandInError(f"template '{params['template']}' is not a file on this host")
    if params.get("seed_iso") and not os.path.isfile(params["seed_iso"]):
        raise StandInError(f"seed_iso '{params['seed_iso']}' is not a file on this host: copy the seed there first")
    if params["switch_name"] not in host.state["switches"]:
        raise StandInError(f"there is no virtual switch '{params['switch_name']}' on this host")
    folder = os.path.join(params["path"], name)
    disk = os.path.join(folder, "Virtual Hard Disks", f"{name}.vhdx")
    changes = [f"create VM '{name}' ({params['disk_type']} disk of '{params['template']}' in '{folder}')"]
    if params["state"] in ("running", "restarted"):
        changes.append(f"start VM '{name}'")
    if check_mode:
        return None, changes
    if os.path.exists(disk):
        raise StandInError(f"the disk '{disk}' already exists (left from an earlier VM?): remove it or pick another path")
    os.makedirs(os.path.dirname(disk), exist_ok=True)
    with open(disk, "w", encoding="utf-8") as handle:  # a stand-in for New-VHD -Differencing -ParentPath
        json.dump({"stand_in_for": "VHDX", "type": "Differencing" if params["disk_type"] == "differencing" else "Fixed",
                   "parent": params["template"] if params["disk_type"] == "differencing" else None}, handle)
    files = {"folder": folder, "disk": disk, "seed": params.get("seed_iso")}
    notes = {"labels": {str(k): str(v) for k, v in params["labels"].items()}, "files": files,
             "template": params["template"], "disk_type": params["disk_type"]}
    vm = {"name": name, "uuid": str(uuid.uuid4()), "mac": "00:15:5d:%02x:%02x:%02x" % tuple(os.urandom(3)),
          "power_state": "Running" if params["state"] in ("running", "restarted") else "Off",
          "notes": MARKER + "\n" + json.dumps(notes, separators=(",", ":")), "settings": _desired(params)}
    host.state["vms"][name] = vm
    host.dirty = True
    return vm, changes


def run_vm(host: Host, params: dict, check_mode: bool) -> dict:
    """hyperv_vm's decisions, in the stand-in's terms; returns the module's result."""
    name = params["name"]
    if not NAME.match(name):
        raise StandInError(f"name '{name}': 1 to 100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit")
    vm = host.state["vms"].get(name)
    if vm is not None and record(vm) is None:
        raise StandInError(f"VM '{name}' was not made by rum.pool (its Notes do not start with '{MARKER}'): not touched")
    state = params["state"]
    if state == "absent":
        if vm is None:
            return {"changed": False, "changes": [], "vm": None}
        if not check_mode:
            files = record(vm).get("files", {})
            for kind in ("disk", "seed"):
                if files.get(kind) and os.path.isfile(files[kind]):
                    os.remove(files[kind])
            if files.get("folder") and os.path.isdir(files["folder"]):
                shutil.rmtree(files["folder"])
            del host.state["vms"][name]
            host.dirty = True
        return {"changed": True, "changes": [f"remove VM '{name}' and its files"], "vm": None,
                "diff": {"before": {"state": vm["power_state"]}, "after": {"state": "absent"}}}
    if vm is None:
        vm, changes = _create(host, params, check_mode)
        return {"changed": True, "changes": changes, "vm": facts(vm) if vm else None,
                "diff": {"before": {"state": "absent"}, "after": dict(_desired(params), state=state)}}
    changes = []
    desired = _desired(params)
    differ = [key for key in SETTINGS if vm["settings"].get(key) != desired[key]]
    before = dict(vm["settings"], state=vm["power_state"])
    if differ:
        changes.append(f"change {', '.join(differ)} of VM '{name}'")
    power = {"running": "Running", "restarted": "Running", "stopped": "Off"}.get(state, vm["power_state"])
    if power != vm["power_state"] or state == "restarted":
        changes.append(f"{'start' if power == 'Running' else 'stop'} VM '{name}'")
    if changes and not check_mode:
        vm["settings"].update({key: desired[key] for key in differ})
        vm["power_state"] = power
        host.dirty = True
    return {"changed": bool(changes), "changes": changes, "vm": facts(vm),
            "diff": {"before": before, "after": dict(vm["settings"], state=power)}}


def run_info(host: Host, params: dict) -> dict:
    wanted = {str(k): str(v) for k, v in (params.get("labels") or {}).items()}
    vms = []
    for name in sorted(host.state["vms"]):
        vm = host.state["vms"][name]
        if record(vm) is None or (params.get("name") and name != params["name"]):
            continue
        found = facts(vm)
        if all(found["labels"].get(k) == v for k, v in wanted.items()):
            vms.append(found)
    return {"changed": False, "vms": vms}


def main(module_name: str, documentation: str) -> None:
    """The stand-in module: the documented argument spec, the decision, the call logged."""
    module = AnsibleModule(argument_spec=argument_spec(documentation), supports_check_mode=True)
    try:
        with Host() as host:
            try:
                if module_name == "hyperv_vm":
                    result = run_vm(host, module.params, module.check_mode)
                else:
                    result = run_info(host, module.params)
            except StandInError as exc:
                result = {"failed": True, "msg": f"{module_name}: {exc}"}
            host.log(module_name, module.params, module.check_mode, result)
    except StandInError as exc:
        module.fail_json(msg=f"{module_name} (stand-in): {exc}")
    if result.get("failed"):
        module.fail_json(msg=result["msg"])
    module.exit_json(**result)
