"""rum.toml files (rum's own examples, every field, old layouts, bad fields) read into rum_vm options."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _rum_toml as rt
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from ansible_collections.rum.pool.plugins.module_utils._vm_options import OPTIONS

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "fixtures", "rum_toml")
UBUNTU = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
MINIMAL = '[image]\nbase = "https://example.test/i.qcow2"\n[resources]\ncpus = 1\nmemory_mb = 512\n'


def fixture(*parts: str) -> str:
    return os.path.realpath(os.path.join(FIXTURES, *parts))


def _check_against_rum_vm(options: dict) -> None:
    """The options are rum_vm's own and pass its checks (sources resolved, references right)."""
    assert set(options) <= {o.name for o in OPTIONS}
    vm.validate(vm.VMParams.from_dict(options))


def test_rums_example_at_head():
    path = fixture("head", "rum.toml")
    ident = rt.config_id(path, None)
    options = rt.options(path)
    assert options == {
        "name": ident, "origin": path, "project_dir": os.path.dirname(path),
        "image": {"url": UBUNTU}, "vcpus": 6, "memory_mb": 6144, "disk_size": "20G",
        "hostname": "buduntu",
        # NAT, then the NIC that carries the port forwards.
        "interfaces": [{"network": "default"}, {"user": True}],
        "wait_for": "cloud_init",
        "provision_script": "apt-get update && apt-get install -y inotify-tools", "boot_script": "echo booted",
        "mounts": [],
        "drives": [{"name": "deadpool", "size": "10G"}, {"name": "pooleo", "size": "10G"}],
        "filesystems": [{"type": "zfs", "drives": ["deadpool", "pooleo"], "mount": "/mnt/deadpool",
                         "pool": "deadpool"}],
        "ports": [{"host": 8080, "guest": 8080, "bind": "127.0.0.1"}, {"host": 5201, "guest": 5201, "bind": "127.0.0.1"}],
    }
    assert len(ident) == 8 and int(ident, 16) >= 0
    _check_against_rum_vm(options)


def test_rums_example_with_networks_scripts_mount_and_drives():
    path = fixture("example", "dev.rum.toml")
    ident = rt.config_id(path, "dev")
    options = rt.options(path)
    assert options["name"] == "dev" and options["hostname"] == "myhost"
    assert options["interfaces"] == [
        {"network": "default"},
        {"network": f"rum-{ident}-rum-hostonly", "isolated": True, "ip": "192.168.50.10"},
        {"network": f"rum-{ident}-dev-net", "isolated": True},
    ]
    assert options["provision_script"].startswith("\necho ===") or options["provision_script"].startswith("echo ===")
    assert 'echo "did-run-on-boot" > /did-run.log' in options["boot_script"]
    assert options["mounts"] == [{"source": ".", "target": "/mnt/project", "tag": "project"}]
    assert options["project_dir"] == os.path.dirname(path)
    assert options["drives"] == [{"name": "data", "size": "10G", "filesystem": "ext4", "mount": "/mnt/data"},
                                 {"name": "logs1", "size": "50G"}, {"name": "logs2", "size": "50G"}]
    assert options["filesystems"] == [{"type": "zfs", "drives": ["logs1", "logs2"], "mount": "/mnt/logs",
                                       "pool": "logspool"}]
    assert options["ports"] == [] and {"user": True} not in options["interfaces"]
    _check_against_rum_vm(options)


def test_every_field(tmp_path):
    # In a git work tree of its own, for the 'git' mount source (the checkout may not be one).
    folder = str(tmp_path / "project")
    shutil.copytree(fixture("every-field"), folder)
    subprocess.run(["git", "init", "-q", folder], check=True)
    path = os.path.join(folder, "full.rum.toml")
    ident = rt.config_id(path, "full")
    options = rt.options(path)
    lab = f"rum-{ident}-lab"
    assert options == {
        "name": "full", "origin": path, "project_dir": folder,
        "image": {"url": os.path.join(folder, "images", "base.qcow2")},
        "vcpus": 3, "memory_mb": 1536, "disk_size": "12G", "hostname": "full.example.test",
        "interfaces": [{"network": lab, "isolated": True, "ip": "10.77.3.20"},
                       {"network": f"rum-{ident}-backend", "isolated": True}, {"user": True}],
        "wait_for": "none", "wait_timeout": 240,
        "user": "dev", "user_groups": ["docker", "kvm"],
        "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq0d2n0jM0R8r5r8m3b9Qm2qXx1v7Q0nS3V0xT3y4kF me@laptop"],
        "ssh_client": "kitty +kitten ssh", "ssh_interface": lab,
        "provision_script": "#!/bin/bash\nset -eu\necho system\n", "boot_script": "echo boot",
        "uri": "qemu:///session", "domain_type": "qemu", "machine": "pc", "autologin": True,
        "mounts": [{"source": ".", "target": "/work", "default": True},
                   {"source": "src", "target": "/src", "tag": "sources", "readonly": True, "driver": "9p"},
                   {"source": "git", "target": "/repo"}],
        "drives": [{"name": "a", "size": "1G"}, {"name": "b", "size": "1G"},
                   {"name": "c", "size": "512M", "filesystem": "xfs", "mount": "/scratch"},
                   {"name": "d", "size": "2G"}, {"name": "e", "size": "2G"}],
        "filesystems": [{"type": "btrfs", "drives": ["a", "b"], "mount": "/data", "mode": "raid1"},
                        {"type": "zfs", "drives": ["d", "e"], "mount": "/tank", "mode": "mirror"}],
        "ports": [{"host": 8080, "guest": 80, "bind": "127.0.0.1"}, {"host": 8080, "guest": 8080, "bind": "127.0.0.2"}],
    }
    _check_against_rum_vm(options)
    assert vm.resolve_mount_source("git", os.path.join(folder, "src")) == folder
    assert vm.resolve_mount_source("src", folder) == os.path.join(folder, "src")


@pytest.mark.parametrize("name, field", [
    ("named.toml", "name: unknown field"),
    ("provision.rum.toml", "provision.script: unknown field"),
    ("drive-target.rum.toml", "drives.data.target: unknown field"),
])
def test_old_layouts_fail_naming_the_field(name, field):
    with pytest.raises(rt.RumTomlError, match=f"^{name}: {field}"):
        rt.options(fixture("old", name))


def test_names_and_ids_as_rum_derives_them():
    assert rt.derive_name("/p/dev.rum.toml") == "dev"
    assert rt.derive_name("/p/rum.toml") is None
    assert rt.derive_name("/p/web.toml") == "web"
    assert rt.derive_name("/p/a.b.rum.toml") == "a.b"
    # FNV-1a 64 over the path, then the name; the low 32 bits. Computed by hand for a short input:
    value = 0xCBF29CE484222325
    for byte in b"/x" + b"n":
        value = ((value ^ byte) * 0x100000001B3) % 2 ** 64
    assert rt.config_id("/x", "n") == f"{value % 2 ** 32:08x}"
    assert rt.config_id("/p/rum.toml", None) != rt.config_id("/p/dev.rum.toml", "dev")
    assert rt.config_id("/a/dev.rum.toml", "dev") != rt.config_id("/b/dev.rum.toml", "dev")


def _write(tmp_path, text: str, name: str = "dev.rum.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("extra, message", [
    ("", None),
    ("[resources.more]\nx = 1\n", "resources.more: unknown field"),
    ("[network]\nnat = 1\n", "network.nat: must be true or false, got 1"),
    ("[network]\nhostname = \"-bad\"\n", "network.hostname: '-bad'"),
    ("[[network.interfaces]]\nnetwork = \"\"\n", r"network.interfaces\[0\].network: must not be empty"),
    ("[[network.interfaces]]\nnetwork = \"n\"\nip = \"10.0.0\"\n", r"network.interfaces\[0\].ip: '10.0.0' is not an IPv4"),
    ("[[network.interfaces]]\nip = \"10.0.0.1\"\n", r"network.interfaces\[0\].network: is required"),
    ("[ssh]\ninterface = \"nope\"\n", "ssh.interface: 'nope' is not the network"),
    ("[ssh]\nuser = \"a\"\n[user]\nname = \"b\"\n", "ssh.user: 'a' differs from user.name 'b'"),
    ("[user]\nname = \"root\"\n", "user.name: 'root'"),
    ("[advanced]\ndomain_type = \"xen\"\n", "advanced.domain_type: 'xen'"),
    ("[provision.system]\nrun = \"x\"\n", "provision.system.run: unknown field"),
    ("[provision.boot]\n", "provision.boot.script: is required"),
    ("[[mounts]]\nsource = \"/\"\ntarget = \"rel\"\n", r"mounts\[0\].target: must be an absolute path"),
    ("[[mounts]]\nsource = \"nope\"\ntarget = \"/x\"\n", r"mounts\[0\].source: 'nope' \(.*/nope\) is not an existing directory"),
    ("[[mounts]]\nsource = \"/\"\ntarget = \"/a/b\"\n[[mounts]]\nsource = \"/\"\ntarget = \"/a_b\"\n",
     r"mounts\[1\].tag: 'a_b' is already the tag of mounts\[0\]"),
    ("[[mounts]]\nsource = \"/\"\ntarget = \"/a\"\n[[mounts]]\nsource = \"/\"\ntarget = \"/a/b\"\n",
     "mounts: target '/a' .* and '/a/b' .* are nested"),
    ("[[mounts]]\nsource = \"/\"\ntarget = \"/a\"\ndefault = true\n[[mounts]]\nsource = \"/\"\ntarget = \"/b\"\ndefault = true\n",
     "mounts: at most one mount can have default = true"),
    ("[drives.d]\nsize = \"10Q\"\n", "drives.d.size: "),
    ("[drives.d]\n", "drives.d.size: is required"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.ext4]]\ndrive = \"x\"\ntarget = \"/d\"\n", r"fs.ext4\[0\]: drive 'x' is not in \[drives\]"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.ext4]]\ndrives = [\"d\"]\ntarget = \"/d\"\n", r"fs.ext4\[0\]: ext4 uses 'drive', not 'drives'"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.ext4]]\ndrive = \"d\"\ntarget = \"/d\"\nmode = \"raid1\"\n",
     r"fs.ext4\[0\].mode: 'mode' is only for zfs and btrfs"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.btrfs]]\ndrive = \"d\"\ntarget = \"/d\"\n", r"fs.btrfs\[0\]: btrfs uses 'drives', not 'drive'"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.btrfs]]\ndrives = [\"d\"]\ntarget = \"/d\"\npool = \"p\"\n", r"fs.btrfs\[0\].pool: 'pool' is only for zfs"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.zfs]]\ntarget = \"/d\"\n", r"fs.zfs\[0\]: zfs needs 'drives'"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.ext4]]\ndrive = \"d\"\ntarget = \"/d\"\n[[fs.xfs]]\ndrive = \"d\"\ntarget = \"/e\"\n",
     r"fs.xfs\[0\]: drive 'd' is already used by fs.ext4\[0\]"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.ntfs]]\ndrive = \"d\"\ntarget = \"/d\"\n", "fs.ntfs: file system type 'ntfs' is not supported"),
    ("[drives.d]\nsize = \"1G\"\n[[fs.ext4]]\ndrive = \"d\"\n", r"fs.ext4\[0\].target: is required"),
    ("[[ports]]\nhost = 0\nguest = 80\n", r"ports\[0\].host: must be a port from 1 to 65535, got 0"),
    ("[[ports]]\nhost = 80\nguest = 80\nbind = \"localhost\"\n", r"ports\[0\].bind: 'localhost' is not an IPv4"),
    ("[[ports]]\nhost = 80\nguest = 80\n[[ports]]\nhost = 80\nguest = 81\n", r"ports\[1\].host: host port 80 on 127.0.0.1 is forwarded twice"),
])
def test_each_rule_names_the_field(tmp_path, extra, message):
    path = _write(tmp_path, MINIMAL + extra)
    if message is None:
        assert rt.options(path)["name"] == "dev"
        return
    with pytest.raises(rt.RumTomlError, match=f"^dev.rum.toml: {message}"):
        rt.options(path)


@pytest.mark.parametrize("text, message", [
    ("[resources]\ncpus = 1\nmemory_mb = 512\n", "image: is required"),
    ('[image]\nbase = "x"\n[resources]\ncpus = 1\n', "resources.memory_mb: is required"),
    ('[image]\nbase = "x"\n[resources]\ncpus = 0\nmemory_mb = 512\n', "resources.cpus: must be at least 1, got 0"),
    ('[image]\nbase = "x"\n[resources]\ncpus = 1\nmemory_mb = 128\n', "resources.memory_mb: must be at least 256, got 128"),
    ('[image]\nbase = "ftp://x/y"\n[resources]\ncpus = 1\nmemory_mb = 512\n', "image.base: 'ftp://x/y'"),
    ('[image]\nbase = "x"\n[resources]\ncpus = "2"\nmemory_mb = 512\n', "resources.cpus: must be an integer, got '2'"),
    ('[image]\nbase = "x"\nchecksum = "sha256:00"\n[resources]\ncpus = 1\nmemory_mb = 512\n', "image.checksum: unknown field"),
    ("[image\n", "not valid TOML"),
])
def test_required_fields_types_and_syntax(tmp_path, text, message):
    with pytest.raises(rt.RumTomlError, match=f"^dev.rum.toml: {message}"):
        rt.options(_write(tmp_path, text))


def test_file_name_rules(tmp_path):
    with pytest.raises(rt.RumTomlError, match=r"^-x.rum.toml: \(file name\): the name '-x' must match"):
        rt.options(_write(tmp_path, MINIMAL, "-x.rum.toml"))
    with pytest.raises(rt.RumTomlError, match=r"\(file name\): the name 'a{64}' is too long"):
        rt.options(_write(tmp_path, MINIMAL, "a" * 64 + ".rum.toml"))
    with pytest.raises(rt.RumTomlError, match="^missing.rum.toml: cannot read .*: No such file"):
        rt.options(str(tmp_path / "missing.rum.toml"))


def test_the_same_file_name_in_two_projects_gives_two_origins(tmp_path):
    """rum gave both the domain 'dev'; here the name stays dev and rum_vm refuses the second project
    (see test_vm_parity: origin)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    a, b = rt.options(_write(one, MINIMAL)), rt.options(_write(two, MINIMAL))
    assert a["name"] == b["name"] == "dev" and a["origin"] != b["origin"]


def test_nat_off_and_no_interfaces_is_a_vm_without_network(tmp_path):
    options = rt.options(_write(tmp_path, MINIMAL + "[network]\nnat = false\n"))
    assert options["interfaces"] == []


def test_a_symlinked_file_is_the_file_it_points_to(tmp_path):
    real = _write(tmp_path, MINIMAL)
    (tmp_path / "link").mkdir()
    os.symlink(real, tmp_path / "link" / "dev.rum.toml")
    assert rt.options(str(tmp_path / "link" / "dev.rum.toml")) == rt.options(real)


def test_without_tomllib_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "tomllib", None)
    with pytest.raises(rt.RumTomlError, match="needs Python 3.11 or later .* or the tomli package"):
        rt.options(_write(tmp_path, MINIMAL))
