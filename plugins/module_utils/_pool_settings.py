# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A runner pool's settings on one host: the ``runner_pool_*`` variables, checked, with defaults.

Internal to the rum.pool collection: not a public API. The runner_pool role reads the documented
``runner_pool_*`` variables through the ``rum.pool.pool_settings`` lookup, which calls
``pool_settings`` below, and hands the one mapping it returns to runner_slot as ``runner_slot_pool``:
no variable is renamed on the way down. ``roles/runner_pool/meta/argument_specs.yml`` documents the
same variables; a unit test proves the two agree (names, types, defaults, choices).

``BACKENDS`` is the list of known backends. A backend is a folder of task files,
``roles/runner_slot/tasks/backends/<name>/``, and one entry here saying where it holds a slot's
lock: ``host`` (on the hypervisor, ``rum.pool.rum_lock`` runs there) or ``controller`` (for a host
that cannot run the lock module, such as a Windows Hyper-V host). ``BACKEND_NEEDS`` and
``BACKEND_DEFAULTS`` say what a backend cannot work without and which defaults it changes.
``BATCH_BACKENDS`` are the backends with a batch module, ``rum.pool.rum_slots``, which works on
many slots of a host in one call (and stages their next generations); the others go slot by slot
through the runner_slot role.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from ansible_collections.rum.pool.plugins.module_utils._runner_cache import CacheUrlError, check_url
from ansible_collections.rum.pool.plugins.module_utils._slot import (
    SlotError,
    as_int,
    host_short_name,
    validate_pool_name,
)

PREFIX = "runner_pool_"

BACKENDS = {
    "libvirt": "host",
    "hyperv": "controller",
}
# The settings a backend cannot work without ("vm.<key>" is a key of runner_pool_vm), checked before
# anything is done, and the defaults it changes (a Windows guest: its labels, runner folder, memory).
BACKEND_NEEDS = {
    "libvirt": ("image",),
    "hyperv": ("vm.template", "vm.path", "vm.switch_name"),
}
BATCH_BACKENDS = ("libvirt",)
BACKEND_DEFAULTS: dict[str, dict[str, t.Any]] = {
    "hyperv": {"labels": ["self-hosted", "windows", "x64"], "runner_dir": "C:\\actions-runner",
               "vm": {"vcpus": 2, "memory_mb": 4096}},
}
_NEEDED_FOR = {
    "image": "the runner image, {url, checksum}",
    "vm.template": "the template VHDX on the Hyper-V host",
    "vm.path": "the folder on the Hyper-V host that holds the VMs and their seeds",
    "vm.switch_name": "the virtual switch the VMs connect to",
}

_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class Setting(t.NamedTuple):
    """One setting: its type, its default, and what else it must satisfy."""

    type: str  # str, int, bool, list (of str) or dict
    default: t.Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int = 0


SETTINGS: dict[str, Setting] = {
    "name": Setting("str", required=True),
    "size": Setting("int", 2),
    "labels": Setting("list", ["self-hosted", "linux", "x64"]),
    "runner_group": Setting("str", "Default"),
    "runner_group_id": Setting("int", minimum=1),
    "registration": Setting("str", "jit", choices=("jit", "token")),
    "github": Setting("dict", required=True),
    "github_delegate_to": Setting("str", "localhost"),
    "image": Setting("dict"),  # required by the backends that use it (BACKEND_NEEDS)
    # merged over the defaults: {domain_type: qemu} keeps 2 vCPUs and 2048 MiB
    "vm": Setting("dict", {"vcpus": 2, "memory_mb": 2048}),
    "runner_dir": Setting("str", "/opt/actions-runner"),
    "runner_user": Setting("str", "runner"),
    # a self-hosted Actions cache server for the runners' jobs (the runner bootstraps' cache_url)
    "cache_url": Setting("str"),
    "online_timeout": Setting("int", 600),
    "wait_online": Setting("bool", False),
    "lock_timeout": Setting("int", 600),
    # the batch module (BATCH_BACKENDS), the default where pool_settings() allows it: how many slots it works
    # on at once, and whether it stages (a batch-made slot's VM folder and network filter carry its
    # generation's name, <slot>.<suffix>; <storage_dir>/<slot> links to the folder)
    "batch": Setting("bool", True),
    "concurrency": Setting("int", 8, minimum=1),
    "stage": Setting("bool", True),
    "backend": Setting("str", "libvirt", choices=tuple(BACKENDS)),
    "host": Setting("str"),  # default: the short name of inventory_hostname
    "state": Setting("str", "present", choices=("present", "absent")),
    # default-deny guest networking (rum_vm's network_filter), merged over the default; see isolation()
    "isolation": Setting("dict", {"enabled": True, "engine": "auto", "github": True, "allow": [], "deny": [],
                                  "public_ports": [443]}),
}
SECRET = ("github",)  # never shown in a message


def _checked(key: str, spec: Setting, value: t.Any) -> t.Any:
    what = PREFIX + key
    got = "a %s" % type(value).__name__ if key in SECRET else repr(value)
    if spec.type == "int":
        return as_int(value, what, spec.minimum)
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _BOOLEANS:
            return _BOOLEANS[str(value).strip().lower()]
        raise SlotError("%s must be true or false, got %s" % (what, got))
    if spec.type == "list":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                not all(isinstance(item, str) and item for item in value):
            raise SlotError("%s must be a list of non-empty strings, got %s" % (what, got))
        return list(value)
    if spec.type == "dict":
        if not isinstance(value, t.Mapping):
            raise SlotError("%s must be a dict, got %s" % (what, got))
        return dict(value)
    if not isinstance(value, str) or not value.strip():
        raise SlotError("%s must be a non-empty string, got %s" % (what, got))
    if spec.choices and value not in spec.choices:
        if key == "backend":
            raise SlotError("%s: %r is not a known backend (known: %s)" % (what, value, ", ".join(spec.choices)))
        raise SlotError("%s must be one of %s, got %r" % (what, ", ".join(spec.choices), value))
    return value


def pool_settings(values: t.Mapping[str, t.Any], inventory_hostname: str) -> dict[str, t.Any]:
    """The pool's settings from ``values`` (setting name without the prefix -> value).

    A missing or null value takes the default (the backend's own, where ``BACKEND_DEFAULTS`` has one);
    ``vm`` is merged over its default. The result has every key of ``SETTINGS`` and ``lock_host``, the
    inventory host that holds the slot locks.
    """
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        names = ", ".join(PREFIX + key for key in unknown)
        raise SlotError("unknown pool setting%s: %s" % ("s" if len(unknown) > 1 else "", names))
    backend = values.get("backend")
    backend = _checked("backend", SETTINGS["backend"], backend) if backend is not None else SETTINGS["backend"].default
    defaults = BACKEND_DEFAULTS.get(backend, {})
    out: dict[str, t.Any] = {}
    for key, spec in SETTINGS.items():
        value = values.get(key)
        if value is None:
            if spec.required:
                raise SlotError("%s%s is required" % (PREFIX, key))
            default = defaults.get(key, spec.default)
            out[key] = default.copy() if isinstance(default, (dict, list)) else default
        else:
            out[key] = _checked(key, spec, value)
    out["name"] = validate_pool_name(out["name"])
    out["host"] = host_short_name(out["host"] if out["host"] is not None else inventory_hostname)
    out["vm"] = dict(defaults.get("vm", SETTINGS["vm"].default), **out["vm"])
    for need in BACKEND_NEEDS.get(backend, ()):
        key, _dot, vm_key = need.partition(".")
        value = out["vm"].get(vm_key) if vm_key else out[key]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SlotError("%s%s is required with %sbackend %s (%s)" % (PREFIX, need, PREFIX, backend, _NEEDED_FOR[need]))
    if not out["github"]:
        raise SlotError("%sgithub must hold the GitHub scope and credentials (the rum.pool.github options)" % PREFIX)
    out["isolation"] = isolation(out["isolation"], out["github"], out["vm"])
    if out["cache_url"] is not None:
        try:
            check_url(out["cache_url"], PREFIX + "cache_url")
        except CacheUrlError as exc:
            raise SlotError(str(exc)) from None
    out["lock_host"] = inventory_hostname if BACKENDS[out["backend"]] == "host" else "localhost"
    # rum_slots calls GitHub from the controller: another github_delegate_to keeps the slot-by-slot path
    out["batch"] = out["batch"] and backend in BATCH_BACKENDS and out["github_delegate_to"] == "localhost"
    # a staged generation waits for hours: a JIT runner does, a registration token (one hour) does not
    out["stage"] = out["stage"] and out["batch"] and out["registration"] == "jit"
    return out


def isolation(value: t.Mapping[str, t.Any], github: t.Mapping[str, t.Any],
              vm: t.Mapping[str, t.Any] | None = None) -> dict[str, t.Any]:
    """runner_pool_isolation over its default, as rum_vm's ``network_filter`` option.

    With ``github`` (the default) the host and port of ``runner_pool_github.api_url``, when it is
    set (a GitHub Enterprise Server, which may well sit on a private address), join ``allow``: the
    runners must reach it. github.com itself is public HTTPS, open anyway.

    ``engine: auto`` (the default) is ``nftables`` (one ruleset for the host: a guest's start costs
    milliseconds) unless a NIC of ``vm.interfaces`` is on a host bridge, which only ``nwfilter`` holds.
    """
    default = SETTINGS["isolation"].default
    unknown = sorted(set(value) - set(default))
    if unknown:
        raise SlotError("%sisolation: unknown key%s %s (known: %s)" % (
            PREFIX, "s" if len(unknown) > 1 else "", ", ".join(map(str, unknown)), ", ".join(sorted(default))))
    out = {key: (list(item) if isinstance(item, list) else item) for key, item in dict(default, **value).items()}
    for key in ("enabled", "github"):
        out[key] = _checked("isolation.%s" % key, Setting("bool"), out[key])
    if out["engine"] not in ("auto", "nwfilter", "nftables"):
        raise SlotError("%sisolation.engine %r is not one of auto, nwfilter, nftables" % (PREFIX, out["engine"]))
    if out["engine"] == "auto":
        nics = (vm or {}).get("interfaces") or []
        bridged = any(isinstance(nic, t.Mapping) and nic.get("bridge") for nic in nics)
        out["engine"] = "nwfilter" if bridged else "nftables"
    for key in ("allow", "deny", "public_ports"):
        if isinstance(out[key], (str, t.Mapping)) or not isinstance(out[key], (list, tuple)):
            raise SlotError("%sisolation.%s must be a list, got %r" % (PREFIX, key, out[key]))
        out[key] = list(out[key])
    api_url = github.get("api_url")
    if out.pop("github") and out["enabled"] and isinstance(api_url, str) and api_url.strip():
        parts = urlsplit(api_url.strip())
        try:
            port = parts.port or (80 if parts.scheme == "http" else 443)
        except ValueError:
            raise SlotError("%sgithub.api_url %r has a bad port" % (PREFIX, api_url)) from None
        if parts.hostname and parts.hostname != "api.github.com":
            out["allow"].append({"address": parts.hostname, "ports": [port], "protocol": "tcp"})
    return out
