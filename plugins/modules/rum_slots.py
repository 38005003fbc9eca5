#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_slots
short_description: Converge, recreate, stage or remove many runner slots of a pool on one libvirt host at once
version_added: 0.2.0
author: rum.pool developers (@rum-pool)
description:
  - The runner pool's batch module for the V(libvirt) backend. One task converges all of a host's slots,
    removes them (teardown), recreates one slot when its job has ended, or stages a busy slot's next
    generation; slots are worked on concurrently (the pool setting C(concurrency)), each under its own lock, the same
    lock the slot-by-slot path (the runner_slot role) takes.
  - It comes with an action plugin of the same name, which does the GitHub side on the controller
    (listing the pool's runners, minting just-in-time runner configs, deregistering runners, pruning orphan
    runner records) and calls this module on the host twice - C(prepare) and C(act) - and again for slots whose
    lock another run held.
  - A slot's next generation is made off the critical path while its runner runs a job (O(mode=stage), sent
    by the webhook service on C(workflow_job in_progress), and by each converge for busy slots) - a JIT
    runner, its seed, an overlay and a VM defined, never started, as C(<slot>.<suffix>). When the job ends,
    O(mode=recreate) destroys the slot's VM and starts the staged one under the slot's name; it needs nothing
    from GitHub before the start. Without a usable staged generation a new one is booted, as before.
  - The pool's settings, the plan and every decision are made in Python (C(module_utils/_slots.py) and
    C(_pool.py)); the task only reports. The status table of a converge is RV(table).
extends_documentation_fragment:
  - rum.pool.attributes
attributes:
  check_mode:
    support: full
    details: Plans and checks each slot's generation; takes no lock and changes nothing, here or at GitHub.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A converge of a converged pool changes nothing; a repeated recreate or stage request does nothing.
options:
  pool:
    description:
      - The pool's settings, C(lookup('rum.pool.pool_settings')) (the C(runner_pool_*) variables checked and
        completed). Its C(github) credentials stay on the controller; the module gets the rest.
      - With its C(wait_online) set, the task waits until GitHub shows the runner of each generation it
        started online, at most C(online_timeout) seconds, and fails naming the slots whose runner was not.
    type: dict
    required: true
  mode:
    description:
      - V(converge) makes the host's slots what the pool wants (create, recreate, remove, stage); V(absent)
        removes them all, with their staged and retired generations and their runner records.
      - V(recreate) gives O(slot) a new generation, starting its staged one when it has one; V(stage)
        prepares O(slot)'s next generation.
    type: str
    choices: [converge, absent, recreate, stage]
    default: converge
  slot:
    description: The slot, C(<pool>-<host>-<index>), with O(mode=recreate) or O(mode=stage).
    type: str
  runner_name:
    description:
      - The generation the request is about (the webhook's C(workflow_job.runner_name)) - the slot is acted on
        only while it still holds it, so a repeated or late request does nothing. Required with O(mode=stage).
    type: str
  phase:
    description: Internal, set by the action plugin - V(prepare) or V(act).
    type: str
    choices: [prepare, act]
    default: prepare
  runners:
    description: Internal, set by the action plugin - the pool's runners at GitHub, for the plan.
    type: list
    elements: dict
    default: []
  jobs:
    description: Internal, set by the action plugin - the slots C(prepare) handed back, for C(act).
    type: list
    elements: dict
    default: []
  credentials:
    description: Internal, set by the action plugin - each slot's runner credential, for C(act).
    type: dict
    default: {}
  only:
    description: Internal, set by the action plugin - prepare only these slots (a second round for held locks).
    type: list
    elements: str
  take_over:
    description: Internal, set by the action plugin - slot to the lock id (C(held_by.lock_id) of a first round) of a holder found dead.
    type: dict
    default: {}
  holder:
    description: Internal, set by the action plugin - the C(ansible-playbook) process that holds the locks.
    type: dict
  lock_dir:
    description: Directory that holds the slot locks (the one rum.pool.rum_lock uses).
    type: path
    default: /run/lock/rum-pool
  lock_timeout:
    description: Internal, set by the action plugin - seconds this call waits for a slot lock held by another run.
    type: int
    default: 0
notes:
  - The module runs on the hypervisor and needs C(libvirt-python) and C(pycdlib) there, as rum.pool.rum_vm does.
seealso:
  - module: rum.pool.rum_vm
  - module: rum.pool.rum_lock
"""

EXAMPLES = r"""
- name: Converge this host's slots (what the runner_pool role does for the libvirt backend)
  rum.pool.rum_slots:
    pool: "{{ lookup('rum.pool.pool_settings') }}"
  register: pool_done

- name: The slot whose job completed gets its staged generation (the webhook service's recreate)
  rum.pool.rum_slots:
    pool: "{{ lookup('rum.pool.pool_settings') }}"
    mode: recreate
    slot: ci-hv1-1
    runner_name: ci-hv1-1-k3x9qa
"""

RETURN = r"""
slots:
  description: What was done to each slot that needed work.
  returned: always
  type: list
  elements: dict
  contains:
    slot:
      description: The slot.
      type: str
    action:
      description: What the plan or the request asked (create, recreate, remove, stage, discard).
      type: str
    outcome:
      description: created, recreated, removed, staged, cleaned, skipped or failed.
      type: str
    reason:
      description: One line saying why.
      type: str
    new_runner:
      description: The new generation's runner name, when one was made.
      type: str
    started:
      description: The runner of the generation the slot started (made now, or staged before), when it started one.
      type: str
    timings:
      description: Seconds spent on the slot's libvirt steps (define, destroy, start, remove).
      type: dict
plan:
  description: The plan of a converge or a removal (see the rum.pool.slot_plan filter).
  returned: with O(mode=converge) or O(mode=absent)
  type: dict
table:
  description: The slot status table of a converge or a removal.
  returned: with O(mode=converge) or O(mode=absent)
  type: str
outcome:
  description: The slot's C({outcome, reason}) for O(mode=recreate) and O(mode=stage).
  returned: with O(mode=recreate) or O(mode=stage)
  type: dict
deleted_runners:
  description: The runner records deleted at GitHub (freed by the work, orphans pruned, minted for failed slots).
  returned: always
  type: list
  elements: str
timings:
  description:
    - Seconds the batch spent listing and minting at GitHub, in the module's two calls on the host and, with
      C(wait_online), waiting for the new runners online.
  returned: always
  type: dict
  sample: {"github_list": 0.05, "prepare": 0.8, "github_mint": 0.3, "act": 4.2, "github_online": 41.0}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _slots as slots
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

try:
    import pycdlib  # noqa: F401  pylint: disable=unused-import
    HAS_PYCDLIB = True
    PYCDLIB_ERROR = None
except ImportError:
    HAS_PYCDLIB = False
    PYCDLIB_ERROR = traceback.format_exc()


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            pool=dict(type="dict", required=True),
            mode=dict(type="str", default="converge", choices=list(slots.MODES)),
            slot=dict(type="str"),
            runner_name=dict(type="str"),
            phase=dict(type="str", default="prepare", choices=["prepare", "act"]),
            runners=dict(type="list", elements="dict", default=[]),
            jobs=dict(type="list", elements="dict", default=[]),
            credentials=dict(type="dict", default={}, no_log=True),
            only=dict(type="list", elements="str"),
            take_over=dict(type="dict", default={}),
            holder=dict(type="dict"),
            lock_dir=dict(type="path", default=slots.LOCK_DIR),
            lock_timeout=dict(type="int", default=0),
        ),
        required_if=[("mode", "recreate", ("slot",)), ("mode", "stage", ("slot", "runner_name"))],
        supports_check_mode=True,
    )
    if not lv.HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=str(lv.LIBVIRT_IMPORT_ERROR))
    if not HAS_PYCDLIB:
        module.fail_json(msg=missing_required_lib("pycdlib"), exception=PYCDLIB_ERROR)
    p = module.params
    try:
        result = slots.run_phase(dict(p["pool"]), mode=p["mode"], phase=p["phase"], slot=p["slot"],
                                 runner_name=p["runner_name"], runners=p["runners"], jobs=p["jobs"],
                                 credentials=p["credentials"], only=p["only"], take_over=p["take_over"],
                                 holder=p["holder"], lock_dir=p["lock_dir"], lock_timeout=p["lock_timeout"],
                                 check_mode=module.check_mode, log=module.log)
    except (slots.SlotsError, SlotError, lv.LibvirtError) as exc:
        module.fail_json(msg=f"rum_slots: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
