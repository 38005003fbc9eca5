#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_vm_info
short_description: Report the VMs that rum.pool manages on a libvirt host
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Lists the libvirt domains created by M(rum.pool.rum_vm) (those carrying rum.pool's metadata), with
    their power state, addresses, SSH details and labels - the C(rum status) of this collection.
  - Domains that rum.pool did not create are not reported.
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_libvirt
  - rum.pool.attributes.info_module
  - rum.pool.libvirt
options:
  name:
    description: Report only this VM. An unknown name gives an empty list, not an error.
    type: str
  labels:
    description: Report only VMs whose labels include all of these key/value pairs.
    type: dict
    default: {}
  addresses:
    description: Look up IP addresses of running VMs (DHCP lease, guest agent, ARP).
    type: bool
    default: true
  script_logs:
    description:
      - Also read the logs of each running VM's O(rum.pool.rum_vm#module:provision_script) and
        O(rum.pool.rum_vm#module:boot_script) runs (C(rum log)) from the guest over SSH, as RV(vms[].script_logs).
        The guest keeps the newest 10 runs of each script.
      - V(list) lists every kept run without its output (C(rum log --list)); V(latest) gives the newest run of
        each script (the first one is C(rum log)); V(failed) the newest failed run of each script (the first
        one is C(rum log --failed)); V(all) every kept run with its output.
      - Needs the VM's SSH access as M(rum.pool.rum_vm) reports it (its generated key) and C(sudo) in the guest.
        The module fails naming each running VM whose logs could not be read.
    type: str
    choices: [none, list, latest, failed, all]
    default: none
requirements:
  - libvirt-python
seealso:
  - module: rum.pool.rum_vm
"""

EXAMPLES = r"""
- name: All rum VMs on this host
  rum.pool.rum_vm_info:
  register: rum

- name: Print name, state and address of each
  ansible.builtin.debug:
    msg: "{{ rum.vms | map(attribute='name') | zip(rum.vms | map(attribute='state'), rum.vms | map(attribute='ip')) | list }}"

- name: The VMs of one pool
  rum.pool.rum_vm_info:
    labels:
      pool: ci
  register: pool_vms

- name: What the provision script said (rum log --failed)
  rum.pool.rum_vm_info:
    name: dev
    script_logs: failed
  register: dev_logs

- name: Show it
  ansible.builtin.debug:
    msg: "{{ dev_logs.vms[0].script_logs[0].output | default('no failed script') }}"
"""

RETURN = r"""
vms:
  description: One entry per VM, sorted by name; the same shape as M(rum.pool.rum_vm)'s RV(rum.pool.rum_vm#module:vm) return value.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    uuid:
      description: Domain UUID.
      type: str
    state:
      description: Power state (V(running), V(shutoff), V(paused), ...).
      type: str
    domain_type:
      description: The domain type it runs as, V(kvm) (hardware virtualisation) or V(qemu) (software emulation, TCG).
      type: str
    autostart:
      description: Whether libvirtd starts it on boot.
      type: bool
    mac:
      description: MAC of the first interface.
      type: str
    macs:
      description: MACs of all interfaces.
      type: list
      elements: str
    ip:
      description: IPv4 address of the first interface when running and known.
      type: str
    ip_source:
      description: V(lease), V(agent) or V(arp).
      type: str
    labels:
      description: Labels from the metadata.
      type: dict
    ssh:
      description: SSH host, port, user and identity file.
      type: dict
    ssh_command:
      description: A ready-to-run ssh command line.
      type: str
    ssh_config:
      description: An OpenSSH C(Host) block.
      type: str
    paths:
      description: The VM's directory, overlay, seed and serial log.
      type: dict
    config_hash:
      description: Hash of the options the VM was last converged with.
      type: str
    script_logs:
      description:
        - With O(script_logs), the runs of the VM's scripts, newest first (V(null) for a VM that is not running).
      type: list
      elements: dict
      returned: when O(script_logs) is not V(none)
      contains:
        file:
          description: The log's name in the guest's C(/var/log/rum/scripts).
          type: str
          sample: 20260101T120000.123456789Z_provision_ok.log
        script:
          description: V(provision) (the first-boot script) or V(boot) (the every-boot script).
          type: str
        status:
          description: V(ok) or V(failed).
          type: str
        exit_status:
          description: The script's exit status (V(null) when the run was cut short, for example by a power-off).
          type: int
        time:
          description: When the run started (UTC).
          type: str
          sample: "2026-01-01T12:00:00.123456789Z"
        output:
          description: What the script printed (standard output and error). Not with O(script_logs=list).
          type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _inventory as inv
from ansible_collections.rum.pool.plugins.module_utils import _script_logs as script_logs


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            labels=dict(type="dict", default={}),
            addresses=dict(type="bool", default=True),
            script_logs=dict(type="str", default="none", choices=list(script_logs.MODES)),
            **lv.connection_argument_spec(),
        ),
        supports_check_mode=True,
    )
    if not lv.HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=str(lv.LIBVIRT_IMPORT_ERROR))
    try:
        vms = inv.list_vms(module.params["uri"], name=module.params["name"],
                           labels=module.params["labels"], addresses=module.params["addresses"])
    except lv.LibvirtError as exc:
        module.fail_json(msg=f"rum_vm_info: {exc}")
    if module.params["script_logs"] != "none":
        problems = script_logs.attach(vms, module.params["script_logs"])
        if problems:
            module.fail_json(msg="rum_vm_info: script logs: " + "; ".join(problems), vms=vms)
    module.exit_json(changed=False, vms=vms)


if __name__ == "__main__":
    main()
