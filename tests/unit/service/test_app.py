# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP server over a real socket on 127.0.0.1, with a fake dispatcher."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from urllib.parse import urlencode

import pytest

from rum_pool_webhook import __version__
from rum_pool_webhook.app import MAX_BODY, make_server
from rum_pool_webhook.config import Config
from rum_pool_webhook.signature import sign
from rum_pool_webhook.store import Store
from rum_pool_webhook.worker import Worker

SECRET = b"test-webhook-secret"
OURS = "ci-hv1-1-k3x9qa"


class FakeWorker:
    def __init__(self):
        self.wakes = 0

    def wake(self):
        self.wakes += 1


class Service:
    def __init__(self, server, store, worker, log):
        self.server = server
        self.store = store
        self.worker = worker
        self.log = log
        self.port = server.server_address[1]
        self._n = 0

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    def post(self, payload, event="workflow_job", delivery=None, secret=SECRET, form=False,
             signature=None):
        if delivery is None:
            self._n += 1
            delivery = "delivery-%d" % self._n
        if form:
            body = urlencode({"payload": json.dumps(payload)}).encode()
            ctype = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(payload).encode()
            ctype = "application/json"
        headers = {"Content-Type": ctype, "X-GitHub-Event": event,
                   "X-GitHub-Delivery": delivery, "User-Agent": "GitHub-Hookshot/abc"}
        if signature is None and secret is not None:
            signature = sign(secret, body)
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        status, hdrs, data = self.request("POST", "/webhook", body, headers)
        return status, json.loads(data) if hdrs.get("Content-Type") == "application/json" else data

    def get_json(self, path):
        status, headers, data = self.request("GET", path)
        assert headers["Content-Type"] == "application/json"
        return status, json.loads(data)


def start_service(tmp_path, worker=None, dispatcher=None, clock=time.time, **limits):
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=SECRET,
                    state_dir=str(tmp_path), pools=["ci"], max_parallel=2, retry_attempts=2,
                    retry_backoff=0, **limits)
    store = Store(str(tmp_path / "state.db"))
    log = []
    if worker is None:
        worker = FakeWorker()
    elif worker == "real":
        worker = Worker(store, dispatcher, max_parallel=2, retry_attempts=2, retry_backoff=0,
                        log=log.append, poll_seconds=0.05).start()
    server = make_server(config, store, worker, getattr(dispatcher, "kind", "fake"), clock=clock,
                         log=log.append, started_at=1000.0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return Service(server, store, worker, log)


@pytest.fixture()
def svc(tmp_path):
    service = start_service(tmp_path)
    yield service
    service.server.shutdown()
    service.server.server_close()
    service.store.close()


def completed(example, runner=OURS):
    return example("completed", runner_name=runner)


def test_completed_job_of_our_runner_is_queued(svc, example):
    status, body = svc.post(completed(example), delivery="abc-1")
    assert status == 202
    assert body == {"queued": 1, "slot": "ci-hv1-1"}
    assert svc.worker.wakes == 1
    assert svc.store.task(1)["runner"] == OURS
    assert any(re.match(r'^127\.0\.0\.1 "POST /webhook" 202 delivery abc-1 [0-9]+ ms$', line)
               for line in svc.log), svc.log


def test_bad_or_missing_signature_is_401_without_detail(svc, example):
    for kwargs in ({"secret": b"wrong"}, {"secret": None}, {"signature": "sha256=00"}):
        status, body = svc.post(completed(example), **kwargs)
        assert (status, body) == (401, {"error": "signature missing or wrong"})
    assert svc.store.task_counts()["queued"] == 0
    assert svc.store.snapshot(0)["counts"]["rejected"] == 3


def test_a_rejected_delivery_id_can_still_arrive_signed(svc, example):
    assert svc.post(completed(example), delivery="same", secret=b"wrong")[0] == 401
    assert svc.post(completed(example), delivery="same")[0] == 202


def test_form_encoded_delivery(svc, example):
    status, body = svc.post(completed(example), form=True)
    assert status == 202 and body["slot"] == "ci-hv1-1"


def test_duplicate_delivery(svc, example):
    assert svc.post(completed(example), delivery="dup-1")[0] == 202
    assert svc.post(completed(example), delivery="dup-1") == (200, {"duplicate": True})
    assert svc.store.task_counts()["queued"] == 1


def test_same_runner_twice_is_coalesced(svc, example):
    status, first = svc.post(completed(example))
    status2, second = svc.post(completed(example))
    assert (status, status2) == (202, 202)
    assert second == {"coalesced": first["queued"], "slot": "ci-hv1-1"}
    assert svc.worker.wakes == 1


def test_other_actions_of_our_runners_are_recorded(svc, example):
    assert svc.post(example("in_progress", runner_name=OURS)) == (200, {"recorded": True})
    slots = svc.get_json("/api/status")[1]["slots"]
    assert [(s["slot"], s["state"]) for s in slots] == [("ci-hv1-1", "busy")]


def test_everything_else_is_ignored_with_a_reason(svc, example):
    status, body = svc.post(example("completed"))
    assert status == 200 and "not in pools ci" in body["ignored"]
    status, body = svc.post({"ref": "refs/heads/main"}, event="push")
    assert (status, body) == (200, {"ignored": "event 'push' is not handled"})


def test_ping(svc):
    assert svc.post({"zen": "Design for failure.", "hook_id": 1}, event="ping") == \
        (200, {"ok": True})


@pytest.mark.parametrize("headers, body, status, error", [
    ({"X-GitHub-Delivery": "x1", "Content-Type": "application/json"}, b"{}", 400,
     "X-GitHub-Event header missing"),
    ({"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "x2",
      "Content-Type": "application/json"}, b"{not json", 400, "body is not valid JSON"),
    ({"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "x3",
      "Content-Type": "text/plain"}, b"{}", 415, "content type 'text/plain' is not supported"),
])
def test_bad_requests(svc, headers, body, status, error):
    headers = dict(headers, **{"X-Hub-Signature-256": sign(SECRET, body)})
    got, hdrs, data = svc.request("POST", "/webhook", body, headers)
    assert got == status
    assert json.loads(data)["error"].startswith(error)


def test_too_large_body_is_413_without_reading_it(svc):
    data = raw_request(svc.port, webhook_head(MAX_BODY + 1, signature=None, delivery="big-1"), b"{")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["error"] == "body of 26214401 bytes is over the 25 MiB limit"
    assert svc.store.snapshot(0)["deliveries"][0]["outcome"] == "rejected"


def test_missing_content_length_is_411(svc):
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
    try:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n")
        data = sock.recv(65536)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 411 ")


def test_healthz(svc, example):
    svc.post(completed(example))
    assert svc.get_json("/healthz") == (200, {"ok": True, "queued": 1, "running": 0})


def test_status_json_shape(svc, example):
    svc.post(completed(example), delivery="d-1")
    svc.post(completed(example, runner="GitHub Actions 2"), delivery="d-2")
    status, snap = svc.get_json("/api/status")
    assert status == 200
    assert list(snap) == ["service", "counts", "slots", "tasks", "deliveries"]
    service = snap["service"]
    assert service["version"] == __version__ and service["started_at"] == 1000.0
    assert service["dispatcher"] == "fake" and service["pools"] == ["ci"]
    assert service["max_parallel"] == 2 and service["now"] > 1000.0
    assert snap["counts"]["deliveries"] == 2 and snap["counts"]["ignored"] == 1
    assert snap["counts"]["queued"] == 1
    assert snap["slots"][0]["slot"] == "ci-hv1-1" and snap["slots"][0]["state"] == "queued"
    assert [d["id"] for d in snap["deliveries"]] == ["d-2", "d-1"]
    assert snap["tasks"][0]["state"] == "queued"


def test_status_page_svg_and_metrics_content_types(svc, example):
    svc.post(completed(example))
    status, headers, data = svc.request("GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<html" in data and b"ci-hv1-1" in data
    status, headers, data = svc.request("GET", "/status.svg")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert data.lstrip().startswith(b"<svg") or b"<svg" in data[:200]
    status, headers, data = svc.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = data.decode()
    assert 'rum_pool_webhook_deliveries_total{outcome="queued"} 1' in text
    assert 'rum_pool_webhook_tasks{state="queued"} 1' in text
    assert "rum_pool_webhook_task_seconds_sum 0.0" in text
    assert "rum_pool_webhook_task_seconds_count 0" in text
    assert "# TYPE rum_pool_webhook_deliveries_total counter" in text


def test_unknown_path_and_wrong_method(svc):
    status, headers, data = svc.request("GET", "/nope")
    assert status == 404
    status, headers, data = svc.request("GET", "/webhook")
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, data = svc.request("POST", "/healthz", b"")
    assert status == 405 and headers["Allow"] == "GET"


def test_query_strings_are_ignored_for_routing_and_not_logged(svc):
    assert svc.request("GET", "/healthz?token=abc")[0] == 200
    assert not any("token=abc" in line for line in svc.log)


def test_logs_never_hold_bodies_signatures_or_secrets(svc, example):
    payload = completed(example)
    svc.post(payload, delivery="log-1")
    svc.post(payload, delivery="log-2", secret=b"wrong")
    text = "\n".join(svc.log)
    assert "log-1" in text and "log-2" in text
    assert SECRET.decode() not in text and "sha256=" not in text
    assert payload["workflow_job"]["name"] not in text
    assert '"POST /webhook" 401 delivery log-2' in text


def test_an_internal_error_is_a_500_and_the_server_keeps_going(svc, example, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(svc.store, "accept_async", broken)
    status, body = svc.post(completed(example))
    assert (status, body) == (500, {"error": "internal error"})
    assert any("internal error: RuntimeError: disk full" in line for line in svc.log)
    monkeypatch.undo()
    assert svc.post(completed(example))[0] == 202


def test_answers_fast_while_a_task_runs_then_the_task_runs(tmp_path, example,
                                                           fake_dispatcher_cls):
    gate = threading.Event()
    dispatcher = fake_dispatcher_cls(gate=gate)
    svc = start_service(tmp_path, worker="real", dispatcher=dispatcher)
    try:
        status, body = svc.post(completed(example))
        assert status == 202
        assert dispatcher.started.acquire(timeout=10)
        assert svc.get_json("/healthz")[1] == {"ok": True, "queued": 0, "running": 1}
        # a second job on another slot, answered while the first playbook is still "running"
        # (held at the gate): the intake never waits for a task
        status, body = svc.post(completed(example, runner="ci-hv2-1-zzzzzz"))
        assert status == 202 and not gate.is_set()
        assert svc.store.snapshot(0)["counts"]["done"] == 0
        gate.set()
        deadline = time.monotonic() + 10
        while svc.store.snapshot(0)["counts"]["done"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        snap = svc.get_json("/api/status")[1]
        assert snap["counts"]["done"] == 2
        assert {c.runner for c in dispatcher.calls} == {OURS, "ci-hv2-1-zzzzzz"}
        assert [s["state"] for s in snap["slots"]] == ["idle", "idle"]
    finally:
        gate.set()
        svc.server.shutdown()
        svc.server.server_close()
        svc.worker.stop(10)
        svc.store.close()


# ---------------------------------------------------------------- intake limits and bad input

def raw_request(port, head, body=b"", read=True, timeout=10):
    """Send bytes as they are; return (status line, headers+body bytes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head + body)
        data = b""
        while read:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return data


def webhook_head(length, signature="sha256=" + "0" * 64, delivery="lim-1"):
    head = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: workflow_job\r\n"
            b"X-GitHub-Delivery: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            % (delivery.encode(), length))
    if signature:
        head += b"X-Hub-Signature-256: %s\r\n" % signature.encode()
    return head + b"\r\n"


def test_a_signed_body_nested_deeper_than_the_parser_goes_is_400(svc):
    body = b"[" * 100000 + b"]" * 100000
    status, headers, data = svc.request("POST", "/webhook", body, {
        "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "deep-1",
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, body)})
    assert (status, json.loads(data)) == (400, {"error": "body is JSON nested too deeply"})
    form = urlencode({"payload": body.decode()}).encode()
    status, headers, data = svc.request("POST", "/webhook", form, {
        "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "deep-2",
        "Content-Type": "application/x-www-form-urlencoded", "X-Hub-Signature-256": sign(SECRET, form)})
    assert status == 400


def test_an_unsigned_upload_is_refused_before_its_body_is_read(svc):
    # One byte of a 20 MiB body is sent: a server that waited for the body would answer 408.
    data = raw_request(svc.port, webhook_head(20 * 1024 * 1024, signature=None), b"{")
    assert data.startswith(b"HTTP/1.1 401 ")
    assert b"Connection: close" in data


def test_a_slow_body_is_cut_off_with_408(tmp_path):
    svc = start_service(tmp_path, body_timeout=0.5)
    try:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        sock.sendall(webhook_head(100) + b"{")
        data = sock.recv(65536)
        sock.close()
        assert data.startswith(b"HTTP/1.1 408 ")
        assert svc.store.snapshot(0)["deliveries"][0]["detail"] == "body not received within 0.5 s"
    finally:
        svc.server.shutdown()
        svc.server.server_close()
        svc.store.close()


def test_headers_that_never_end_are_cut_off(tmp_path):
    svc = start_service(tmp_path, idle_timeout=0.5)
    try:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert sock.recv(65536) == b""  # closed by the server (the socket's own time-out is 10 s)
        sock.close()
    finally:
        svc.server.shutdown()
        svc.server.server_close()
        svc.store.close()


def test_bodies_in_flight_are_capped_but_small_deliveries_keep_room(tmp_path, example):
    mib = 1024 * 1024
    svc = start_service(tmp_path, max_body_bytes=4 * mib, max_inflight_bytes=4 * mib,
                        body_timeout=10)
    try:
        # a big upload in flight takes what large bodies may use (all but the reserve)
        hog = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        hog.sendall(webhook_head(3 * mib, delivery="hog-1") + b"{")
        time.sleep(0.3)
        data = raw_request(svc.port, webhook_head(2 * mib, delivery="big-2"), b"{")
        assert data.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in data
        # a real delivery still gets in (a body over the budget would be a 503), while the hog waits
        assert svc.post(completed(example))[0] == 202
        hog.close()
        status, _headers, metrics = svc.request("GET", "/metrics")
        assert 'rum_pool_webhook_requests_refused_total{reason="inflight"} 1.0' in metrics.decode()
    finally:
        svc.server.shutdown()
        svc.server.server_close()
        svc.store.close()


def test_keep_alive_serves_many_deliveries_on_one_connection(svc, example):
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    try:
        for n in range(5):
            body = json.dumps(completed(example, runner="ci-hv%d-1-k3x9qa" % n)).encode()
            conn.request("POST", "/webhook", body=body, headers={
                "Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                "X-GitHub-Delivery": "ka-%d" % n, "X-Hub-Signature-256": sign(SECRET, body)})
            resp = conn.getresponse()
            assert resp.status == 202 and not resp.will_close
            resp.read()
    finally:
        conn.close()
    assert svc.store.task_counts()["queued"] == 5


def test_metrics_have_latency_histograms(svc, example):
    svc.post(completed(example))
    text = svc.request("GET", "/metrics")[2].decode()
    assert 'rum_pool_webhook_request_seconds_bucket{le="0.01",route="/webhook"}' in text
    assert re.search(r'^rum_pool_webhook_request_seconds_count\{route="/webhook"\} 1\.0$', text, re.M)
    assert re.search(r"^rum_pool_webhook_commit_seconds_count [1-9]", text, re.M)
    assert "# TYPE rum_pool_webhook_commit_group_size histogram" in text
    assert 'rum_pool_webhook_info{version="%s"} 1.0' % __version__ in text


# -- GitHub's bytes, not a re-encoding of them ------------------------------------------------
def _githubs_bytes():
    from tests.tools.fake_github.examples import example as raw_example, retarget  # pylint: disable=import-outside-toplevel
    return retarget(raw_example("completed"), OURS)


def _post_raw(svc, body, signature, delivery):
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
               "X-GitHub-Delivery": delivery, "User-Agent": "GitHub-Hookshot/abc",
               "X-Hub-Signature-256": signature}
    status, _headers, data = svc.request("POST", "/webhook", body, headers)
    return status, json.loads(data)


def test_githubs_own_bytes_are_verified_as_they_came(svc):
    raw = _githubs_bytes()
    parsed = json.loads(raw)
    # The published example is laid out as GitHub sent it: no re-encoding gives those bytes back.
    assert raw not in (json.dumps(parsed).encode(), json.dumps(parsed, separators=(",", ":")).encode())
    status, body = _post_raw(svc, raw, sign(SECRET, raw), "raw-1")
    assert (status, body) == (202, {"queued": 1, "slot": "ci-hv1-1"})
    # A signature over a re-encoding of the same payload is not GitHub's: refused.
    for again in (json.dumps(parsed).encode(), json.dumps(parsed, separators=(",", ":")).encode()):
        assert _post_raw(svc, raw, sign(SECRET, again), "raw-2")[0] == 401


@pytest.mark.parametrize("text", ['caf\u00e9', 'caf\\u00e9'])
def test_non_ascii_bodies_are_verified_byte_for_byte(svc, text):
    raw = _githubs_bytes().replace(b"{", ('{"note": "%s", ' % text).encode("utf-8"), 1)
    assert json.loads(raw)["note"] == "caf\u00e9"
    assert _post_raw(svc, raw, sign(SECRET, raw), "raw-3")[0] == 202
    reencoded = json.dumps(json.loads(raw), ensure_ascii=not text.isascii()).encode("utf-8")
    assert reencoded != raw
    assert _post_raw(svc, raw, sign(SECRET, reencoded), "raw-4")[0] == 401
