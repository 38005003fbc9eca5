#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_seed_iso
short_description: Build a cloud-init NoCloud seed ISO
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Writes an ISO image that cloud-init's NoCloud data source reads on first boot, with the volume
    id C(cidata) and the files C(user-data), C(meta-data) and optionally C(network-config) and
    C(vendor-data) (ISO9660 with Rock Ridge and Joliet names).
  - Idempotent on the content - the existing ISO is read back and its files compared; the ISO
    bytes themselves differ on every build (they carry a time stamp), so they are never compared.
  - The file is written atomically (a temporary file in the same directory, fsync, rename) with
    its final mode and owner already set.
  - B(instance-id policy) - cloud-init runs its once-per-instance steps (users, keys, packages,
    C(runcmd)) again whenever the instance-id changes. The instance-id is O(instance_id) when given,
    else C(instance-id) in O(meta_data) when given, else C(iid-) followed by 16 hex digits of a
    hash of everything else in the seed. So by default a changed seed re-provisions the guest on
    its next boot and an unchanged seed does not; set O(instance_id) to keep one id across changes.
  - M(rum.pool.rum_vm) builds its seeds with the same code.
extends_documentation_fragment:
  - rum.pool.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the files of the seed in full, secrets included, and the file mode (and
        owner/group when managed).
  idempotent:
    support: full
options:
  path:
    description:
      - Where the ISO goes. The directory must exist.
      - A file already there that is not a NoCloud seed is an error, never overwritten.
      - With M(rum.pool.rum_vm) on C(qemu:///system), the path must be one libvirt can hand to
        qemu; paths under C(/root) are not reachable by the qemu user.
    type: path
    required: true
  state:
    description:
      - V(present) builds the seed or brings it up to date; V(absent) deletes it.
      - V(absent) refuses to delete a file that is not a NoCloud seed.
    type: str
    choices: [present, absent]
    default: present
  user_data:
    description:
      - The C(user-data) file. A string is written verbatim (a C(#cloud-config) document, a shell
        script, a MIME multi-part, ...); a dictionary is written as C(#cloud-config) YAML.
      - Multi-line strings inside a dictionary (scripts, file contents) are kept exactly,
        whatever characters they hold.
      - Without it, an empty cloud-config is written.
      - It often holds secrets. It is not shown in the result or in error messages, but it is
        shown by C(--diff) and, like every module argument, at C(-vvv); use C(no_log) on the
        task to hide it everywhere (which also hides the diff).
    type: raw
  meta_data:
    description:
      - The C(meta-data) file, as a dictionary (for example C(local-hostname)).
      - C(instance-id) is set according to the instance-id policy in the description.
    type: dict
    default: {}
  instance_id:
    description:
      - The instance-id to write. Overrides C(instance-id) in O(meta_data).
      - Leave it out to derive it from the content (see the description).
    type: str
  network_config:
    description:
      - The C(network-config) file (network config version 1 or 2). A dictionary is written as
        YAML, a string verbatim. Without it, no C(network-config) file is written and the
        image's own network set-up applies.
    type: raw
  vendor_data:
    description:
      - The C(vendor-data) file. Same forms as O(user_data); O(user_data) takes precedence over
        it in cloud-init.
    type: raw
  mode:
    description:
      - File mode of the ISO, as an octal string such as V('0600') (an integer is taken as
        already converted, like C(0o600) from YAML C(0600)).
      - The default keeps it private to its owner, since seeds carry keys and scripts.
    type: raw
    default: '0600'
  owner:
    description: Owner of the ISO (name or uid). Unchanged when not given.
    type: str
  group:
    description: Group of the ISO (name or gid). Unchanged when not given.
    type: str
requirements:
  - pycdlib
  - PyYAML
notes:
  - A change of mode, owner or group alone is applied in place and reported as a change; the
    content and instance-id stay the same.
  - For C(qemu:///system), libvirt's DAC driver gives qemu access to a seed it attaches (it
    relabels the file while the VM runs), so the default mode V('0600') works.
seealso:
  - module: rum.pool.rum_vm
  - name: cloud-init NoCloud data source
    description: What the files on the seed mean.
    link: https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html
"""

EXAMPLES = r"""
- name: A seed with one user and a first-boot script
  rum.pool.rum_seed_iso:
    path: /var/lib/libvirt/images/web1-seed.iso
    meta_data:
      local-hostname: web1
    user_data:
      users:
        - name: ops
          lock_passwd: true
          sudo: ALL=(ALL) NOPASSWD:ALL
          ssh_authorized_keys:
            - "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
      runcmd:
        - [systemctl, enable, --now, nginx]
    network_config:
      version: 2
      ethernets:
        nic0:
          match:
            macaddress: "52:54:00:12:34:56"
          dhcp4: true
  register: seed

- name: Keep one instance-id so that later edits do not re-provision the guest
  rum.pool.rum_seed_iso:
    path: /var/lib/libvirt/images/db1-seed.iso
    instance_id: db1-2024-01
    user_data: "{{ lookup('ansible.builtin.file', 'db1-user-data.yml') }}"

- name: Remove the seed
  rum.pool.rum_seed_iso:
    path: /var/lib/libvirt/images/web1-seed.iso
    state: absent
"""

RETURN = r"""
path:
  description: Path of the seed ISO.
  returned: always
  type: str
  sample: /var/lib/libvirt/images/web1-seed.iso
sha256:
  description:
    - SHA-256 of the ISO file on disk.
    - V(null) in check mode when the seed would be (re)written, since the new bytes are not made.
  returned: when O(state=present)
  type: str
  sample: 5f0e8c1e5b3a4c3cbd2a0a2f0d9e9b6f7e5d4c3b2a1908f7e6d5c4b3a2918f7e
instance_id:
  description: The instance-id written to C(meta-data) (see the instance-id policy).
  returned: when O(state=present)
  type: str
  sample: iid-3f9a1c07b2d4e815
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rum.pool.plugins.module_utils import _seed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "user_data": {"type": "raw"},
            "meta_data": {"type": "dict", "default": {}},
            "instance_id": {"type": "str"},
            "network_config": {"type": "raw"},
            "vendor_data": {"type": "raw"},
            "mode": {"type": "raw", "default": "0600"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
        },
        supports_check_mode=True,
    )
    if not _seed.HAS_PYCDLIB:
        module.fail_json(msg=missing_required_lib("pycdlib"), exception=_seed.PYCDLIB_IMPORT_ERROR)
    if not _seed.HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=_seed.YAML_IMPORT_ERROR)

    params = module.params
    path = params["path"]
    try:
        if params["state"] == "absent":
            result = _seed.remove_seed(path, check_mode=module.check_mode)
        else:
            content = _seed.make_seed(params["user_data"], params["meta_data"],
                                      params["network_config"], params["vendor_data"],
                                      params["instance_id"])
            result = _seed.ensure_seed(path, content, mode=params["mode"], owner=params["owner"],
                                       group=params["group"], check_mode=module.check_mode)
    except _seed.SeedError as exc:
        message = str(exc)
        if path not in message:
            message = f"seed ISO {path}: {message}"
        module.fail_json(msg=f"rum_seed_iso: {message}", path=path)

    diff = result.pop("diff")
    result.pop("content_changed", None)
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
