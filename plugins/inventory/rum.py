# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rum
short_description: The VMs rum.pool manages on one or more libvirt hosts
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Lists the libvirt domains created by M(rum.pool.rum_vm) on each of O(uris) and makes each an
    inventory host with C(ansible_host), C(ansible_port), C(ansible_user) and
    C(ansible_ssh_private_key_file) set from what the VM was created with, so that
    C(ansible -i inventory.rum.yml all -m ping) reaches the guests (C(rum ssh), C(rum exec) and
    C(rum provision) of this collection).
  - Hosts are put in the groups C(rum), C(rum_<state>) and C(rum_label_<key>_<value>), plus any the
    O(groups) and O(keyed_groups) options make.
  - Domains rum.pool did not create are ignored.
  - The inventory file must be named C(*.rum.yml) or C(*.rum.yaml).
extends_documentation_fragment:
  - constructed
requirements:
  - libvirt-python (on the controller)
options:
  plugin:
    description: Marks this as an inventory source for this plugin.
    type: str
    required: true
    choices: [rum.pool.rum]
  uris:
    description: libvirt URIs to list (for example V(qemu+ssh://root@hv1/system) for a remote host).
    type: list
    elements: str
    default: [qemu:///system]
  running_only:
    description: Only list running VMs (the others cannot be reached).
    type: bool
    default: true
  labels:
    description: Only list VMs whose labels include all of these key/value pairs.
    type: dict
    default: {}
"""

EXAMPLES = r"""
# inventory.rum.yml
plugin: rum.pool.rum
uris:
  - qemu:///system
  - qemu+ssh://root@hv2.example.com/system
keyed_groups:
  - key: rum_labels.pool | default('none')
    prefix: pool
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
"""

import re

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils._inventory import list_vms


def _group_part(value) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", str(value))


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "rum.pool.rum"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith((".rum.yml", ".rum.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if not lv.HAS_LIBVIRT:
            raise AnsibleParserError("the rum.pool.rum inventory plugin needs libvirt-python on the controller")
        strict = self.get_option("strict")
        self.inventory.add_group("rum")
        for uri in self.get_option("uris"):
            try:
                vms = list_vms(uri, labels=self.get_option("labels"))
            except lv.LibvirtError as exc:
                raise AnsibleParserError(f"rum.pool.rum inventory: {exc}") from exc
            for vm in vms:
                if self.get_option("running_only") and vm["state"] != "running":
                    continue
                self._add_vm(vm, strict)

    def _add_vm(self, vm: dict, strict: bool) -> None:
        name = vm["name"]
        self.inventory.add_host(name, group="rum")
        state_group = f"rum_{_group_part(vm['state'])}"
        self.inventory.add_group(state_group)
        self.inventory.add_child(state_group, name)
        for key, value in (vm.get("labels") or {}).items():
            group = f"rum_label_{_group_part(key)}_{_group_part(value)}"
            self.inventory.add_group(group)
            self.inventory.add_child(group, name)
        ssh = vm.get("ssh") or {}
        hostvars = {
            "ansible_host": ssh.get("host"),
            "ansible_port": ssh.get("port"),
            "ansible_user": ssh.get("user"),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
        if ssh.get("identity_file"):
            hostvars["ansible_ssh_private_key_file"] = ssh["identity_file"]
        for key, value in vm.items():
            hostvars[f"rum_{key}"] = value
        for key, value in hostvars.items():
            if value is not None:
                self.inventory.set_variable(name, key, value)
        all_vars = self.inventory.get_host(name).get_vars()
        self._set_composite_vars(self.get_option("compose"), all_vars, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), all_vars, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), all_vars, name, strict=strict)
