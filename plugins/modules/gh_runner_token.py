#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gh_runner_token
short_description: Create GitHub Actions runner registration tokens, remove tokens and JIT runner configs
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - With O(kind=jit), creates a just-in-time runner at GitHub and returns its C(encoded_jit_config), which
    starts a single-use runner with C(./run.sh --jitconfig ...). GitHub creates the (offline) runner record
    at once; the runner takes one job and is then removed by GitHub.
  - With O(kind=registration) or O(kind=remove), returns a one-hour token for C(config.sh) or
    C(config.sh remove).
  - Works on a repository, an organization or an enterprise, with a personal access token or a GitHub App,
    on github.com or GitHub Enterprise Server (O(api_url)).
  - Rate limits are honoured (C(Retry-After), C(x-ratelimit-reset), backoff with jitter) up to O(max_wait).
  - The returned RV(token) and RV(encoded_jit_config) are secrets. Use C(no_log) on the task if its result
    could be printed, and never write them where a job running on the runner can read them.
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_github
  - rum.pool.github
attributes:
  check_mode:
    support: full
    details:
      - No token or runner is created. For O(kind=jit) the runner group and an existing runner of that name
        are still looked up, so a conflict is reported in check mode too.
  diff_mode:
    support: partial
    details:
      - Only O(kind=jit) reports a diff (the runner before and after).
  idempotent:
    support: none
    details:
      - Every run creates a new token or runner; use O(on_conflict=replace) to replace a stale runner.
options:
  kind:
    description:
      - V(jit) creates a just-in-time runner and returns its configuration.
      - V(registration) returns a registration token, V(remove) a remove token.
    type: str
    choices: [jit, registration, remove]
    required: true
  name:
    description:
      - The runner's name (O(kind=jit) only). It must be unique in the scope.
    type: str
  labels:
    description:
      - The runner's labels (O(kind=jit) only), 1 to 100. GitHub adds no labels to JIT runners by itself, so
        give every label workflows select on, for example V(self-hosted), V(linux), V(x64).
    type: list
    elements: str
  runner_group:
    description:
      - Name of the runner group to put the runner in (O(kind=jit) only); its id is looked up.
      - Repositories only have the V(Default) group. Mutually exclusive with O(runner_group_id).
    type: str
  runner_group_id:
    description:
      - Id of the runner group (O(kind=jit) only). The default group is V(1).
    type: int
  work_folder:
    description:
      - The runner's work directory, relative to its install directory (O(kind=jit) only). GitHub's default
        is V(_work).
    type: str
  on_conflict:
    description:
      - What to do when GitHub answers that a runner of that name exists (HTTP 409).
      - V(fail) stops with a message naming the runner and the scope.
      - V(replace) deletes the existing runner and retries once, but only when it is offline and not busy;
        an online or busy runner is never replaced.
    type: str
    choices: [fail, replace]
    default: fail
seealso:
  - module: rum.pool.gh_runner
  - module: rum.pool.gh_runner_info
"""

EXAMPLES = r"""
- name: JIT runner for an organization, with a personal access token
  rum.pool.gh_runner_token:
    organization: acme
    token: "{{ github_pat }}"
    kind: jit
    name: pool-host1-0-3f9c
    labels: [self-hosted, linux, x64, pool]
    runner_group: ci-pool
  register: jit
  no_log: true

- name: JIT runner for a repository, as a GitHub App (installation looked up)
  rum.pool.gh_runner_token:
    repository: acme/app
    app_id: Iv23liExampleClientId
    app_private_key_path: /etc/rum-pool/github-app.pem
    app_token_cache_dir: /var/cache/rum-pool
    kind: jit
    name: app-host1-0-7a1e
    labels: [self-hosted, linux]
    on_conflict: replace
  register: jit
  no_log: true

- name: Registration token on GitHub Enterprise Server, waiting at most a minute on rate limits
  rum.pool.gh_runner_token:
    api_url: https://github.example.com/api/v3
    enterprise: example
    token: "{{ ghes_classic_pat }}"
    kind: registration
    max_wait: 60
  register: reg
  no_log: true
"""

RETURN = r"""
token:
  description:
    - The registration or remove token. B(Secret.)
  returned: success and O(kind) is V(registration) or V(remove), not in check mode
  type: str
  sample: AABF3JGZDX3P5PMEXLND6TS6FCWO6
expires_at:
  description: When RV(token) expires (ISO 8601).
  returned: success and O(kind) is V(registration) or V(remove), not in check mode
  type: str
  sample: "2026-01-22T12:13:35.123-08:00"
runner_url:
  description:
    - The scope's web address, what the runner's C(config.sh --url) takes with RV(token)
      (C(https://github.com/OWNER/REPO), C(https://github.com/ORG),
      C(https://github.com/enterprises/ENTERPRISE), or the same paths on a GHES host).
  returned: O(kind) is V(registration) or V(remove)
  type: str
  sample: https://github.com/acme/widgets
encoded_jit_config:
  description:
    - The runner's JIT configuration, for C(run.sh --jitconfig). It holds the runner's credentials. B(Secret.)
  returned: success and O(kind=jit), not in check mode
  type: str
runner_id:
  description: The id of the runner GitHub created.
  returned: success and O(kind=jit), not in check mode
  type: int
  sample: 23
runner:
  description: The runner GitHub created, as it lists it (labels reduced to their names).
  returned: success and O(kind=jit), not in check mode
  type: dict
  sample:
    id: 23
    name: pool-host1-0-3f9c
    os: unknown
    status: offline
    busy: false
    ephemeral: true
    labels: [self-hosted, linux, x64]
    runner_group_id: 1
runner_group_id:
  description: The runner group id used (looked up from O(runner_group) when given by name).
  returned: O(kind=jit)
  type: int
  sample: 1
replaced_runner:
  description: The stale runner deleted (or, in check mode, to be deleted) because of O(on_conflict=replace).
  returned: when a runner was replaced
  type: dict
recovery:
  description:
    - What was done after a JIT request whose answer never came (a timeout or a dropped connection
      after it was sent, or a server error). Such a request is not repeated blindly; the runner
      GitHub may have made for it is looked up by name and removed (its JIT config was lost with the
      answer), and the request is made once more. Also given as a warning.
  returned: when a JIT request had to be recovered
  type: str
  sample: >-
    the JIT request for 'ci-hv1-1-k3x9qa' got no answer, but GitHub had created the runner (id 42);
    without its JIT config it is unusable, so it was removed and 'ci-hv1-1-k3x9qa' created again (id 43)
kind:
  description: The O(kind) of credential made.
  returned: always
  type: str
  sample: jit
scope:
  description: The scope, in words.
  returned: always
  type: str
  sample: organization 'acme'
api:
  description: What the module did at the API, for troubleshooting rate limits.
  returned: always
  type: dict
  contains:
    requests:
      description: HTTP requests sent.
      type: int
    retries:
      description: Requests repeated after a rate limit or server error.
      type: int
    waited_seconds:
      description: Seconds spent waiting before retries.
      type: float
    rate_limit:
      description: The last C(x-ratelimit-*) headers seen (limit, remaining, used, reset, resource).
      type: dict
    auth:
      description: V(personal access token) or V(GitHub App).
      type: str
    installation_token:
      description: V(new) or V(cache), for App authentication.
      type: str
      returned: App authentication, when a token was needed
"""

from ansible_collections.rum.pool.plugins.module_utils._github_options import run_module
from ansible_collections.rum.pool.plugins.module_utils._github_tasks import token_task


def main() -> None:
    run_module(
        "gh_runner_token",
        dict(
            kind=dict(type="str", required=True, choices=["jit", "registration", "remove"]),
            name=dict(type="str"),
            labels=dict(type="list", elements="str"),
            runner_group=dict(type="str"),
            runner_group_id=dict(type="int"),
            work_folder=dict(type="str"),
            on_conflict=dict(type="str", default="fail", choices=["fail", "replace"]),
        ),
        token_task,
        mutually_exclusive=[("runner_group", "runner_group_id")],
        required_if=[("kind", "jit", ("name", "labels"))],
    )


if __name__ == "__main__":
    main()
