# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt connection option of the collection's libvirt modules.

Its argument spec entry is ``_libvirt.connection_argument_spec()``; keep the two in step.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - libvirt connection URI, for example V(qemu:///system), V(qemu:///session) or
        V(qemu+ssh://root@host/system).
      - With a C(/system) URI qemu runs as its own user, and the default directories are under
        C(/var/lib/libvirt/images/rum); with a C(/session) URI they are under the user's XDG
        directories.
    type: str
    default: qemu:///system
"""
