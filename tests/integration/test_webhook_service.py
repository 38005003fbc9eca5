"""The webhook service for real: the fake GitHub sends signed workflow_job webhooks over HTTP to a
running ``rum-pool-webhook serve``, which has the slot recreated by ansible-runner running the
collection's recreate.yml against the local libvirtd.

The pool's image is a blank disk (the VMs idle in their firmware), so no guest boots: what is
shown is the path webhook -> service -> ansible-runner -> runner_slot, with its dedupe, its
refusals and its status page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from tests.integration.guests import blank_image, domstate, pool_inventory, wait_until
from tests.integration.test_rum_vm import ROOT, VIRSH

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

POOL = "whk"
HOST = "localhost"
SLOTS = [f"{POOL}-{HOST}-1", f"{POOL}-{HOST}-2"]
REPO = "acme/hooks"
PAT = "ghp_webhooktest00000000000000000000000000"
SECRET = "It's a Secret to Everybody, really"
LABELS = ["self-hosted", "linux", "x64", "rum-webhook"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()
    except urllib.error.URLError as exc:  # not listening (yet)
        return 0, "", str(exc.reason)


def post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def domuuid(name: str) -> str:
    """The domain's UUID, or "" while it does not exist (between a recreate's remove and create)."""
    return subprocess.run(VIRSH + ["domuuid", name], capture_output=True, text=True, check=False).stdout.strip()


@pytest.fixture
def fake():
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    server = FakeGitHub()
    url = server.start()
    server.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    yield server, url
    server.stop()


def runners(server) -> dict:
    return {r["name"]: r for r in server.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}


def test_webhook_service_recreates_the_slot_of_a_finished_job(fake, state_dir, playbook, tmp_path):
    server, api_url = fake
    storage = os.path.join(state_dir, "webhook-service")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    inv = pool_inventory(
        tmp_path / "hosts.yml", pool=POOL, host=HOST, labels=LABELS, size=2,
        github={"api_url": api_url, "repository": REPO, "token": PAT}, image=blank_image(storage),
        vm={"domain_type": "qemu", "vcpus": 1, "memory_mb": 256, "storage_dir": storage,
            "image_cache_dir": os.path.join(storage, "images")})
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "webhook.yml"
    config.write_text(json.dumps({
        "listen": {"host": "127.0.0.1", "port": port},
        "secret_file": str(secret_file),
        "state_dir": str(tmp_path / "service-state"),
        "pools": [POOL],
        "max_parallel": 2,
        "retry": {"attempts": 2, "backoff_seconds": 5},
        "dispatcher": {
            "kind": "ansible-runner",
            "playbook": os.path.join(ROOT, "playbooks", "recreate.yml"),
            "inventory": inv,
            "envvars": {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections"),
                        "ANSIBLE_NOCOLOR": "1"},
            "timeout": 600,
        },
    }))
    log_path = tmp_path / "service.log"
    service = None
    try:
        playbook(os.path.join(ROOT, "playbooks", "pool.yml"), inventory=inv)
        before = runners(server)
        by_slot = {name.rsplit("-", 1)[0]: r for name, r in before.items()}
        assert sorted(by_slot) == SLOTS, before
        uuids = {slot: domuuid(slot) for slot in SLOTS}

        check = subprocess.run([os.path.join(ROOT, ".venv", "bin", "rum-pool-webhook"), "check-config",
                                "--config", str(config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert SECRET not in check.stdout + check.stderr

        with open(log_path, "w") as log:
            service = subprocess.Popen(  # pylint: disable=consider-using-with
                [os.path.join(ROOT, ".venv", "bin", "rum-pool-webhook"), "serve", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
        wait_until("the service's /healthz", lambda: service.poll() is None and get(base + "/healthz")[0] == 200,
                   30, on_timeout=log_path.read_text)
        server.admin("POST", "/hooks", {"url": base + "/webhook", "secret": SECRET})

        # a job runs on slot 1's runner: queued, in_progress, completed webhooks
        slot = SLOTS[0]
        runner = by_slot[slot]
        job = server.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-webhook"]})
        server.admin("POST", f"/runners/{runner['id']}/job", {"job_id": job["id"]})
        server.admin("POST", f"/runners/{runner['id']}/done", {"conclusion": "success"})
        deliveries = server.admin("GET", "/deliveries")["deliveries"]
        assert [(d["action"], d["status"]) for d in deliveries] == [
            ("queued", 200), ("in_progress", 200), ("completed", 202)], deliveries

        def finished(count):
            counts = json.loads(get(base + "/api/status")[2] or "{}").get("counts", {})
            return counts.get("done", 0) + counts.get("failed", 0) >= count

        wait_until("the service to recreate the slot", lambda: finished(1), 300, on_timeout=log_path.read_text)
        fresh = [n for n in runners(server) if n.startswith(slot + "-") and n != runner["name"]]
        assert len(fresh) == 1 and runner["name"] not in runners(server)
        assert domuuid(slot) not in ("", uuids[slot]) and domstate(slot) == "running"
        # the other slot was never touched
        other = SLOTS[1]
        assert domuuid(other) == uuids[other] and by_slot[other]["name"] in runners(server)

        status = json.loads(get(base + "/api/status")[2])
        task = status["tasks"][0]
        assert (task["slot"], task["runner"], task["state"]) == (slot, runner["name"], "done"), task
        assert status["counts"]["queued"] == 0 and status["counts"]["failed"] == 0

        # GitHub's "Redeliver" sends the same delivery id: answered, not acted on twice
        completed = deliveries[-1]
        server.admin("POST", f"/deliveries/{completed['guid']}/redeliver")
        again = server.admin("GET", "/deliveries")["deliveries"][-1]
        assert again["redelivery"] and again["status"] == 200
        status = json.loads(get(base + "/api/status")[2])
        assert status["counts"]["duplicates"] == 1 and len(status["tasks"]) == 1

        # a late webhook about the old generation (a new delivery id) does not recreate the new one
        body = completed["body"].encode()
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                   "X-GitHub-Delivery": "late-0001", "User-Agent": "GitHub-Hookshot/test",
                   "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
        code, answer = post(base + "/webhook", body, headers)
        assert code == 202, answer
        wait_until("the late task to finish", lambda: finished(2), 300, on_timeout=log_path.read_text)
        assert json.loads(get(base + "/api/status")[2])["counts"]["done"] == 2
        assert fresh[0] in runners(server), "recreate.yml -e runner=<old generation> left the new runner alone"

        # a wrong signature is refused; so is an unsigned delivery
        forged = dict(headers, **{"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": "forged-1"})
        code, answer = post(base + "/webhook", body, forged)
        assert code == 401, answer
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert post(base + "/webhook", body, dict(unsigned, **{"X-GitHub-Delivery": "forged-2"}))[0] == 401

        # someone else's runner: ignored
        foreign = json.loads(body)
        foreign["workflow_job"]["runner_name"] = "build-box-7"
        foreign_body = json.dumps(foreign).encode()
        code, answer = post(base + "/webhook", foreign_body, dict(headers, **{
            "X-GitHub-Delivery": "foreign-1",
            "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), foreign_body, hashlib.sha256).hexdigest()}))
        assert code == 200 and "ignored" in answer, answer

        # the status page, its picture and the metrics
        code, kind, page = get(base + "/")
        assert code == 200 and kind.startswith("text/html") and slot in page
        code, kind, svg = get(base + "/status.svg")
        assert code == 200 and kind.startswith("image/svg+xml") and slot in svg
        ET.fromstring(svg)
        code, _kind, metrics = get(base + "/metrics")
        assert code == 200 and "rum_pool_webhook_deliveries_total" in metrics

        # stops cleanly on SIGTERM
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=90) == 0, log_path.read_text()
        log = log_path.read_text()
        assert slot in log and SECRET not in log and PAT not in log
    except BaseException:
        if log_path.exists():
            print(f"--- service log ---\n{log_path.read_text()[-20000:]}")
        raise
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)  # lets a running recreate finish (or stops it cleanly)
            try:
                service.wait(timeout=90)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(timeout=30)
        down = playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory=inv, expect_rc=None)
        for name in SLOTS:
            if domstate(name) != "absent":
                subprocess.run(VIRSH + ["destroy", name], capture_output=True, check=False)
                subprocess.run(VIRSH + ["undefine", "--nvram", name], capture_output=True, check=False)
    assert down.rc == 0, str(down)
    assert [n for n in runners(server) if n.startswith(f"{POOL}-{HOST}-")] == []
