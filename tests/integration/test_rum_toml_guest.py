"""rum up from a rum.toml, proven inside one real guest booted twice (the test image, domain type qemu).

The rum.toml uses together: two drives with one btrfs file system over them (raid1) and a third with
ext4, the project folder (``.``, the default mount) and the git work tree above it (``git``) shared
over virtiofs, a second NIC with a fixed address on an isolated network made for it (and SSH through
that NIC: ``ssh.interface``), a port forward, a first-boot and an every-boot script. It is brought up
with ``playbooks/vm.yml -e rum_toml=...`` (``rum up``), restarted, and destroyed.

From inside the guest, over SSH: each file system is mounted with the right type and the btrfs one
spans both drives; files written on the host are read through each share; login shells start in the
default mount; the fixed address is on the second NIC and SSH reached the guest through it; the
forwarded host port reaches a listener in the guest; the first-boot script ran once and the every-boot
script once per boot. The scripts' logs come back through rum_vm_info's script_logs.

Not proven here: 9p shares (rum.toml's ``readonly = true`` becomes a read-only 9p share). The test
image runs Debian's cloud kernel, which is built without 9p (CONFIG_NET_9P is not set in
linux-image-cloud-amd64, and Debian has no separate module package for it), so a 9p share cannot
mount in it; the 9p XML and fstab line are unit-tested (test_domain.py, test_cloudinit.py). zfs is
not proven either (Debian's zfs is in contrib and builds with DKMS); its guest script is run against
stand-in tools in test_vm_parity.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _inventory as inventory
from ansible_collections.rum.pool.plugins.module_utils import _ready as ready
from ansible_collections.rum.pool.plugins.module_utils import _rum_toml as rum_toml
from tests.integration.conftest import ROOT
from tests.integration.guests import VIRSH, domstate

NAME = "rumtest-toml"
GUEST_PORT = 8080


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_subnet() -> str:
    """A 10.213.N.0/24 that neither the host nor a libvirt network uses."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    nets = subprocess.run(VIRSH + ["net-list", "--all", "--name"], capture_output=True, text=True, check=True).stdout
    used = routes + "".join(subprocess.run(VIRSH + ["net-dumpxml", n], capture_output=True, text=True,
                                           check=False).stdout for n in nets.split())
    for third in range(200, 250):
        if f"10.213.{third}." not in used:
            return f"10.213.{third}"
    pytest.fail("no free 10.213.x.0/24 for the test's isolated network")


RUM_TOML = """\
# The rum.toml of tests/integration/test_rum_toml_guest.py.
[image]
base = "{image}"

[resources]
cpus = 2
memory_mb = 768
disk = "3G"

[network]
ip_wait_timeout_s = 420

[[network.interfaces]]
network = "lab"
ip = "{ip}"

[ssh]
interface = "lab"

[advanced]
domain_type = "qemu"

[provision.system]
script = '''
#!/bin/sh
mkdir -p /var/lib/rumtest
echo "provisioned on $(cat /proc/sys/kernel/random/boot_id)" >> /var/lib/rumtest/provision.count
echo "first boot: $(findmnt -no FSTYPE /data) on /data"
'''

[provision.boot]
script = '''
mkdir -p /var/lib/rumtest
cat /proc/sys/kernel/random/boot_id >> /var/lib/rumtest/boot.count
echo "boot number $(wc -l < /var/lib/rumtest/boot.count)"
'''

[[mounts]]
source = "."
target = "/work"
default = true

[[mounts]]
source = "git"
target = "/repo"

[drives.a]
size = "256M"

[drives.b]
size = "256M"

[drives.c]
size = "64M"

[[fs.btrfs]]
drives = ["a", "b"]
target = "/data"
mode = "raid1"

[[fs.ext4]]
drive = "c"
target = "/scratch"

[[ports]]
host = {host_port}
guest = {guest_port}
"""


class Guest:
    """The VM as rum_vm_info sees it, and SSH into it the way it reports."""

    def __init__(self, serial_log: str) -> None:
        self.serial_log = serial_log

    def info(self) -> dict:
        vms = inventory.list_vms("qemu:///system", name=NAME)
        assert len(vms) == 1, vms
        return vms[0]

    def sh(self, command: str, timeout: int = 120) -> str:
        ssh = self.info()["ssh"]
        assert ssh["host"], f"no SSH address for {NAME}: {self.info()}"
        rc, out, err = ready.run_ssh(ssh["host"], ssh["port"], ssh["user"], ssh["identity_file"], command,
                                     timeout=timeout)
        assert rc == 0, f"{command!r} exited {rc} in the guest: {out}{err}\n--- serial log ---\n" \
                        f"{ready.tail(self.serial_log, 60)}"
        return out


def _vm_yml(path: str, extra: dict, *more: str, check: bool = False):
    """playbooks/vm.yml -e rum_toml=PATH, run from the rum.toml's folder as a rum user would."""
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), os.path.join(ROOT, "playbooks", "vm.yml"),
           "-e", f"rum_toml=./{os.path.basename(path)}", "-e", json.dumps({"vm": extra}), *more]
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PYTHONPATH=os.path.join(ROOT, ".collections"))
    proc = subprocess.run(cmd, cwd=os.path.dirname(path), env=env, capture_output=True, text=True, timeout=1200,
                          check=False)
    assert proc.returncode == 0, f"{' '.join(cmd[1:])} exited {proc.returncode}\n{proc.stdout[-12000:]}{proc.stderr[-4000:]}"
    return proc.stdout


def _script_logs(mode: str) -> list[dict]:
    """rum_vm_info script_logs=MODE, as a user runs it (ad hoc, the module's JSON result)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PYTHONPATH=os.path.join(ROOT, ".collections"))
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible"), "localhost", "-m",
                           "rum.pool.rum_vm_info", "-a", f"name={NAME} script_logs={mode}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "localhost | SUCCESS => " in proc.stdout, proc.stdout[-6000:] + proc.stderr[-3000:]
    result, _end = json.JSONDecoder().raw_decode(proc.stdout.split("localhost | SUCCESS => ", 1)[1])
    return result["vms"][0]["script_logs"]


def _read_on_host(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


@pytest.mark.guest
def test_rum_toml_guest(vm_storage):
    from tests.tools.testimage import ensure_test_image

    image = ensure_test_image()
    storage = os.path.join(vm_storage, "rum-toml")
    shutil.rmtree(storage, ignore_errors=True)
    # A git work tree with the project folder in it; rum.toml lives in the project folder.
    repo = os.path.join(storage, "repo")
    project = os.path.join(repo, "app")
    os.makedirs(project)
    os.chmod(storage, 0o755)
    subprocess.run(["git", "init", "-q", repo], check=True)
    token = str(uuid.uuid4())
    with open(os.path.join(project, "hello.txt"), "w", encoding="utf-8") as fh:
        fh.write(f"project file {token}\n")
    with open(os.path.join(repo, "README"), "w", encoding="utf-8") as fh:
        fh.write(f"repository file {token}\n")
    subnet, host_port = _free_subnet(), _free_port()
    static_ip = f"{subnet}.10"
    path = os.path.join(project, f"{NAME}.rum.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(RUM_TOML.format(image=image["path"], ip=static_ip, host_port=host_port, guest_port=GUEST_PORT))
    options = rum_toml.options(path)
    network = options["interfaces"][1]["network"]
    # What rum.toml has no field for: the image's checksum and where this test keeps VMs.
    extra = {"image": {"checksum": image["checksum"]}, "storage_dir": storage,
             "image_cache_dir": os.path.join(storage, "images")}
    guest = Guest(os.path.join(storage, NAME, "serial.log"))
    try:
        planned = _vm_yml(path, extra, "-v", check=True)
        assert f"create isolated network {network}" in planned and domstate(NAME) == "absent"

        _vm_yml(path, extra)  # rum up
        vm = guest.info()
        assert vm["state"] == "running" and vm["ssh"]["host"] == static_ip, vm  # ssh.interface = "lab"
        first = _first_boot_checks(guest, token, repo, project, static_ip, host_port)

        _vm_yml(path, extra, "-e", "vm_state=restarted")
        _second_boot_checks(guest, first, static_ip)
        _logs_checks()

        _vm_yml(path, extra, "-e", "vm_state=absent")  # rum destroy
        assert domstate(NAME) == "absent"
        assert subprocess.run(VIRSH + ["net-info", network], capture_output=True, check=False).returncode != 0, \
            f"the isolated network {network} outlived its only VM"
    finally:
        if domstate(NAME) != "absent":
            subprocess.run(VIRSH + ["destroy", NAME], capture_output=True, check=False)
            subprocess.run(VIRSH + ["undefine", "--nvram", NAME], capture_output=True, check=False)
        for command in (["net-destroy", network], ["net-undefine", network]):
            subprocess.run(VIRSH + command, capture_output=True, check=False)
        shutil.rmtree(storage, ignore_errors=True)


def _first_boot_checks(guest: Guest, token: str, repo: str, project: str, static_ip: str, host_port: int) -> dict:
    out = guest.sh(
        "findmnt -no FSTYPE /data; findmnt -no FSTYPE /scratch; sudo -n btrfs filesystem show /data; "
        "echo ---; cat /work/hello.txt /repo/README; findmnt -no FSTYPE /work; findmnt -no FSTYPE /repo; "
        "bash -lc pwd; ip -4 -o addr show; echo ---; "
        "cat /var/lib/rumtest/provision.count /var/lib/rumtest/boot.count | wc -l; "
        "wc -l < /var/lib/rumtest/provision.count; wc -l < /var/lib/rumtest/boot.count; "
        "sudo -n blkid -s UUID -o value /dev/vdb")
    fs, _sep, rest = out.partition("---\n")
    shares, _sep, counts = rest.partition("---\n")
    fs_lines = fs.splitlines()
    assert fs_lines[:2] == ["btrfs", "ext4"], fs
    assert "Total devices 2" in fs and "/dev/vdb" in fs and "/dev/vdc" in fs, fs
    lines = shares.splitlines()
    assert lines[:2] == [f"project file {token}", f"repository file {token}"], shares
    assert lines[2:5] == ["virtiofs", "virtiofs", "/work"], shares  # login shells start in the default mount
    assert f"inet {static_ip}/24" in shares, shares
    assert " 192.168.122." in shares and "inet 10.0.2.15/24" in shares, shares  # NAT, and the ports' NIC
    # A file the host writes while the guest runs shows through both shares.
    with open(os.path.join(project, "later.txt"), "w", encoding="utf-8") as fh:
        fh.write(f"later {token}\n")
    assert guest.sh("cat /work/later.txt /repo/app/later.txt") == f"later {token}\n" * 2
    count_lines = counts.split()
    assert count_lines[1:3] == ["1", "1"], counts  # provision once, boot once
    # The forwarded host port reaches a listener in the guest.
    guest.sh(f"sudo -n mkdir -p /srv/rumtest && echo {token} | sudo -n tee /srv/rumtest/token >/dev/null && "
             f"sudo -n systemd-run --unit=rumtest-listener python3 -m http.server {GUEST_PORT} --directory /srv/rumtest")
    reply = ready_http(f"http://127.0.0.1:{host_port}/token", guest)
    assert reply.strip() == token
    guest.sh("echo kept | sudo -n tee /data/marker >/dev/null")
    return {"btrfs_uuid": count_lines[3]}


def ready_http(url: str, guest: Guest, tries: int = 30) -> str:
    last = None
    for _try in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:  # nosec - loopback, the test's own forward
                return reply.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(1)
    pytest.fail(f"the forwarded port {url} never answered ({last})\n{ready.tail(guest.serial_log, 40)}")


def _second_boot_checks(guest: Guest, first: dict, static_ip: str) -> None:
    out = guest.sh("wc -l < /var/lib/rumtest/provision.count; wc -l < /var/lib/rumtest/boot.count; "
                   "findmnt -no FSTYPE /data; cat /data/marker; sudo -n blkid -s UUID -o value /dev/vdb; "
                   "findmnt -no FSTYPE /work; findmnt -no FSTYPE /scratch; ip -4 -o addr show")
    lines = out.splitlines()
    assert lines[:2] == ["1", "2"], out  # the first-boot script did not run again; the boot script did
    assert lines[2:5] == ["btrfs", "kept", first["btrfs_uuid"]], out  # mounted again, never formatted again
    assert lines[5:7] == ["virtiofs", "ext4"], out
    assert f"inet {static_ip}/24" in out
    with open(guest.serial_log, "rb") as fh:
        assert b"rum.pool: could not mount" not in fh.read()


def _logs_checks() -> None:
    every = _script_logs("all")
    assert [(log["script"], log["status"], log["exit_status"]) for log in every] == [
        ("boot", "ok", 0), ("boot", "ok", 0), ("provision", "ok", 0)], every
    assert every[0]["output"] == "boot number 2\n" and every[1]["output"] == "boot number 1\n"
    assert every[2]["output"] == "first boot: btrfs on /data\n"
    # rum log --failed (the other selections of the same logs are unit-tested in test_script_logs.py)
    assert _script_logs("failed") == []


@pytest.fixture(scope="module")
def vm_storage(state_dir):
    path = os.path.join(state_dir, "vms")
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def test_rum_toml_template_is_valid(tmp_path):
    """The test's rum.toml itself reads into rum_vm options (without booting anything)."""
    project = tmp_path / "app"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = project / f"{NAME}.rum.toml"
    path.write_text(RUM_TOML.format(image="/nonexistent.qcow2", ip="10.213.9.10", host_port=18080,
                                    guest_port=GUEST_PORT))
    options = rum_toml.options(str(path))
    assert options["name"] == NAME and options["domain_type"] == "qemu" and options["wait_timeout"] == 420
    assert options["ssh_interface"] == options["interfaces"][1]["network"]
    assert options["provision_script"].startswith("#!/bin/sh\n")  # TOML drops the newline after '''
