#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_standby
short_description: Wait, on the controller, for the request a warm standby run was started for
version_added: 0.2.0
author: rum.pool developers (@rum-pool)
description:
  - Lets a playbook start before it knows what to do, and wait for its request as a JSON file. The webhook
    service starts C(playbooks/recreate.yml) this way ahead of time, so that Ansible's own start-up (the
    interpreter, the plugins, the inventory and the play, one to two seconds) is behind it when a job ends; it
    then writes the slot to recreate into O(path).
  - While it waits, the file O(path) with C(.ready) appended holds the waiting process id.
  - This module is implemented as an action plugin and runs on the controller; it needs no host.
extends_documentation_fragment:
  - rum.pool.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: It only reads the request.
options:
  path:
    description: Where the request appears (written whole, by a rename); a JSON object C({slot, runner_name, stage}).
    type: path
    required: true
  timeout:
    description: Seconds to wait; without a request by then, RV(request) is null.
    type: int
    default: 3600
  poll:
    description: Seconds between two looks at O(path).
    type: float
    default: 0.01
  warm:
    description:
      - Modules to build before waiting (their AnsiballZ payloads, which Ansible keeps for the rest of the run),
        so that the first task of each after the request does not spend a second or two building it.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Wait for the slot to recreate
  rum.pool.rum_standby:
    path: "{{ standby }}"
    warm: [rum.pool.rum_slots]
  register: request
  run_once: true
"""

RETURN = r"""
request:
  description: The request - C(slot), C(runner_name) (or null), C(stage) (a boolean) - or null after O(timeout).
  returned: always
  type: dict
waited:
  description: Seconds waited.
  returned: always
  type: float
warmed:
  description: The modules of O(warm) built, with the seconds each took.
  returned: always
  type: dict
"""
