# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sample credentials for the Windows bootstrap tests, shaped like what gh_runner_token returns."""

from __future__ import annotations

import base64
import json

from ansible_collections.rum.pool.plugins.module_utils import _windows_guest


def _b64(data: dict | str) -> str:
    text = data if isinstance(data, str) else json.dumps(data)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


RUNNER_FILES = {
    ".runner": {"AgentId": 42, "AgentName": "ci-hv1-1-k3x9qa", "PoolId": 1, "PoolName": "Default",
                "ServerUrl": "https://pipelines.actions.githubusercontent.com/abc", "GitHubUrl": "https://github.com/o/r",
                "WorkFolder": "_work", "Ephemeral": "True"},
    ".credentials": {"Scheme": "OAuth", "Data": {"clientId": "c0ffee", "authorizationUrl": "https://x/y"}},
    ".credentials_rsaparams": {"d": "AQAB", "dp": "AQAB", "dq": "AQAB", "exponent": "AQAB", "inverseQ": "AQAB",
                               "modulus": "AQAB", "p": "AQAB", "q": "AQAB"},
}
JIT_CONFIG = _b64({name: _b64(content) for name, content in RUNNER_FILES.items()})
REGISTRATION = {"token": "AABBCCDDEEFFGGHHIIJJKKLLMMNN1", "url": "https://github.com/o/r", "name": "ci-hv1-2-p0q1rs",
                "labels": ["self-hosted", "windows", "x64"], "runner_group": "Build farm", "work_folder": "_work"}


def rendered_scripts() -> list[tuple[str, str]]:
    """(label, script) for every script the bootstrap renders, for JIT and registration, poweroff on and off."""
    out = []
    for mode, credential in (("jit", JIT_CONFIG), ("registration", REGISTRATION)):
        for poweroff in (True, False):
            scripts = _windows_guest.bootstrap_scripts(credential, poweroff=poweroff)
            for name, text in scripts.items():
                out.append((f"{mode} poweroff={poweroff} {name}", text))
    scripts = _windows_guest.bootstrap_scripts(JIT_CONFIG, cache_url="http://cache.internal:3000/t0k/")
    out.append(("jit cache_url user-data", scripts["user-data"]))
    return out
