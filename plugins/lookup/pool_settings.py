# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pool_settings
short_description: A runner pool's settings on this host, from its runner_pool_* variables
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Reads the documented C(runner_pool_*) variables of the current host (see
    C(ansible-doc -t role rum.pool.runner_pool)), checks them and fills in the defaults, and returns
    them as one mapping with the C(runner_pool_) prefix taken off (C(runner_pool_size) becomes
    C(size)), plus C(lock_host).
  - This is the mapping the rum.pool.runner_pool role hands to rum.pool.runner_slot as
    C(runner_slot_pool).
  - "C(vm) is merged over its default C({vcpus: 2, memory_mb: 2048}), so V({domain_type: qemu}) keeps
    2 vCPUs and 2048 MiB. C(host) defaults to the short name of C(inventory_hostname)
    (P(rum.pool.host_short_name#filter)). C(backend) must be a known backend."
  - A backend may change defaults and need more settings; V(hyperv) defaults C(labels), C(runner_dir)
    and C(vm) to Windows values and needs C(vm.template), C(vm.path) and C(vm.switch_name), where
    V(libvirt) needs C(image).
  - C(lock_host) is the inventory host that holds the slots' locks, which depends on the backend
    (the hypervisor itself for V(libvirt), the controller, C(localhost), for V(hyperv)).
  - Variables named C(runner_pool_*) that are not settings (the roles' own facts) are not read.
options: {}
notes:
  - Fails, naming the variable, when a setting is missing, of the wrong type or not one of its
    choices. The message never shows the value of C(runner_pool_github).
  - The result holds the GitHub credentials; do not print it, and use C(no_log) on a task that
    stores it with M(ansible.builtin.set_fact).
seealso:
  - plugin: rum.pool.slot_guard
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Keep this host's pool settings (they hold the GitHub credentials)
  ansible.builtin.set_fact:
    runner_pool_settings: "{{ lookup('rum.pool.pool_settings') }}"
  no_log: true

- name: Recreate one slot by hand with the pool's settings
  ansible.builtin.include_role:
    name: rum.pool.runner_slot
  vars:
    runner_slot_pool: "{{ lookup('rum.pool.pool_settings') }}"
    runner_slot_name: ci-hv1-1
    runner_slot_action: recreate
"""

RETURN = r"""
_raw:
  description: One mapping, the settings (C(name), C(size), C(labels), C(runner_group), C(runner_group_id),
    C(registration), C(github), C(github_delegate_to), C(image), C(vm), C(runner_dir), C(runner_user),
    C(online_timeout), C(wait_online), C(lock_timeout), C(backend), C(host), C(state)) and C(lock_host).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.rum.pool.plugins.module_utils._pool_settings import PREFIX, SETTINGS, pool_settings
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError


class LookupModule(LookupBase):
    """Only the known settings are read (and templated), so the roles' own facts never are."""

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if terms:
            raise AnsibleLookupError("rum.pool.pool_settings takes no terms: it reads the runner_pool_* variables")
        variables = variables or {}
        values = {}
        for key in SETTINGS:
            try:
                raw = variables[PREFIX + key]
            except KeyError:
                continue
            values[key] = self._templar.template(raw)
        try:
            hostname = self._templar.template(variables["inventory_hostname"])
        except KeyError:
            raise AnsibleLookupError("rum.pool.pool_settings needs a host: inventory_hostname is not set") from None
        try:
            return [pool_settings(values, hostname)]
        except SlotError as exc:
            raise AnsibleLookupError(str(exc)) from None
