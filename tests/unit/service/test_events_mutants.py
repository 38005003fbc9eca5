# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a delivery, exactly where `make mutate` found it untested (issue 14): which parser reads
which body (orjson only for small bodies, the standard library for the rest and for ids past 64
bits), blank and badly escaped form fields, media types with several parameters."""

from __future__ import annotations

import json

import pytest

from rum_pool_webhook import events
from rum_pool_webhook.events import EventError, parse_delivery

HEADERS = {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-1"}


class Spy:
    """Wraps a parser's loads() and records what it was given."""

    def __init__(self, loads):
        self.loads = loads
        self.calls = []

    def __call__(self, data, *args, **kwargs):
        self.calls.append(data)
        return self.loads(data, *args, **kwargs)


@pytest.fixture
def parsers(monkeypatch):
    """(orjson's spy, the standard library's spy) as the events module calls them."""
    assert events._orjson is not None, "orjson is missing: pip install -r requirements-dev.txt"  # pylint: disable=protected-access
    fast = Spy(events._orjson.loads)  # pylint: disable=protected-access
    slow = Spy(json.loads)
    monkeypatch.setattr(events, "_orjson", type("FakeOrjson", (), {"loads": staticmethod(fast)}))
    monkeypatch.setattr(events.json, "loads", slow)
    return fast, slow


def body_with_brackets(count):
    """A workflow_job body with exactly ``count`` opening brackets ('{' and '[' both)."""
    payload = {"action": "completed", "workflow_job": {"id": 7, "labels": [[]] * (count - 3)}}
    data = json.dumps(payload).encode()
    assert data.count(b"{") + data.count(b"[") == count
    return data


def test_a_small_body_is_read_by_orjson_alone(parsers):
    fast, slow = parsers
    body = body_with_brackets(events.FAST_BRACKETS)
    assert parse_delivery(HEADERS, body, "application/json").job_id == 7
    assert fast.calls == [body] and slow.calls == []


@pytest.mark.parametrize("opener", [b"{", b"["])
def test_a_body_with_more_brackets_than_the_bound_is_left_to_the_standard_library(parsers, opener):
    fast, slow = parsers
    inner = (b'{"a": 1}, ' if opener == b"{" else b"[], ") * events.FAST_BRACKETS
    body = b'{"action": "completed", "workflow_job": {"id": 7, "labels": [' + inner + b'"x"]}}'
    assert parse_delivery(HEADERS, body, "application/json").job_id == 7
    assert fast.calls == [] and slow.calls == [body.decode()]


def test_a_body_that_orjson_reads_as_no_object_goes_to_the_standard_library(parsers):
    fast, slow = parsers
    with pytest.raises(EventError) as err:
        parse_delivery(HEADERS, b"[1, 2]", "application/json")
    assert (err.value.status, err.value.message) == (400, "body is JSON but not an object")
    assert fast.calls == [b"[1, 2]"] and slow.calls == ["[1, 2]"]


@pytest.mark.parametrize("field", ["id", "run_id"])
def test_ids_past_64_bits_are_read_exactly(field):
    big = 2 ** 70
    job = {"id": 5, "run_id": 6, field: big}
    body = json.dumps({"action": "completed", "workflow_job": job}).encode()
    delivery = parse_delivery(HEADERS, body, "application/json")
    assert (delivery.job_id, delivery.run_id) == (job["id"], job["run_id"])


def test_a_blank_payload_field_is_there_but_not_json():
    with pytest.raises(EventError) as err:
        parse_delivery(HEADERS, b"payload=", "application/x-www-form-urlencoded")
    assert err.value.status == 400
    assert err.value.message.startswith("body is not valid JSON: ")


def test_a_payload_escaping_bytes_that_are_not_utf8_is_refused():
    body = b"payload=%7B%22action%22%3A%22%FF%22%7D"
    with pytest.raises(EventError) as err:
        parse_delivery(HEADERS, body, "application/x-www-form-urlencoded")
    assert (err.value.status, err.value.message) == (400, "form body is not valid URL encoding")


def test_the_media_type_ends_at_the_first_parameter():
    body = json.dumps({"action": "completed", "workflow_job": {"id": 3}}).encode()
    assert parse_delivery(HEADERS, body, "application/json; charset=utf-8; q=1").job_id == 3


def test_an_unsupported_media_type_is_named_up_to_100_characters():
    media = "text/" + "x" * 150
    with pytest.raises(EventError) as err:
        parse_delivery(HEADERS, b"{}", media)
    assert err.value.status == 415
    assert err.value.message == ("content type %r is not supported; use application/json or "
                                 "application/x-www-form-urlencoded" % media[:100])
