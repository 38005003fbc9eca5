# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a delivery is read as and decided, word for word (the reasons are what the status page and
the logs show)."""

from __future__ import annotations

import email.message
import json

import pytest

from rum_pool_webhook.events import Decision, Delivery, EventError, decide, parse_delivery

POOLS = ["ci"]


def hdrs(event="workflow_job", delivery="d-1"):
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}


def job_payload(**job):
    return json.dumps({"action": "completed", "workflow_job": job,
                       "repository": {"full_name": "o/r"}}).encode()


def test_fields_are_taken_only_when_they_have_the_right_type():
    body = job_payload(id=True, run_id="7", name="", runner_name=5, conclusion=None,
                       labels=["linux", 3, None, "x64"])
    delivery = parse_delivery(hdrs(), body, "application/json")
    assert delivery == Delivery(id="d-1", event="workflow_job", action="completed", job_id=None, job_name=None,
                                run_id=None, runner_name=None, repository="o/r", labels=("linux", "x64"),
                                conclusion=None)
    assert parse_delivery(hdrs(), job_payload(labels="linux"), None).labels == ()
    repo_less = json.dumps({"action": 1, "repository": "o/r"}).encode()
    other = parse_delivery(hdrs(event="push"), repo_less, None)
    assert (other.action, other.repository) == (None, None)


@pytest.mark.parametrize("ctype", [None, "", "application/json; charset=utf-8", "Application/JSON",
                                   "application/vnd.github+json"])
def test_json_media_types(ctype):
    assert parse_delivery(hdrs(), job_payload(id=1), ctype).job_id == 1


def test_the_content_type_header_is_used_when_none_is_given():
    form = b"payload=" + job_payload(id=2).replace(b" ", b"%20").replace(b'"', b"%22")
    headers = dict(hdrs(), **{"Content-Type": "application/x-www-form-urlencoded"})
    assert parse_delivery(headers, form).job_id == 2
    with pytest.raises(EventError) as info:
        parse_delivery(dict(hdrs(), **{"Content-Type": "text/xml"}), b"<x/>")
    assert (info.value.status, info.value.message) == (415, "content type 'text/xml' is not supported; use "
                                                       "application/json or application/x-www-form-urlencoded")


def test_form_bodies_must_be_ascii_url_encoding():
    with pytest.raises(EventError) as info:
        parse_delivery(hdrs(), "payload=caf\u00e9".encode("utf-8"), "application/x-www-form-urlencoded")
    assert (info.value.status, info.value.message) == (400, "form body is not valid URL encoding")
    many = "&".join(f"f{n}=1" for n in range(101)).encode()
    with pytest.raises(EventError, match="^form body is not valid URL encoding$"):
        parse_delivery(hdrs(), many, "application/x-www-form-urlencoded")
    empty = parse_delivery(hdrs(event="ping"), b"payload=%7B%7D&payload=x", "application/x-www-form-urlencoded")
    assert empty.event == "ping"


def test_json_errors_say_why():
    with pytest.raises(EventError) as info:
        parse_delivery(hdrs(), b'{"a": ', "application/json")
    assert info.value.message.startswith("body is not valid JSON: Expecting value: line 1 column 7")
    assert str(info.value) == info.value.message and info.value.status == 400


def test_headers_from_a_message_keep_the_first_of_a_repeated_name():
    message = email.message.Message()
    message["x-github-event"] = "ping"
    message["X-GitHub-Event"] = "push"
    message["X-GitHub-Delivery"] = " a.b:c_d-1 "
    delivery = parse_delivery(message, b"{}", "application/json")
    assert (delivery.event, delivery.id) == ("ping", "a.b:c_d-1")


@pytest.mark.parametrize("delivery_id", ["a" * 128, "A.b:c_d-e"])
def test_delivery_ids_that_are_accepted(delivery_id):
    assert parse_delivery(hdrs(event="ping", delivery=delivery_id), b"{}", None).id == delivery_id


@pytest.mark.parametrize("delivery_id", ["a" * 129, "a b", "a/b"])
def test_delivery_ids_that_are_refused(delivery_id):
    with pytest.raises(EventError, match="^X-GitHub-Delivery header is not a delivery id$"):
        parse_delivery(hdrs(delivery=delivery_id), b"{}", None)


@pytest.mark.parametrize("event", ["a" * 65, "Push", "push-1"])
def test_event_names_that_are_refused(event):
    with pytest.raises(EventError, match="^X-GitHub-Event header is not an event name$"):
        parse_delivery(hdrs(event=event), b"{}", None)


def d(action="completed", runner="ci-hv1-1-k3x9qa", job_id=7, conclusion="success", event="workflow_job"):
    return Delivery(id="x", event=event, action=action, job_id=job_id, runner_name=runner, conclusion=conclusion)


@pytest.mark.parametrize("delivery, decision", [
    (d(event="ping"), Decision("ping", reason="ping")),
    (d(event="x" * 100), Decision("ignore", reason="event %r is not handled" % ("x" * 77 + "..."))),
    (d(event="y" * 80), Decision("ignore", reason="event %r is not handled" % ("y" * 80))),
    (d(action=None), Decision("ignore", reason="job 7: action '' is not handled")),
    (d(action="deleted", job_id=None), Decision("ignore", reason="job: action 'deleted' is not handled")),
    (d(runner=None), Decision("ignore", reason="job 7 completed: not on a runner yet")),
    (d(action="queued", runner=""), Decision("ignore", reason="job 7 queued: not on a runner yet")),
    (d(runner="other-1"), Decision("ignore", reason="job 7 completed: runner 'other-1' is not in pools ci")),
    (d(), Decision("recreate", slot="ci-hv1-1", pool="ci", runner="ci-hv1-1-k3x9qa",
                   reason="job 7 completed (success) on ci-hv1-1-k3x9qa")),
    (d(conclusion=None, job_id=0), Decision("recreate", slot="ci-hv1-1", pool="ci", runner="ci-hv1-1-k3x9qa",
                                            reason="job 0 completed on ci-hv1-1-k3x9qa")),
    (d(action="in_progress"), Decision("record", slot="ci-hv1-1", pool="ci", runner="ci-hv1-1-k3x9qa",
                                       reason="job 7 in_progress on ci-hv1-1-k3x9qa")),
    (d(action="waiting"), Decision("record", slot="ci-hv1-1", pool="ci", runner="ci-hv1-1-k3x9qa",
                                   reason="job 7 waiting on ci-hv1-1-k3x9qa")),
])
def test_decisions_word_for_word(delivery, decision):
    assert decide(delivery, POOLS) == decision


def test_the_pools_are_named_in_an_ignore():
    assert decide(d(runner="x-1"), ["ci", "gpu"]).reason == "job 7 completed: runner 'x-1' is not in pools ci, gpu"
    long_name = "r" * 90
    assert decide(d(runner=long_name), POOLS).reason == (
        "job 7 completed: runner %r is not in pools ci" % ("r" * 77 + "..."))
