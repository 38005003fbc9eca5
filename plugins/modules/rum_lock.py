#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_lock
short_description: Hold a named lock on a host across several tasks
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Takes or releases a named lock on the target host, so that two playbook runs acting on the same
    runner slot cannot interleave (a recreate from the webhook service and a converge from a timer,
    for example), while runs on other slots go ahead.
  - A lock is a directory made atomically; releasing it needs the RV(token) returned when it was
    taken. A lock held for longer than O(stale_after) seconds is taken over, with a warning naming
    its previous holder.
  - Use it in a C(block) with the release in C(always).
extends_documentation_fragment:
  - rum.pool.attributes
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Taking a lock twice waits for the first holder.
options:
  name:
    description: Lock name, for example the slot name.
    type: str
    required: true
  state:
    description: V(locked) takes the lock (waiting up to O(timeout)); V(unlocked) releases it.
    type: str
    choices: [locked, unlocked]
    default: locked
  token:
    description: The token returned by the O(state=locked) call; required with O(state=unlocked).
    type: str
  lock_dir:
    description: Directory that holds the locks.
    type: path
    default: /run/lock/rum-pool
  timeout:
    description: Seconds to wait for a lock held by someone else.
    type: int
    default: 600
  stale_after:
    description: Seconds after which a held lock is considered abandoned and taken over.
    type: int
    default: 3600
  owner:
    description: A description of the holder, shown to runs that wait for the lock.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Recreate one slot, never at the same time as another run on it
  block:
    - name: Lock the slot
      rum.pool.rum_lock:
        name: ci-hv1-1
        owner: "recreate from {{ ansible_play_name }}"
      register: slot_lock

    - name: Work on the slot
      ansible.builtin.debug:
        msg: "slot is ours"
  always:
    - name: Unlock the slot
      rum.pool.rum_lock:
        name: ci-hv1-1
        state: unlocked
        token: "{{ slot_lock.token }}"
      when: slot_lock.token is defined
"""

RETURN = r"""
token:
  description: Proof of holding the lock; pass it to O(state=unlocked).
  returned: when O(state=locked)
  type: str
took_over:
  description: The previous holder of a stale lock that was taken over.
  returned: when a stale lock was taken over
  type: dict
waited_seconds:
  description: How long the module waited for the lock.
  returned: when O(state=locked)
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rum.pool.plugins.module_utils._lock import LockDir, LockError


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="locked", choices=["locked", "unlocked"]),
            token=dict(type="str", no_log=True),
            lock_dir=dict(type="path", default="/run/lock/rum-pool"),
            timeout=dict(type="int", default=600),
            stale_after=dict(type="int", default=3600),
            owner=dict(type="str", default=""),
        ),
        required_if=[("state", "unlocked", ("token",))],
        supports_check_mode=False,
    )
    p = module.params
    locks = LockDir(p["lock_dir"])
    try:
        if p["state"] == "locked":
            start = time.monotonic()
            record = locks.acquire(p["name"], timeout=p["timeout"], stale_after=p["stale_after"], owner=p["owner"])
            result = {"changed": True, "token": record["token"], "waited_seconds": round(time.monotonic() - start, 3)}
            if record.get("took_over"):
                result["took_over"] = record["took_over"]
                module.warn(f"rum_lock: took over stale lock '{p['name']}' from {record['took_over']}")
            module.exit_json(**result)
        module.exit_json(changed=locks.release(p["name"], p["token"]))
    except LockError as exc:
        module.fail_json(msg=f"rum_lock: {exc}")


if __name__ == "__main__":
    main()
