# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum_vm's options, declared once.

Internal to the rum.pool collection: not a public API. ``OPTIONS`` is the one table of rum_vm's
options (name, type, default, choices, required, elements, suboptions); the module's argument spec
(``argument_spec``) and the parameter object the core works with (``VMParams``) are both made from
it, so they cannot drift apart. The module's DOCUMENTATION says the same in prose;
tests/unit/plugins/module_utils/test_vm_options.py proves the three agree, and
tests/integration/test_rum_vm.py proves playbooks/vm.yml hands every option through.
"""

from __future__ import annotations

import copy
import dataclasses
import typing as t

from ansible_collections.rum.pool.plugins.module_utils._domain import DOMAIN_TYPES, FIRMWARES, MOUNT_DRIVERS
from ansible_collections.rum.pool.plugins.module_utils._libvirt import DEFAULT_URI
from ansible_collections.rum.pool.plugins.module_utils._ready import WAIT_LEVELS

STATES = ("running", "present", "stopped", "restarted", "absent")
# seed_bus -> (libvirt disk bus, target device)
SEED_BUSES = {"virtio-scsi": ("scsi", "sda"), "sata": ("sata", "sda"), "ide": ("ide", "hdc")}
APPLY_CHANGES = ("next_boot", "restart", "fail")
# virtiofs, because the kernels of Debian's cloud images have virtiofs and no 9p at all.
DEFAULT_MOUNT_DRIVER = "virtiofs"
# File systems that span several drives (rum's [[fs.btrfs]] and [[fs.zfs]]).
MULTI_DRIVE_FILESYSTEMS = ("btrfs", "zfs")


@dataclasses.dataclass(frozen=True)
class Option:
    """One module option, in the terms of Ansible's argument spec."""

    name: str
    type: str = "str"
    default: t.Any = None
    choices: tuple[str, ...] = ()
    required: bool = False
    elements: str | None = None
    suboptions: tuple[Option, ...] = ()
    no_log: bool | None = None
    # False for options that say how this run acts (power state, waiting), not what the VM is:
    # they are left out of the VM's config hash.
    shapes_vm: bool = True

    def spec(self) -> dict[str, t.Any]:
        """This option's entry in an Ansible argument spec."""
        out: dict[str, t.Any] = {"type": self.type}
        if self.required:
            out["required"] = True
        if self.default is not None:
            out["default"] = copy.deepcopy(self.default)
        if self.choices:
            out["choices"] = list(self.choices)
        if self.elements:
            out["elements"] = self.elements
        if self.suboptions:
            out["options"] = {sub.name: sub.spec() for sub in self.suboptions}
        if self.no_log is not None:
            out["no_log"] = self.no_log
        return out


def _opt(name: str, type: str = "str", **more: t.Any) -> Option:  # pylint: disable=redefined-builtin
    return Option(name, type, **more)


# One entry of network_filter's allow and deny lists.
FILTER_ENTRY: tuple[Option, ...] = (
    _opt("address", required=True),
    _opt("ports", "list", elements="raw", default=[]),
    _opt("protocol", default="tcp", choices=("tcp", "udp", "any")),
)

OPTIONS: tuple[Option, ...] = (
    _opt("name", required=True),
    _opt("state", default="running", choices=STATES, shapes_vm=False),
    _opt("uri", default=DEFAULT_URI),
    _opt("domain_type", default="auto", choices=("auto",) + DOMAIN_TYPES),
    _opt("machine", default="q35"),
    _opt("arch", default="x86_64"),
    _opt("firmware", default="bios", choices=FIRMWARES),
    _opt("vcpus", "int", default=2),
    _opt("memory_mb", "int", default=1024),
    _opt("image", "dict", suboptions=(
        _opt("url", required=True),
        _opt("checksum"),
    )),
    _opt("disk_size"),
    _opt("drives", "list", elements="dict", default=[], suboptions=(
        _opt("name", required=True),
        _opt("size", required=True),
        _opt("filesystem"),
        _opt("mount"),
    )),
    # rum's [[fs.btrfs]] / [[fs.zfs]]: one file system over several drives.
    _opt("filesystems", "list", elements="dict", default=[], suboptions=(
        _opt("type", required=True, choices=MULTI_DRIVE_FILESYSTEMS),
        _opt("drives", "list", elements="str", required=True),
        _opt("mount", required=True),
        _opt("mode"),
        _opt("pool"),
    )),
    _opt("interfaces", "list", elements="dict", suboptions=(
        _opt("network"),
        _opt("bridge"),
        _opt("user", "bool"),
        _opt("mac"),
        _opt("model", default="virtio"),
        _opt("ip"),
        _opt("isolated", "bool", default=False),
    )),
    _opt("ports", "list", elements="dict", default=[], suboptions=(
        _opt("host", "int", required=True),
        _opt("guest", "int", required=True),
        _opt("bind", default="127.0.0.1"),
    )),
    _opt("mounts", "list", elements="dict", default=[], suboptions=(
        _opt("source", "path", required=True),
        _opt("target", required=True),
        _opt("readonly", "bool", default=False),
        _opt("tag"),
        _opt("driver", default=DEFAULT_MOUNT_DRIVER, choices=MOUNT_DRIVERS),
        _opt("default", "bool", default=False),
    )),
    _opt("project_dir", "path"),
    _opt("hostname"),
    _opt("user", default="rum"),
    _opt("user_groups", "list", elements="str", default=[]),
    _opt("ssh_authorized_keys", "list", elements="str", default=[], no_log=False),
    _opt("generate_ssh_key", "bool", default=True, no_log=False),
    _opt("ssh_interface"),
    _opt("ssh_client", default="ssh"),
    _opt("provision_script"),
    _opt("boot_script"),
    _opt("autologin", "bool", default=False),
    _opt("packages", "list", elements="str", default=[]),
    _opt("user_data", "raw"),
    _opt("network_config", "raw"),
    _opt("vendor_data", "raw"),
    _opt("meta_data", "dict"),
    _opt("instance_id"),
    _opt("seed_bus", default="virtio-scsi", choices=tuple(SEED_BUSES)),
    # The seed leaves the VM once read, and default-deny guest networking (_seed_eject.py, _nwfilter.py).
    _opt("seed_eject", "bool", default=False),
    _opt("network_filter", "dict", suboptions=(
        _opt("enabled", "bool", default=True),
        _opt("engine", default="nwfilter", choices=("nwfilter", "nftables")),
        _opt("allow", "list", elements="dict", default=[], suboptions=FILTER_ENTRY),
        _opt("deny", "list", elements="dict", default=[], suboptions=FILTER_ENTRY),
        _opt("public_ports", "list", elements="raw", default=[443]),
    )),
    _opt("kernel", "path"),
    _opt("initrd", "path"),
    _opt("kernel_args"),
    _opt("reset", "bool", default=False, shapes_vm=False),
    _opt("apply_changes", default="next_boot", choices=APPLY_CHANGES, shapes_vm=False),
    _opt("wait_for", default="none", choices=WAIT_LEVELS, shapes_vm=False),
    _opt("wait_timeout", "int", default=300, shapes_vm=False),
    _opt("shutdown_timeout", "int", default=60, shapes_vm=False),
    _opt("storage_dir", "path"),
    _opt("image_cache_dir", "path"),
    _opt("autostart", "bool", default=False),
    _opt("labels", "dict", default={}),
    _opt("origin"),
)

# The options that do not change what the VM is (left out of its config hash).
RUN_ONLY = frozenset(o.name for o in OPTIONS if not o.shapes_vm)

# Ansible option type -> the Python type the parameter object declares for it.
PYTHON_TYPES: dict[str, t.Any] = {"str": str, "path": str, "int": int, "bool": bool, "list": list,
                                  "dict": dict, "raw": t.Any}


def argument_spec() -> dict[str, dict[str, t.Any]]:
    """rum_vm's argument spec (a fresh copy each call)."""
    return {option.name: option.spec() for option in OPTIONS}


def _field(option: Option) -> tuple:
    """(name, type[, field]) for make_dataclass."""
    # pylint: disable=invalid-field-call  # the fields are for the make_dataclass call below
    kind = PYTHON_TYPES[option.type]
    if option.required:
        return option.name, kind
    if option.default is None:
        return option.name, t.Optional[kind], dataclasses.field(default=None)
    if isinstance(option.default, (list, dict)):
        return option.name, kind, dataclasses.field(default_factory=lambda d=option.default: copy.deepcopy(d))
    return option.name, kind, dataclasses.field(default=option.default)


def _from_dict(cls, values: dict[str, t.Any]):
    """The parameters from a dict of option values; None or missing values take the default."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known and v is not None})


VMParams = dataclasses.make_dataclass(
    "VMParams", [_field(option) for option in OPTIONS],
    namespace={"from_dict": classmethod(_from_dict),
               "__doc__": "rum_vm's options after defaults: one attribute per entry of OPTIONS."},
)
VMParams.__module__ = __name__
