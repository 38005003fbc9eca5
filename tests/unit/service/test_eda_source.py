# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's Event-Driven Ansible source checks signatures with the service's own code,
and names the slot with the collection's slot grammar. (ansible-rulebook runs it for real in
tests/integration/test_webhook_service.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import socket
import sys
import urllib.error
import urllib.request

import pytest

from rum_pool_webhook import signature

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SOURCE = os.path.join(ROOT, "extensions", "eda", "plugins", "event_source", "github_webhook.py")
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github.examples import example, retarget, signed_headers  # noqa: E402  pylint: disable=wrong-import-position


def load():
    return runpy.run_path(SOURCE)  # as ansible-rulebook loads an event source


def test_the_source_checks_signatures_with_the_services_file():
    source = load()
    assert os.path.samefile(source["signature"].__file__, signature.__file__)
    body = b"Hello, World!"
    verifier = source["signature"].Verifier(b"It's a Secret to Everybody")
    verifier.update(body)
    assert verifier.header() == signature.sign(b"It's a Secret to Everybody", body) == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_the_slot_comes_from_the_collections_grammar():
    source = load()
    assert os.path.samefile(source["slot"].__file__, os.path.join(ROOT, "plugins", "module_utils", "_slot.py"))
    payload = json.loads(retarget(example("completed"), "ci-hv1-3-k3x9qa"))
    headers = {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-1"}
    assert source["describe"](payload, headers, ["ci"]) == {
        "event": "workflow_job", "action": "completed", "delivery": "d-1",
        "runner_name": "ci-hv1-3-k3x9qa", "pool": "ci", "slot": "ci-hv1-3", "stage": False}
    assert source["describe"](payload, headers, ["other"]) == {}
    assert source["describe"](payload, {"X-GitHub-Event": "push"}, ["ci"]) == {}
    assert source["_names"]("['ci', 'gpu']") == source["_names"]("ci, gpu") == ["ci", "gpu"]


def test_only_a_jobs_start_is_marked_for_staging_and_only_when_asked():
    source = load()
    headers = {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-2"}
    started = json.loads(retarget(example("in_progress"), "ci-hv1-3-k3x9qa"))
    completed = json.loads(retarget(example("completed"), "ci-hv1-3-k3x9qa"))
    assert source["describe"](started, headers, ["ci"], True)["stage"] is True
    assert source["describe"](started, headers, ["ci"], False)["stage"] is False
    assert source["describe"](started, headers, ["ci"])["stage"] is False
    assert source["describe"](completed, headers, ["ci"], True)["stage"] is False
    flag = source["_flag"]
    assert [flag(v, "stage") for v in (True, "True", " yes ", "1", "on")] == [True] * 5
    assert [flag(v, "stage") for v in (False, None, "False", "no", "0", "off", "")] == [False] * 7
    with pytest.raises(ValueError, match="stage must be true or false, got 'maybe'"):
        flag("maybe", "stage")


def test_the_source_queues_signed_deliveries_only():
    source = load()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    body = retarget(example("completed"), "ci-hv1-1-k3x9qa")

    async def scenario():
        queue: asyncio.Queue = asyncio.Queue()
        task = asyncio.ensure_future(source["main"](queue, {"host": "127.0.0.1", "port": port,
                                                            "secret": "s3cret", "pools": ["ci"]}))
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()

        def send(headers):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        good = signed_headers(body, b"s3cret", delivery="d-ok")
        unsigned = {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}
        codes = [await loop.run_in_executor(None, send, h)
                 for h in (unsigned, signed_headers(body, b"wrong"), good)]
        event = await asyncio.wait_for(queue.get(), 5)
        task.cancel()
        return codes, queue.qsize(), event

    codes, left, event = asyncio.run(scenario())
    assert codes == [401, 401, 200] and left == 0
    assert event["rum_pool"]["slot"] == "ci-hv1-1" and event["meta"]["headers"]["X-GitHub-Delivery"] == "d-ok"
    assert "X-Hub-Signature-256" not in event["meta"]["headers"]
    assert event["payload"]["workflow_job"]["runner_name"] == "ci-hv1-1-k3x9qa"
