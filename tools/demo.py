"""`make demo`: a 2-slot runner pool on the local libvirtd against the fake GitHub.

    make demo         # converge, wait for both runners, simulate one job, recycle its slot
    make demo-clean   # teardown.yml, stop the fake GitHub

The guests boot the locally built test image, whose stand-in runner speaks the real runner's
command line (`run.sh --jitconfig`). Everything runs through the collection's own playbooks.
"""

from __future__ import annotations

import json
import os
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
    say("queueing one job; one runner takes it, runs it and its guest powers off")
    admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted", "rum-demo"], "job_id": 1001})
    done = wait("a guest to finish its job and power off",
                lambda: next((s for s in SLOTS if domstate(s) == "shut off"), None), 300)
    say(f"{done} finished its job; converging the pool recycles that slot and leaves the other alone")
    playbook("pool.yml")
    print(f"""
The pool is up: 2 slots, one of them freshly recycled.
  virsh -c qemu:///system list --all        the VMs (one per slot)
  curl -s {URL}/_fake/runners | python3 -m json.tool      the runners the fake GitHub knows
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
    playbook("teardown.yml")
    stop_fake()
    say("demo removed")


if __name__ == "__main__":
    {"up": up, "down": down}[sys.argv[1] if len(sys.argv) > 1 else "up"]()
