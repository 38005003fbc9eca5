#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gh_runner_info
short_description: List the GitHub Actions self-hosted runners of a repository, organization or enterprise
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Lists runners (all pages) and keeps those matching every filter given.
  - Optionally lists the scope's runner groups too, to find a group id by name.
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_github
  - rum.pool.attributes.info_module
  - rum.pool.github
options:
  name:
    description:
      - Only the runner with exactly this name.
    type: str
  name_prefix:
    description:
      - Only runners whose names start with this prefix, for example a pool's V(pool-host1-).
    type: str
  labels:
    description:
      - Only runners that have all these labels.
    type: list
    elements: str
    default: []
  status:
    description:
      - Only runners with this status.
    type: str
    choices: [online, offline]
  busy:
    description:
      - Only busy runners (V(true)) or only idle ones (V(false)).
    type: bool
  runner_groups:
    description:
      - Also return the scope's runner groups in RV(runner_groups).
    type: bool
    default: false
seealso:
  - module: rum.pool.gh_runner_token
  - module: rum.pool.gh_runner
"""

EXAMPLES = r"""
- name: This host's pool runners, with a personal access token
  rum.pool.gh_runner_info:
    organization: acme
    token: "{{ github_pat }}"
    name_prefix: pool-host1-
  register: runners

- name: Idle online runners with the gpu label, as a GitHub App
  rum.pool.gh_runner_info:
    repository: acme/app
    app_id: Iv23liExampleClientId
    app_private_key_path: /etc/rum-pool/github-app.pem
    labels: [gpu]
    status: online
    busy: false

- name: Runner groups of an enterprise on GitHub Enterprise Server
  rum.pool.gh_runner_info:
    api_url: https://github.example.com/api/v3
    enterprise: example
    token: "{{ ghes_classic_pat }}"
    runner_groups: true
  register: ghes
"""

RETURN = r"""
runners:
  description: The matching runners, sorted by name (labels reduced to their names).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The runner's id.
      type: int
    name:
      description: The runner's name.
      type: str
    os:
      description: Its operating system as GitHub reports it (V(unknown) until it first connects).
      type: str
    status:
      description: V(online) or V(offline).
      type: str
    busy:
      description: Whether it is running a job (GitHub updates this with some delay).
      type: bool
    ephemeral:
      description: Whether it takes only one job (JIT runners do).
      type: bool
    labels:
      description: Label names.
      type: list
      elements: str
    runner_group_id:
      description: Its runner group's id.
      type: int
  sample:
    - id: 23
      name: pool-host1-0-3f9c
      os: Linux
      status: online
      busy: true
      ephemeral: true
      labels: [self-hosted, linux]
      runner_group_id: 1
runner_groups:
  description: The scope's runner groups (repositories only have V(Default), id V(1)).
  returned: O(runner_groups=true)
  type: list
  elements: dict
  sample:
    - id: 1
      name: Default
      default: true
scope:
  description: The scope, in words.
  returned: always
  type: str
  sample: organization 'acme'
api:
  description: Requests sent, retries, seconds waited and the last rate-limit headers.
  returned: always
  type: dict
"""

from ansible_collections.rum.pool.plugins.module_utils._github_options import run_module
from ansible_collections.rum.pool.plugins.module_utils._github_tasks import info_task


def main() -> None:
    run_module(
        "gh_runner_info",
        dict(
            name=dict(type="str"),
            name_prefix=dict(type="str"),
            labels=dict(type="list", elements="str", default=[]),
            status=dict(type="str", choices=["online", "offline"]),
            busy=dict(type="bool"),
            runner_groups=dict(type="bool", default=False),
        ),
        lambda api, params, check_mode: info_task(api, params),
    )


if __name__ == "__main__":
    main()
