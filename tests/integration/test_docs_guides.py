"""The user guides, followed from their own code blocks on this machine: docs/pool.md's one-machine
pool and docs/webhooks.md's webhook service, installed by its role.

The blocks come from the guides (``tests/tools/docblocks.py``: a ``<!-- test: NAME -->`` line above
a fenced block), files are written where their first line says, and commands run with
``bash -e -o pipefail`` in ``/srv/rum-pool``, the directory the guides use. The guides' own paths
are used as they stand (``/srv/rum-pool``, ``/etc/rum-pool``, ``/opt/rum-pool-webhook``,
``/var/lib/rum-pool-webhook``, ``/var/cache/rum-pool``, the service's port 8080): the test refuses
to start when one of them exists and is not its own leftover, and removes them at the end.

The stand-ins, and the only ways they enter:

- the collection: ``ansible-galaxy collection build`` of this checkout, installed under
  ``$RUM_TEST_STATE/docs-guides/collections`` and named by ``ANSIBLE_COLLECTIONS_PATH`` in the
  commands' environment (instead of ``ansible-galaxy collection install rum.pool`` from Galaxy);
- the stand-ins a block's marker names: ``runner_pool_image`` (the test image, ``file://`` with
  its sha256), ``runner_pool_github.api_url`` (the fake GitHub on the libvirt bridge, where the
  guest could reach it) and ``vault_github_app_private_key`` (a key made here, whose public half
  the fake knows for the App ``Iv23liExampleClientId`` installed on ``acme``);
- GitHub's side of the webhook set-up (the fake sends its ``workflow_job`` deliveries to
  ``http://127.0.0.1:8080/webhook`` with the secret the guide made), and the job itself (the fake's
  admin API has the slot's runner take a job and finish it).

The commands run with a PATH of the installer's own (this checkout's ``.venv/bin`` and a marker
directory) and a marker variable: the service must show neither. One guest boots for the converge
and one for the recreate; neither is waited for, as nothing here needs the runner inside.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.guests import domstate, wait_until
from tests.integration.test_rum_vm import ROOT, VIRSH
from tests.tools.docblocks import marked

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

# Every marked block of these guides, in the order the test runs them (tests/unit/test_docs.py
# checks that the guides mark exactly these).
GUIDE_BLOCKS = {
    "docs/pool.md": ["one-machine-hosts", "one-machine-pool", "vault", "vault-encrypt", "hosts-playbook",
                     "hosts-run", "converge", "status", "teardown", "prune"],
    "docs/webhooks.md": ["webhook-secret", "webhook-playbook", "webhook-install", "webhook-check",
                         "webhook-stop-start", "webhook-remove", "webhook-remove-all"],
}
PROJECT = "/srv/rum-pool"
PATHS = [PROJECT, "/etc/rum-pool", "/opt/rum-pool-webhook", "/var/lib/rum-pool-webhook", "/var/cache/rum-pool"]
LEFTOVER_MARK = os.path.join(PROJECT, ".made-by-test-docs-guides")
SERVICE = "http://127.0.0.1:8080"
PID_FILE = "/var/lib/rum-pool-webhook/rum-pool-webhook.pid"
SLOT = "ci-hv1-1"
APP_CLIENT_ID = "Iv23liExampleClientId"
BRIDGE_IP = "192.168.122.1"
STATE = os.environ.get("RUM_TEST_STATE", "/var/lib/rum-pool-test")


class Guide:
    """Runs the marked blocks of the guides and remembers which it ran."""

    def __init__(self, env: dict):
        self.env = env
        self.blocks = {doc: marked(ROOT, doc) for doc in GUIDE_BLOCKS}
        self.used: list = []

    def block(self, doc: str, name: str):
        self.used.append((doc, name))
        return self.blocks[doc][name]

    def write(self, doc: str, name: str, stand_ins: dict | None = None) -> str:
        block = self.block(doc, name)
        assert block.path, f"{block.where} ({name}) names no file on its first line"
        target = block.path if os.path.isabs(block.path) else os.path.join(PROJECT, block.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(block.with_stand_ins(stand_ins or {}))
        return target

    def run(self, doc: str, name: str, timeout: int = 1200) -> str:
        block = self.block(doc, name)
        assert block.lang == "bash", f"{block.where} ({name}) is not a shell block"
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=PROJECT, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            pytest.fail(f"{block.where} ({name}) exited {proc.returncode}:\n{block.text}\n--- stdout ---\n"
                        f"{proc.stdout[-12000:]}\n--- stderr ---\n{proc.stderr[-6000:]}\n{service_log()}")
        return proc.stdout


def service_log() -> str:
    out = []
    for path in ["/var/lib/rum-pool-webhook/service.log"] + sorted(
            subprocess.run(["sh", "-c", "ls /var/lib/rum-pool-webhook/runs/*/artifacts/*/stdout 2>/dev/null"],
                           capture_output=True, text=True, check=False).stdout.split())[-2:]:
        try:
            with open(path, errors="replace") as handle:
                out.append(f"--- {path} ---\n" + "".join(handle.readlines()[-60:]))
        except OSError:
            pass
    return "\n".join(out)


def service_pid() -> int | None:
    try:
        with open(PID_FILE) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def proc_environ(pid: int) -> dict:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        pairs = [item.decode().split("=", 1) for item in handle.read().split(b"\0") if b"=" in item]
    return dict(pairs)


def healthz() -> dict | None:
    try:
        with urllib.request.urlopen(SERVICE + "/healthz", timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())
    except OSError:
        return None


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def remove_everything() -> None:
    """Stop the service and the slot's VM and remove the guides' paths (the test's own leftovers)."""
    pid = service_pid()
    if pid:
        os.kill(pid, 15)
        deadline = time.monotonic() + 90
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.5)
    if domstate(SLOT) != "absent":
        subprocess.run(VIRSH + ["destroy", SLOT], capture_output=True, check=False)
        subprocess.run(VIRSH + ["undefine", "--nvram", SLOT], capture_output=True, check=False)
    shutil.rmtree(f"/var/lib/libvirt/images/rum/{SLOT}", ignore_errors=True)
    for path in PATHS:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clean_machine():
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    if os.path.exists(LEFTOVER_MARK):
        remove_everything()
    taken = [p for p in PATHS if os.path.lexists(p)]
    if taken:
        pytest.fail(f"{', '.join(taken)} exist: this test writes the guides' files at their documented paths "
                    "and removes them afterwards; move them away first")
    if domstate(SLOT) != "absent":
        pytest.fail(f"a VM named {SLOT} exists (virsh -c qemu:///system dominfo {SLOT}); the guide's pool makes it")
    if port_in_use(8080):
        pytest.fail("something listens on 127.0.0.1:8080, the webhook service's documented port")
    os.makedirs(PROJECT, mode=0o755)
    open(LEFTOVER_MARK, "w").close()
    yield
    remove_everything()


@pytest.fixture
def stand_ins(tmp_path):
    """The collection (built from this checkout), the fake GitHub with the guide's App, the test image."""
    from tests.tools.testimage import ensure_test_image

    base = os.path.join(STATE, "docs-guides")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base, mode=0o755)
    galaxy = os.path.join(ROOT, ".venv", "bin", "ansible-galaxy")
    # without this checkout's ansible.cfg, whose collections_path already has rum.pool
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    build = subprocess.run([galaxy, "collection", "build", "--force", "--output-path", str(tmp_path), ROOT],
                           capture_output=True, text=True, check=False, timeout=300, env=clean)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = [os.path.join(tmp_path, n) for n in os.listdir(tmp_path) if n.endswith(".tar.gz")][0]
    collections = os.path.join(base, "collections")
    install = subprocess.run([galaxy, "collection", "install", "--offline", "--force", "-p", collections, tarball],
                             capture_output=True, text=True, check=False, timeout=300, env=clean)
    assert install.returncode == 0, install.stdout + install.stderr
    assert os.path.isdir(os.path.join(collections, "ansible_collections", "rum", "pool", "roles")), install.stdout
    subprocess.run(["chmod", "-R", "a+rX", base], check=True)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fake = FakeGitHub(host=BRIDGE_IP, public_url=None)
    url = fake.start()
    fake.admin("POST", "/setup", {
        "apps": [{"app_id": 4242, "client_id": APP_CLIENT_ID, "slug": "rum-pool-docs", "public_key_pem": public_pem}],
        "installations": [{"app_id": 4242, "account": "acme", "target_type": "Organization"}]})
    image = ensure_test_image()
    yield {"fake": fake, "collections": collections,
           "one-machine-pool": {"runner_pool_image": {"url": f"file://{image['path']}",
                                                      "checksum": f"sha256:{image['sha256']}"},
                                "runner_pool_github.api_url": url},
           "vault": {"vault_github_app_private_key": private_pem}}
    fake.stop()
    shutil.rmtree(base, ignore_errors=True)


def runners(fake) -> dict:
    return {r["name"]: r for r in fake.admin("GET", "/runners?scope=org:acme")["runners"]}


@pytest.mark.guest
def test_pool_and_webhook_guides_as_written(clean_machine, stand_ins, tmp_path):  # pylint: disable=redefined-outer-name,unused-argument
    fake = stand_ins["fake"]
    installer_bin = tmp_path / "installer-only-bin"
    installer_bin.mkdir()
    env = {
        "PATH": f"{ROOT}/.venv/bin:{installer_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "ANSIBLE_COLLECTIONS_PATH": stand_ins["collections"],
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "RUM_DOCS_TEST_INSTALLER": "1",
    }
    guide = Guide(env)
    pool, hooks = "docs/pool.md", "docs/webhooks.md"
    torn_down = False
    try:
        # docs/pool.md: the one-machine inventory, the vault, the host, the first converge
        guide.write(pool, "one-machine-hosts")
        guide.write(pool, "one-machine-pool", stand_ins["one-machine-pool"])
        guide.write(pool, "vault", stand_ins["vault"])
        guide.run(pool, "vault-encrypt")
        with open(os.path.join(PROJECT, "inventory/group_vars/hypervisors/vault.yml")) as handle:
            assert handle.read().startswith("$ANSIBLE_VAULT;"), "the guide encrypted the vault"
        assert oct(os.stat("/etc/rum-pool/vault-pass").st_mode & 0o777) == "0o600"
        guide.write(pool, "hosts-playbook")
        guide.run(pool, "hosts-run")
        guide.run(pool, "converge")
        assert domstate(SLOT) == "running"
        first = [n for n in runners(fake) if n.startswith(SLOT + "-")]
        assert len(first) == 1, runners(fake)
        status = guide.run(pool, "status")
        assert first[0] in status and SLOT in status

        # docs/webhooks.md: the secret in the vault, the role's playbook, the service as documented
        secret_out = guide.run(hooks, "webhook-secret")
        secret = secret_out.split("webhook_service_secret:", 1)[1].split()[0]
        assert len(secret) == 64
        guide.write(hooks, "webhook-playbook")
        install_out = guide.run(hooks, "webhook-install")
        assert json.loads(install_out.strip().splitlines()[-1])["ok"] is True, install_out[-3000:]
        pid = service_pid()
        assert pid, f"no running service after the role\n{service_log()}"
        service_env = proc_environ(pid)
        assert os.stat(f"/proc/{pid}").st_uid == 0, "the one-machine inventory runs the service as root"
        assert service_env["PATH"].split(":")[0] == "/opt/rum-pool-webhook/venv/bin", service_env
        assert str(installer_bin) not in service_env["PATH"] and "/.venv/" not in service_env["PATH"]
        assert service_env["HOME"] == "/var/lib/rum-pool-webhook"
        assert "RUM_DOCS_TEST_INSTALLER" not in service_env and "ANSIBLE_COLLECTIONS_PATH" not in service_env
        check = guide.run(hooks, "webhook-check")
        assert "check: runs as: user root (uid 0), HOME=/var/lib/rum-pool-webhook" in check, check
        assert check.endswith("ok\n") and secret not in check
        guide.run(hooks, "webhook-stop-start")
        restarted = service_pid()
        assert restarted and restarted != pid and healthz(), service_log()

        # GitHub's side (the fake): the hook, then a job on the slot's runner, whose completed
        # delivery the service answers by recreating the slot
        fake.admin("POST", "/hooks", {"url": SERVICE + "/webhook", "secret": secret})
        old = runners(fake)[first[0]]
        job = fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["self-hosted", "linux", "x64", "ci"]})
        fake.admin("POST", f"/runners/{old['id']}/job", {"job_id": job["id"]})
        fake.admin("POST", f"/runners/{old['id']}/done", {"conclusion": "success"})
        deliveries = fake.admin("GET", "/deliveries")["deliveries"]
        assert [(d["action"], d["status"]) for d in deliveries] == [
            ("queued", 200), ("in_progress", 200), ("completed", 202)], deliveries

        def recreated():
            fresh = [n for n in runners(fake) if n.startswith(SLOT + "-") and n != old["name"]]
            health = healthz() or {}
            if len(fresh) == 1 and domstate(SLOT) == "running" and not health.get("running") \
                    and not health.get("queued"):
                return fresh[0]
            return None

        new_runner = wait_until("the service to recreate the slot", recreated, 600, on_timeout=service_log,
                                interval=5)
        status = guide.run(pool, "status")
        assert new_runner in status and old["name"] not in status, status
        assert old["name"] not in runners(fake)

        # teardown, then the service removed (state kept), then removed with its state
        guide.run(pool, "teardown")
        torn_down = True
        assert domstate(SLOT) == "absent" and not [n for n in runners(fake) if n.startswith("ci-")]
        guide.run(hooks, "webhook-remove")
        assert service_pid() is None and healthz() is None
        for gone in ("/opt/rum-pool-webhook", "/etc/rum-pool/webhook.yml", "/etc/rum-pool/webhook-secret", PID_FILE):
            assert not os.path.exists(gone), f"{gone} is left after webhook_service_state=absent"
        assert os.path.exists("/etc/rum-pool/vault-pass") and os.path.exists("/var/lib/rum-pool-webhook/state.db")
        guide.run(hooks, "webhook-remove-all")
        assert not os.path.exists("/var/lib/rum-pool-webhook")
        guide.run(pool, "prune")
    finally:
        if not torn_down and os.path.exists(os.path.join(PROJECT, "inventory")):
            subprocess.run(["bash", "-c", guide.blocks[pool]["teardown"].text], cwd=PROJECT, env=env,
                           capture_output=True, timeout=900, check=False)
    assert sorted(set(guide.used)) == sorted((doc, name) for doc, names in GUIDE_BLOCKS.items() for name in names)
