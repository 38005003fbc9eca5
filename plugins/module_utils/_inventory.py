# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""List the VMs rum.pool manages on a libvirt URI (for rum_vm_info and the inventory plugin).

Internal to the rum.pool collection: not a public API.
"""

from __future__ import annotations

import contextlib
import typing as t

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils._vm import describe, read_meta


def labels_match(have: dict, want: dict) -> bool:
    return all(str(have.get(k)) == str(v) for k, v in (want or {}).items())


def list_vms(uri: str, *, name: str | None = None, labels: dict | None = None, addresses: bool = True,
             connect: t.Callable[[str], t.Any] = lv.connect) -> list[dict]:
    """Every rum-managed domain on ``uri`` (optionally one by name, or those with given labels)."""
    conn = connect(uri)
    try:
        if name:
            dom = lv.lookup(conn, name)
            doms = [dom] if dom is not None else []
        else:
            doms = conn.listAllDomains(0)
        out = []
        for dom in doms:
            try:
                meta = read_meta(lv.inactive_xml(dom))
                if not meta:
                    continue  # not ours: never reported, never touched
                if not labels_match(meta.get("labels") or {}, labels or {}):
                    continue
                info = describe(dom, meta=meta, with_ip=addresses)
            except lv.libvirt.libvirtError as exc:
                if exc.get_error_code() == lv.libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined by someone else while we were listing
                raise lv.LibvirtError(f"read domain on {uri}: {exc.get_error_message()}") from exc
            info["uri"] = uri
            out.append(info)
        return sorted(out, key=lambda v: v["name"])
    finally:
        with contextlib.suppress(Exception):
            conn.close()
