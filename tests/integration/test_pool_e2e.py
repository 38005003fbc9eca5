"""The runner pool end to end: real guests on the local libvirtd, against the fake GitHub.

One test, in the order a pool lives: converge 2 slots; both runners come online; a job is queued,
one runner takes it and its guest powers off; recreate.yml brings a fresh VM with a new runner into
that slot while the other slot is untouched; a VM deleted behind the pool's back and an orphan
runner are healed by pool.yml; teardown.yml removes everything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.integration.guests import domstate, pool_inventory, wait_until
from tests.integration.test_rum_vm import ROOT, VIRSH

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

POOL = "e2e"
HOST = "localhost"
SLOTS = [f"{POOL}-{HOST}-1", f"{POOL}-{HOST}-2"]
REPO = "acme/widgets"
PAT = "ghp_e2etoken000000000000000000000000000"
LABELS = ["self-hosted", "linux", "x64", "rum-e2e"]
BRIDGE_IP = "192.168.122.1"  # the libvirt default network's host side: guests reach the fake here
BOOT_TIMEOUT = 420
FAKES: dict = {}  # base URL -> the in-process fake GitHub serving it


def admin(url: str, method: str, path: str, body: dict | None = None):
    return FAKES[url].admin(method, path, body)


def runners(url: str) -> dict:
    return {r["name"]: r for r in admin(url, "GET", f"/runners?scope=repo:{REPO}")["runners"]}


def domuuid(name: str) -> str:
    return subprocess.run(VIRSH + ["domuuid", name], capture_output=True, text=True, check=True).stdout.strip()


def serial_tail(storage: str, slot: str) -> str:
    path = os.path.join(storage, slot, "serial.log")
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-40:])
    except OSError as exc:
        return f"({path}: {exc.strerror})"


@pytest.fixture
def fake_github():
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    fake = FakeGitHub(host=BRIDGE_IP, public_url=None)
    url = fake.start()
    FAKES[url] = fake
    admin(url, "POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    yield url
    fake.stop()
    del FAKES[url]


@pytest.mark.guest
def test_pool_end_to_end(fake_github, state_dir, playbook, tmp_path):
    from tests.tools.testimage import ensure_test_image

    url = fake_github
    image = ensure_test_image()
    storage = os.path.join(state_dir, "pool-e2e")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    inv = pool_inventory(
        tmp_path / "hosts.yml", pool=POOL, host=HOST, labels=LABELS, size=2, online_timeout=BOOT_TIMEOUT,
        github={"api_url": url, "repository": REPO, "token": PAT},
        image={"url": f"file://{image['path']}", "checksum": f"sha256:{image['sha256']}"},
        vm={"domain_type": "qemu", "vcpus": 1, "memory_mb": 640, "storage_dir": storage,
            "image_cache_dir": os.path.join(storage, "images")})
    pool_yml = os.path.join(ROOT, "playbooks", "pool.yml")
    try:
        # 1. converge: two slots, two VMs, two JIT runners (offline until their guests boot)
        first = playbook(pool_yml, inventory=inv)
        assert "e2e-localhost-1" in first.stdout and "e2e-localhost-2" in first.stdout
        assert [domstate(s) for s in SLOTS] == ["running", "running"]
        registered = runners(url)
        assert sorted(n.rsplit("-", 1)[0] for n in registered) == SLOTS, registered

        # a re-run right away changes nothing: both slots are booting
        again = playbook(pool_yml, inventory=inv)
        assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", again.stdout), again.stdout

        # 2. both stand-in runners come online from inside their guests
        wait_until("both runners online", lambda: all(r["status"] == "online" for r in runners(url).values())
                   and len(runners(url)) == 2, BOOT_TIMEOUT)

        # 3. one job: one runner takes it, reports done, its guest powers off by itself
        admin(url, "POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-e2e"], "job_id": 4242})
        done_slot = wait_until("a guest to power off after its job",
                               lambda: next((s for s in SLOTS if domstate(s) == "shut off"), None), 240)
        other = [s for s in SLOTS if s != done_slot][0]
        with open(os.path.join(storage, done_slot, "serial.log"), errors="replace") as fh:
            assert "running job 4242" in fh.read(), "the stand-in runner ran the job in that guest"

        old_names = {n.rsplit("-", 1)[0]: n for n in registered}
        other_uuid, other_runner = domuuid(other), old_names[other]
        done_uuid = domuuid(done_slot)

        # 4. recreate.yml (what the webhook service runs) refills that slot, here in the fallback
        #    for servers without JIT configs: the guest registers its runner with a registration
        #    token (config.sh), so no record exists until the guest has booted
        playbook(os.path.join(ROOT, "playbooks", "recreate.yml"),
                 {"slot": done_slot, "runner_pool_registration": "token"}, inventory=inv)
        now = runners(url)
        assert old_names[done_slot] not in now, "the finished runner's record is gone"
        assert not [n for n in now if n.startswith(done_slot + "-")], "a token runner is listed only once it registers"
        assert domstate(done_slot) == "running" and domuuid(done_slot) != done_uuid
        # the other slot was never touched
        assert domuuid(other) == other_uuid and other_runner in now and now[other_runner]["status"] == "online"

        # 5. drift: a VM deleted behind the pool's back, an orphan runner, another host's runner
        subprocess.run(VIRSH + ["destroy", other], capture_output=True, check=False)
        subprocess.run(VIRSH + ["undefine", "--nvram", other], capture_output=True, check=True)
        # with its VM gone, the runner stops sending heartbeats and GitHub shows it offline
        admin(url, "POST", f"/runners/{other_runner}/status", {"status": "offline"})
        admin(url, "POST", "/runners", {"scope": f"repo:{REPO}", "name": f"{POOL}-{HOST}-7-orphan1",
                                        "status": "offline", "labels": LABELS})
        admin(url, "POST", "/runners", {"scope": f"repo:{REPO}", "name": f"{POOL}-otherhost-1-abcdef",
                                        "status": "offline", "labels": LABELS})
        healed = playbook(pool_yml, inventory=inv)
        now = runners(url)
        assert f"{POOL}-{HOST}-7-orphan1" not in now, "the orphan runner was deregistered"
        assert f"{POOL}-otherhost-1-abcdef" in now, "another host's runner is never touched"
        assert other_runner not in now, "the deleted VM's runner was deregistered"
        assert domstate(other) == "running"
        assert len([n for n in now if n.startswith(other + "-")]) == 1
        assert "recreate" in healed.stdout or "create" in healed.stdout

        # the token slot's guest registered its own runner: ephemeral, the pool's labels, online
        def token_runner():
            found = [r for n, r in runners(url).items() if n.startswith(done_slot + "-")]
            return found[0] if found and found[0]["status"] == "online" else None

        fresh = wait_until("the registration-token runner online", token_runner, BOOT_TIMEOUT)
        assert fresh["name"] != old_names[done_slot] and fresh["ephemeral"] and not fresh.get("jit")
        assert {label["name"].lower() for label in fresh["labels"]} >= {label.lower() for label in LABELS}
        with open(os.path.join(storage, done_slot, "serial.log"), errors="replace") as fh:
            console = fh.read()
        assert "registering runner " + fresh["name"] in console and "registration token read and removed" in console
    except BaseException:
        for slot in SLOTS:
            print(f"--- serial log of {slot} ---\n{serial_tail(storage, slot)}")
        raise
    finally:
        # 6. teardown: every VM gone, every runner of this host deregistered
        down = playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory=inv, expect_rc=None)
        left = [s for s in SLOTS if domstate(s) != "absent"]
        for slot in left:
            subprocess.run(VIRSH + ["destroy", slot], capture_output=True, check=False)
            subprocess.run(VIRSH + ["undefine", "--nvram", slot], capture_output=True, check=False)
    assert down.rc == 0, str(down)
    assert left == []
    assert [n for n in runners(url) if n.startswith(f"{POOL}-{HOST}-")] == []
