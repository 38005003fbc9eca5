"""`make demo`: a 2-slot runner pool on the local libvirtd against the fake GitHub.

    make demo         # converge, wait for both runners, simulate one job, the webhook service
                      # recycles its slot; the service keeps running with its status page
    make demo-clean   # teardown.yml, stop the webhook service and the fake GitHub

The guests boot the locally built test image, whose stand-in runner speaks the real runner's
command line (`run.sh --jitconfig`). Everything runs through the collection's own playbooks. The
pool takes the batch path (`runner_pool_batch: true`) and the service stages (`stage: true`) with a
warm standby: the job's `in_progress` webhook makes the slot's next generation while the job runs,
and its `completed` webhook only starts it. The demo prints the time from the job's end to the new
VM running, and waits for the recycled slot's runner to come online again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]
STATE = os.environ.get("RUM_TEST_STATE", "/var/lib/rum-pool-test")
WORK = os.path.join(ROOT, ".cache", "demo")
BRIDGE_IP = "192.168.122.1"
PORT = 18080
URL = f"http://{BRIDGE_IP}:{PORT}"
REPO = "acme/demo"
PAT = "ghp_demo0000000000000000000000000000000"
LABELS = ["self-hosted", "linux", "x64", "rum-demo"]
SLOTS = ["demo-localhost-1", "demo-localhost-2"]
SERVICE_PORT = 18081
SERVICE = f"http://127.0.0.1:{SERVICE_PORT}"
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))


def say(msg: str) -> None:
    print(f">> {msg}", flush=True)


def admin(method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{URL}/_fake{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def runners() -> list[dict]:
    return admin("GET", f"/runners?scope=repo:{REPO}")["runners"]


def playbook(name: str, *extra: str) -> None:
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(WORK, "hosts.yml"),
           os.path.join(ROOT, "playbooks", name), *extra]
    say(" ".join(["ansible-playbook", name, *extra]))
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True)


def domstate(name: str) -> str:
    proc = subprocess.run(["virsh", "-c", "qemu:///system", "domstate", name], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def wait(what: str, predicate, timeout: float) -> object:
    say(f"waiting for {what} (up to {timeout:.0f}s; guests boot under software emulation)")
    start = time.monotonic()
    while True:
        value = predicate()
        if value:
            print(f"   ... after {time.monotonic() - start:.0f}s", flush=True)
            return value
        if time.monotonic() - start > timeout:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(5)
        print(f"   ... {time.monotonic() - start:.0f}s: " + ", ".join(
            f"{r['name']} {r['status']}{' busy' if r.get('busy') else ''}" for r in runners()), flush=True)


def start_fake() -> None:
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True)
    pidfile = os.path.join(WORK, "fake.pid")
    if os.path.exists(pidfile):
        stop_fake()
    log = open(os.path.join(WORK, "fake-github.log"), "w")  # noqa: SIM115 - stays open for the child
    proc = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "python"),
                             os.path.join(ROOT, "tests", "tools", "fake_github", "server.py"),
                             "--host", BRIDGE_IP, "--port", str(PORT), "--state", os.path.join(WORK, "fake")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with open(pidfile, "w") as fh:
        fh.write(str(proc.pid))
    for _attempt in range(50):
        try:
            admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
            break
        except OSError:
            time.sleep(0.2)
    say(f"fake GitHub at {URL} (its log: {log.name})")


def stop_fake() -> None:
    pidfile = os.path.join(WORK, "fake.pid")
    try:
        with open(pidfile) as fh:
            os.killpg(int(fh.read()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    if os.path.exists(pidfile):
        os.unlink(pidfile)


def start_service() -> None:
    """rum-pool-webhook on 127.0.0.1, recreating slots with ansible-runner; the fake sends it webhooks."""
    stop_service()
    shutil.rmtree(os.path.join(WORK, "webhook-state"), ignore_errors=True)  # each demo starts afresh
    secret = os.urandom(16).hex()
    secret_file = os.path.join(WORK, "webhook-secret")
    with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(secret)
    config = {
        "listen": {"host": "127.0.0.1", "port": SERVICE_PORT}, "secret_file": secret_file,
        "state_dir": os.path.join(WORK, "webhook-state"), "pools": ["demo"],
        # the pool was converged just before: the service's own reconcile starts one interval later
        "reconcile": {"at_start": False},
        # a job's start stages its slot's next generation; its end only starts it (runner_pool_batch)
        "stage": True,
        "dispatcher": {"kind": "ansible-runner", "playbook": os.path.join(ROOT, "playbooks", "recreate.yml"),
                       "standby": True,
                       "inventory": os.path.join(WORK, "hosts.yml"),
                       "envvars": {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                                   "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections")}},
    }
    path = os.path.join(WORK, "webhook.yml")
    with open(path, "w") as fh:
        json.dump(config, fh, indent=2)
    log = open(os.path.join(WORK, "webhook-service.log"), "w")  # noqa: SIM115 - stays open for the child
    proc = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "rum-pool-webhook"), "serve", "--config", path],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=WORK)
    with open(os.path.join(WORK, "webhook.pid"), "w") as fh:
        fh.write(str(proc.pid))
    wait("the webhook service to answer", lambda: _get(SERVICE + "/healthz") is not None, 30)
    admin("DELETE", "/hooks")  # an earlier demo's hook has an earlier secret
    admin("POST", "/hooks", {"url": SERVICE + "/webhook", "secret": secret})
    say(f"webhook service at {SERVICE} (its log: {log.name}); the fake GitHub sends it workflow_job webhooks")


def stop_service() -> None:
    pidfile = os.path.join(WORK, "webhook.pid")
    try:
        with open(pidfile) as fh:
            pid = int(fh.read())
        os.kill(pid, signal.SIGTERM)  # lets a running recreate finish
        for _attempt in range(180):
            os.kill(pid, 0)
            time.sleep(0.5)
    except (OSError, ValueError):
        pass
    if os.path.exists(pidfile):
        os.unlink(pidfile)


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the local demo service
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _task(kind: str, states: tuple) -> dict | None:
    """The service's first task of ``kind`` in one of ``states`` (its /api/status)."""
    status = _get(SERVICE + "/api/status") or {}
    return next((t for t in status.get("tasks", []) if t.get("kind") == kind and t.get("state") in states), None)


def domain(conn, name: str) -> tuple:
    """(UUID, running) of a domain, or (None, False) when there is none."""
    import libvirt  # pylint: disable=import-outside-toplevel  # the venv's (imported once, by libvirt_conn)

    try:
        dom = conn.lookupByName(name)
        return dom.UUIDString(), bool(dom.isActive())
    except libvirt.libvirtError:  # no such domain (yet)
        return None, False


def libvirt_conn():
    import libvirt  # pylint: disable=import-outside-toplevel  # the venv's; the demo's helpers need none

    return libvirt.open("qemu:///system")


JOB_WAIT = 300


def recycle_times(job_id: int, slot: str, old_uuid: str, timeout: float) -> tuple:
    """(when the job completed, by the fake GitHub's clock; when the slot's new VM was seen running, polled
    every 20 ms): both from this machine's clock."""
    say(f"waiting for job {job_id} to end and {slot}'s new VM to run (up to {timeout:.0f}s)")
    deadline = time.monotonic() + timeout
    completed_at = None
    conn = libvirt_conn()  # one connection for the whole poll: an open per look would blur the 20 ms
    try:
        while time.monotonic() < deadline:
            if completed_at is None:
                job = admin("GET", f"/jobs/{job_id}")
                completed_at = job["completed_at"] if job["status"] == "completed" else None
            uuid, active = domain(conn, slot)
            if completed_at is not None and uuid not in (None, old_uuid) and active:
                return completed_at, time.time()
            time.sleep(0.02 if completed_at is not None else 0.5)
    finally:
        conn.close()
    return completed_at or time.time(), None


def write_inventory(image: dict) -> None:
    hosts = {"hypervisors": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python"),
        "runner_pool_name": "demo",
        "runner_pool_size": 2,
        "runner_pool_labels": LABELS,
        "runner_pool_github": {"api_url": URL, "repository": REPO, "token": PAT},
        "runner_pool_image": {"url": image["url"], "checksum": image["checksum"]},
        "runner_pool_vm": {"domain_type": "qemu", "vcpus": 1, "memory_mb": 640,
                           "storage_dir": os.path.join(STATE, "demo-pool"),
                           "image_cache_dir": os.path.join(STATE, "demo-pool", "images")},
        "runner_pool_online_timeout": 420,
        "runner_pool_batch": True,  # one rum_slots call per batch; stages a busy slot's next generation
    }}}}
    path = os.path.join(WORK, "hosts.yml")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        json.dump(hosts, fh, indent=2)


def up() -> None:
    from tests.tools.testimage import ensure_test_image

    os.makedirs(WORK, exist_ok=True)
    say("test image (built from Debian packages on first use, then cached)")
    image = ensure_test_image()
    start_fake()
    write_inventory(image)
    playbook("pool.yml")
    wait("both runners to come online from inside their guests",
         lambda: len(runners()) == 2 and all(r["status"] == "online" for r in runners()), 480)
    start_service()
    say("queueing one job that runs a minute; one runner takes it; its in_progress webhook reaches the "
        "service, which stages that slot's next generation while the job runs")
    job = admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-demo"], "run_seconds": 60})
    say(f"job {job['id']} queued")

    def runner_took_it():
        found = admin("GET", f"/jobs/{job['id']}")
        return found if found["runner_name"] else None

    taken = wait("a runner to take the job", runner_took_it, 120)
    slot = taken["runner_name"].rsplit("-", 1)[0]
    conn = libvirt_conn()
    old_uuid = domain(conn, slot)[0]
    conn.close()
    say(f"{taken['runner_name']} runs job {job['id']} in slot {slot}")
    stage = wait(f"the service to stage {slot}'s next generation", lambda: _task("stage", ("done", "failed")), 120)
    say(f"stage task {stage['id']} {stage['state']}: {stage['message']}")
    completed_at, running_at = recycle_times(job["id"], slot, old_uuid, JOB_WAIT)
    task = wait("the webhook service to recreate the slot of the finished job",
                lambda: _task("recreate", ("done", "failed")), 420)
    say(f"task {task['id']} {task['state']}: slot {task['slot']} ({task['message']})")
    if task["state"] != "done" or running_at is None:
        sys.exit(f"the recreate failed; see {os.path.join(WORK, 'webhook-service.log')}")
    path = "the staged generation started" if "staged generation" in task["message"] else "a full boot (nothing staged)"
    say(f"job completed -> {slot}'s new VM running: {running_at - completed_at:.1f} s ({path}; the completed "
        "webhook, the service, the warm recreate.yml, rum_slots)")
    fresh = wait("the recycled slot's new runner to come online", lambda: [
        r["name"] for r in runners() if r["name"].startswith(slot + "-") and r["status"] == "online"
        and r["name"] != taken["runner_name"]], 480)
    say(f"new runner in {slot}: {', '.join(fresh)} (online); the other slot was left alone")
    say("converging once more prints the pool's status table")
    playbook("pool.yml")
    print(f"""
The pool is up: 2 slots, one of them recycled by the webhook service, which keeps running.
  {SERVICE}/                               the service's status page (a picture of the slots)
  virsh -c qemu:///system list --all        the VMs (one per slot)
  curl -s {URL}/_fake/runners | python3 -m json.tool      the runners the fake GitHub knows
  curl -s -X POST {URL}/_fake/jobs -d '{{"scope": "repo:{REPO}", "labels": ["rum-demo"]}}'   another job
  ansible-playbook -i {os.path.join(WORK, 'hosts.yml')} playbooks/pool.yml     converge again (status table)
Remove everything with:
  make demo-clean
""")


def down() -> None:
    if not os.path.exists(os.path.join(WORK, "hosts.yml")):
        say("nothing to remove")
        return
    try:
        admin("GET", "/runners")
    except OSError:
        start_fake()
    stop_service()
    playbook("teardown.yml")
    stop_fake()
    say("demo removed")


if __name__ == "__main__":
    {"up": up, "down": down}[sys.argv[1] if len(sys.argv) > 1 else "up"]()
