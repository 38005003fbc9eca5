# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional orjson parser gives the same delivery, or the same refusal, as the standard
library for the same bytes; and the service parses without it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rum_pool_webhook import events
from rum_pool_webhook.events import EventError, parse_delivery
from tests import needs

orjson = needs.module("orjson", "pip install orjson==3.13.0, the service's 'fast' extra")

HEADERS = {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-1"}


def outcome(body: bytes, content_type: str = "application/json"):
    try:
        return "delivery", parse_delivery(HEADERS, body, content_type)
    except EventError as exc:
        return "refused", exc.status, exc.message


def both(monkeypatch, body: bytes, content_type: str = "application/json"):
    """(with orjson, with the standard library only) for the same bytes."""
    monkeypatch.setattr(events, "_orjson", orjson)
    fast = outcome(body, content_type)
    monkeypatch.setattr(events, "_orjson", None)
    return fast, outcome(body, content_type)


def job_body(**job) -> bytes:
    base = {"id": 1, "run_id": 2, "name": "build", "runner_name": "ci-hv1-1-k3x9qa",
            "labels": ["self-hosted", "ci"], "conclusion": "success"}
    base.update(job)
    return json.dumps({"action": "completed", "workflow_job": base,
                       "repository": {"full_name": "o/r"}}).encode()


def nested(depth: int) -> bytes:
    return b'{"action": "completed", "workflow_job": ' + b"[" * depth + b"]" * depth + b"}"


CASES = {
    "plain": job_body(),
    "ids past 64 bits": job_body(id=2 ** 64, run_id=-(2 ** 63) - 1),
    "ids at 64 bits": job_body(id=2 ** 64 - 1, run_id=-(2 ** 63)),
    "float ids": job_body(id=1.5, run_id=2.0),
    "big ints in string fields": job_body(name=2 ** 70, runner_name=2 ** 65, labels=[2 ** 80, "ci"]),
    "NaN and Infinity": b'{"action": "completed", "workflow_job": {"id": NaN, "run_id": Infinity}}',
    "float overflow": b'{"action": "completed", "workflow_job": {"id": 1e400}}',
    "lone surrogate": b'{"action": "completed", "workflow_job": {"name": "\\ud800", "id": 3}}',
    "surrogate pair": b'{"action": "completed", "workflow_job": {"name": "\\ud83d\\ude00", "id": 3}}',
    "duplicate keys": b'{"action": "queued", "action": "completed", "workflow_job": {"id": 1, "id": 2}}',
    "byte order mark": b'\xef\xbb\xbf' + job_body(),
    "not UTF-8": b'{"action": "\xff"}',
    "control character in a string": b'{"action": "a\x01b"}',
    "trailing garbage": job_body() + b"x",
    "trailing comma": b'{"action": "completed",}',
    "a list": b"[1, 2]",
    "a string": b'"completed"',
    "empty": b"",
    "whitespace around": b" \t\r\n" + job_body() + b"\n",
    "no workflow_job object": b'{"action": "completed", "workflow_job": [1]}',
    "nested 200 deep": nested(200),
    "nested 1000 deep": nested(1000),
    "nested 1020 deep": nested(1020),
    "nested 1030 deep": nested(1030),
    "nested 100000 deep": nested(100000),
}


@pytest.mark.parametrize("body", CASES.values(), ids=list(CASES))
def test_same_outcome_with_and_without_orjson(monkeypatch, body):
    fast, slow = both(monkeypatch, body)
    assert fast == slow


def test_same_delivery_for_every_real_example(monkeypatch, workflow_job_examples):
    assert workflow_job_examples
    for payload in workflow_job_examples:
        for body in (json.dumps(payload).encode(), json.dumps(payload, indent=2).encode()):
            fast, slow = both(monkeypatch, body)
            assert fast == slow and fast[0] == "delivery"


def test_form_encoded_bodies_are_parsed_by_the_standard_library(monkeypatch):
    """orjson is only for JSON bodies: a form's payload field goes the stdlib's way."""
    calls = []
    monkeypatch.setattr(events, "_orjson", type("Spy", (), {"loads": staticmethod(
        lambda data: calls.append(data) or orjson.loads(data))}))
    delivery = parse_delivery(HEADERS, b"payload=" + job_body().replace(b" ", b"+"),
                              "application/x-www-form-urlencoded")
    assert delivery.job_id == 1 and calls == []
    parse_delivery(HEADERS, job_body(), "application/json")
    assert len(calls) == 1


def test_orjson_is_not_asked_about_bodies_with_many_brackets(monkeypatch):
    """Past FAST_BRACKETS opening brackets the stdlib alone decides, so where the two parsers
    stop for depth never shows."""
    calls = []
    monkeypatch.setattr(events, "_orjson", type("Spy", (), {"loads": staticmethod(
        lambda data: calls.append(data) or orjson.loads(data))}))
    within = nested(events.FAST_BRACKETS - 1)  # plus the body's own brace
    assert within.count(b"[") + within.count(b"{") == events.FAST_BRACKETS
    outcome(within)
    assert len(calls) == 1
    outcome(nested(events.FAST_BRACKETS))
    assert len(calls) == 1


def test_parses_without_orjson(monkeypatch):
    monkeypatch.setattr(events, "_orjson", None)
    delivery = parse_delivery(HEADERS, job_body(id=2 ** 64), "application/json")
    assert delivery.job_id == 2 ** 64 and delivery.runner_name == "ci-hv1-1-k3x9qa"
    with pytest.raises(EventError) as exc:
        parse_delivery(HEADERS, nested(100000), "application/json")
    assert exc.value.status == 400 and "nested too deeply" in exc.value.message


def test_big_ids_come_out_as_exact_integers_with_orjson(monkeypatch):
    monkeypatch.setattr(events, "_orjson", orjson)
    delivery = parse_delivery(HEADERS, job_body(id=2 ** 64 + 1, run_id=2 ** 70), "application/json")
    assert delivery.job_id == 2 ** 64 + 1 and delivery.run_id == 2 ** 70


def test_the_module_imports_and_parses_where_orjson_is_not_installed():
    """A fresh interpreter where importing orjson fails, as on a host without the extra."""
    code = ("import sys; sys.modules['orjson'] = None\n"
            "from rum_pool_webhook import events\n"
            "assert events._orjson is None\n"
            "d = events.parse_delivery({'X-GitHub-Event': 'workflow_job', 'X-GitHub-Delivery': 'd'},"
            " sys.stdin.buffer.read(), 'application/json')\n"
            "print(d.job_id, d.runner_name)\n")
    done = subprocess.run([sys.executable, "-c", code], input=job_body(id=2 ** 64), capture_output=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [str(2 ** 64), "ci-hv1-1-k3x9qa"]
