"""The webhook service for real: the fake GitHub sends signed workflow_job webhooks over HTTP to a
running ``rum-pool-webhook serve``, which has the slot recreated by ansible-runner running the
collection's recreate.yml against the local libvirtd. Then what heals a missed delivery (the
service asking GitHub to redeliver it, or the pool reconcile it runs itself), and the same
recreate driven by Event-Driven Ansible's ansible-rulebook with the collection's rulebook.

The pool's image is a blank disk (the VMs idle in their firmware), so no guest boots: what is
shown is the path webhook -> service (or rulebook) -> ansible-runner -> runner_slot, with its
dedupe, its refusals and its status page. One pool serves every test of this module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from tests.integration.conftest import run_playbook
from tests.integration.guests import blank_image, domstate, pool_inventory, wait_until
from tests.integration.test_rum_vm import ROOT, VIRSH
from tests.integration.webhook import BIN, ServiceProcess, free_port, get, post
from tests.needs import command, module

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.examples import example, retarget, signed_headers  # noqa: E402  pylint: disable=wrong-import-position

POOL = "whk"
HOST = "localhost"
SLOTS = [f"{POOL}-{HOST}-1", f"{POOL}-{HOST}-2"]
REPO = "acme/hooks"
PAT = "ghp_webhooktest00000000000000000000000000"
SECRET = "It's a Secret to Everybody, really"
LABELS = ["self-hosted", "linux", "x64", "rum-webhook"]
PLAYBOOK_ENV = {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections"), "ANSIBLE_NOCOLOR": "1"}


def domuuid(name: str) -> str:
    """The domain's UUID, or "" while it does not exist (between a recreate's remove and create)."""
    return subprocess.run(VIRSH + ["domuuid", name], capture_output=True, text=True, check=False).stdout.strip()


class Pool:
    """The fake GitHub, the pool's inventory (two slots on this machine) and its hook."""

    def __init__(self, server, api_url, inventory, workdir):
        self.server = server
        self.api_url = api_url
        self.inventory = inventory
        self.workdir = workdir

    def runners(self) -> dict:
        return {r["name"]: r for r in self.server.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}

    def runner_of(self, slot: str) -> dict:
        found = [r for name, r in self.runners().items() if name.startswith(slot + "-")]
        assert len(found) == 1, self.runners()
        return found[0]

    def finish_job(self, slot: str, power_off: bool = False) -> tuple[dict, list]:
        """A job runs on the slot's runner: queued, in_progress, completed deliveries. With
        ``power_off`` the VM then stops, as a real runner guest does after its one job."""
        runner = self.runner_of(slot)
        job = self.server.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-webhook"]})
        self.server.admin("POST", f"/runners/{runner['id']}/job", {"job_id": job["id"]})
        self.server.admin("POST", f"/runners/{runner['id']}/done", {"conclusion": "success"})
        if power_off:
            subprocess.run(VIRSH + ["destroy", slot], capture_output=True, check=True)
        deliveries = [d for d in self.server.admin("GET", "/deliveries")["deliveries"] if d["job_id"] == job["id"]]
        return runner, deliveries

    def hook(self, url: str) -> dict:
        self.server.admin("DELETE", "/hooks")
        return self.server.admin("POST", "/hooks", {"url": url, "secret": SECRET, "scope": f"repo:{REPO}"})


@pytest.fixture(scope="module")
def pool(state_dir, tmp_path_factory):
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    server = FakeGitHub()
    api_url = server.start()
    server.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    storage = os.path.join(state_dir, "webhook-service")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    workdir = tmp_path_factory.mktemp("webhook")
    inv = pool_inventory(
        workdir / "hosts.yml", pool=POOL, host=HOST, labels=LABELS, size=2,
        github={"api_url": api_url, "repository": REPO, "token": PAT}, image=blank_image(storage),
        vm={"domain_type": "qemu", "vcpus": 1, "memory_mb": 256, "storage_dir": storage,
            "image_cache_dir": os.path.join(storage, "images")},
        batch=False)  # the runner_slot path; the batch path's recreates are in test_slots_batch and test_pool_e2e
    up = run_playbook(os.path.join(ROOT, "playbooks", "pool.yml"), inventory=inv)
    assert up.rc == 0, str(up)
    try:
        yield Pool(server, api_url, inv, workdir)
    finally:
        down = run_playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory=inv)
        for name in SLOTS:
            if domstate(name) != "absent":
                subprocess.run(VIRSH + ["destroy", name], capture_output=True, check=False)
                subprocess.run(VIRSH + ["undefine", "--nvram", name], capture_output=True, check=False)
        leftover = [n for n in (json.dumps(server.admin("GET", f"/runners?scope=repo:{REPO}")),) if f"{POOL}-{HOST}-" in n]
        server.stop()
        assert down.rc == 0, str(down)
        assert not leftover, leftover


class Service(ServiceProcess):
    """The service for the pool: ansible-runner running recreate.yml; no reconcile unless asked."""

    def __init__(self, pool: Pool, name: str, port: int | None = None, **sections):
        folder = pool.workdir / name
        folder.mkdir(exist_ok=True)
        config = {
            "listen": {"host": "127.0.0.1", "port": port or free_port()},
            "pools": [POOL],
            "max_parallel": 2,
            "retry": {"attempts": 2, "backoff_seconds": 5},
            "dispatcher": {
                "kind": "ansible-runner",
                "playbook": os.path.join(ROOT, "playbooks", "recreate.yml"),
                "inventory": pool.inventory, "envvars": PLAYBOOK_ENV, "timeout": 600,
            },
            "reconcile": {"at_start": False, "interval_minutes": 0,
                          "playbook": os.path.join(ROOT, "playbooks", "pool.yml")},
        }
        for key, value in sections.items():
            config[key] = dict(config.get(key) or {}, **value)
        if "github" in config:
            token = folder / "github-token"
            token.write_text(PAT + "\n")
            token.chmod(0o600)
            config["github"]["token_file"] = str(token)
        super().__init__(str(folder), config, SECRET)

    def finished(self, count: int) -> bool:
        return self.settled(count)


def test_webhook_service_recreates_the_slot_of_a_finished_job(pool):
    server = pool.server
    before = pool.runners()
    by_slot = {name.rsplit("-", 1)[0]: r for name, r in before.items()}
    assert sorted(by_slot) == SLOTS, before
    uuids = {slot: domuuid(slot) for slot in SLOTS}
    service = Service(pool, "service")
    with service.watched(20000):
        check = subprocess.run([os.path.join(BIN, "rum-pool-webhook"), "check-config", "--config", str(service.config)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert SECRET not in check.stdout + check.stderr
        service.start()
        pool.hook(service.base + "/webhook")

        # a job runs on slot 1's runner: queued, in_progress, completed webhooks
        slot = SLOTS[0]
        runner, deliveries = pool.finish_job(slot)
        assert [(d["action"], d["status"]) for d in deliveries] == [
            ("queued", 200), ("in_progress", 200), ("completed", 202)], deliveries

        wait_until("the service to recreate the slot", lambda: service.finished(1), 300, on_timeout=service.log)
        fresh = [n for n in pool.runners() if n.startswith(slot + "-") and n != runner["name"]]
        assert len(fresh) == 1 and runner["name"] not in pool.runners()
        assert domuuid(slot) not in ("", uuids[slot]) and domstate(slot) == "running"
        # the other slot was never touched
        other = SLOTS[1]
        assert domuuid(other) == uuids[other] and by_slot[other]["name"] in pool.runners()

        status = service.status()
        task = status["tasks"][0]
        assert (task["slot"], task["runner"], task["state"]) == (slot, runner["name"], "done"), task
        assert status["counts"]["queued"] == 0 and status["counts"]["failed"] == 0

        # GitHub's "Redeliver" sends the same delivery id: answered, not acted on twice
        completed = deliveries[-1]
        server.admin("POST", f"/deliveries/{completed['guid']}/redeliver")
        again = server.admin("GET", "/deliveries")["deliveries"][-1]
        assert again["redelivery"] and again["status"] == 200
        status = service.status()
        assert status["counts"]["duplicates"] == 1 and len(status["tasks"]) == 1

        # a late webhook about the old generation (a new delivery id): recreate.yml leaves the
        # new generation alone, and says so; the service reports the task as skipped
        body = completed["body"].encode()
        headers = signed_headers(body, SECRET.encode(), delivery="late-0001")
        code, answer = post(service.base + "/webhook", body, headers)
        assert code == 202, answer
        wait_until("the late task to finish", lambda: service.finished(2), 300, on_timeout=service.log)
        status = service.status()
        assert status["counts"]["done"] == 1 and status["counts"]["skipped"] == 1, status["counts"]
        assert status["tasks"][0]["state"] == "skipped" and "skipped" in status["tasks"][0]["message"]
        assert fresh[0] in pool.runners(), "recreate.yml -e runner_name=<old generation> left the new runner alone"

        # a wrong signature is refused; so is an unsigned delivery
        forged = dict(headers, **{"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": "forged-1"})
        code, answer = post(service.base + "/webhook", body, forged)
        assert code == 401, answer
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert post(service.base + "/webhook", body, dict(unsigned, **{"X-GitHub-Delivery": "forged-2"}))[0] == 401

        # someone else's runner (GitHub's own example, byte for byte): ignored
        foreign_body = example("completed")
        code, answer = post(service.base + "/webhook", foreign_body, signed_headers(foreign_body, SECRET.encode()))
        assert code == 200 and "ignored" in answer, answer

        # the status page, its picture and the metrics
        code, kind, page = get(service.base + "/")
        assert code == 200 and kind.startswith("text/html") and slot in page
        code, kind, svg = get(service.base + "/status.svg")
        assert code == 200 and kind.startswith("image/svg+xml") and slot in svg
        ET.fromstring(svg)
        code, _kind, metrics = get(service.base + "/metrics")
        assert code == 200 and "rum_pool_webhook_deliveries_total" in metrics
        assert "rum_pool_webhook_request_seconds_bucket" in metrics

        # stops cleanly on SIGTERM
        assert service.stop() == 0, service.log()
        log = service.log()
        assert slot in log and SECRET not in log and PAT not in log


def test_a_delivery_missed_while_the_service_was_down_heals_within_one_interval(pool):
    """Twice: once GitHub redelivers what failed (the service asks it to), once the service's own
    reconcile of the pool finds the finished slot. Each start runs its check at once; the test
    says which one recreated the slot."""
    interval = 60
    # 1. the redelivery: a github section with the hook's id and a token; no reconcile
    port = free_port()
    hook = pool.hook(f"http://127.0.0.1:{port}/webhook")  # the service is down: the deliveries fail
    slot = SLOTS[1]
    runner, deliveries = pool.finish_job(slot)
    assert [d["status"] for d in deliveries] == [None, None, None]
    first = Service(pool, "missed-redelivery", port=port, github={
        "api_url": pool.api_url, "repository": REPO, "hook_id": hook["id"], "interval_minutes": interval / 60})
    with first.watched(20000):
        started = time.time()
        first.start()
        wait_until("the redelivered delivery's recreate", lambda: first.finished(1), 300, on_timeout=first.log)
        task = first.status()["tasks"][0]
        assert (task["kind"], task["slot"], task["runner"], task["state"]) == ("recreate", slot, runner["name"], "done")
        assert task["created_at"] - started < interval  # within one interval of the start
        redelivered = [d for d in pool.server.admin("GET", "/deliveries")["deliveries"]
                       if d["guid"] == deliveries[-1]["guid"] and d["redelivery"]]
        assert [d["status"] for d in redelivered] == [202]
        assert "asked GitHub to redeliver %s" % deliveries[-1]["guid"] in first.log()
        print(f"slot {slot}: recreated from the redelivery of {deliveries[-1]['guid']}")
        assert first.stop() == 0
    assert runner["name"] not in pool.runners() and pool.runner_of(slot)

    # 2. the reconcile: no github section; the service converges the pool at start
    second = Service(pool, "missed-reconcile", reconcile={"at_start": True, "interval_minutes": interval / 60})
    pool.hook(second.base + "/webhook")
    slot = SLOTS[0]
    uuid = domuuid(slot)
    runner, deliveries = pool.finish_job(slot, power_off=True)
    assert [d["status"] for d in deliveries] == [None, None, None]
    with second.watched(20000):
        started = time.time()
        second.start()
        wait_until("the reconcile", lambda: second.finished(1), 400, on_timeout=second.log)
        task = second.status()["tasks"][0]
        assert (task["kind"], task["slot"], task["state"]) == ("reconcile", "(reconcile)", "done"), task
        assert task["created_at"] - started < interval
        print(f"slot {slot}: recreated by the service's reconcile of the pool (task {task['id']})")
        assert second.stop() == 0
    assert runner["name"] not in pool.runners() and pool.runner_of(slot)
    assert domuuid(slot) not in ("", uuid)


def test_the_eda_rulebook_recreates_on_a_signed_delivery_only(pool, tmp_path):
    """ansible-rulebook (from PyPI) runs the collection's rulebook: its event source checks the
    signature as the service does; a signed in_progress delivery runs recreate.yml's stage, a signed
    completed one recreate.yml, an unsigned one nothing."""
    rulebook = command_in_venv("ansible-rulebook")
    command("java", "openjdk-17-jre-headless")
    module("drools", "ansible-rulebook==1.3.2")
    port = free_port()
    eda_vars = tmp_path / "eda-vars.yml"
    eda_vars.write_text(json.dumps({"webhook_port": port, "webhook_secret": SECRET, "runner_pools": [POOL],
                                    "runner_pool_stage": True}))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), **PLAYBOOK_ENV)
    log_path = tmp_path / "rulebook.log"
    slot = SLOTS[0]
    runner = pool.runner_of(slot)
    uuid = domuuid(slot)
    body = retarget(example("completed"), runner["name"])  # GitHub's example bytes, on our runner
    with open(log_path, "w") as log:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [rulebook, "-r", "rum.pool.recreate_on_completed_job", "-i", pool.inventory, "--vars", str(eda_vars),
             "-v"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        url = f"http://127.0.0.1:{port}/webhook"
        wait_until("the rulebook's event source", lambda: proc.poll() is None and get(url)[0] == 405, 120,
                   on_timeout=log_path.read_text)
        unsigned = {k: v for k, v in signed_headers(body, SECRET.encode()).items() if k != "X-Hub-Signature-256"}
        assert post(url, body, unsigned)[0] == 401
        forged = signed_headers(body, b"not the secret")
        assert post(url, body, forged)[0] == 401
        time.sleep(5)
        assert pool.runner_of(slot)["name"] == runner["name"] and domuuid(slot) == uuid
        assert "rum.pool.recreate" not in log_path.read_text()

        # the job's start (runner_pool_stage: true): recreate.yml -e stage=true runs; this pool has no
        # batch path, so it says it does not stage and leaves the slot as it is
        started = retarget(example("in_progress"), runner["name"])
        assert post(url, started, signed_headers(started, SECRET.encode()))[0] == 200
        staged = re.compile(r"TASK \[Publish that a pool without the batch path does not stage\][^\n]*\n(ok|changed): ")
        wait_until("the rulebook's stage run", lambda: staged.search(log_path.read_text()) and
                   "PLAY RECAP" in log_path.read_text(), 120, on_timeout=log_path.read_text)
        assert pool.runner_of(slot)["name"] == runner["name"] and domuuid(slot) == uuid

        assert post(url, body, signed_headers(body, SECRET.encode()))[0] == 200
        wait_until("the rulebook's recreate", lambda: runner["name"] not in pool.runners() and
                   domuuid(slot) not in ("", uuid) and len([n for n in pool.runners() if n.startswith(slot)]) == 1,
                   300, on_timeout=log_path.read_text)
        wait_until("the playbook's end", lambda: log_path.read_text().count("PLAY RECAP") >= 2, 120,
                   on_timeout=log_path.read_text)
        assert "failed=0" in log_path.read_text() and SECRET not in log_path.read_text()
    except BaseException:
        print(f"--- rulebook log ---\n{log_path.read_text()[-20000:]}")
        raise
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def command_in_venv(name: str) -> str:
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.fail(f"{name} is missing from .venv: pip install -r requirements-dev.txt (make venv)", pytrace=False)
    return path
