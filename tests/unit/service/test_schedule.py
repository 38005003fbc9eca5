# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nothing missed: redelivery of failed deliveries through the fake GitHub, and the timers."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rum_pool_webhook.github import GitHubError, HookDeliveries
from rum_pool_webhook.schedule import Redeliverer, Timers
from rum_pool_webhook.store import Store
from rum_pool_webhook.tasks import Result

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

PAT = "ghp_redeliver000000000000000000000000000"
REPO = "acme/hooks"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """The service's place on loopback: down until started, then answering 202."""

    def __init__(self, port: int) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                received.append(self.headers["X-GitHub-Delivery"])
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait(predicate, what, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def github():
    fake = FakeGitHub()
    url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": [f"repo:{REPO}"]}]})
    yield fake, url
    fake.stop()


@pytest.fixture
def store(tmp_path):
    db = Store(str(tmp_path / "state.db"))
    yield db
    db.close()


def finished_job(fake, runner="ci-hv1-1-k3x9qa"):
    """A job runs on one of our runners: queued, in_progress, completed deliveries."""
    fake.model.add_runner(f"repo:{REPO}", runner, labels=["self-hosted"])
    job = fake.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted"]})
    fake.admin("POST", f"/runners/{runner}/job", {"job_id": job["id"]})
    fake.admin("POST", f"/runners/{runner}/done", {"conclusion": "success"})
    return [d for d in fake.admin("GET", "/deliveries")["deliveries"] if d["job_id"] == job["id"]]


def settings(url, hook_id, **more):
    return dict({"api_url": url, "repository": REPO, "hook_id": hook_id, "token": PAT,
                 "lookback_hours": 24, "max_redeliveries": 2}, **more)


def test_failed_completed_deliveries_are_redelivered_until_delivered(github, store):
    fake, url = github
    port = free_port()
    hook = fake.admin("POST", "/hooks", {"url": f"http://127.0.0.1:{port}/webhook", "secret": "s",
                                         "scope": f"repo:{REPO}"})
    deliveries = finished_job(fake)  # the service is down: every delivery fails
    assert [d["status"] for d in deliveries] == [None, None, None]
    completed = deliveries[-1]["guid"]
    lines = []
    redeliverer = Redeliverer(HookDeliveries(settings(url, hook["id"])), store,
                              settings(url, hook["id"]), log=lines.append)
    assert redeliverer.scan() == [completed]  # queued and in_progress are not worth it
    assert store.redeliveries(completed) == 1
    assert "asked GitHub to redeliver %s (workflow_job completed, job" % completed in lines[0]
    wait(lambda: len(fake.admin("GET", "/deliveries")["deliveries"]) == 4 and
         "delivered_at" in fake.admin("GET", "/deliveries")["deliveries"][-1], "the redelivery")

    receiver = Receiver(port)  # the service is back
    try:
        assert redeliverer.scan() == [completed]
        wait(lambda: receiver.received == [completed], "the second redelivery")
        assert redeliverer.scan() == []  # delivered now
    finally:
        receiver.stop()
    calls = fake.admin("GET", "/calls?path=/hooks/")["calls"]
    assert {(c["method"], c["status"]) for c in calls} == {("GET", 200), ("POST", 202)}
    assert any(c["path"].endswith("/attempts") for c in calls)


def test_deliveries_the_service_handled_or_asked_for_enough_are_left_alone(github, store):
    fake, url = github
    hook = fake.admin("POST", "/hooks", {"url": f"http://127.0.0.1:{free_port()}/webhook",
                                         "scope": f"repo:{REPO}"})
    first = finished_job(fake, "ci-hv1-1-aaaaaa")[-1]["guid"]
    second = finished_job(fake, "ci-hv1-2-bbbbbb")[-1]["guid"]
    from rum_pool_webhook.events import Delivery  # pylint: disable=import-outside-toplevel
    store.record_delivery(Delivery(id=first, event="workflow_job", action="completed"), time.time(),
                          "queued")  # GitHub timed out, but the service had it
    store.note_redelivery(second, time.time())
    store.note_redelivery(second, time.time())  # max_redeliveries = 2
    redeliverer = Redeliverer(HookDeliveries(settings(url, hook["id"])), store,
                              settings(url, hook["id"]), log=lambda _line: None)
    assert redeliverer.scan() == []


def test_the_scan_starts_where_the_last_one_stopped(github, store):
    fake, url = github
    hook = fake.admin("POST", "/hooks", {"url": f"http://127.0.0.1:{free_port()}/webhook",
                                         "scope": f"repo:{REPO}"})
    finished_job(fake)
    clock = [time.time() + 7200]  # two hours later: the failure is older than the last check
    store.set_meta("redeliver:checked_at", repr(clock[0] - 600))
    redeliverer = Redeliverer(HookDeliveries(settings(url, hook["id"])), store,
                              settings(url, hook["id"]), clock=lambda: clock[0], log=lambda _l: None)
    assert redeliverer.scan() == []
    assert float(store.get_meta("redeliver:checked_at")) == clock[0]


def test_pagination_follows_the_cursor(github):
    fake, url = github
    hook = fake.admin("POST", "/hooks", {"url": f"http://127.0.0.1:{free_port()}/webhook",
                                         "scope": f"repo:{REPO}"})
    for n in range(4):
        finished_job(fake, f"ci-hv1-{n + 1}-aaaaaa")
    hooks = HookDeliveries(settings(url, hook["id"]))
    items = list(hooks.deliveries(0, per_page=5))
    assert len(items) == 12 and [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    pages = fake.admin("GET", "/calls?path=/deliveries$")["calls"]
    assert len(pages) == 3 and "cursor" in pages[1]["query"]


def test_a_github_app_installation_lists_the_deliveries(github, store):
    fake, url = github
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fake.admin("POST", "/setup", {"apps": [{"app_id": 77, "public_key_pem": public}],
                                  "installations": [{"id": 4242, "app_id": 77, "account": "acme"}]})
    hook = fake.admin("POST", "/hooks", {"url": f"http://127.0.0.1:{free_port()}/webhook",
                                         "scope": f"repo:{REPO}"})
    finished_job(fake)
    app = {"api_url": url, "repository": REPO, "hook_id": hook["id"], "app_id": "77",
           "app_private_key": pem}
    hooks = HookDeliveries(app)
    assert len(list(hooks.deliveries(0))) == 3
    assert len(list(hooks.deliveries(0))) == 3  # the installation token is reused
    auths = [c["auth"] for c in fake.admin("GET", "/calls")["calls"]]
    assert auths.count("app") == 2 and auths.count("installation") == 2  # lookup + token, then lists


def test_errors_name_the_call_and_never_the_token(github):
    fake, url = github
    hooks = HookDeliveries(settings(url, 999))
    with pytest.raises(GitHubError, match=r"GitHub GET /repos/acme/hooks/hooks/999/deliveries: HTTP 404 Not Found") as err:
        list(hooks.deliveries(0))
    assert PAT not in str(err.value)
    bad = HookDeliveries(settings(url, 1, token="ghp_wrong"))
    with pytest.raises(GitHubError, match="HTTP 401 Bad credentials"):
        list(bad.deliveries(0))
    down = HookDeliveries(settings(f"http://127.0.0.1:{free_port()}", 1))
    with pytest.raises(GitHubError, match="cannot connect"):
        list(down.deliveries(0))


class WakeCounter:
    def __init__(self):
        self.wakes = 0

    def wake(self):
        self.wakes += 1


def test_timers_reconcile_at_start_and_every_interval(store):
    worker = WakeCounter()
    lines = []
    timers = Timers(store, worker, {"enabled": True, "at_start": True, "interval_minutes": 0.005},
                    None, 0, log=lines.append)
    assert timers.describe() == ["failed deliveries redelivered: off",
                                 "pool reconciled: at start, then every 0.005 min"]
    timers.start()
    try:
        wait(lambda: worker.wakes >= 1, "the reconcile at start")
        task = store.claim(time.time())
        assert (task.kind, task.slot) == ("reconcile", "(reconcile)")
        store.finish(task.id, Result(True, "ok"), time.time(), 3, 0)
        wait(lambda: worker.wakes >= 2, "the next reconcile, one interval later")
    finally:
        timers.stop()
    assert lines[0].startswith("pool reconcile queued as task ")


def test_timers_keep_running_when_github_fails(store):
    class Broken:
        hooks = HookDeliveries(settings("http://127.0.0.1:9", 1))
        calls = 0

        def scan(self):
            Broken.calls += 1
            raise GitHubError("GitHub GET /x: cannot connect: refused")

    warnings = []
    timers = Timers(store, WakeCounter(), {"enabled": False}, Broken(), 0.002,
                    log=lambda _l: None, warn=warnings.append)
    assert timers.describe()[1] == "pool reconciled: off"
    timers.start()
    try:
        wait(lambda: Broken.calls >= 2, "a second scan after the first failed")
    finally:
        timers.stop()
    assert warnings[0] == ("redelivery check of webhook 1 of repos/acme/hooks failed: GitHub GET /x: "
                           "cannot connect: refused; next try in 0.002 min")
