"""The pool's ``hyperv`` backend end to end on a STAND-IN Hyper-V host (there is no Windows here).

What is real: the collection's roles and playbooks as shipped (pool.yml, recreate.yml, teardown.yml,
runner_slot's lifecycle and its ``backends/hyperv/`` tasks), the pool settings, the slot lock (held on
the controller), the JIT runners minted at the fake GitHub, the Windows bootstrap and the seed ISO
built on the controller and put on the host by ``rum.pool.hyperv_seed`` through the connection, the
webhook service (``rum-pool-webhook serve``, ansible-runner dispatcher) acting on a signed
``completed`` delivery, the generation guard, check mode, the registration-token fallback, teardown.

What stands in: the Hyper-V host is this machine reached with the local connection, so its paths are
POSIX paths; ``hyperv_vm`` and ``hyperv_vm_info`` are replaced, in a test-only copy of the collection,
by Python stand-ins with the same documented arguments that keep the host in a JSON file and record
every call (tests/tools/hyperv_standin). No VM boots: the test plays the runner at the fake GitHub
(online, a job, done) through its control endpoints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _seed
from ansible_collections.rum.pool.plugins.module_utils._windows_guest import windows_host_name
from tests.integration.conftest import ROOT
from tests.integration.guests import VIRSH, wait_until
from tests.integration.test_playbooks import run_traced
from tests.integration.webhook import ServiceProcess, free_port, post
from tests.tools.hyperv_standin import HyperVStandIn

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.examples import signed_headers  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.model import decode_jit_config  # noqa: E402  pylint: disable=wrong-import-position

POOL = "win"
SLOTS = ["win-hv1-1", "win-hv1-2"]
REPO = "acme/windows"
PAT = "ghp_hypervstandin000000000000000000000000"
HOOK_SECRET = "hyper-v stand-in hook secret"


@pytest.fixture
def github():
    fake = FakeGitHub()
    fake.url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    yield fake
    fake.stop()


def inventory(tmp_path, standin: HyperVStandIn, github, **more) -> str:
    host = {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python"),
            "runner_pool_backend": "hyperv", "runner_pool_name": POOL, "runner_pool_size": 2,
            "runner_pool_github": {"api_url": github.url, "repository": REPO, "token": PAT},
            # a libvirt image and URI that would fail at once if the libvirt backend were reached
            "runner_pool_image": {"url": "file:///nonexistent/runner.qcow2", "checksum": "sha256:" + "0" * 64},
            "runner_pool_vm": {"template": standin.template, "path": standin.vm_folder, "switch_name": "rum",
                               "vcpus": 4, "memory_mb": 8192, "vlan_id": 12}}
    host.update({f"runner_pool_{key}": value for key, value in more.items()})
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps({"hypervisors": {"hosts": {"hv1": host}}}))
    return str(path)


def runners(github) -> dict:
    return {r["name"]: r for r in github.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}


def known_name(known: dict, slot: str) -> str:
    [name] = [name for name in known if name.startswith(slot + "-")]
    return name


def libvirt_domains() -> list:
    proc = subprocess.run(VIRSH + ["list", "--all", "--name"], capture_output=True, text=True, check=True)
    return [name for name in proc.stdout.split() if name.startswith(POOL + "-")]


def seed_of(path: str) -> tuple[_seed.SeedContent, dict]:
    """The seed on the stand-in host, and the JIT config its Windows bootstrap carries (decoded)."""
    content = _seed.read_iso(path)
    assert content is not None, f"{path} is not a NoCloud seed"
    secret = re.search(r"^\$Secret = '([^']+)'$", content.user_data, re.M)
    assert secret, content.user_data[:400]
    return content, decode_jit_config(secret.group(1))


def lock_lines(stdout: str, slot: str) -> list:
    """The result lines of the lock and unlock tasks of ``slot``: where they ran."""
    out = []
    for task in ("Lock slot", "Unlock slot"):
        found = re.search(r"TASK \[rum\.pool\.runner_slot : %s %s\] \**\n(.*)\n" % (task, slot), stdout)
        out.append(found.group(1) if found else None)
    return out


def check_booted(standin: HyperVStandIn, github, slot: str, call: dict) -> dict:
    """What hyperv_vm was asked for the slot's new VM, its Notes, its seed and its runner agree."""
    vm = standin.vms()[slot]
    notes = standin.notes(slot)
    labels = notes["labels"]
    seed_path = os.path.join(standin.vm_folder, f"{slot}-seed.iso")
    params = call["params"]
    assert not call["check_mode"] and call["changed"] and not call["failed"]
    # the template, as a differencing disk, the switch, the VLAN and the sizes of runner_pool_vm, the seed
    assert (params["name"], params["state"], params["template"], params["disk_type"], params["path"]) == (
        slot, "running", standin.template, "differencing", standin.vm_folder)
    assert (params["switch_name"], params["vlan_id"], params["vcpus"], params["memory_mb"]) == ("rum", 12, 4, 8192)
    assert params["seed_iso"] == seed_path and params["secure_boot_template"] == "MicrosoftWindows"
    # the Notes: the labels the slot contract made (the same as libvirt's, backend hyperv) and the files
    assert params["labels"] == labels and {k: labels[k] for k in ("pool", "host", "slot", "backend")} == {
        "pool": POOL, "host": "hv1", "slot": slot, "backend": "hyperv"}
    assert notes["files"]["seed"] == seed_path and notes["template"] == standin.template
    assert notes["disk_type"] == "differencing"
    with open(notes["files"]["disk"], encoding="utf-8") as handle:
        assert json.load(handle) == {"stand_in_for": "VHDX", "type": "Differencing", "parent": standin.template}
    assert vm["power_state"] == "Running"
    # the seed: built on the controller, private on the host, cloudbase-init's script for this runner
    assert os.stat(seed_path).st_mode & 0o777 == 0o600
    content, jit = seed_of(seed_path)
    assert content.user_data.startswith("#ps1_sysnative\n")
    assert "$RunnerDir = 'C:\\actions-runner'" in content.user_data  # the backend's default runner folder
    assert content.meta_data["local-hostname"] == windows_host_name(labels["runner_name"])
    assert content.instance_id.startswith("iid-")
    runner = jit[".runner"]
    assert (runner["AgentName"], str(runner["AgentId"])) == (labels["runner_name"], labels["runner_id"])
    known = runners(github)
    assert labels["runner_name"] in known and known[labels["runner_name"]]["jit"]
    assert [label["name"] for label in known[labels["runner_name"]]["labels"]] == ["self-hosted", "windows", "x64"]
    return labels


class Service(ServiceProcess):
    """rum-pool-webhook serve, whose ansible-runner dispatcher runs the stand-in copy's recreate.yml."""

    def __init__(self, tmp_path, standin: HyperVStandIn, inv: str, trace: str) -> None:
        folder = tmp_path / "service"
        config = {
            "listen": {"host": "127.0.0.1", "port": free_port()}, "pools": [POOL], "max_parallel": 1,
            "retry": {"attempts": 1, "backoff_seconds": 5},
            "dispatcher": {
                "kind": "ansible-runner", "inventory": inv, "timeout": 300,
                "playbook": os.path.join(standin.copy, "playbooks", "recreate.yml"),
                "envvars": {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                            "ANSIBLE_COLLECTIONS_PATH": standin.collections, "PYTHONPATH": standin.collections,
                            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(ROOT, "bench", "callback_plugins"),
                            "ANSIBLE_CALLBACKS_ENABLED": "rum_bench_timer", "RUM_BENCH_TIMER_FILE": trace},
            },
            "reconcile": {"at_start": False, "interval_minutes": 0},
        }
        super().__init__(str(folder), config, HOOK_SECRET)


def test_the_hyperv_pool_converges_recreates_through_the_webhook_service_and_tears_down(playbook, tmp_path, github):
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    standin = HyperVStandIn(tmp_path / "hyperv")
    inv = inventory(tmp_path, standin, github)
    collections = standin.collections

    # converge: both slots booted on the stand-in host, the slot locks held on the controller
    run, starts = run_traced(playbook, tmp_path, collections, "pool", inventory=inv)
    assert any("/backends/hyperv/boot.yml" in p for _a, p in starts)
    for slot in SLOTS:
        assert lock_lines(run.stdout, slot) == ["ok: [hv1 -> localhost]"] * 2, run.stdout
    booted = [c for c in standin.calls("hyperv_vm") if c["params"]["state"] == "running"]
    assert [c["params"]["name"] for c in booted] == SLOTS
    labels = {slot: check_booted(standin, github, slot, call) for slot, call in zip(SLOTS, booted)}
    assert "2 slots (size 2): 0 create, 0 recreate, 2 keep" in run.stdout
    assert not [c for c in standin.calls() if c["failed"]]

    # a job on slot 1's runner ends: GitHub's signed completed webhook -> the service -> recreate.yml
    trace = str(tmp_path / "trace-service.jsonl")
    service = Service(tmp_path, standin, inv, trace)
    before = standin.count()
    uuids = {slot: vm["uuid"] for slot, vm in standin.vms().items()}
    old = labels[SLOTS[0]]["runner_name"]
    try:
        service.start()
        github.admin("POST", "/hooks", {"url": service.base + "/webhook", "secret": HOOK_SECRET, "scope": f"repo:{REPO}"})
        job = github.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "windows"]})
        runner_id = labels[SLOTS[0]]["runner_id"]
        github.admin("POST", f"/runners/{runner_id}/job", {"job_id": job["id"]})
        github.admin("POST", f"/runners/{runner_id}/done", {"conclusion": "success"})
        completed = [d for d in github.admin("GET", "/deliveries")["deliveries"] if d["job_id"] == job["id"]][-1]
        assert (completed["action"], completed["status"]) == ("completed", 202), completed
        wait_until("the service's recreate", lambda: service.settled(1), 180, on_timeout=service.log)
        task = service.status()["tasks"][0]
        assert (task["slot"], task["runner"], task["state"]) == (SLOTS[0], old, "done"), (task, service.log()[-5000:])
        recreated = standin.calls("hyperv_vm", since=before)
        assert [(c["params"]["name"], c["params"]["state"]) for c in recreated] == [
            (SLOTS[0], "absent"), (SLOTS[0], "running")]
        new = check_booted(standin, github, SLOTS[0], recreated[-1])
        assert new["runner_name"] != old and new["runner_name"].startswith(SLOTS[0] + "-") and old not in runners(github)
        assert standin.vms()[SLOTS[0]]["uuid"] != uuids[SLOTS[0]]
        assert standin.vms()[SLOTS[1]]["uuid"] == uuids[SLOTS[1]], "the other slot was not touched"
        with open(trace, encoding="utf-8") as handle:
            events = [json.loads(line) for line in handle]
        assert any("/backends/hyperv/retire.yml" in e.get("path", "") for e in events)
        assert not [e for e in events if "/backends/libvirt/" in e.get("path", "") or e.get("action", "").startswith("rum.pool.rum_vm")]

        # the same webhook again, late (a new delivery id): the generation guard skips it, and says so
        before = standin.count()
        body = completed["body"].encode()
        code, answer = post(service.base + "/webhook", body, signed_headers(body, HOOK_SECRET.encode(), delivery="late-1"))
        assert code == 202, answer
        wait_until("the late task", lambda: service.settled(2), 180, on_timeout=service.log)
        task = service.status()["tasks"][0]
        assert task["state"] == "skipped" and f"it now holds runner {new['runner_name']}, not runner {old}" in task["message"]
        assert standin.calls("hyperv_vm", since=before) == [], "a skipped recreate asks the host for nothing but a look"
        assert service.stop() == 0, service.log()
    except BaseException:
        print(f"--- service log ---\n{service.log()[-20000:]}")
        raise
    finally:
        service.stop()

    # check mode, with slot 2's guest shut down after its job: the plan recreates it, nothing is changed
    standin.power_off(SLOTS[1])
    state = standin.read_state()
    before, known = standin.count(), runners(github)
    run = run_traced(playbook, tmp_path, collections, "pool", inventory=inv, check=True)[0]
    assert f"{SLOTS[1]}: recreate (VM shut off" in run.stdout
    [dry] = standin.calls("hyperv_vm", since=before)
    assert (dry["params"]["name"], dry["params"]["state"], dry["check_mode"], dry["changed"]) == (SLOTS[1], "absent", True, True)
    assert standin.read_state() == state and runners(github) == known

    # the same recreate for real, with registration tokens (GHES without JIT configs): the seed's script
    # carries a registration token the runner's config.cmd can trade at GitHub, and the runner's name
    inv = inventory(tmp_path, standin, github, registration="token")
    run_traced(playbook, tmp_path, collections, "pool", inventory=inv)
    labels = standin.notes(SLOTS[1])["labels"]
    assert labels["runner_name"] != known_name(known, SLOTS[1]) and known_name(known, SLOTS[1]) not in runners(github)
    content = _seed.read_iso(os.path.join(standin.vm_folder, f"{SLOTS[1]}-seed.iso"))
    script = dict(re.findall(r"^\$(RunnerUrl|RunnerName|RunnerLabels|Secret) = '([^']*)'$", content.user_data, re.M))
    assert (script["RunnerName"], script["RunnerLabels"]) == (labels["runner_name"], "self-hosted,windows,x64")
    assert script["RunnerUrl"].endswith("/" + REPO)
    headers = {"Authorization": "RemoteAuth " + script["Secret"], "User-Agent": "GitHubActionsRunner-win-x64/2.320.0",
               "Content-Type": "application/json"}
    code, answer = post(github.url + "/actions/runner-registration",
                        json.dumps({"url": script["RunnerUrl"], "runner_event": "register"}).encode(), headers)
    assert code == 200 and answer["token_schema"] == "OAuthAccessToken", answer

    # teardown: every VM, disk, seed and folder on the host, and every runner at GitHub, is gone
    before = standin.count()
    run_traced(playbook, tmp_path, collections, "teardown", inventory=inv)
    removed = standin.calls("hyperv_vm", since=before)
    assert sorted((c["params"]["name"], c["params"]["state"]) for c in removed) == [(s, "absent") for s in SLOTS]
    assert standin.vms() == {} and os.listdir(standin.vm_folder) == []
    assert runners(github) == {}
    # the libvirt path was never touched: run_traced checked each run's tasks; and no domain of the pool exists
    assert libvirt_domains() == []
