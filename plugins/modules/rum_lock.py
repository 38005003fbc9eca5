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
  - The module comes with an action plugin of the same name that records which C(ansible-playbook)
    process on which controller holds the lock (O(holder)). When the holder of a lock ran on the
    same controller and its process is gone (killed, for example, so that its release in C(always)
    never ran), or it ran there before the controller rebooted, the lock is taken over at once, with
    a warning naming that holder, instead of after O(stale_after). A holder on another controller is
    waited for as before.
  - The action plugin waits in rounds of at most 15 seconds, looking at the holder between rounds,
    until O(timeout) is used up.
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
  holder:
    description:
      - The identity of the process that takes the lock, recorded with it so that a later run on the
        same controller can tell whether that process is still alive.
      - Set by the action plugin (the C(ansible-playbook) process that runs the task); there is no
        need to set it by hand.
    type: dict
    suboptions:
      controller:
        description: Host name of the controller.
        type: str
        required: true
      pid:
        description: Process id of C(ansible-playbook) on the controller.
        type: int
        required: true
      boot_id:
        description: The controller's boot id (C(/proc/sys/kernel/random/boot_id)), empty when unknown.
        type: str
        default: ""
      started:
        description: Start time of that process, in clock ticks since boot; null when unknown.
        type: int
  take_over:
    description:
      - The RV(held_by.lock_id) of a holder found dead; that lock, if it is still held by that holder,
        is taken over at once. Any other holder is waited for as usual.
      - Set by the action plugin when it finds the holder's process gone; there is no need to set it
        by hand.
    type: str
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
  description: The previous holder of a lock that was taken over (stale, or its holder gone), without its token.
  returned: when a lock was taken over
  type: dict
  sample:
    owner: recreate of ci-hv1-1 (pool.yml)
    since: 1718000000.5
    lock_id: 3f2a9c0d41b7
    holder: {controller: ctl1, pid: 4242, boot_id: 0b6f9a4e-1c55-4f3e-9d1e-5a7f1b2c3d4e, started: 912345}
waited_seconds:
  description: How long the task waited for the lock, over all its rounds.
  returned: when O(state=locked)
  type: float
held_by:
  description: The run that holds the lock, when it could not be taken before O(timeout) ran out. Never its token.
  returned: on failure, when the lock is held by another run
  type: dict
  contains:
    owner:
      description: The holder's O(owner).
      type: str
    since:
      description: When the holder took the lock (seconds since the epoch, on the target).
      type: float
    held_for:
      description: Seconds the lock has been held.
      type: float
    holder:
      description: The holder's O(holder) identity, when it recorded one.
      type: dict
    lock_id:
      description: A short hash of the holder's token, naming this taking of the lock (see O(take_over)).
      type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rum.pool.plugins.module_utils._lock import LockDir, LockError, LockHeld, describe_holder


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
            holder=dict(type="dict", options=dict(
                controller=dict(type="str", required=True),
                pid=dict(type="int", required=True),
                boot_id=dict(type="str", default=""),
                started=dict(type="int"),
            )),
            take_over=dict(type="str"),
        ),
        required_if=[("state", "unlocked", ("token",))],
        supports_check_mode=False,
    )
    p = module.params
    locks = LockDir(p["lock_dir"])
    try:
        if p["state"] == "locked":
            start = time.monotonic()
            record = locks.acquire(p["name"], timeout=p["timeout"], stale_after=p["stale_after"], owner=p["owner"],
                                   holder=p["holder"], take_over=p["take_over"])
            result = {"changed": True, "token": record["token"], "waited_seconds": round(time.monotonic() - start, 3)}
            if record.get("took_over"):
                result["took_over"] = record["took_over"]
                if record.get("took_over_why") == "stale":  # a dead holder is reported by the action plugin
                    module.warn(f"rum_lock: took over stale lock '{p['name']}' from {describe_holder(record['took_over'])}")
            module.exit_json(**result)
        module.exit_json(changed=locks.release(p["name"], p["token"]))
    except LockHeld as exc:
        module.fail_json(msg=f"rum_lock: {exc}", held_by=exc.held_by)
    except LockError as exc:
        module.fail_json(msg=f"rum_lock: {exc}")
    except OSError as exc:  # the lock directory itself: permissions, a full disk
        where = exc.filename or p["lock_dir"]
        module.fail_json(msg=f"rum_lock: lock '{p['name']}': {where}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
