#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The module is hyperv_vm.ps1 (it runs on the Hyper-V host); this file holds its documentation.

from __future__ import annotations

DOCUMENTATION = r"""
module: hyperv_vm
short_description: A Hyper-V runner VM from a template VHDX, in one task
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Creates, converges, starts, stops and removes a generation 2 Hyper-V virtual machine on the Windows
    host the task runs on (over WinRM, PSRP or SSH), the Hyper-V counterpart of M(rum.pool.rum_vm).
  - The system disk is a differencing disk whose parent is O(template), made in well under a second
    whatever the template's size; O(disk_type=copy) copies the template instead.
  - The VM gets O(vcpus), static or dynamic memory, one network adapter on O(switch_name) (with an
    optional access VLAN), secure boot with O(secure_boot_template), checkpoints off, the automatic
    stop action C(TurnOff) and the automatic start action C(Nothing); O(seed_iso) becomes a DVD drive
    and O(kvp_items) host-to-guest KVP items.
  - B(Files.) The VM's folder is C(<path>\<name>), Hyper-V's own configuration files included, and the
    system disk is C(<path>\<name>\Virtual Hard Disks\<name>.vhdx). The seed ISO is made by someone else
    (rum.pool's C(hyperv) pool backend builds it on the controller and copies it to the host) and
    should sit in the VM's folder.
  - >-
    B(Ownership.) The VM's Notes start with the line C(#rum.pool v1) followed by one line of JSON,
    C({"labels": {...}, "files": {"folder": ..., "disk": ..., "seed": ...}, "template": ...,
    "disk_type": ...}). A VM of the same name whose Notes do not start with that line is never
    touched; the module fails instead. Do not edit those Notes by hand.
  - O(state=absent) turns the VM off, removes it, then deletes the files its Notes record (disk, seed,
    folder with all it holds), retrying a file Hyper-V's worker process still holds. A recorded path
    that does not look like one rum.pool makes (a C(.vhdx) disk, an C(.iso) seed, a folder named after
    the VM) is left alone with a warning.
  - A failed create removes what it made (VM, disk, folder) before failing; the error names the step
    and carries the cmdlet's own message.
  - Settings that Hyper-V changes only while the VM is off (O(vcpus), memory, secure boot) make a
    running VM fail the task unless O(state=restarted) or O(state=stopped), which stop it first.
    O(template) and O(disk_type) are used only when the VM is made; a VM made from another template is
    reported with a warning (the pool recreates VMs, it does not rebase them).
  - Runs under Windows PowerShell 5.1 with the Hyper-V PowerShell module (Windows Server 2016 or later,
    Windows 10/11 with Hyper-V).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Before and after show the VM's settings, labels, seed, KVP items and power state.
  idempotent:
    support: full
    details: Except O(state=restarted), which restarts the VM on every run.
  platform:
    platforms: windows
    support: full
  action_group:
    description: Use C(group/rum.pool.hyperv) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - rum.pool.hyperv
extends_documentation_fragment:
  - rum.pool.attributes
options:
  name:
    description:
      - Name of the VM; also the name of its folder and its disk.
      - 1 to 100 characters from C(A-Z a-z 0-9 . _ -), starting with a letter or digit. Names are
        unique per host for rum.pool; two VMs of one name are an error.
      - The guest's computer name is set by the seed (C(local-hostname)), not by this name.
    type: str
    required: true
  state:
    description:
      - V(running) makes the VM if needed and starts it.
      - V(present) makes it without starting it; a running VM is left running.
      - V(stopped) shuts the guest down through the integration services (C(Stop-VM -Force)).
      - V(restarted) resets a running VM (C(Restart-VM), a hard restart) or starts a stopped one.
      - V(absent) turns the VM off, removes it and deletes its disk, seed and folder.
    type: str
    choices: [running, present, stopped, restarted, absent]
    default: running
  template:
    description:
      - The template VHDX on the host (a sysprepped image, see the collection's C(packer/windows-runner)).
        Needed to make the VM.
      - Keep it read-only and never start a VM from it, because every differencing child depends on its bytes.
    type: path
  disk_type:
    description:
      - V(differencing) makes the system disk a differencing child of O(template) (C(New-VHD
        -Differencing)); it starts empty and grows with what the guest writes.
      - V(copy) copies O(template) (minutes for tens of GB; the VM no longer depends on the template).
    type: str
    choices: [differencing, copy]
    default: differencing
  path:
    description:
      - The folder on the host under which the VM's folder C(<path>\<name>) is made. An absolute path.
        Needed to make the VM.
    type: path
  vcpus:
    description: Virtual processors.
    type: int
    default: 2
  memory_mb:
    description: Startup memory in MB (an even number); with O(dynamic_memory=false) the VM's fixed memory.
    type: int
    default: 4096
  dynamic_memory:
    description: Let Hyper-V balance the VM's memory between O(memory_minimum_mb) and O(memory_maximum_mb).
    type: bool
    default: false
  memory_minimum_mb:
    description: With O(dynamic_memory), the least memory in MB (default O(memory_mb)).
    type: int
  memory_maximum_mb:
    description: With O(dynamic_memory), the most memory in MB (default O(memory_mb)).
    type: int
  switch_name:
    description: The virtual switch the VM's network adapter connects to. Needed to make the VM.
    type: str
  vlan_id:
    description: Put the adapter in access mode on this VLAN (1 to 4094). Without it the adapter is untagged.
    type: int
  secure_boot:
    description: UEFI secure boot.
    type: bool
    default: true
  secure_boot_template:
    description:
      - The secure boot template. V(MicrosoftWindows) for Windows guests,
        V(MicrosoftUEFICertificateAuthority) for most Linux guests.
    type: str
    choices: [MicrosoftWindows, MicrosoftUEFICertificateAuthority, OpenSourceShieldedVM]
    default: MicrosoftWindows
  seed_iso:
    description:
      - An ISO on the host to attach as the VM's DVD drive, normally the cloud-init / cloudbase-init
        NoCloud seed (volume label C(cidata)) that the controller built.
      - Recorded in the VM's Notes and deleted with the VM.
    type: path
  kvp_items:
    description:
      - Host-to-guest key/value pairs (Hyper-V data exchange), readable in the guest under
        C(HKLM\SOFTWARE\Microsoft\Virtual Machine\External). Items not listed are left as they are.
    type: dict
    default: {}
  labels:
    description:
      - Free-form key/value labels kept in the VM's Notes; values are stored as strings.
        M(rum.pool.hyperv_vm_info) reports them and filters on them.
    type: dict
    default: {}
  wait_for:
    description:
      - After starting (O(state=running) or O(state=restarted)), wait until the VM's heartbeat
        integration service reports OK (V(heartbeat)), or until it does and the guest reports an IPv4
        address other than 169.254.x.x (V(ip)). The task fails after O(wait_timeout) seconds, naming
        the heartbeat and addresses it saw.
    type: str
    choices: [none, heartbeat, ip]
    default: none
  wait_timeout:
    description: Seconds to wait for O(wait_for). A first boot of a sysprepped Windows image takes minutes.
    type: int
    default: 600
notes:
  - The Hyper-V host needs the Hyper-V PowerShell module (C(Install-WindowsFeature Hyper-V-PowerShell)),
    and the connection user must be a member of C(Hyper-V Administrators) or C(Administrators).
  - See C(docs/hyperv.md) in the collection for preparing the host, the template and the seed.
seealso:
  - module: rum.pool.hyperv_vm_info
  - module: rum.pool.rum_seed_iso
  - module: rum.pool.rum_vm
"""

EXAMPLES = r"""
- name: A runner VM from the template, booted with its seed, waiting for an address
  rum.pool.hyperv_vm:
    name: ci-hv1-1
    template: D:\rum\templates\windows-runner-2022.vhdx
    path: D:\rum\vms
    switch_name: rum-external
    vcpus: 4
    memory_mb: 8192
    seed_iso: D:\rum\vms\ci-hv1-1\seed.iso
    labels:
      pool: ci
      slot: ci-hv1-1
    wait_for: ip

- name: A Linux guest on the same host (secure boot with the UEFI CA template)
  rum.pool.hyperv_vm:
    name: lx-1
    template: D:\rum\templates\debian-12.vhdx
    path: D:\rum\vms
    switch_name: rum-external
    secure_boot_template: MicrosoftUEFICertificateAuthority
    dynamic_memory: true
    memory_minimum_mb: 1024
    memory_mb: 2048
    memory_maximum_mb: 8192

- name: Remove the VM, its disk, its seed and its folder
  rum.pool.hyperv_vm:
    name: ci-hv1-1
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the VM was (or, in check mode, would be) changed.
  returned: always
  type: bool
changes:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["create VM 'ci-hv1-1' (differencing disk of 'D:\\rum\\templates\\w.vhdx' in 'D:\\rum\\vms\\ci-hv1-1')", "start VM 'ci-hv1-1'"]
vm:
  description:
    - The VM as M(rum.pool.hyperv_vm_info) reports it, with the same keys as its RV(rum.pool.hyperv_vm_info#module:vms)
      entries (name, uuid, the power state in libvirt's words, Hyper-V's own state, heartbeat, MACs, IPv4
      addresses, labels, paths, generation, vCPUs, memory, switch, and the keys of M(rum.pool.rum_vm_info)).
    - Null after O(state=absent) and for a VM that check mode would create.
  returned: always
  type: dict
  sample:
    name: ci-hv1-1
    uuid: 6f1a3b52-9d6e-4f1b-8a77-0d3c5e2f4a10
    state: running
    power_state: Running
    domain_type: hyperv
    heartbeat: OkApplicationsHealthy
    autostart: false
    mac: "00:15:5d:01:02:03"
    macs: ["00:15:5d:01:02:03"]
    ip: 10.1.2.3
    ip_source: kvp
    ips: [10.1.2.3]
    labels: {pool: ci, slot: ci-hv1-1}
    managed: true
    ssh: null
    ssh_command: null
    ssh_config: null
    paths: {folder: 'D:\rum\vms\ci-hv1-1', disk: 'D:\rum\vms\ci-hv1-1\Virtual Hard Disks\ci-hv1-1.vhdx', seed: 'D:\rum\vms\ci-hv1-1\seed.iso'}
    config_hash: null
    generation: 2
    vcpus: 4
    memory_mb: 8192
    switch_name: rum
"""
