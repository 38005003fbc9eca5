#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gh_runner
short_description: Delete a GitHub Actions self-hosted runner, or prune a pool's orphaned runners
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - With O(state=absent), deletes one runner record by O(name) or O(runner_id). Nothing happens if it is
    already gone. A busy runner (running a job) is never deleted; the module fails and says so.
  - With O(state=pruned), deletes the orphans of a pool - runners whose names start with O(name_prefix)
    and that are offline and not busy - except names listed in O(keep). Online or busy runners are never
    touched, and neither is any runner without the prefix, so give each host its own prefix.
  - Each runner is looked at again just before it is deleted; one that came online or became busy in the
    meantime is skipped and reported in RV(kept).
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_github
  - rum.pool.github
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  state:
    description:
      - V(absent) deletes the runner given by O(name) or O(runner_id).
      - V(pruned) deletes offline, idle runners named O(name_prefix)... that are not in O(keep).
    type: str
    choices: [absent, pruned]
    default: absent
  name:
    description:
      - The runner's exact name (O(state=absent)).
    type: str
  runner_id:
    description:
      - The runner's id (O(state=absent)). With O(name) too, the id must belong to a runner of that name.
    type: int
  name_prefix:
    description:
      - Prefix of the names of the runners this pool (on this host) made (O(state=pruned)).
    type: str
  keep:
    description:
      - Runner names O(state=pruned) must leave alone even when offline, for example JIT runners whose
        virtual machines are still booting (they stay offline until the runner connects).
    type: list
    elements: str
    default: []
seealso:
  - module: rum.pool.gh_runner_token
  - module: rum.pool.gh_runner_info
"""

EXAMPLES = r"""
- name: Delete the runner record of a slot before recreating it
  rum.pool.gh_runner:
    organization: acme
    token: "{{ github_pat }}"
    name: pool-host1-0-3f9c
    state: absent

- name: Prune this host's orphaned runners, keeping the ones whose VMs are booting (GitHub App)
  rum.pool.gh_runner:
    repository: acme/app
    app_id: "123456"
    app_private_key: "{{ lookup('ansible.builtin.file', 'github-app.pem') }}"
    name_prefix: pool-host1-
    keep: "{{ booting_runner_names }}"
    state: pruned
  register: pruned

- name: Delete a runner on GitHub Enterprise Server by id
  rum.pool.gh_runner:
    api_url: https://github.example.com/api/v3
    enterprise: example
    token: "{{ ghes_classic_pat }}"
    runner_id: 42
    state: absent
"""

RETURN = r"""
runner:
  description: The runner deleted (or that would be deleted in check mode); null when there was none.
  returned: O(state=absent)
  type: dict
  sample:
    id: 23
    name: pool-host1-0-3f9c
    os: Linux
    status: offline
    busy: false
    ephemeral: true
    labels: [self-hosted, linux]
    runner_group_id: 1
deleted:
  description: The orphaned runners deleted (or that would be deleted in check mode).
  returned: O(state=pruned)
  type: list
  elements: dict
kept:
  description: Runners with the prefix that were left alone, each with a C(reason) (V(busy), V(online),
    V(in keep list), or what changed just before deleting).
  returned: O(state=pruned)
  type: list
  elements: dict
state:
  description: The O(state) acted on.
  returned: always
  type: str
scope:
  description: The scope, in words.
  returned: always
  type: str
  sample: repository 'acme/app'
api:
  description: Requests sent, retries, seconds waited and the last rate-limit headers.
  returned: always
  type: dict
"""

from ansible_collections.rum.pool.plugins.module_utils._github_options import run_module
from ansible_collections.rum.pool.plugins.module_utils._github_tasks import runner_task


def main() -> None:
    run_module(
        "gh_runner",
        dict(
            state=dict(type="str", default="absent", choices=["absent", "pruned"]),
            name=dict(type="str"),
            runner_id=dict(type="int"),
            name_prefix=dict(type="str"),
            keep=dict(type="list", elements="str", default=[]),
        ),
        runner_task,
        required_if=[("state", "absent", ("name", "runner_id"), True), ("state", "pruned", ("name_prefix",))],
    )


if __name__ == "__main__":
    main()
