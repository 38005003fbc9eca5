# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsing deliveries and deciding on them, with GitHub's real workflow_job example payloads."""

from __future__ import annotations

import json
from email.message import Message
from urllib.parse import urlencode

import pytest

from rum_pool_webhook.events import Decision, EventError, decide, parse_delivery, slot_of

OURS = "ci-hv1-1-k3x9qa"
POOLS = ["ci"]


def headers(event="workflow_job", delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958", **extra):
    out = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def parse(payload, content_type="application/json", **hdrs):
    return parse_delivery(headers(**hdrs), json.dumps(payload).encode(), content_type)


# -- parse_delivery -------------------------------------------------------------------------------

def test_parse_real_completed_example(example):
    payload = example("completed")
    delivery = parse(payload)
    job = payload["workflow_job"]
    assert delivery.id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert delivery.event == "workflow_job" and delivery.action == "completed"
    assert delivery.job_id == job["id"] and delivery.run_id == job["run_id"]
    assert delivery.job_name == job["name"]
    assert delivery.runner_name == job["runner_name"]
    assert delivery.repository == payload["repository"]["full_name"]
    assert list(delivery.labels) == job["labels"]
    assert delivery.conclusion == job["conclusion"] and delivery.conclusion


def test_parse_form_encoded_payload(example):
    payload = example("in_progress", runner_name=OURS)
    body = urlencode({"payload": json.dumps(payload)}).encode()
    delivery = parse_delivery(headers(), body, "application/x-www-form-urlencoded")
    assert delivery.action == "in_progress" and delivery.runner_name == OURS


def test_parse_reads_headers_case_insensitively_from_a_message_object(example):
    msg = Message()
    msg["x-github-event"] = "workflow_job"
    msg["X-Github-Delivery"] = "abc-1"
    msg["Content-Type"] = "application/json; charset=utf-8"
    delivery = parse_delivery(msg, json.dumps(example("queued", status="waiting")).encode())
    assert (delivery.event, delivery.id, delivery.action) == ("workflow_job", "abc-1", "queued")
    assert delivery.runner_name is None  # null while queued


def test_parse_other_events_keeps_only_the_basics():
    delivery = parse({"action": "opened", "repository": {"full_name": "o/r"}}, event="issues")
    assert (delivery.event, delivery.action, delivery.repository) == ("issues", "opened", "o/r")
    assert delivery.runner_name is None and delivery.job_id is None


@pytest.mark.parametrize("hdrs, body, ctype, status, message", [
    (headers(event=None), b"{}", "application/json", 400, "X-GitHub-Event header missing"),
    (headers(event="Bad Event!"), b"{}", "application/json", 400,
     "X-GitHub-Event header is not an event name"),
    (headers(delivery=None), b"{}", "application/json", 400, "X-GitHub-Delivery header missing"),
    (headers(delivery="x" * 300), b"{}", "application/json", 400,
     "X-GitHub-Delivery header is not a delivery id"),
    (headers(), b"{nope", "application/json", 400, "body is not valid JSON"),
    (headers(), b"[1, 2]", "application/json", 400, "body is JSON but not an object"),
    (headers(), b"\xff\xfe", "application/json", 400, "body is not UTF-8"),
    (headers(), b"other=1", "application/x-www-form-urlencoded", 400,
     "form body has no payload field"),
    (headers(), b"payload=%7Bbad", "application/x-www-form-urlencoded", 400,
     "body is not valid JSON"),
    (headers(), b"{}", "text/plain", 415, "content type 'text/plain' is not supported"),
    (headers(), b'{"action": "completed"}', "application/json", 400,
     "workflow_job delivery without a workflow_job object"),
])
def test_parse_errors(hdrs, body, ctype, status, message):
    with pytest.raises(EventError) as info:
        parse_delivery(hdrs, body, ctype)
    assert info.value.status == status
    assert info.value.message.startswith(message)


# -- slot_of --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, pools, expected", [
    ("ci-hv1-1-k3x9qa", ["ci"], ("ci", "ci-hv1-1")),
    ("ci-hv1-12-k3x9qa", ["ci"], ("ci", "ci-hv1-12")),
    ("ci-rack-2-hv-3-000000", ["ci"], ("ci", "ci-rack-2-hv-3")),
    ("ci-gpu-hv1-1-k3x9qa", ["ci", "ci-gpu"], ("ci-gpu", "ci-gpu-hv1-1")),
    ("ci-gpu-hv1-1-k3x9qa", ["ci"], ("ci", "ci-gpu-hv1-1")),
    ("ci-hv1-1-k3x9q", ["ci"], None),        # suffix too short
    ("ci-hv1-1-k3x9qab", ["ci"], None),      # suffix too long
    ("ci-hv1-x-k3x9qa", ["ci"], None),       # index not a number
    ("ci-hv1-1-K3X9QA", ["ci"], None),       # upper case is not ours
    ("ci--1-k3x9qa", ["ci"], None),          # no host
    ("gpu-hv1-1-k3x9qa", ["ci"], None),      # another pool
    ("cix-hv1-1-k3x9qa", ["ci"], None),      # pool name is a prefix only
    ("GitHub Actions 5", ["ci"], None),
    ("", ["ci"], None),
    (None, ["ci"], None),
])
def test_slot_of(name, pools, expected):
    assert slot_of(name, pools) == expected


# -- decide with the real payloads -----------------------------------------------------------------

def test_every_real_example_of_a_github_hosted_runner_is_ignored(workflow_job_examples):
    kinds = set()
    for payload in workflow_job_examples:
        decision = decide(parse(payload), POOLS)
        kinds.add(decision.kind)
        assert decision.kind == "ignore", (payload["action"], decision)
    assert kinds == {"ignore"}


def test_completed_on_our_runner_recreates_its_slot(example):
    payload = example("completed", runner_name=OURS)
    decision = decide(parse(payload), POOLS)
    job_id = payload["workflow_job"]["id"]
    assert decision == Decision(
        "recreate", slot="ci-hv1-1", pool="ci", runner=OURS,
        reason="job %d completed (%s) on %s" % (job_id, payload["workflow_job"]["conclusion"],
                                                OURS))


def test_completed_on_another_runner_is_ignored_with_a_reason(example):
    decision = decide(parse(example("completed")), POOLS)
    assert decision.kind == "ignore"
    assert "runner 'GitHub Actions 5' is not in pools ci" in decision.reason
    assert decision.slot is None


def test_in_progress_on_our_runner_is_recorded(example):
    decision = decide(parse(example("in_progress", runner_name="ci-hv2-3-abc123")), POOLS)
    assert (decision.kind, decision.slot, decision.runner) == ("record", "ci-hv2-3",
                                                               "ci-hv2-3-abc123")


def test_routes_on_action_not_status(example):
    # GitHub's real example: action "queued" while workflow_job.status is "waiting".
    payload = example("queued", status="waiting", runner_name=OURS)
    assert payload["workflow_job"]["status"] == "waiting"
    decision = decide(parse(payload), POOLS)
    assert decision.kind == "record" and "job %d queued" % payload["workflow_job"]["id"] in \
        decision.reason
    # and a "completed" action wins even if the status field said something else
    payload = example("completed", runner_name=OURS)
    payload["workflow_job"]["status"] = "in_progress"
    assert decide(parse(payload), POOLS).kind == "recreate"


def test_waiting_and_queued_jobs_without_a_runner_are_ignored(example):
    # GitHub's real examples: runner_name is null until a runner picks the job up.
    for payload in (example("waiting"), example("queued", status="waiting")):
        assert payload["workflow_job"]["runner_name"] is None
        decision = decide(parse(payload), POOLS)
        assert decision.kind == "ignore"
        assert "not on a runner yet" in decision.reason


def test_unknown_action_and_other_events_are_ignored(example):
    payload = example("completed", runner_name=OURS)
    payload["action"] = "deleted"
    assert "action 'deleted' is not handled" in decide(parse(payload), POOLS).reason
    decision = decide(parse({"zen": "x"}, event="push"), POOLS)
    assert decision == Decision("ignore", reason="event 'push' is not handled")


def test_ping():
    assert decide(parse({"zen": "Keep it simple.", "hook_id": 1}, event="ping"), POOLS).kind == \
        "ping"
