#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The module is hyperv_vm_info.ps1 (it runs on the Hyper-V host); this file holds its documentation.

from __future__ import annotations

DOCUMENTATION = r"""
module: hyperv_vm_info
short_description: Report the VMs that rum.pool manages on a Hyper-V host
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Lists the Hyper-V VMs made by M(rum.pool.hyperv_vm) (those whose Notes start with C(#rum.pool v1)),
    with their power state, addresses and labels - the Hyper-V counterpart of M(rum.pool.rum_vm_info),
    and the pool's observation step on a Hyper-V host.
  - Each entry has the keys M(rum.pool.rum_vm_info) returns, with the power state in the same libvirt
    words, so the pool's planner reads both alike.
  - VMs that rum.pool did not make are not reported. A VM whose Notes carry the marker but a broken
    record is skipped with a warning.
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.info_module
attributes:
  platform:
    platforms: windows
    support: full
  action_group:
    description: Use C(group/rum.pool.hyperv) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - rum.pool.hyperv
options:
  name:
    description: Report only this VM. An unknown name gives an empty list, not an error.
    type: str
  labels:
    description: Report only VMs whose labels include all of these key/value pairs (compared as strings).
    type: dict
    default: {}
  addresses:
    description: Report the IPv4 addresses running guests give through the integration services.
    type: bool
    default: true
seealso:
  - module: rum.pool.hyperv_vm
  - module: rum.pool.rum_vm_info
"""

EXAMPLES = r"""
- name: The VMs of one pool on this Hyper-V host
  rum.pool.hyperv_vm_info:
    labels:
      pool: ci
  register: pool_vms

- name: Name and state of each
  ansible.builtin.debug:
    msg: "{{ pool_vms.vms | items2dict(key_name='name', value_name='state') }}"
"""

RETURN = r"""
vms:
  description: One entry per VM, sorted by name; M(rum.pool.hyperv_vm) returns the same for its VM.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
    uuid:
      description: The VM's id.
      type: str
    state:
      description:
        - Power state in libvirt's words, as M(rum.pool.rum_vm_info) reports it (V(running), V(shutoff),
          V(paused), V(shutdown), V(crashed), V(pmsuspended), V(nostate)), so the pool's planner reads
          both alike. Off and saved are V(shutoff); stopping and saving are V(shutdown); starting and
          resetting are V(running); every C(*Critical) state (storage lost) is V(crashed).
      type: str
    domain_type:
      description: Always V(hyperv) (where M(rum.pool.rum_vm_info) says V(kvm) or V(qemu)).
      type: str
    power_state:
      description: Hyper-V's own state name.
      type: str
    heartbeat:
      description: The heartbeat integration service's status.
      type: str
    autostart:
      description: Whether Hyper-V starts the VM when the host boots.
      type: bool
    mac:
      description: MAC of the first adapter, colon-separated lower case.
      type: str
    macs:
      description: MACs of all adapters.
      type: list
      elements: str
    ip:
      description: The first IPv4 address the guest reports, when running and known.
      type: str
    ip_source:
      description: V(kvp) when RV(vms[].ip) is set.
      type: str
    ips:
      description: Every IPv4 address the guest reports.
      type: list
      elements: str
    labels:
      description: Labels from the Notes.
      type: dict
    managed:
      description: Always true.
      type: bool
    ssh:
      description: Always null (no SSH is set up in Windows guests).
      type: dict
    ssh_command:
      description: Always null.
      type: str
    ssh_config:
      description: Always null.
      type: str
    paths:
      description: The files recorded in the Notes (C(folder), C(disk), C(seed)).
      type: dict
    config_hash:
      description: Always null.
      type: str
    generation:
      description: VM generation.
      type: int
    vcpus:
      description: Virtual processors.
      type: int
    memory_mb:
      description: Startup memory in MB.
      type: int
    switch_name:
      description: Switch of the first adapter.
      type: str
"""
