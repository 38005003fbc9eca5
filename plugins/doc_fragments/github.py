# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the gh_runner* modules: where the runners live, how to authenticate, retries."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the GitHub REST API.
      - For GitHub Enterprise Server use V(https://HOSTNAME/api/v3).
    type: str
    default: https://api.github.com
  repository:
    description:
      - Manage the runners of this repository, given as V(owner/repo).
      - Exactly one of O(repository), O(organization) and O(enterprise) is required.
    type: str
  organization:
    description:
      - Manage the runners of this organization.
    type: str
  enterprise:
    description:
      - Manage the runners of this enterprise (slug).
      - GitHub only accepts a classic personal access token with the C(manage_runners:enterprise) scope here,
        so O(app_id) cannot be used with it.
    type: str
  token:
    description:
      - A personal access token (classic or fine-grained) used as a bearer token.
      - A repository needs C(Administration) write permission (classic C(repo) scope), an organization needs
        C(Self-hosted runners) write permission (classic C(admin:org) scope).
      - Mutually exclusive with O(app_id).
    type: str
  app_id:
    description:
      - Authenticate as a GitHub App, given its numeric App ID or its client ID (V(Iv23...)).
      - The module signs a short-lived RS256 JWT with the App's private key and exchanges it for an
        installation access token.
      - Requires the C(cryptography) Python library on the host that runs the module.
    type: str
  app_private_key:
    description:
      - The App's private key, PEM text. Mutually exclusive with O(app_private_key_path).
    type: str
  app_private_key_path:
    description:
      - Path to a file holding the App's PEM private key.
    type: path
  app_installation_id:
    description:
      - The App installation to use. When omitted it is looked up for the repository's owner or the organization.
    type: int
  app_token_cache_dir:
    description:
      - Directory where installation tokens are cached (one 0600 file per App installation) so that
        later tasks reuse a token until five minutes before it expires instead of asking for a new one.
      - Without it, a token is only reused within one module run.
    type: path
  validate_certs:
    description:
      - Verify the TLS certificate of O(api_url).
    type: bool
    default: true
  ca_path:
    description:
      - A CA bundle to verify O(api_url) with, for example a GitHub Enterprise Server's private CA.
    type: path
  timeout:
    description:
      - Seconds to wait for each HTTP response.
    type: int
    default: 30
  max_wait:
    description:
      - The most seconds one API call may spend waiting before retries (rate limits, C(Retry-After),
        server errors). When the next wait would pass this bound the module fails with a message
        saying what GitHub answered.
      - GitHub's secondary rate limits without a C(Retry-After) header need at least a minute.
    type: int
    default: 300
  max_retries:
    description:
      - How often a call is retried after a server error (5xx) or a network failure, with exponential
        backoff and jitter. Rate-limit waits are bounded by O(max_wait) instead.
    type: int
    default: 5
notes:
  - 'Requests send C(Accept: application/vnd.github+json), C(X-GitHub-Api-Version: 2022-11-28) and a User-Agent.'
  - See the collection's C(docs/github.md) for creating tokens and Apps and the permissions each scope needs.
requirements:
  - cryptography >= 41 (only for GitHub App authentication)
"""
