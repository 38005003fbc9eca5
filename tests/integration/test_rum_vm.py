"""rum_vm through ansible-playbook on the real libvirtd (qemu:///system, domain type qemu)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import uuid

import pytest

from ansible_collections.rum.pool.plugins.module_utils._vm_options import OPTIONS
from tests.integration.conftest import run_playbook
from tests.integration.guests import blank_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VIRSH = ["virsh", "-c", "qemu:///system"]


@pytest.fixture(scope="session")
def vm_storage(state_dir):
    path = os.path.join(state_dir, "vms")
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_image(state_dir):
    """A small blank qcow2: enough for lifecycle tests that never boot an OS."""
    return blank_image(os.path.join(state_dir, "fixtures"), "tiny.qcow2")


@pytest.fixture(scope="session")
def http_root(state_dir):
    """A loopback HTTP server for images, the way users fetch cloud images."""
    root = os.path.join(state_dir, "http")
    os.makedirs(root, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass


def _domain_gone(name: str) -> bool:
    return subprocess.run(VIRSH + ["domstate", name], capture_output=True, check=False).returncode != 0


def test_lifecycle(playbook, tiny_image, vm_storage):
    name = "rumtest-lifecycle"
    playbook("rum_vm/lifecycle.yml", {
        "vm_name": name, "image_url": tiny_image["url"], "image_checksum": tiny_image["checksum"],
        "storage_dir": vm_storage,
    })
    assert _domain_gone(name)


def test_bad_inputs(playbook, tiny_image, vm_storage):
    playbook("rum_vm/bad_inputs.yml", {
        "image_url": tiny_image["url"], "image_checksum": tiny_image["checksum"], "storage_dir": vm_storage,
    })


def every_option(tmp: str, image: dict, storage: str) -> dict:
    """A ``vm`` mapping that sets every rum_vm option to a valid value other than its default."""
    for name in ("src", "boot"):
        os.makedirs(os.path.join(tmp, name), exist_ok=True)
    for name in ("vmlinuz", "initrd.img"):
        open(os.path.join(tmp, "boot", name), "wb").close()
    return {
        "name": "rumtest-every-option", "state": "present", "uri": "qemu+unix:///system",
        "domain_type": "qemu", "machine": "pc", "arch": "i686", "firmware": "uefi", "vcpus": 1,
        "memory_mb": 512, "image": {"url": image["url"], "checksum": image["checksum"]}, "disk_size": "1G",
        "drives": [{"name": "data", "size": "64M", "filesystem": "ext4", "mount": "/data"},
                   {"name": "z1", "size": "64M"}, {"name": "z2", "size": "64M"}],
        "filesystems": [{"type": "zfs", "drives": ["z1", "z2"], "mount": "/tank", "mode": "mirror", "pool": "tank"}],
        "interfaces": [{"user": True, "model": "e1000"},
                       {"network": "rumtest-every-option-lab", "isolated": True, "ip": "10.213.251.9"}],
        "ports": [{"host": 2299, "guest": 22, "bind": "127.0.0.2"}],
        "mounts": [{"source": "src", "target": "/mnt/src", "readonly": True, "tag": "src", "driver": "9p",
                    "default": True}],
        "project_dir": tmp, "ssh_interface": "rumtest-every-option-lab", "ssh_client": "kitty +kitten ssh",
        "origin": "/srv/projects/every-option/dev.rum.toml",
        "hostname": "every-option", "user": "tester", "user_groups": ["adm"],
        "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq0d2n0jM0R8r5r8m3b9Qm2qXx1v7Q0nS3V0xT3y4kF t@h"],
        "generate_ssh_key": False, "provision_script": "echo provisioned", "boot_script": "echo booted",
        "autologin": True, "packages": ["htop"], "user_data": {"bootcmd": ["true"]},
        "network_config": {"version": 2, "ethernets": {}}, "vendor_data": "#cloud-config\n{}\n",
        "meta_data": {"x-extra": "1"}, "instance_id": "iid-every-option", "seed_bus": "ide",
        "kernel": os.path.join(tmp, "boot", "vmlinuz"), "initrd": os.path.join(tmp, "boot", "initrd.img"),
        "kernel_args": "console=ttyS0", "reset": True, "apply_changes": "fail", "wait_for": "ssh",
        "wait_timeout": 5, "shutdown_timeout": 5, "storage_dir": storage,
        "image_cache_dir": os.path.join(storage, "images"), "autostart": True, "labels": {"purpose": "every-option"},
        "seed_eject": True,
        # enabled: false, as a user-mode NIC cannot be filtered; every key is passed through all the same
        "network_filter": {"enabled": False, "allow": [{"address": "192.168.122.1", "ports": [8080, "9000-9001"],
                                                        "protocol": "any"}],
                           "deny": [{"address": "10.0.0.0/8", "ports": [], "protocol": "udp"}], "public_ports": [443, 80]},
    }


def _task_result(output: str, task: str) -> dict:
    """The JSON result ansible-playbook printed (-vvv, json result format) for ``task``."""
    start = output.index(f"TASK [{task}]")
    brace = output.index("=> {", start) + 3
    result, _end = json.JSONDecoder().raw_decode(output[brace:])
    return result


def _contains(given, got) -> bool:
    """``got`` holds everything ``given`` says (suboptions the module filled in may be extra)."""
    if isinstance(given, dict):
        return isinstance(got, dict) and all(k in got and _contains(v, got[k]) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(got, list) and len(given) == len(got) and all(map(_contains, given, got))
    return given == got


def test_vm_playbook_passes_every_option(tiny_image, vm_storage, tmp_path):
    """playbooks/vm.yml hands every rum_vm option through to the module; --check leaves nothing,
    not even a lock file (issue 12: lock files were left behind by check mode)."""
    storage = os.path.join(vm_storage, "every-option")
    shutil.rmtree(storage, ignore_errors=True)
    os.makedirs(os.path.join(storage, ".locks"))  # other VMs have run here before
    vm = every_option(str(tmp_path), tiny_image, storage)
    assert sorted(vm) == sorted(o.name for o in OPTIONS), "the test must set every rum_vm option"
    run = run_playbook(os.path.join(ROOT, "playbooks", "vm.yml"), {"vm": vm}, check=True,
                       env={"ANSIBLE_VERBOSITY": "3", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert run.rc == 0, str(run)
    result = _task_result(run.stdout, "Converge the VM")
    args = result["invocation"]["module_args"]
    dropped = {name: (value, args.get(name)) for name, value in vm.items() if not _contains(value, args.get(name))}
    assert dropped == {}, f"options that did not reach rum_vm as given (given, got): {dropped}"
    assert result["changed"] and "define domain" in result["changes"]
    assert _domain_gone(vm["name"])
    assert os.listdir(storage) == [".locks"] and os.listdir(os.path.join(storage, ".locks")) == [], \
        "check mode left files behind"
    shutil.rmtree(storage)


def test_adhoc_commands_as_the_readme_writes_them():
    """README: from the repository root, with .venv/bin on PATH and nothing else set, ad hoc
    commands find the collection by its ansible.cfg, by short and by full name."""
    env = {k: v for k, v in os.environ.items() if k not in ("ANSIBLE_CONFIG", "PYTHONPATH")}
    env["PATH"] = os.path.join(ROOT, ".venv", "bin") + os.pathsep + env.get("PATH", "")
    # `dev` is what the README names; never remove a real one (check mode if it exists)
    check = "" if _domain_gone("dev") else " --check"
    for command in (f"ansible localhost -m rum.pool.rum_vm -a 'name=dev state=absent'{check}",
                    "ansible localhost -m rum_vm -a 'name=rumtest-adhoc state=absent'",
                    "ansible localhost -m rum.pool.rum_vm_info"):
        proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}{proc.stderr}"
        assert "localhost | SUCCESS" in proc.stdout, f"{command}\n{proc.stdout}"
        assert "libvirt:" not in proc.stderr and "WARNING" not in proc.stderr, f"{command}\n{proc.stderr}"


def leases_of(name: str) -> list[str]:
    """IPv4 addresses the default network's DHCP lease table holds for the MAC of domain ``name``."""
    from ansible_collections.rum.pool.plugins.module_utils._domain import stable_mac  # pylint: disable=import-outside-toplevel

    mac = stable_mac(name, 0)
    out = subprocess.run(VIRSH + ["net-dhcp-leases", "default", "--mac", mac],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[4].split("/")[0] for line in out.splitlines() if mac in line and " ipv4 " in line)


@pytest.mark.guest
def test_real_guest(playbook, vm_storage, http_root, tmp_path):
    """Build (or reuse) the test image, serve it over HTTP, boot it, log in, ping via inventory.

    A host folder is shared by the default mount driver (virtiofs: Debian's cloud kernel has no
    9p): rum_vm reports it mounted and the guest reads what the host writes (issue 12).

    Then the VM is deleted behind rum's back and created again under the same name: the new
    incarnation has the same MAC but a new DHCP client id, so its old lease is still in the table
    and rum_vm must pick the live one. Removing it with rum_vm hands every lease of it back.
    """
    from tests.tools.testimage import ensure_test_image

    image = ensure_test_image()
    root, base_url = http_root
    served = os.path.join(root, f"rum-test-{image['recipe_hash'][:12]}.qcow2")
    if not os.path.exists(served):
        shutil.copy(image["path"], served)
    name = "rumtest-guest"
    # A fresh cache each run, so the real download + verify path is exercised every time.
    storage = os.path.join(vm_storage, "guest-run")
    shutil.rmtree(storage, ignore_errors=True)
    os.makedirs(storage, mode=0o755)
    share = os.path.join(storage, "share")  # shared with the guest by the default mount driver
    os.makedirs(share)
    with open(os.path.join(share, "hello.txt"), "w", encoding="utf-8") as fh:
        fh.write(f"hello from the host, {uuid.uuid4()}\n")
    extra = {"vm_name": name, "image_url": f"{base_url}/{os.path.basename(served)}",
             "image_checksum": f"sha256:{image['sha256']}", "storage_dir": storage, "share_dir": share}
    try:
        playbook("rum_vm/guest_up.yml", extra)
        inventory = tmp_path / "guests.rum.yml"
        inventory.write_text("plugin: rum.pool.rum\nuris: [qemu:///system]\nlabels:\n  purpose: guest-test\n")
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
        proc = subprocess.run(
            [os.path.join(ROOT, ".venv", "bin", "ansible"), "-i", str(inventory), "all", "-m", "ansible.builtin.ping"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{name} | SUCCESS" in proc.stdout and '"ping": "pong"' in proc.stdout, proc.stdout
        assert "libvirt:" not in proc.stderr, f"libvirt printed its own errors: {proc.stderr}"
        first = leases_of(name)
        assert first, "the guest answered but the network has no lease for its MAC"

        # Gone behind rum's back (no lease release), then the same name comes back fresh.
        subprocess.run(VIRSH + ["destroy", name], capture_output=True, check=True)
        subprocess.run(VIRSH + ["undefine", "--nvram", name], capture_output=True, check=True)
        shutil.rmtree(os.path.join(storage, name))
        playbook("rum_vm/guest_up.yml", extra)
        second = leases_of(name)
        assert set(first) < set(second), f"expected the old lease(s) {first} beside a new one, got {second}"

        playbook("rum_vm/guest_down.yml", extra)
        assert leases_of(name) == [], "rum_vm state=absent left DHCP leases behind"
    finally:
        if not _domain_gone(name):
            subprocess.run(VIRSH + ["destroy", name], capture_output=True, check=False)
            subprocess.run(VIRSH + ["undefine", "--nvram", name], capture_output=True, check=False)
        shutil.rmtree(storage, ignore_errors=True)
