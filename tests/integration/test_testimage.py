# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test guest image, proven on its own (no rum_vm): it is cached by recipe, it boots under
plain qemu (TCG) with a NoCloud seed on virtio-scsi, cloud-init creates the user and key from the
seed, SSH works, the root file system grows with the disk, and it powers off; under libvirt
(direct kernel boot, the ``default`` network) it gets a DHCP lease, answers the guest agent and
``virsh shutdown`` (an ACPI power-button press) powers it off.

Each boot costs ~45-60 s under TCG on 2 shared cores, so there are only two boots here.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from tests import needs

from ansible_collections.rum.pool.plugins.module_utils._checksum import file_digest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import testimage  # noqa: E402  pylint: disable=wrong-import-position

pycdlib = needs.module("pycdlib", "pip install pycdlib")

USER = "rumtest"
BOOT_TIMEOUT = 240
POWEROFF_TIMEOUT = 60
LIBVIRT_URI = "qemu:///system"
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _timing(label: str, seconds: float) -> None:
    print(f"TIMING {label}: {seconds:.1f} s", flush=True)


def _tail(path: str, lines: int = 60) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError as exc:
        return f"(no serial log: {exc})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_seed(path: str, *, hostname: str, pubkey: str, instance_id: str) -> None:
    """A NoCloud seed ISO (volume id cidata, Rock Ridge + Joliet names) for one user and key."""
    user_data = textwrap.dedent(f"""\
        #cloud-config
        users:
          - name: {USER}
            shell: /bin/bash
            sudo: "ALL=(ALL) NOPASSWD:ALL"
            lock_passwd: true
            ssh_authorized_keys:
              - {pubkey.strip()}
        """)
    meta_data = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    network_config = textwrap.dedent("""\
        version: 2
        ethernets:
          nics:
            match:
              name: "en*"
            dhcp4: true
        """)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in (("user-data", user_data), ("meta-data", meta_data), ("network-config", network_config)):
        data = text.encode()
        iso_name = "/" + name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
    iso.write(path)
    iso.close()
    os.chmod(path, 0o644)


def make_overlay(base: str, path: str, size: str | None = None) -> None:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, path]
    if size:
        cmd.append(size)
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    os.chmod(path, 0o644)


class Ssh:
    """Runs commands in the guest with the generated key."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port, self.key = host, port, key

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = ["ssh", *SSH_OPTS, "-i", self.key, "-p", str(self.port), f"{USER}@{self.host}", command]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def check(self, command: str, timeout: float = 60) -> str:
        proc = self.run(command, timeout)
        assert proc.returncode == 0, f"`{command}` in the guest exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def wait(self, deadline: float, alive, serial_log: str) -> None:
        """Poll until `true` runs over SSH; fail with the serial log tail at the deadline or if the VM died."""
        last = ""
        while time.monotonic() < deadline:
            if not alive():
                pytest.fail(f"the guest stopped before SSH came up; serial log tail:\n{_tail(serial_log)}")
            try:
                proc = self.run("true", timeout=15)
                if proc.returncode == 0:
                    return
                last = proc.stderr.strip()
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            time.sleep(2)
        pytest.fail(f"no SSH to {USER}@{self.host}:{self.port} within {BOOT_TIMEOUT} s (last: {last}); "
                    f"serial log tail:\n{_tail(serial_log)}")


def check_guest(ssh: Ssh, hostname: str, serial_log: str, label: str, started: float) -> None:
    """What every test boot must show: cloud-init done from the seed, user, host name, sudo, no failed unit."""
    out = ssh.run("cloud-init status --wait --format json", timeout=BOOT_TIMEOUT)
    _timing(f"{label}: start -> cloud-init done", time.monotonic() - started)
    try:
        status = json.loads(out.stdout)
    except ValueError:
        pytest.fail(f"cloud-init status gave no JSON (rc {out.returncode}): {out.stdout}{out.stderr}\n"
                    f"serial log tail:\n{_tail(serial_log)}")
    detail = ssh.run("cloud-init status --long; sudo tail -n 30 /var/log/cloud-init.log").stdout
    assert status.get("status") == "done", f"cloud-init status {status}\n{detail}"
    assert status.get("errors") == [], f"cloud-init reported errors {status.get('errors')}\n{detail}"
    assert status.get("datasource") == "nocloud", f"cloud-init used datasource {status.get('datasource')}, " \
                                                  f"not the NoCloud seed (cdrom not seen?)\n{detail}"
    assert ssh.check("hostname").strip() == hostname
    ident = ssh.check(f"id {USER}")
    assert re.match(rf"uid=\d+\({USER}\) gid=\d+\({USER}\)", ident), ident
    assert ssh.check("sudo -n id -un").strip() == "root"
    system = ssh.run("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
    failed = ssh.run("systemctl --failed --no-legend --plain").stdout
    assert system.stdout.strip() == "running", f"system state {system.stdout.strip()!r}; failed units:\n{failed}"
    assert ssh.check("cat /etc/default/locale").strip() == "LANG=C.UTF-8"
    host_keys = ssh.check("ls /etc/ssh/").split()
    assert [k for k in host_keys if k.startswith("ssh_host_")] == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]


@pytest.fixture(scope="module")
def test_image(state_dir: str) -> dict:
    started = time.monotonic()
    try:
        image = testimage.ensure_test_image(state_dir)
    except testimage.ImageBuildError as exc:
        pytest.fail(str(exc))
    _timing("ensure_test_image (build or cache hit)", time.monotonic() - started)
    return image


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory) -> dict[str, str]:
    path = str(tmp_path_factory.mktemp("testimage-ssh") / "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rum-testimage", "-f", path], check=True)
    with open(path + ".pub", encoding="utf-8") as handle:
        return {"private": path, "public": handle.read()}


@pytest.fixture
def workdir(state_dir: str):
    """A per-test directory that qemu (as libvirt-qemu) can read."""
    path = os.path.join(state_dir, "testimage-tests", uuid.uuid4().hex[:10])
    os.makedirs(path)
    for part in (os.path.join(state_dir, "testimage-tests"), path):
        os.chmod(part, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the cache (fast, no boot)
# --------------------------------------------------------------------------------------------

def _fake_recipe(path: str, body: str) -> str:
    os.makedirs(path)
    script = os.path.join(path, "build.sh")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write("#!/usr/bin/env bash\nset -eu\nout=$1\n" + body)
    os.chmod(script, 0o755)
    return path


_FAKE_BUILD = """\
mkdir -p "$out"
echo ">> fake step"
echo x >> "$FAKE_BUILD_COUNT"
sleep 1
printf 'qcow2' > "$out/disk.qcow2"; printf k > "$out/vmlinuz"; printf i > "$out/initrd.img"
printf 'root=LABEL=root\n' > "$out/cmdline"
"""


def test_recipe_hash_covers_every_file(tmp_path) -> None:
    recipe = _fake_recipe(str(tmp_path / "r"), _FAKE_BUILD)
    first = testimage.recipe_hash(recipe)
    assert first == testimage.recipe_hash(recipe)
    os.makedirs(os.path.join(recipe, "rootfs", "etc"))
    with open(os.path.join(recipe, "rootfs", "etc", "motd"), "w", encoding="utf-8") as handle:
        handle.write("hello\n")
    second = testimage.recipe_hash(recipe)
    assert second != first
    os.chmod(os.path.join(recipe, "rootfs", "etc", "motd"), 0o755)
    assert testimage.recipe_hash(recipe) != second
    assert testimage.recipe_hash() == testimage.recipe_hash(testimage.RECIPE_DIR)


def test_concurrent_callers_build_once_and_share(tmp_path, monkeypatch) -> None:
    recipe = _fake_recipe(str(tmp_path / "r"), _FAKE_BUILD)
    count = str(tmp_path / "builds")
    monkeypatch.setenv("FAKE_BUILD_COUNT", count)
    state = str(tmp_path / "state")
    results: list[dict] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(testimage._ensure_image(state, recipe, check_host=False, progress=lambda _l: None))
        except BaseException as exc:  # pylint: disable=broad-except
            errors.append(exc)

    # Threads hold separate open file descriptions, so flock excludes them like processes.
    threads = [threading.Thread(target=worker) for _index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    with open(count, encoding="utf-8") as handle:
        assert handle.read().count("x") == 1
    assert len(results) == 3 and len({json.dumps(r, sort_keys=True) for r in results}) == 1
    info = results[0]
    key = testimage.recipe_hash(recipe)
    assert info["recipe_hash"] == key
    assert info["path"] == os.path.join(state, "images", key, "disk.qcow2")
    assert info["cmdline"] == "root=LABEL=root"
    assert info["kernel"].endswith("/vmlinuz") and info["initrd"].endswith("/initrd.img")
    assert info["sha256"] == file_digest(info["path"])
    assert info["checksum"] == "sha256:" + info["sha256"] and info["url"] == "file://" + info["path"]
    assert oct(os.stat(info["path"]).st_mode & 0o777) == "0o644"
    assert oct(os.stat(os.path.dirname(info["path"])).st_mode & 0o777) == "0o755"
    assert not [n for n in os.listdir(os.path.join(state, "images")) if n.startswith(".build-")]
    # A later call is a cache hit: no second build.
    assert testimage._ensure_image(state, recipe, check_host=False, progress=lambda _l: None) == info
    with open(count, encoding="utf-8") as handle:
        assert handle.read().count("x") == 1


def test_failed_build_leaves_nothing_and_shows_log_tail(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_BUILD_COUNT", str(tmp_path / "builds"))
    recipe = _fake_recipe(str(tmp_path / "r"), 'mkdir -p "$out"; : > "$out/disk.qcow2"\n'
                                               'echo ">> about to fail"; echo "E: Unable to locate package nope" >&2; exit 3\n')
    state = str(tmp_path / "state")
    with pytest.raises(testimage.ImageBuildError) as caught:
        testimage._ensure_image(state, recipe, check_host=False, progress=lambda _l: None)
    message = str(caught.value)
    assert "exited 3" in message and "E: Unable to locate package nope" in message
    key = testimage.recipe_hash(recipe)
    names = os.listdir(os.path.join(state, "images"))
    assert key not in names and not [n for n in names if n.startswith(".build-")], names
    assert f"{key}.failed-build.log" in names


def test_prune_removes_only_other_recipes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_BUILD_COUNT", str(tmp_path / "builds"))
    recipe = _fake_recipe(str(tmp_path / "r"), _FAKE_BUILD)
    state = str(tmp_path / "state")
    current = testimage._ensure_image(state, recipe, check_host=False, progress=lambda _l: None)
    old = os.path.join(state, "images", "0123456789abcdef")
    os.makedirs(old)
    removed = testimage.prune_other_images(state, recipe, progress=lambda _l: None)
    assert removed == [old] and not os.path.exists(old)
    assert os.path.isfile(current["path"])


def test_missing_tools_are_named_with_the_apt_hint(monkeypatch) -> None:
    monkeypatch.setattr(testimage.shutil, "which", lambda tool, path=None: None if tool in ("extlinux", "qemu-img") else "/x")
    assert testimage.missing_host_requirements() == ["extlinux", "qemu-utils"]


# --------------------------------------------------------------------------------------------
# real boots
# --------------------------------------------------------------------------------------------

@pytest.mark.guest
def test_boots_under_plain_qemu_and_powers_off(test_image, ssh_key, workdir) -> None:
    assert file_digest(test_image["path"]) == test_image["sha256"]
    hostname = "rumtest-qemu"
    overlay = os.path.join(workdir, "overlay.qcow2")
    seed = os.path.join(workdir, "seed.iso")
    serial = os.path.join(workdir, "serial.log")
    # A bigger disk than the image: cloud-init must grow the partition and the file system.
    make_overlay(test_image["path"], overlay, "4G")
    make_seed(seed, hostname=hostname, pubkey=ssh_key["public"], instance_id="iid-" + uuid.uuid4().hex[:8])
    port = _free_port()
    cmd = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "1024", "-smp", "2",
           "-display", "none", "-monitor", "none", "-no-reboot",
           "-serial", f"file:{serial}",
           "-drive", f"file={overlay},if=virtio,format=qcow2",
           "-device", "virtio-scsi-pci,id=scsi0",
           "-drive", f"file={seed},if=none,id=seed,media=cdrom,readonly=on,format=raw",
           "-device", "scsi-cd,bus=scsi0.0,drive=seed",
           "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
           "-device", "virtio-net-pci,netdev=net0"]
    started = time.monotonic()
    qemu = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        ssh = Ssh("127.0.0.1", port, ssh_key["private"])
        ssh.wait(started + BOOT_TIMEOUT, lambda: qemu.poll() is None, serial)
        _timing("qemu: start -> SSH login", time.monotonic() - started)
        check_guest(ssh, hostname, serial, "qemu", started)
        root_bytes = int(ssh.check("df -B1 --output=size / | tail -n 1").strip())
        assert root_bytes > 3.5 * 1024 ** 3, f"root file system not grown to the 4 GiB disk: {root_bytes} bytes"

        stopping = time.monotonic()
        try:
            ssh.run("sudo systemctl poweroff", timeout=30)
        except subprocess.TimeoutExpired:
            pass  # the connection may hang up instead of closing cleanly
        try:
            rc = qemu.wait(POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qemu still running {POWEROFF_TIMEOUT} s after poweroff; serial log tail:\n{_tail(serial)}")
        _timing("qemu: poweroff -> qemu exited", time.monotonic() - stopping)
        assert rc == 0, f"qemu exited {rc}: {qemu.stdout.read() if qemu.stdout else ''}"
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait(10)


def _virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"virsh {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


def _domain_xml(name: str, image: dict, overlay: str, seed: str, serial: str) -> str:
    return textwrap.dedent(f"""\
        <domain type='qemu'>
          <name>{name}</name>
          <memory unit='MiB'>1024</memory>
          <vcpu>2</vcpu>
          <os>
            <type arch='x86_64' machine='q35'>hvm</type>
            <kernel>{image['kernel']}</kernel>
            <initrd>{image['initrd']}</initrd>
            <cmdline>{image['cmdline']}</cmdline>
          </os>
          <features><acpi/><apic/></features>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='{overlay}'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <controller type='scsi' index='0' model='virtio-scsi'/>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <source file='{seed}'/>
              <target dev='sda' bus='scsi'/>
              <readonly/>
            </disk>
            <interface type='network'>
              <source network='default'/>
              <model type='virtio'/>
            </interface>
            <serial type='pty'>
              <log file='{serial}' append='off'/>
              <target port='0'/>
            </serial>
            <console type='pty'>
              <target type='serial' port='0'/>
            </console>
            <channel type='unix'>
              <target type='virtio' name='org.qemu.guest_agent.0'/>
            </channel>
          </devices>
        </domain>
        """)


def _lease_ipv4(name: str) -> str | None:
    out = _virsh("domifaddr", name, "--source", "lease", check=False).stdout
    match = re.search(r"ipv4\s+(\d+\.\d+\.\d+\.\d+)/", out)
    return match.group(1) if match else None


@pytest.mark.guest
def test_boots_under_libvirt_gets_a_lease_and_virsh_shutdown_powers_off(test_image, ssh_key, workdir) -> None:
    if _virsh("version", check=False).returncode != 0:
        pytest.fail(f"libvirtd does not answer on {LIBVIRT_URI}: run `make host` (tools/ensure-host.sh)")
    name = "rum-testimage-" + os.path.basename(workdir)
    hostname = "rumtest-libvirt"
    overlay = os.path.join(workdir, "overlay.qcow2")
    seed = os.path.join(workdir, "seed.iso")
    serial = os.path.join(workdir, "serial.log")
    xml_path = os.path.join(workdir, "domain.xml")
    make_overlay(test_image["path"], overlay)
    make_seed(seed, hostname=hostname, pubkey=ssh_key["public"], instance_id="iid-" + uuid.uuid4().hex[:8])
    with open(xml_path, "w", encoding="utf-8") as handle:
        handle.write(_domain_xml(name, test_image, overlay, seed, serial))
    if shutil.which("virt-xml-validate"):
        valid = subprocess.run(["virt-xml-validate", xml_path, "domain"], capture_output=True, text=True, check=False)
        assert valid.returncode == 0, valid.stdout + valid.stderr

    # Generous: a define that times out here may still complete later and leave the domain behind.
    _virsh("define", xml_path, timeout=300)
    try:
        started = time.monotonic()
        _virsh("start", name)
        deadline = started + BOOT_TIMEOUT
        ip = None
        while ip is None and time.monotonic() < deadline:
            if "running" not in _virsh("domstate", name, check=False).stdout:
                pytest.fail(f"domain {name} stopped while booting; serial log tail:\n{_tail(serial)}")
            ip = _lease_ipv4(name)
            if ip is None:
                time.sleep(2)
        if ip is None:
            pytest.fail(f"no DHCP lease for {name} within {BOOT_TIMEOUT} s; serial log tail:\n{_tail(serial)}")
        _timing("libvirt: start -> DHCP lease", time.monotonic() - started)
        assert ip.startswith("192.168.122."), ip

        ssh = Ssh(ip, 22, ssh_key["private"])
        ssh.wait(deadline, lambda: "running" in _virsh("domstate", name, check=False).stdout, serial)
        _timing("libvirt: start -> SSH login", time.monotonic() - started)
        check_guest(ssh, hostname, serial, "libvirt", started)
        ping = _virsh("qemu-agent-command", name, '{"execute":"guest-ping"}', check=False)
        assert ping.returncode == 0 and '"return"' in ping.stdout, f"guest agent: {ping.stdout}{ping.stderr}"

        stopping = time.monotonic()
        _virsh("shutdown", name, "--mode", "acpi")
        state = ""
        while time.monotonic() < stopping + POWEROFF_TIMEOUT:
            state = _virsh("domstate", name, check=False).stdout.strip()
            if state == "shut off":
                break
            time.sleep(1)
        assert state == "shut off", f"`virsh shutdown` did not power {name} off within {POWEROFF_TIMEOUT} s " \
                                    f"(state {state!r}); serial log tail:\n{_tail(serial)}"
        _timing("libvirt: virsh shutdown -> shut off", time.monotonic() - stopping)
    finally:
        _virsh("destroy", name, check=False)
        _virsh("undefine", name, "--nvram", check=False)
