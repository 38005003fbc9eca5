"""One real single-use runner guest: the bootstrap, the stand-in runner and the fake GitHub together.

The fake GitHub listens on the libvirt network's host address so the guest can reach it. Through
ansible-playbook, gh_runner_token makes a JIT runner and rum_vm boots the test image with
``rum.pool.runner_user_data``. The runner must come online by itself, take the job the test queues,
report it done and exit; the guest must power itself off, the ephemeral runner record must be gone,
and the serial log must show the job (and never the JIT config). One boot.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.integration.guests import domstate, wait_until
from tests.integration.test_rum_vm import ROOT, VIRSH

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

BRIDGE_IP = "192.168.122.1"  # the libvirt default network's host side
REPO = "acme/guests"
PAT = "ghp_runnerguest00000000000000000000000"
LABELS = ["self-hosted", "linux", "x64", "rum-guest"]
VM = "rumtest-runner-guest"
RUNNER = "rumtest-runner-guest-a1b2c3"
JOB_ID = 31337
ONLINE_TIMEOUT = 300  # boot under TCG: cloud-init done at ~40-70 s, allow for a busy host
POWEROFF_TIMEOUT = 120  # job (3 s) + done + systemd poweroff
# Every encoded JIT config starts with this: base64 of '{".runner":"'.
JIT_PREFIX = "eyIucnVubmVyIjoi"


@pytest.fixture
def fake_github():
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    fake = FakeGitHub(host=BRIDGE_IP)
    url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": [f"repo:{REPO}"]}]})
    yield fake, url
    fake.stop()


@pytest.mark.guest
def test_runner_guest_takes_one_job_and_powers_off(fake_github, state_dir, playbook):
    from tests.tools.testimage import ensure_test_image

    fake, url = fake_github
    image = ensure_test_image()
    storage = os.path.join(state_dir, "runner-guest")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    serial = os.path.join(storage, VM, "serial.log")
    extra = {
        "gh": {"api_url": url, "repository": REPO, "token": PAT},
        "runner_name": RUNNER, "runner_labels": LABELS, "vm_name": VM, "storage_dir": storage,
        "image_url": image["url"], "image_checksum": image["checksum"],
    }

    def serial_log() -> str:
        try:
            with open(serial, errors="replace") as handle:
                return handle.read()
        except OSError as exc:
            return f"({serial}: {exc.strerror})"

    def runner():
        found = fake.admin("GET", f"/runners?scope=repo:{REPO}&name={RUNNER}")["runners"]
        return found[0] if found else None

    def completed_job():
        job = fake.admin("GET", f"/jobs/{JOB_ID}")
        return job if job["status"] == "completed" else None

    def diagnostics() -> str:
        return (f"domain state: {domstate(VM)}\nrunner: {runner()}\n"
                f"--- serial log (tail) ---\n{''.join(serial_log().splitlines(True)[-60:])}")

    try:
        up = playbook("runner_guest/up.yml", extra)
        runner_id = int(re.search(r"runner_id=(\d+)", up.stdout).group(1))
        # The JIT config never shows in the playbook's output (no_log on the tasks that hold it).
        assert JIT_PREFIX not in up.stdout + up.stderr

        # 1. the stand-in runner comes online from inside the guest, by itself
        record = wait_until("the runner to come online", lambda: (runner() or {}).get("status") == "online" and runner(),
                            ONLINE_TIMEOUT, diagnostics)
        assert record["id"] == runner_id and record["busy"] is False and record["os"] == "Linux"
        assert sorted(label["name"] for label in record["labels"]) == sorted(LABELS)

        # 2. a job whose labels are a subset of the runner's: it takes it, reports done
        fake.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-guest"],
                                     "job_id": JOB_ID})
        job = wait_until("the job to complete", completed_job, POWEROFF_TIMEOUT, diagnostics)
        assert job["runner_name"] == RUNNER and job["conclusion"] == "success"

        # 3. the guest powers itself off; the ephemeral runner's record is gone
        wait_until("the guest to power off by itself", lambda: domstate(VM) == "shut off", POWEROFF_TIMEOUT,
                   diagnostics)
        assert runner() is None

        # 4. the serial log shows the job and the bootstrap's clean-up, and never the JIT config
        log = serial_log()
        print("".join(line for line in log.splitlines(True) if "rum-runner" in line or "rum-standin" in line))
        assert f"running job {JOB_ID}" in log and f"job {JOB_ID} finished: success" in log, diagnostics()
        assert "rum-runner: JIT config read and removed from /etc/rum-runner/jitconfig" in log
        assert re.search(r"removed a stored copy of the JIT config: /var/lib/cloud/instances/[^/\s]+/user-data\.txt",
                         log), diagnostics()
        assert "still stored" not in log
        assert "rum-runner: powering off (exit status 0)" in log
        assert JIT_PREFIX not in log, "the serial log shows the encoded JIT config"

        playbook("runner_guest/down.yml", {"vm_name": VM, "storage_dir": storage})
        assert domstate(VM) == "absent"
    finally:
        if domstate(VM) != "absent":
            subprocess.run(VIRSH + ["destroy", VM], capture_output=True, check=False)
            subprocess.run(VIRSH + ["undefine", "--nvram", VM], capture_output=True, check=False)
        fake.admin("DELETE", f"/runners?scope=repo:{REPO}")
