"""The runner pool end to end: real guests on the local libvirtd, against the fake GitHub.

One test, in the order a pool lives: converge 2 slots; both runners come online from inside their
guests; a job is queued and one runner takes it; while it runs, recreate.yml stages that slot's next
generation (the batch path: JIT runner, seed, overlay, VM defined and never started); the job ends and
the guest powers itself off (its serial log shows the job and the bootstrap's clean-up, never the JIT
config); recreate.yml starts the staged generation (the time it took is printed) and its runner comes
online; the other slot is recreated with a registration token (servers without JIT configs); a VM
deleted behind the pool's back and an orphan runner are healed by pool.yml; teardown.yml removes
everything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.integration.guests import domstate, pool_inventory, runner_label, serial_log, wait_until
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
JOB_SECONDS = 45  # long enough to stage the slot's next generation while the job runs, on a busy host
JIT_PREFIX = "eyIucnVubmVyIjoi"  # every encoded JIT config starts so: base64 of '{".runner":"'
FAKES: dict = {}  # base URL -> the in-process fake GitHub serving it


def admin(url: str, method: str, path: str, body: dict | None = None):
    return FAKES[url].admin(method, path, body)


def runners(url: str) -> dict:
    return {r["name"]: r for r in admin(url, "GET", f"/runners?scope=repo:{REPO}")["runners"]}


def domuuid(name: str) -> str:
    return subprocess.run(VIRSH + ["domuuid", name], capture_output=True, text=True, check=True).stdout.strip()


def domains() -> list[str]:
    """The pool's domains whose names are not a slot's own: staged and retired generations."""
    names = subprocess.run(VIRSH + ["list", "--all", "--name"], capture_output=True, text=True, check=True).stdout
    return [name for name in names.split() if name.startswith(f"{POOL}-{HOST}-") and name not in SLOTS]


def serial_tail(storage: str, name: str) -> str:
    """The last lines of a domain's serial log (where its definition says, else ``<storage>/<name>/``)."""
    path = serial_log(name) or os.path.join(storage, name, "serial.log")
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
    recreate_yml = os.path.join(ROOT, "playbooks", "recreate.yml")
    folders = list(SLOTS)  # the VM directories whose serial logs a failure shows
    try:
        # 1. converge (the batch path, the default), waiting for the runners online: two slots, two VMs,
        #    two JIT runners, online from inside their guests when the playbook ends
        first = playbook(pool_yml, {"runner_pool_wait_online": True}, inventory=inv)
        assert "e2e-localhost-1" in first.stdout and "e2e-localhost-2" in first.stdout
        assert JIT_PREFIX not in first.stdout + first.stderr, "a JIT config in the playbook's output"
        assert [domstate(s) for s in SLOTS] == ["running", "running"]
        registered = runners(url)
        assert sorted(n.rsplit("-", 1)[0] for n in registered) == SLOTS, registered

        # 2. both stand-in runners came online from inside their guests before the converge ended
        assert sorted(r["status"] for r in runners(url).values()) == ["online", "online"], runners(url)
        # a re-run changes nothing
        again = playbook(pool_yml, inventory=inv)
        assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", again.stdout), again.stdout
        for record in runners(url).values():
            assert record["busy"] is False and record["os"] == "Linux" and record["ephemeral"], record
            assert {label["name"].lower() for label in record["labels"]} >= {label.lower() for label in LABELS}

        # 3. one job that lasts: one runner takes it; while it runs, its slot's next generation is staged
        #    (what the webhook service does on the job's in_progress, with stage: true)
        admin(url, "POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-e2e"], "job_id": 4242,
                                     "run_seconds": JOB_SECONDS})

        def taken():
            found = admin(url, "GET", "/jobs/4242")
            return found if found["status"] == "in_progress" else None

        job = wait_until("a runner to take the job", taken, 120)
        held = job["runner_name"]
        done_slot = held.rsplit("-", 1)[0]
        other = [s for s in SLOTS if s != done_slot][0]
        assert done_slot in SLOTS and runner_label(done_slot) == held
        staging = playbook(recreate_yml, {"slot": done_slot, "runner_name": held, "stage": True}, inventory=inv)
        staged = [name for name in domains() if name.startswith(done_slot + ".")]
        assert len(staged) == 1, (domains(), staging.stdout)
        staged, staged_uuid = staged[0], domuuid(staged[0])
        folders.append(staged)
        staged_runner = runner_label(staged)
        assert domstate(staged) == "shut off", "a staged generation is never started before the job ends"
        assert runners(url)[staged_runner]["status"] == "offline"
        assert admin(url, "GET", "/jobs/4242")["status"] == "in_progress", \
            f"the job ended before the stage was done: JOB_SECONDS ({JOB_SECONDS}) is too short for this host"

        # the job ends: its guest powers itself off; the serial log shows the job and the bootstrap's
        # clean-up, never the JIT config
        wait_until("the guest to power off after its job", lambda: domstate(done_slot) == "shut off",
                   JOB_SECONDS + 240)
        with open(serial_log(done_slot), errors="replace") as fh:
            console = fh.read()
        assert "running job 4242" in console and "job 4242 finished: success" in console, \
            "the stand-in runner ran the job in that guest"
        assert "rum-runner: JIT config read and removed from /etc/rum-runner/jitconfig" in console
        assert re.search(r"removed a stored copy of the JIT config: /var/lib/cloud/instances/[^/\s]+/user-data\.txt",
                         console), "the bootstrap removes cloud-init's stored copy of the user data"
        assert "still stored" not in console and "rum-runner: powering off (exit status 0)" in console
        assert JIT_PREFIX not in console, "the serial log shows the encoded JIT config"
        other_uuid, other_runner = domuuid(other), runner_label(other)

        # 4. the job's end (what the webhook's completed delivery runs): the staged generation is started
        started = time.monotonic()
        playbook(recreate_yml, {"slot": done_slot, "runner_name": held}, inventory=inv)
        took = time.monotonic() - started
        assert domstate(done_slot) == "running" and domuuid(done_slot) == staged_uuid, \
            "the slot's VM is the staged generation, started"
        assert runner_label(done_slot) == staged_runner
        assert [name for name in domains() if name.startswith((done_slot + ".", done_slot + "_"))] == [], \
            "no staged or retired generation left"
        now = runners(url)
        assert held not in now and staged_runner in now, "the finished runner's record is gone, the staged one kept"
        print(f"\nstaged path: recreate.yml ran {took:.1f} s, from its start to {done_slot}'s staged generation "
              f"running (real guests, this host)")

        # 5. the other slot recreated in the fallback for servers without JIT configs, and slot by slot
        #    (the runner_slot role, which takes over a slot the batch made): its guest registers its
        #    runner with a registration token (config.sh), so no record exists until the guest has booted
        playbook(recreate_yml, {"slot": other, "runner_pool_registration": "token", "runner_pool_batch": False},
                 inventory=inv)
        now = runners(url)
        assert other_runner not in now, "the idle runner's record is gone"
        assert not [n for n in now if n.startswith(other + "-")], "a token runner is listed only once it registers"
        assert domstate(other) == "running" and domuuid(other) != other_uuid
        assert domuuid(done_slot) == staged_uuid and staged_runner in now, "the recycled slot was not touched"

        # 6. the recycled slot's runner comes online again, from the staged generation's guest
        wait_until("the staged generation's runner online",
                   lambda: runners(url).get(staged_runner, {}).get("status") == "online", BOOT_TIMEOUT)
        assert serial_log(done_slot) == os.path.join(storage, staged, "serial.log"), \
            "a batch-made slot VM keeps its generation's folder"
        assert os.path.realpath(os.path.join(storage, done_slot)) == os.path.realpath(os.path.join(storage, staged)), \
            "<storage>/<slot> links to it"
        with open(serial_log(done_slot), errors="replace") as fh:
            assert "rum-runner: JIT config read and removed" in fh.read()

        # 7. drift: a VM deleted behind the pool's back, an orphan runner, another host's runner
        subprocess.run(VIRSH + ["destroy", done_slot], capture_output=True, check=False)
        subprocess.run(VIRSH + ["undefine", "--nvram", done_slot], capture_output=True, check=True)
        # with its VM gone, the runner stops sending heartbeats and GitHub shows it offline
        admin(url, "POST", f"/runners/{staged_runner}/status", {"status": "offline"})
        admin(url, "POST", "/runners", {"scope": f"repo:{REPO}", "name": f"{POOL}-{HOST}-7-orphan1",
                                        "status": "offline", "labels": LABELS})
        admin(url, "POST", "/runners", {"scope": f"repo:{REPO}", "name": f"{POOL}-otherhost-1-abcdef",
                                        "status": "offline", "labels": LABELS})
        healed = playbook(pool_yml, inventory=inv)
        now = runners(url)
        assert f"{POOL}-{HOST}-7-orphan1" not in now, "the orphan runner was deregistered"
        assert f"{POOL}-otherhost-1-abcdef" in now, "another host's runner is never touched"
        assert staged_runner not in now, "the deleted VM's runner was deregistered"
        assert domstate(done_slot) == "running"
        assert len([n for n in now if n.startswith(done_slot + "-")]) == 1
        assert "recreate" in healed.stdout or "create" in healed.stdout

        # the token slot's guest registered its own runner: ephemeral, the pool's labels, online
        def token_runner():
            found = [r for n, r in runners(url).items() if n.startswith(other + "-")]
            return found[0] if found and found[0]["status"] == "online" else None

        fresh = wait_until("the registration-token runner online", token_runner, BOOT_TIMEOUT)
        assert fresh["name"] != other_runner and fresh["ephemeral"] and not fresh.get("jit")
        assert {label["name"].lower() for label in fresh["labels"]} >= {label.lower() for label in LABELS}
        assert serial_log(other) == os.path.join(storage, other, "serial.log"), "the slot-by-slot path's own folder"
        with open(serial_log(other), errors="replace") as fh:
            console = fh.read()
        assert "registering runner " + fresh["name"] in console and "registration token read and removed" in console
    except BaseException:
        for folder in folders:
            print(f"--- serial log of {folder} ---\n{serial_tail(storage, folder)}")
        raise
    finally:
        # 8. teardown: every VM gone, every runner of this host deregistered
        down = playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory=inv, expect_rc=None)
        left = [s for s in SLOTS if domstate(s) != "absent"] + list(domains())
        for slot in left:
            subprocess.run(VIRSH + ["destroy", slot], capture_output=True, check=False)
            subprocess.run(VIRSH + ["undefine", "--nvram", slot], capture_output=True, check=False)
    assert down.rc == 0, str(down)
    assert left == []
    assert [n for n in runners(url) if n.startswith(f"{POOL}-{HOST}-")] == []
