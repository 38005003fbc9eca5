#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# An action plugin only (plugins/action/hyperv_seed.py, run on the controller); this file holds its documentation.

from __future__ import annotations

DOCUMENTATION = r"""
module: hyperv_seed
short_description: Build a NoCloud seed ISO on the controller and put it on a Hyper-V host
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Builds a cloud-init / cloudbase-init NoCloud seed (volume id C(cidata), files C(user-data) and
    C(meta-data)) in memory on the controller, with the seed library M(rum.pool.rum_seed_iso) uses,
    and writes it to C(<path>\<name>-seed.iso) on the task's host through the connection's own file
    transfer (WinRM, PSRP or SSH). The controller needs C(pycdlib) and no other collection; the host
    needs nothing.
  - Made for M(rum.pool.hyperv_vm)'s O(rum.pool.hyperv_vm#module:seed_iso) - pass it RV(path). That
    module records the seed in the VM's Notes and deletes it with the VM. The rum.pool C(hyperv)
    pool backend uses the two in this order for every slot.
  - The instance-id is derived from the content unless O(instance_id) or C(instance-id) in
    O(meta_data) is given, as with M(rum.pool.rum_seed_iso).
  - The seed is written on every run (each boot of a pool slot carries a new runner credential); an
    existing file of that name is replaced. O(path) must exist.
  - On Windows the file takes the access list of O(path), so keep that folder for administrators (the
    seed holds the runner's credential until the VM is removed). On a POSIX host the file is made
    mode C(0600).
extends_documentation_fragment:
  - rum.pool.attributes
attributes:
  action:
    description: Runs on the controller, and only the file transfer reaches the host.
    support: full
  check_mode:
    support: full
    details: Builds the seed and reports the path and size, and transfers nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: The seed is written again on every run.
  platform:
    description: The host the seed goes to; the plugin itself runs on the controller.
    platforms: windows, posix
    support: full
options:
  path:
    description:
      - The folder on the host that gets the seed, normally the VMs' folder (M(rum.pool.hyperv_vm)'s
        O(rum.pool.hyperv_vm#module:path)). It must exist.
    type: str
    required: true
  name:
    description: The VM's name; the file is C(<name>-seed.iso).
    type: str
    required: true
  user_data:
    description:
      - The C(user-data) file. A string is written verbatim (for cloudbase-init, a C(#ps1_sysnative)
        script such as P(rum.pool.runner_user_data_windows#filter) makes); a dictionary is written as
        C(#cloud-config) YAML. Without it an empty cloud-config is written.
      - It often holds a secret; use C(no_log) on the task. It is never returned.
    type: raw
  meta_data:
    description: The C(meta-data) file, for example C(local-hostname) (see P(rum.pool.windows_host_name#filter)).
    type: dict
    default: {}
  instance_id:
    description: The instance-id to write, instead of one derived from the content.
    type: str
requirements:
  - pycdlib (on the controller)
seealso:
  - module: rum.pool.hyperv_vm
  - module: rum.pool.rum_seed_iso
"""

EXAMPLES = r"""
- name: A runner's seed, put into the VMs' folder on the Hyper-V host
  rum.pool.hyperv_seed:
    path: D:\rum\vms
    name: ci-hv1-1
    user_data: "{{ jit.encoded_jit_config | rum.pool.runner_user_data_windows }}"
    meta_data:
      local-hostname: "{{ runner_name | rum.pool.windows_host_name }}"
  register: seed
  no_log: true

- name: The VM, booted with it
  rum.pool.hyperv_vm:
    name: ci-hv1-1
    template: D:\rum\templates\windows-runner.vhdx
    path: D:\rum\vms
    switch_name: rum
    seed_iso: "{{ seed.path }}"
"""

RETURN = r"""
path:
  description: Where the seed is on the host.
  returned: always
  type: str
  sample: D:\rum\vms\ci-hv1-1-seed.iso
instance_id:
  description: The seed's instance-id.
  returned: always
  type: str
  sample: iid-3f0c9a1b2d4e5f60
size:
  description: Size of the ISO in bytes.
  returned: always
  type: int
  sample: 53248
sha256:
  description: SHA-256 of the ISO's bytes (they differ on every build; the ISO carries a time stamp).
  returned: always
  type: str
"""
