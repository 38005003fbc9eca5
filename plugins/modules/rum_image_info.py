#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_image_info
short_description: List the VM base images in the rum image cache
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Lists the images that M(rum.pool.rum_image) and M(rum.pool.rum_vm) downloaded (the
    C(rum image list) command), with their digests, sizes, source URLs and when they were last
    used.
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_libvirt
  - rum.pool.attributes.info_module
  - rum.pool.libvirt
options:
  cache_dir:
    description:
      - The cache directory.
      - Defaults to C(/var/lib/libvirt/images/rum/cache) for a C(/system) O(uri) and
        C(~/.cache/rum/images) for C(qemu:///session).
    type: path
seealso:
  - module: rum.pool.rum_image
"""

EXAMPLES = r"""
- name: List the cached images
  rum.pool.rum_image_info:
  register: cache

- name: Show them
  ansible.builtin.debug:
    msg: "{{ cache.images | map(attribute='url') | list }}"
"""

RETURN = r"""
images:
  description: The cached images, sorted by digest. Empty when the cache does not exist.
  returned: always
  type: list
  elements: dict
  contains:
    digest:
      description: The digest the image is stored under, C(algorithm:hex).
      type: str
      sample: sha256:6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291
    path:
      description: The file in the cache.
      type: str
      sample: /var/lib/libvirt/images/rum/cache/sha256/6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291
    url:
      description: The URL it was last requested from.
      type: str
      sample: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
    urls:
      description: Every URL it was requested from.
      type: list
      elements: str
    size:
      description: Size in bytes.
      type: int
      sample: 343146496
    fetched_at:
      description: When it was downloaded (seconds since the epoch).
      type: float
      sample: 1767225600.0
    last_used:
      description: When it was last downloaded or used by M(rum.pool.rum_vm) or M(rum.pool.rum_image).
      type: float
      sample: 1767312000.0
    verified:
      description: Whether it was ever checked against a checksum (false for images pulled without one).
      type: bool
      sample: true
cache_dir:
  description: The cache directory read.
  returned: always
  type: str
  sample: /var/lib/libvirt/images/rum/cache
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rum.pool.plugins.module_utils import _image, _libvirt, _storage


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "cache_dir": {"type": "path"},
            **_libvirt.connection_argument_spec(),
        },
        supports_check_mode=True,
    )
    cache_dir = module.params["cache_dir"] or _storage.default_image_cache(module.params["uri"])
    try:
        images = _image.ImageCache(cache_dir).list()
    except OSError as exc:
        module.fail_json(msg=f"rum_image_info: cannot read image cache {cache_dir}: {exc.strerror}",
                         cache_dir=cache_dir)
    module.exit_json(changed=False, images=images, cache_dir=cache_dir)


if __name__ == "__main__":
    main()
