# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GitHub's own example webhook bodies (npm ``@octokit/webhooks-examples``), as bytes.

Each example is cut out of the package's ``index.json`` byte for byte, as published: never parsed
and dumped again, so a body keeps its layout, its key order and its characters, and a signature
is computed over exactly those bytes, as GitHub computes it over what it sends. ``retarget``
changes the runner name (so a real payload lands on one of a test's slots) in place, leaving every
other byte alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INDEX = os.path.join(ROOT, ".cache", "npm", "node_modules", "@octokit", "webhooks-examples",
                     "api.github.com", "index.json")
HINT = "run: bash tools/fetch-test-data.sh"


def raw_examples(event: str = "workflow_job", index: str = INDEX) -> list[bytes]:
    """The examples of ``event``, each the exact bytes of its object in ``index.json``."""
    if not os.path.exists(index):
        raise FileNotFoundError(f"{index} is missing: {HINT}")
    with open(index, encoding="utf-8") as fh:
        text = fh.read()
    decoder = json.JSONDecoder()
    match = re.search(r'"name":\s*"%s"' % re.escape(event), text)
    if match is None:
        raise LookupError(f"no {event!r} entry in {index}")
    start = text.index('"examples":', match.end())
    pos = text.index("[", start) + 1
    out = []
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return out
        _value, end = decoder.raw_decode(text, pos)
        out.append(text[pos:end].encode("utf-8"))
        pos = end


def example(action: str, event: str = "workflow_job", with_runner: bool = True) -> bytes:
    """The first example of ``event`` with ``action`` (and, by default, a runner name)."""
    for raw in raw_examples(event):
        data = json.loads(raw)
        job = data.get(event) or {}
        if data.get("action") == action and (not with_runner or job.get("runner_name")):
            return raw
    raise LookupError(f"no {event} example with action {action!r}")


def retarget(raw: bytes, runner_name: str) -> bytes:
    """``raw`` with its ``workflow_job.runner_name`` value replaced; every other byte kept."""
    old = json.loads(raw)["workflow_job"]["runner_name"]
    needle = re.compile(rb'("runner_name":\s*)' + re.escape(json.dumps(old).encode()))
    new, count = needle.subn(lambda m: m.group(1) + json.dumps(runner_name).encode(), raw)
    if count != 1:
        raise ValueError(f"runner_name {old!r} found {count} times in the example")
    return new


def signed_headers(body: bytes, secret: bytes, delivery: str | None = None,
                   event: str = "workflow_job") -> dict[str, str]:
    """The headers GitHub sends with ``body`` (``X-Hub-Signature-256`` over the exact bytes)."""
    return {
        "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/rum-test",
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }
