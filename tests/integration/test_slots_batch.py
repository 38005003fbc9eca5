"""The batch path (runner_pool_batch: true, rum.pool.rum_slots) on the real libvirtd, with blank guests.

Blank guests (a 64 MiB empty disk: they idle in their firmware) cost no boot, so one test walks a
pool through what the batch path promises, driven by the entry playbooks against the fake GitHub:
a converge boots the slots; a busy slot gets a staged generation (defined, never started) that a
re-run leaves alone; two recreates of the finished slot at once start it exactly once; two
converges at once after a VM was deleted behind the pool's back make one VM and one runner; a
teardown removes every VM, staged generation, VM directory and runner. A second test drives the
staged path through the webhook service (stage: true, a warm standby) with the fake GitHub's own
deliveries: a job's start stages, its end starts the staged generation.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT
from tests.integration.guests import (VIRSH, blank_image, domstate, network_filters, pool_inventory, runner_label,
                                      stray_taps)

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

POOL = "batch"
HOST = "localhost"
SLOTS = [f"{POOL}-{HOST}-1", f"{POOL}-{HOST}-2"]
PAT = "ghp_batchtoken0000000000000000000000000"
REPO = "acme/batch"
PLAYBOOKS = os.path.join(ROOT, "playbooks")


@pytest.fixture
def github():
    fake = FakeGitHub()
    fake.url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    yield fake
    fake.stop()


def pool_domains() -> dict[str, str]:
    """The pool's domains on this host (slots, staged and retired generations) and their states."""
    names = subprocess.run(VIRSH + ["list", "--all", "--name"], capture_output=True, text=True, check=True).stdout
    return {name: domstate(name) for name in names.split() if name.startswith(f"{POOL}-{HOST}-")}


def batch_pool(github, state_dir: str, tmp_path, name: str, **more) -> tuple[str, str]:
    """The storage folder and inventory of a batch pool of blank guests on this machine."""
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    storage = os.path.join(state_dir, name)
    os.makedirs(storage, mode=0o755, exist_ok=True)
    image = blank_image(os.path.join(state_dir, "fixtures"), "tiny.qcow2")
    return storage, pool_inventory(tmp_path / "hosts.json", pool=POOL, host=HOST, labels=["self-hosted", "rum-batch"],
                                   github={"api_url": github.url, "repository": REPO, "token": PAT}, image=image,
                                   vm={"domain_type": "qemu", "vcpus": 1, "memory_mb": 256, "storage_dir": storage,
                                       "image_cache_dir": os.path.join(storage, "images")},
                                   online_timeout=3600, **more)  # the batch path: the default


def teardown(playbook, inv: str):
    """teardown.yml's run, and the pool's domains it left (removed by hand)."""
    down = playbook(os.path.join(PLAYBOOKS, "teardown.yml"), inventory=inv, expect_rc=None)
    left = pool_domains()
    for name in left:
        subprocess.run(VIRSH + ["destroy", name], capture_output=True, check=False)
        subprocess.run(VIRSH + ["undefine", "--nvram", name], capture_output=True, check=False)
    return down, left


def test_the_batch_path_stages_swaps_once_and_tears_down(github, state_dir, playbook, tmp_path):
    storage, inv = batch_pool(github, state_dir, tmp_path, "slots-batch", size=2, concurrency=4, lock_timeout=120)

    def runners() -> dict:
        return {r["name"]: r for r in github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}

    def at_once(*runs):
        with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
            return [f.result() for f in [pool.submit(playbook, path, extra, inventory=inv) for path, extra in runs]]

    pool_yml, recreate_yml = os.path.join(PLAYBOOKS, "pool.yml"), os.path.join(PLAYBOOKS, "recreate.yml")
    try:
        # 1. a converge from empty: both slots in one rum_slots task, each a promoted generation
        first = playbook(pool_yml, inventory=inv)
        assert "done: 2 created" in first.stdout, first
        assert pool_domains() == {SLOTS[0]: "running", SLOTS[1]: "running"}
        held = {slot: runner_label(slot) for slot in SLOTS}
        assert sorted(runners()) == sorted(held.values())

        # 2. slot 1's runner takes a job: the converge stages its next generation, defined and not started
        github.admin("POST", f"/runners/{held[SLOTS[0]]}/status", {"status": "online", "busy": True})
        github.admin("POST", f"/runners/{held[SLOTS[1]]}/status", {"status": "online"})
        staging = playbook(pool_yml, inventory=inv)
        assert "1 staged" in staging.stdout, staging
        [staged] = [name for name in pool_domains() if name.startswith(SLOTS[0] + ".")]
        assert pool_domains()[staged] == "shut off"
        staged_runner = runner_label(staged)
        assert staged_runner in runners() and runners()[staged_runner]["status"] == "offline"
        again = playbook(pool_yml, inventory=inv)
        assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", again.stdout), again
        assert pool_domains()[staged] == "shut off", "a re-run neither starts nor replaces the staged generation"

        # 3. the job ends (the guest powers off, GitHub drops the ephemeral runner); the webhook's
        #    recreate arrives twice at once: the staged generation is started exactly once
        subprocess.run(VIRSH + ["destroy", SLOTS[0]], capture_output=True, check=True)
        github.admin("POST", f"/runners/{held[SLOTS[0]]}/status", {"status": "offline", "busy": False})
        minted = len(github.admin("GET", "/calls?path=generate-jitconfig").get("calls", []))
        at_once((recreate_yml, {"slot": SLOTS[0], "runner_name": held[SLOTS[0]]}),
                (recreate_yml, {"slot": SLOTS[0], "runner_name": held[SLOTS[0]]}))
        assert pool_domains() == {SLOTS[0]: "running", SLOTS[1]: "running"}, "no staged or retired VM left"
        assert runner_label(SLOTS[0]) == staged_runner, "the staged generation is the slot's VM now"
        assert len(github.admin("GET", "/calls?path=generate-jitconfig").get("calls", [])) == minted, \
            "the swap minted no runner"
        assert held[SLOTS[0]] not in runners()
        late = playbook(recreate_yml, {"slot": SLOTS[0], "runner_name": held[SLOTS[0]]}, inventory=inv)
        assert runner_label(SLOTS[0]) == staged_runner and pool_domains()[SLOTS[0]] == "running", late

        # 4. slot 2's VM deleted behind the pool's back; two converges at once make one VM, one runner
        subprocess.run(VIRSH + ["destroy", SLOTS[1]], capture_output=True, check=False)
        subprocess.run(VIRSH + ["undefine", "--nvram", SLOTS[1]], capture_output=True, check=True)
        github.admin("POST", f"/runners/{held[SLOTS[1]]}/status", {"status": "offline"})
        both = at_once((pool_yml, None), (pool_yml, None))
        assert sum(run.stdout.count("done: 1 created") for run in both) == 1, both
        assert pool_domains() == {SLOTS[0]: "running", SLOTS[1]: "running"}
        # (the old runner, offline and named less than online_timeout ago, is spared by the plan)
        slot2 = [name for name in runners() if name.startswith(SLOTS[1] + "-") and name != held[SLOTS[1]]]
        assert slot2 == [runner_label(SLOTS[1])], "one runner minted for slot 2, the one its VM holds"

        # 5. a staged generation does not survive a teardown
        github.admin("POST", f"/runners/{runner_label(SLOTS[1])}/status", {"status": "online", "busy": True})
        playbook(pool_yml, inventory=inv)
        assert [name for name in pool_domains() if name.startswith(SLOTS[1] + ".")]
        github.admin("POST", f"/runners/{runner_label(SLOTS[1])}/status", {"status": "online", "busy": False})
    finally:
        down, left = teardown(playbook, inv)
    assert down.rc == 0, down
    assert left == {}, "every slot VM and staged generation removed"
    # none of a generation's directories or network filters, those of the VM deleted behind the pool's back too
    assert [name for name in os.listdir(storage) if name.startswith(f"{POOL}-")] == [], "no VM directory left"
    assert network_filters(f"rum-vm-{POOL}-{HOST}-") == [], "no network filter left"
    assert stray_taps() == [], "no tap of a gone VM held by the nftables ruleset"
    assert runners() == {}, "every runner deregistered"


def test_the_webhook_service_stages_on_a_job_start_and_starts_the_staged_generation_at_its_end(
        github, state_dir, playbook, tmp_path):
    """The staged path through the service for real (stage: true, dispatcher.standby: true): GitHub's
    in_progress delivery over HTTP stages the slot's next generation, its completed delivery starts
    that very generation, handed to the warm standby run of recreate.yml; blank guests, no boot."""
    from tests.integration.guests import wait_until  # pylint: disable=import-outside-toplevel
    from tests.integration.webhook import ServiceProcess  # pylint: disable=import-outside-toplevel

    _storage, inv = batch_pool(github, state_dir, tmp_path, "slots-staging", size=1)
    slot = SLOTS[0]
    secret = "staging-webhook-secret"
    env = {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections"), "ANSIBLE_NOCOLOR": "1"}
    service = ServiceProcess(str(tmp_path / "service"), {
        "pools": [POOL], "stage": True, "retry": {"attempts": 1, "backoff_seconds": 1},
        "dispatcher": {"kind": "ansible-runner", "playbook": os.path.join(PLAYBOOKS, "recreate.yml"),
                       "inventory": inv, "envvars": env, "timeout": 600, "standby": True},
        "reconcile": {"at_start": False, "interval_minutes": 0}}, secret)

    def task_states() -> list:
        return [(t["kind"], t["state"]) for t in sorted(service.status().get("tasks", []), key=lambda t: t["id"])]

    try:
        assert "done: 1 created" in playbook(os.path.join(PLAYBOOKS, "pool.yml"), inventory=inv).stdout
        old_runner, old_uuid = runner_label(slot), domuuid(slot)
        github.admin("POST", f"/runners/{old_runner}/status", {"status": "online"})
        with service.start().watched():
            github.admin("DELETE", "/hooks")
            github.admin("POST", "/hooks", {"url": service.base + "/webhook", "secret": secret, "scope": f"repo:{REPO}"})
            wait_until("the service's warm standby", lambda: "runs" in os.listdir(os.path.join(service.dir, "state"))
                       and any(os.path.exists(os.path.join(service.dir, "state", "runs", name, "request.json.ready"))
                               for name in os.listdir(os.path.join(service.dir, "state", "runs"))), 120,
                       on_timeout=service.log)
            # the job starts: in_progress -> a stage task -> the next generation, defined and never started
            job = github.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-batch"]})
            github.admin("POST", f"/runners/{old_runner}/job", {"job_id": job["id"]})
            wait_until("the stage task", lambda: ("stage", "done") in task_states(), 300, on_timeout=service.log)
            [staged] = [name for name in pool_domains() if name.startswith(slot + ".")]
            assert pool_domains() == {slot: "running", staged: "shut off"}
            staged_runner, staged_uuid = runner_label(staged), domuuid(staged)
            assert staged_runner != old_runner and staged_runner in {
                r["name"] for r in github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}
            # the job ends: completed -> the recreate starts that staged generation as the slot
            github.admin("POST", f"/runners/{old_runner}/done", {"conclusion": "success"})
            wait_until("the recreate task", lambda: ("recreate", "done") in task_states(), 300, on_timeout=service.log)
            assert pool_domains() == {slot: "running"}, "the staged generation is the slot now; nothing retired is left"
            assert (runner_label(slot), domuuid(slot)) == (staged_runner, staged_uuid) != (old_runner, old_uuid)
            log = service.log()
            assert re.search(rf"task \d+ slot {slot}: recreate.yml: handed to the warm standby run 0-\d+", log), log
            # nothing of the runs is killed at their end: the seed watcher the recreate started outlives it on
            # purpose, and each run's launcher exits by itself right after writing its result
            assert "left over from the run" not in log, log
            assert old_runner not in {r["name"] for r in github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}
    finally:
        down, left = teardown(playbook, inv)
    assert down.rc == 0, down
    assert left == {}, "every slot VM and staged generation removed"
    assert network_filters(f"rum-vm-{POOL}-{HOST}-") == [], "no network filter left"
    assert stray_taps() == [], "no tap of a gone VM held by the nftables ruleset"


def domuuid(name: str) -> str:
    return subprocess.run(VIRSH + ["domuuid", name], capture_output=True, text=True, check=True).stdout.strip()
