#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_image
short_description: Download, verify, remove and prune VM base images in the rum image cache
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Manages the cache of base images that M(rum.pool.rum_vm) builds its overlay disks on (the
    C(rum image) commands).
  - The cache is content-addressed - an image is stored under its own digest
    (C(<cache_dir>/sha256/<hex>)), so a blob never changes once it is there and the overlays of
    existing VMs stay valid when a URL starts serving something new.
  - V(present) downloads the image once, streamed to a temporary file while it is hashed,
    checks it against O(checksum), and renames it into place. A checksum mismatch fails and
    leaves nothing behind. Concurrent runs for the same image wait for each other (a file lock)
    and download it only once. Partial downloads of crashed runs are removed.
  - V(absent) removes one image, V(pruned) removes every image not in use.
  - To list the cache, use M(rum.pool.rum_image_info).
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_libvirt
  - rum.pool.libvirt
attributes:
  check_mode:
    support: full
    details:
      - Nothing is downloaded; a SUMS file named by O(checksum) is still read to know the digest.
  diff_mode:
    support: full
    details:
      - The diff lists the cached digests before and after.
  idempotent:
    support: full
options:
  state:
    description:
      - V(present) makes sure the image from O(url) is in the cache (like C(rum image pull)).
      - V(absent) removes the image named by O(checksum), or, with only O(url), every image
        that was downloaded from O(url).
      - V(pruned) removes every cached image except those in O(keep) and those used by a
        libvirt domain on O(uri) (see O(keep_in_use)); with O(unused_for), only images not
        used for that long.
    type: str
    choices: [present, absent, pruned]
    default: present
  url:
    description:
      - Where the image comes from - an C(http://), C(https://) or C(file://) URL, or a local
        path.
      - Required with O(state=present).
    type: str
  checksum:
    description:
      - The expected digest of the image - V(sha256:<hex>), V(sha512:<hex>), V(sha1:<hex>) or a
        bare sha256 digest.
      - Or a checksum file - V(sha256:<URL>), or just the URL (or absolute path) of a
        C(SHA256SUMS)-style file, in which the line for the file name of O(url) is used (GNU
        C(hash  name) / C(hash *name) lines or BSD C(SHA256 (name) = hash) lines).
      - Without it the image is cached by URL, not verified, and a warning says so; a local
        source that changes is fetched again, a remote one is not.
    type: str
  cache_dir:
    description:
      - The cache directory. Directories are created 0755 and images 0644, so that qemu can
        read them.
      - Defaults to C(/var/lib/libvirt/images/rum/cache) for a C(/system) O(uri) and
        C(~/.cache/rum/images) for C(qemu:///session).
      - With a C(/system) O(uri), the module warns when the qemu user cannot reach an image here.
    type: path
  keep:
    description:
      - With O(state=pruned), digests (V(sha256:<hex>) or bare hex) or cached file paths to keep.
    type: list
    elements: str
    default: []
  keep_in_use:
    description:
      - With O(state=pruned), keep every image that a disk of a libvirt domain on O(uri) uses,
        directly or as a backing file (found with C(qemu-img info)). Needs libvirt-python and a
        reachable libvirt.
      - Set V(false) to rely on O(keep) alone, for example when the images serve VMs of several
        libvirt URIs.
    type: bool
    default: true
  unused_for:
    description:
      - With O(state=pruned), remove only images not downloaded or used by M(rum.pool.rum_vm) or
        this module for at least this long - a number of seconds or a duration such as V(7d),
        V(12h), V(1d12h), V(30m) or V(2w).
    type: str
  verify:
    description:
      - With O(state=present), hash an image that is already cached and download it again if it
        does not match. Normally a cached image is trusted by its content address, which keeps
        re-runs fast.
    type: bool
    default: false
requirements:
  - qemu-img (with O(keep_in_use))
  - libvirt-python (with O(keep_in_use))
notes:
  - Ansible shows nothing while a module runs. Download progress goes to the system log of the
    target host (C(journalctl -t ansible-rum_image) or C(/var/log/syslog)), at most about once a
    second; the result has RV(download_seconds).
  - Removing an image that a VM still uses breaks that VM's disk; O(keep_in_use) protects the
    domains defined on O(uri).
seealso:
  - module: rum.pool.rum_image_info
  - module: rum.pool.rum_vm
"""

EXAMPLES = r"""
- name: Pull the Debian 12 cloud image, verified against Debian's checksum file
  rum.pool.rum_image:
    url: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
    checksum: sha512:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS
  register: debian

- name: Pull an image with a pinned digest
  rum.pool.rum_image:
    url: https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-amd64.img
    checksum: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

- name: Remove one image
  rum.pool.rum_image:
    state: absent
    checksum: "{{ debian.image.digest }}"

- name: Remove images nobody used for two weeks, except the Debian one
  rum.pool.rum_image:
    state: pruned
    unused_for: 2w
    keep:
      - "{{ debian.image.digest }}"
"""

RETURN = r"""
image:
  description:
    - The cached image.
    - In check mode, before a download, RV(image.size) is V(null), and RV(image.digest) is
      V(null) when no checksum is given.
  returned: when O(state=present)
  type: dict
  contains:
    path:
      description: The file in the cache (give it to qemu as a read-only base).
      type: str
      sample: /var/lib/libvirt/images/rum/cache/sha256/6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291
    digest:
      description: The digest the image is stored under, C(algorithm:hex).
      type: str
      sample: sha256:6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291
    size:
      description: Size in bytes.
      type: int
      sample: 343146496
    url:
      description: The URL it was requested from.
      type: str
      sample: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
download_seconds:
  description: How long the download took; V(null) when nothing was downloaded.
  returned: when O(state=present)
  type: float
  sample: 12.5
removed:
  description: The images removed (or, in check mode, that would be removed).
  returned: when O(state=absent) or O(state=pruned)
  type: list
  elements: dict
  contains:
    digest:
      description: Digest of the image.
      type: str
    path:
      description: Where it was.
      type: str
    url:
      description: The URL it was last requested from.
      type: str
    size:
      description: Size in bytes.
      type: int
  sample:
    - digest: sha256:6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291
      path: /var/lib/libvirt/images/rum/cache/sha256/6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291
      url: https://example.org/old.qcow2
      size: 343146496
in_use:
  description: Images kept because libvirt domains use them, with the disks that use them.
  returned: when O(state=pruned) and O(keep_in_use=true)
  type: dict
  sample:
    sha256:6b3d0a0c3a9b2d1e8f5c7a4b3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a291:
      - /var/lib/libvirt/images/rum/web1/disk.qcow2
cache_dir:
  description: The cache directory used.
  returned: always
  type: str
  sample: /var/lib/libvirt/images/rum/cache
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rum.pool.plugins.module_utils import _disk, _image, _libvirt, _storage


def _digests(entries: list) -> list:
    return sorted(e["digest"] for e in entries)


def _public(entry: dict) -> dict:
    return {k: entry.get(k) for k in ("digest", "path", "url", "size")}


def _domains_disks(module: AnsibleModule, uri: str) -> list:
    """File paths of all disks of all domains on ``uri``."""
    if not _libvirt.HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python") + " (needed by keep_in_use=true; "
                         "set keep_in_use=false and list the images to keep in keep)",
                         exception=str(_libvirt.LIBVIRT_IMPORT_ERROR))
    conn = _libvirt.connect(uri)
    try:
        return [path for dom in conn.listAllDomains(0)
                for path in _storage.domain_disk_files(dom.XMLDesc(0))]
    except _libvirt.libvirt.libvirtError as exc:
        raise _libvirt.LibvirtError(f"list domains on '{uri}': {exc.get_error_message()}") from exc
    finally:
        conn.close()


def _backing_of(module: AnsibleModule):
    def backing(path: str):
        try:
            return _disk.image_info(path).get("backing_file")
        except _disk.DiskError as exc:
            module.log(f"rum_image: skipping disk {path}: {exc}")
            return None
    return backing


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent", "pruned"], "default": "present"},
            "url": {"type": "str"},
            "checksum": {"type": "str"},
            "cache_dir": {"type": "path"},
            "keep": {"type": "list", "elements": "str", "default": []},
            "keep_in_use": {"type": "bool", "default": True},
            "unused_for": {"type": "str"},
            "verify": {"type": "bool", "default": False},
            **_libvirt.connection_argument_spec(),
        },
        required_if=[
            ("state", "present", ("url",)),
            ("state", "absent", ("url", "checksum"), True),
        ],
        supports_check_mode=True,
    )
    p = module.params
    cache_dir = p["cache_dir"] or _storage.default_image_cache(p["uri"])
    cache = _image.ImageCache(cache_dir, log=module.log)
    result = {"changed": False, "cache_dir": cache_dir}
    before = _digests(cache.list())

    def progress(done: int, total) -> None:
        share = f" ({done * 100 // total}%)" if total else ""
        module.log(f"rum_image: {p['url']}: {done} of {total or '?'} bytes{share}")

    try:
        if p["state"] == "present":
            got = cache.ensure(p["url"], p["checksum"], check_mode=module.check_mode,
                               progress=progress, verify=p["verify"])
            for warning in got.warnings:
                module.warn(warning)
            if _storage.is_system_uri(p["uri"]) and not module.check_mode:
                problem = _storage.check_qemu_access(got.path, check_file=True)
                if problem:
                    module.warn(f"cache_dir {cache_dir}: {problem}")
            result.update(changed=got.changed, image=got.as_dict(),
                          download_seconds=got.download_seconds)
        elif p["state"] == "absent":
            if p["checksum"]:
                digest = cache.digest_for(p["url"], p["checksum"])
                removed = cache.remove(digest, check_mode=module.check_mode)
            else:
                removed = cache.remove_url(p["url"], check_mode=module.check_mode)
            result.update(changed=bool(removed), removed=[_public(e) for e in removed])
        else:
            keep = list(p["keep"])
            if p["keep_in_use"]:
                in_use = cache.in_use(_domains_disks(module, p["uri"]), _backing_of(module))
                keep += list(in_use)
                result["in_use"] = in_use
            unused = _image.parse_duration(p["unused_for"]) if p["unused_for"] else None
            removed = cache.prune(keep=keep, unused_for_seconds=unused, check_mode=module.check_mode)
            result.update(changed=bool(removed), removed=[_public(e) for e in removed])
    except _image.ImageError as exc:
        module.fail_json(msg=f"rum_image: {exc}", **result)
    except _libvirt.LibvirtError as exc:
        module.fail_json(msg=f"rum_image: cannot tell which images are in use: {exc}; set "
                             "keep_in_use=false and list the images to keep in keep", **result)

    if module._diff:
        after = list(before)
        if p["state"] == "present" and result["changed"]:
            after = sorted(set(after) | {result["image"]["digest"] or "(new download)"})
        elif "removed" in result:
            after = sorted(set(after) - {e["digest"] for e in result["removed"]})
        result["diff"] = {"before": {"images": before}, "after": {"images": after}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
