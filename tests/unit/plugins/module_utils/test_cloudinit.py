"""The cloud-config a rum VM gets: content, validation, cloud-init's own schema, script behaviour."""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _cloudinit as ci
from ansible_collections.rum.pool.plugins.module_utils import _seed
from ansible_collections.rum.pool.plugins.module_utils._cloudinit import CloudInitError
from ansible_collections.rum.pool.plugins.module_utils._script_logs import (
    FETCH_COMMAND,
    KEEP,
    LOG_DIR,
    RUNNER,
    parse_archive,
    runner_script,
    select,
)

CLOUD_INIT = "/usr/bin/cloud-init"
# cloud-init's own Python (Debian's package), for its runcmd renderer.
SYSTEM_PYTHON = "/usr/bin/python3"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1c3RvZnRoZWtleQ rum@test"


def _files(config: dict) -> dict:
    return {item["path"]: item for item in config.get("write_files", [])}


def _require_cloud_init() -> None:
    if not os.path.exists(CLOUD_INIT):
        pytest.fail(f"{CLOUD_INIT} is missing: apt-get install cloud-init "
                    "(needed to validate generated user-data against cloud-init's schema)")


# ------------------------------------------------------------------------------------ user, host


def test_default_user_is_key_only_with_passwordless_sudo():
    config = ci.vm_user_data(hostname="web1", ssh_authorized_keys=[KEY])
    assert config["hostname"] == "web1" and "fqdn" not in config
    assert config["users"] == [{
        "name": "rum", "lock_passwd": True, "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL", "ssh_authorized_keys": [KEY],
    }]
    assert config["ssh_pwauth"] is False and config["disable_root"] is True
    for key in ("passwd", "plain_text_passwd", "hashed_passwd"):
        assert key not in config["users"][0]
    assert "chpasswd" not in config and "password" not in config


def test_user_groups_sudo_shell_and_fqdn():
    config = ci.vm_user_data(hostname="db1.lab.example", user="ops", groups=["docker", "kvm"],
                             sudo="ALL=(ALL) ALL", shell=None)
    assert config["hostname"] == "db1" and config["fqdn"] == "db1.lab.example"
    account = config["users"][0]
    assert account["name"] == "ops" and account["groups"] == ["docker", "kvm"]
    assert account["sudo"] == "ALL=(ALL) ALL" and "shell" not in account
    assert "sudo" not in ci.vm_user_data(hostname="h", sudo=False)["users"][0]


@pytest.mark.parametrize("kwargs, message", [
    ({"hostname": ""}, "hostname ''"),
    ({"hostname": "bad_name"}, "not a valid host name"),
    ({"hostname": "-lead"}, "not a valid host name"),
    ({"hostname": "a" * 64}, "not a valid host name"),
    ({"hostname": "h", "user": "Bad User"}, "user 'Bad User'"),
    ({"hostname": "h", "user": "root"}, "user 'root'"),
    ({"hostname": "h", "groups": "docker"}, "groups: must be a list"),
    ({"hostname": "h", "groups": ["ok", "no spaces"]}, "'no spaces' is not a valid group"),
    ({"hostname": "h", "ssh_authorized_keys": [KEY + "\nssh-rsa AAAA"]}, "spans several lines"),
    ({"hostname": "h", "ssh_authorized_keys": ["  "]}, "an empty key"),
    ({"hostname": "h", "ssh_authorized_keys": [1]}, "1 is not a string"),
    ({"hostname": "h", "sudo": "ALL\nroot ALL"}, "single line"),
    ({"hostname": "h", "sudo": 3}, "sudo 3"),
    ({"hostname": "h", "autologin": "yes"}, "autologin 'yes'"),
    ({"hostname": "h", "provision_script": ["echo"]}, "provision_script: must be a string"),
    ({"hostname": "h", "packages": "git"}, "packages: must be a list"),
    ({"hostname": "h", "extra": ["runcmd"]}, "extra: must be a mapping"),
    ({"hostname": "h", "shell": "bash"}, "shell 'bash': must be an absolute path"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(CloudInitError, match=message.replace("(", r"\(")):
        ci.vm_user_data(**kwargs)


# -------------------------------------------------------------------------------------- scripts


def test_provision_script_is_written_verbatim_and_run_once():
    script = "#!/bin/bash\nset -eu\necho \"it's $HOME\" | tee /tmp/x\n"
    config = ci.vm_user_data(hostname="h", provision_script=script)
    entry = _files(config)[ci.PROVISION_PATH]
    assert entry["content"] == script and entry["permissions"] == "0700"
    assert config["runcmd"] == [
        f"{RUNNER} provision {ci.PROVISION_PATH} && touch {ci.PROVISIONED_MARKER} || exit 1"]
    assert _files(config)[RUNNER]["content"] == runner_script()
    # It survives rendering exactly.
    rendered = yaml.safe_load(_seed.render_user_data(config))
    assert _files(rendered)[ci.PROVISION_PATH]["content"] == script


def test_blank_scripts_are_ignored():
    config = ci.vm_user_data(hostname="h", provision_script="  \n", boot_script="")
    assert "runcmd" not in config and "write_files" not in config


def test_boot_script_alone_runs_on_every_boot():
    config = ci.vm_user_data(hostname="h", boot_script="#!/bin/sh\necho boot\n")
    files = _files(config)
    assert files[ci.BOOT_PATH]["content"] == "#!/bin/sh\necho boot\n"
    wrapper = files[ci.PER_BOOT_PATH]["content"]
    assert wrapper.startswith("#!/bin/sh\n") and wrapper.endswith(f"exec {RUNNER} boot {ci.BOOT_PATH}\n")
    assert ci.PROVISIONED_MARKER not in wrapper
    assert "runcmd" not in config


def test_boot_script_with_provision_waits_for_it():
    config = ci.vm_user_data(hostname="h", provision_script="echo p\n", boot_script="echo b\n")
    wrapper = _files(config)[ci.PER_BOOT_PATH]["content"]
    assert f"[ -e {ci.PROVISIONED_MARKER} ] || exit 0" in wrapper
    assert config["runcmd"][-1] == f"{RUNNER} boot {ci.BOOT_PATH} || exit 1"


# ------------------------------------------------------------------------------- mounts, drives


def test_shares_go_to_a_script_not_to_cloud_init_mounts():
    config = ci.vm_user_data(hostname="h", mounts=[
        {"tag": "src", "target": "/src"},
        {"tag": "cache", "target": "/var/cache/x/", "readonly": True, "driver": "9p"},
    ])
    assert "mounts" not in config
    script = _files(config)[ci.SHARES_PATH]["content"]
    assert "add src /src virtiofs defaults,nofail\n" in script
    assert "add cache /var/cache/x 9p trans=virtio,version=9p2000.L,nofail,ro\n" in script
    assert config["runcmd"] == [[ci.SHARES_PATH]]


@pytest.mark.parametrize("mounts, message", [
    ({"tag": "a", "target": "/a"}, "mounts: must be a list"),
    ([{"tag": "a", "target": "rel"}], r"mounts\[0\].target 'rel': must be an absolute path"),
    ([{"tag": "a b", "target": "/a"}], r"mounts\[0\].tag 'a b'"),
    ([{"tag": "a", "target": "/a", "driver": "nfs"}], r"mounts\[0\].driver 'nfs'"),
    ([{"tag": "a", "target": "/a", "readonly": "yes"}], r"mounts\[0\].readonly 'yes'"),
    ([{"tag": "a", "target": "/a"}, {"tag": "a", "target": "/b"}], r"mounts\[1\].tag 'a': used twice"),
    ([{"tag": "a", "target": "/a"}, {"tag": "b", "target": "/a/"}], r"mounts\[1\].target '/a'"),
    ([{"tag": "a", "target": "/a", "source": "."}], r"mounts\[0\]: unknown key\(s\) source"),
])
def test_bad_mounts(mounts, message):
    with pytest.raises(CloudInitError, match=message):
        ci.vm_user_data(hostname="h", mounts=mounts)


def test_drives_get_fs_setup_and_nofail_mounts():
    config = ci.vm_user_data(hostname="h", drives=[
        {"device": "/dev/vdb", "filesystem": "ext4", "target": "/data", "label": "data"},
        {"device": "/dev/vdc", "filesystem": "xfs"},
        {"device": "/dev/vdd", "target": "/ignored"},
    ])
    assert config["fs_setup"] == [
        {"device": "/dev/vdb", "filesystem": "ext4", "overwrite": False, "label": "data"},
        {"device": "/dev/vdc", "filesystem": "xfs", "overwrite": False},
    ]
    assert config["mounts"] == [["/dev/vdb", "/data", "ext4", "defaults,nofail", "0", "2"]]


@pytest.mark.parametrize("drives, message", [
    ([{"device": "vdb", "filesystem": "ext4"}], r"drives\[0\].device 'vdb'"),
    ([{"device": "/dev/vdb", "filesystem": "zfs"}], r"drives\[0\].filesystem 'zfs'"),
    ([{"device": "/dev/vdb", "filesystem": "xfs", "label": "much-too-long"}], "longer than xfs"),
    ([{"device": "/dev/vdb"}, {"device": "/dev/vdb"}], r"drives\[1\].device '/dev/vdb': used twice"),
    ([{"device": "/dev/vdb", "filesystem": "ext4", "target": "data"}], "must be an absolute path"),
    ([{"device": "/dev/vdb", "size": "10G"}], r"unknown key\(s\) size"),
])
def test_bad_drives(drives, message):
    with pytest.raises(CloudInitError, match=message):
        ci.vm_user_data(hostname="h", drives=drives)


# -------------------------------------------------------------------------- autologin, packages


def test_autologin_drop_ins_for_the_user():
    config = ci.vm_user_data(hostname="h", user="dev", autologin=True)
    files = _files(config)
    serial = files["/etc/systemd/system/serial-getty@ttyS0.service.d/rum-autologin.conf"]
    assert serial["content"].startswith("[Service]\nExecStart=\nExecStart=-/sbin/agetty "
                                        "--autologin dev ")
    assert "/etc/systemd/system/getty@tty1.service.d/rum-autologin.conf" in files
    assert any("systemctl daemon-reload" in line for line in config["runcmd"])
    assert not [p for p in _files(ci.vm_user_data(hostname="h")) if "getty" in p]


def test_packages():
    assert ci.vm_user_data(hostname="h", packages=["git", "curl"])["packages"] == ["git", "curl"]
    assert "packages" not in ci.vm_user_data(hostname="h")


# ---------------------------------------------------------------------------------------- extra


def test_extra_is_merged_on_top_with_lists_appended():
    extra = {
        "runcmd": ["echo extra"],
        "packages": ["vim"],
        "ssh_pwauth": True,
        "ssh_genkeytypes": ["ed25519"],
        "apt": {"preserve_sources_list": True},
    }
    before = copy.deepcopy(extra)
    config = ci.vm_user_data(hostname="h", provision_script="echo p\n", packages=["git"],
                             extra=extra)
    assert config["runcmd"][0].startswith(f"{RUNNER} provision {ci.PROVISION_PATH}")
    assert config["runcmd"][-1] == "echo extra"
    assert config["packages"] == ["git", "vim"]
    assert config["ssh_pwauth"] is True
    assert config["ssh_genkeytypes"] == ["ed25519"]
    assert config["apt"] == {"preserve_sources_list": True}
    assert extra == before


def test_deep_merge_nested_mappings_and_no_mutation():
    ours = {"a": {"b": 1, "c": [1]}, "d": 1}
    theirs = {"a": {"c": [2], "e": 3}, "d": [9]}
    merged = ci.deep_merge(ours, theirs)
    assert merged == {"a": {"b": 1, "c": [1, 2], "e": 3}, "d": [9]}
    assert ours == {"a": {"b": 1, "c": [1]}, "d": 1}
    merged["a"]["c"].append(5)
    assert theirs["a"]["c"] == [2]


# ------------------------------------------------------------------------- meta-data, network


def test_meta_data():
    assert ci.vm_meta_data(hostname="web1") == {"local-hostname": "web1"}
    assert ci.vm_meta_data(hostname="web1", instance_id="i-1") == {
        "instance-id": "i-1", "local-hostname": "web1"}
    with pytest.raises(CloudInitError, match="instance_id"):
        ci.vm_meta_data(hostname="web1", instance_id="")
    # Together with make_seed: derived id, stable, and different per host.
    one = _seed.make_seed(ci.vm_user_data(hostname="web1"), ci.vm_meta_data(hostname="web1"))
    two = _seed.make_seed(ci.vm_user_data(hostname="web2"), ci.vm_meta_data(hostname="web2"))
    assert one.instance_id.startswith("iid-") and one.instance_id != two.instance_id


def test_network_config_by_mac():
    config = ci.vm_network_config(["52:54:00:AA:bb:01", "52:54:00:aa:bb:02"])
    assert config == {"version": 2, "ethernets": {
        "nic0": {"match": {"macaddress": "52:54:00:aa:bb:01"}, "dhcp4": True},
        "nic1": {"match": {"macaddress": "52:54:00:aa:bb:02"}, "dhcp4": True},
    }}
    assert "set-name" not in json.dumps(config)


def test_network_config_without_macs():
    config = ci.vm_network_config([])
    assert config["version"] == 2
    assert config["ethernets"] == {
        "en*": {"match": {"name": "en*"}, "dhcp4": True},
        "eth*": {"match": {"name": "eth*"}, "dhcp4": True},
    }


@pytest.mark.parametrize("macs, message", [
    (["52:54:00:aa:bb"], r"macs\[0\]"),
    (["zz:54:00:aa:bb:01"], r"macs\[0\]"),
    (["52:54:00:aa:bb:01", "52:54:00:AA:BB:01"], r"macs\[1\].*given twice"),
    ("52:54:00:aa:bb:01", "single string"),
])
def test_network_config_bad_macs(macs, message):
    with pytest.raises(CloudInitError, match=message):
        ci.vm_network_config(macs)


# ------------------------------------------------------------------ cloud-init's own checks


COMBINATIONS = {
    "minimal": {"hostname": "h"},
    "keys_groups_packages": {"hostname": "web1.example.org", "user": "ops",
                             "groups": ["docker", "adm"], "ssh_authorized_keys": [KEY],
                             "packages": ["git", "curl"]},
    "scripts": {"hostname": "h", "provision_script": "#!/bin/bash\nset -e\necho \"$(id)\"\n",
                "boot_script": "echo boot   \n\tdone\n"},
    "mounts_drives_autologin": {
        "hostname": "h", "autologin": True,
        "mounts": [{"tag": "src", "target": "/src"},
                   {"tag": "ro", "target": "/ro", "readonly": True, "driver": "9p"}],
        "drives": [{"device": "/dev/vdb", "filesystem": "ext4", "target": "/data", "label": "d"},
                   {"device": "/dev/vdc", "filesystem": "btrfs"},
                   {"device": "/dev/vdd", "filesystem": "xfs", "target": "/x"}]},
    "everything_with_extra": {
        "hostname": "h", "ssh_authorized_keys": [KEY], "sudo": False, "shell": None,
        "provision_script": "echo p\n", "boot_script": "echo b\n", "autologin": True,
        "mounts": [{"tag": "t", "target": "/t"}], "packages": ["vim"],
        "extra": {"runcmd": [["echo", "extra"]], "ssh_genkeytypes": ["ed25519"],
                  "write_files": [{"path": "/etc/motd", "content": "hi\n"}]}},
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_user_data_passes_cloud_init_schema(name, tmp_path):
    _require_cloud_init()
    path = tmp_path / "user-data"
    path.write_text(_seed.render_user_data(ci.vm_user_data(**COMBINATIONS[name])))
    proc = subprocess.run([CLOUD_INIT, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Valid cloud-config" in output


def test_cloud_init_schema_check_catches_errors(tmp_path):
    """Control: the schema check above fails for wrong user-data."""
    _require_cloud_init()
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nusers: 5\nruncmd: echo\n")
    proc = subprocess.run([CLOUD_INIT, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0


def test_networkd_rendering_of_the_fallback(tmp_path):
    """cloud-init's networkd renderer uses the entry id as the name to match: it must be the glob."""
    _require_cloud_init()
    source = tmp_path / "network-config"
    source.write_text(_seed.dump_yaml(ci.vm_network_config([])))
    out = tmp_path / "out"
    subprocess.run([CLOUD_INIT, "devel", "net-convert", "-p", str(source), "-k", "yaml",
                    "-d", str(out), "-D", "debian", "-O", "networkd"],
                   capture_output=True, text=True, check=True)
    folder = out / "etc" / "systemd" / "network"
    names = sorted(line for path in folder.iterdir() for line in path.read_text().splitlines()
                   if line.startswith("Name="))
    assert names == ["Name=en*", "Name=eth*"]


# --------------------------------------------------------- the scripts, run the way cloud-init does


def _shellify(runcmd: list) -> str:
    """cloud-init's own rendering of runcmd into the script it runs."""
    _require_cloud_init()
    code = "import json, sys; from cloudinit.util import shellify; " \
           "sys.stdout.write(shellify(json.load(sys.stdin)))"
    return subprocess.run([SYSTEM_PYTHON, "-c", code], input=json.dumps(runcmd),
                          capture_output=True, text=True, check=True).stdout


class Guest:
    """The guest paths of a config relocated under tmp_path, and cloud-init's boot steps on them."""

    def __init__(self, tmp_path, config: dict):
        self.root = str(tmp_path)
        text = json.dumps(config)
        for guest in ("/var/lib/rum", "/var/lib/cloud", "/var/log/rum"):
            text = text.replace(guest, self.root + guest)
        self.config = json.loads(text)
        self.log = os.path.join(self.root, "log")
        os.makedirs(self.root + "/var/lib/cloud/instance", exist_ok=True)

    def write_files(self) -> None:
        for item in self.config.get("write_files", []):
            path = item["path"]
            if not path.startswith(self.root):
                continue  # /etc files: not needed here
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(item["content"])
            os.chmod(path, int(item["permissions"], 8))

    def per_boot(self) -> int:
        folder = self.root + "/var/lib/cloud/scripts/per-boot"
        rc = 0
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            rc |= subprocess.run([os.path.join(folder, name)], check=False).returncode
        return rc

    def runcmd(self) -> int:
        script = os.path.join(self.root, "runcmd")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(_shellify(self.config["runcmd"]))
        os.chmod(script, 0o700)
        return subprocess.run([script], check=False).returncode

    def first_boot(self) -> int:
        # cloud-init order: write_files (init), scripts_per_boot, then runcmd (scripts_user).
        self.write_files()
        rc = self.per_boot()
        return rc | self.runcmd()

    def fetch_logs(self) -> str:
        """What rum_vm_info's SSH command prints, run here on the relocated log folder."""
        command = FETCH_COMMAND.replace("sudo -n ", "").replace(LOG_DIR, self.root + LOG_DIR)
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout

    def lines(self) -> list:
        if not os.path.exists(self.log):
            return []
        with open(self.log, encoding="utf-8") as handle:
            return handle.read().split()


def test_first_boot_provisions_then_boots_and_reboots_run_boot_only(tmp_path):
    log = tmp_path / "log"
    config = ci.vm_user_data(hostname="h", provision_script=f"echo provision >> {log}\n",
                             boot_script=f"#!/bin/sh\necho boot >> {log}\n",
                             extra={"runcmd": [f"echo extra >> {log}"]})
    guest = Guest(tmp_path, config)
    assert guest.first_boot() == 0
    assert guest.lines() == ["provision", "boot", "extra"]
    assert guest.per_boot() == 0
    assert guest.lines() == ["provision", "boot", "extra", "boot"]
    logs = parse_archive(guest.fetch_logs())
    assert [(log["script"], log["status"], log["exit_status"]) for log in logs] == [
        ("boot", "ok", 0), ("boot", "ok", 0), ("provision", "ok", 0)]
    assert [log["script"] for log in select(logs, "latest")] == ["boot", "provision"]
    assert select(logs, "failed") == [] and "output" not in select(logs, "list")[0]


def test_script_logs_keep_each_scripts_newest_runs_with_output_and_status(tmp_path):
    """The guest's run-logged wrapper: output on the console and in the log, the script's status
    kept and passed on, a script without #! run by sh, and only the newest KEEP logs of a script."""
    made = tmp_path / "made"
    guest = Guest(tmp_path, ci.vm_user_data(hostname="h", boot_script=f"echo 'to stdout'\necho oops >&2\n: > {made}\nexit 7\n"))
    guest.write_files()
    old = os.umask(0o022)
    try:
        runs = [guest.per_boot() for _boot in range(KEEP + 2)]
    finally:
        os.umask(old)
    assert runs == [7] * (KEEP + 2)
    assert made.stat().st_mode & 0o777 == 0o644, "the script ran with another umask than its own"
    logs = parse_archive(guest.fetch_logs())
    assert len(logs) == KEEP and {log["status"] for log in logs} == {"failed"}
    assert logs[0]["exit_status"] == 7 and logs[0]["output"] == "to stdout\noops\n"
    assert logs == sorted(logs, key=lambda log: log["time"], reverse=True)


def test_failed_provision_fails_cloud_init_and_skips_the_rest(tmp_path):
    log = tmp_path / "log"
    config = ci.vm_user_data(hostname="h", provision_script=f"echo provision >> {log}\nexit 3\n",
                             boot_script=f"echo boot >> {log}\n",
                             extra={"runcmd": [f"echo extra >> {log}"]})
    guest = Guest(tmp_path, config)
    assert guest.first_boot() != 0
    assert guest.lines() == ["provision"]
    guest.per_boot()  # a reboot: still not provisioned, so no boot script
    assert guest.lines() == ["provision"]
    failed = select(parse_archive(guest.fetch_logs()), "failed")
    assert [(log["script"], log["exit_status"]) for log in failed] == [("provision", 3)]


def test_boot_script_without_provision_runs_on_first_boot_too(tmp_path):
    log = tmp_path / "log"
    guest = Guest(tmp_path, ci.vm_user_data(hostname="h", boot_script=f"echo boot >> {log}\n"))
    guest.write_files()
    assert guest.per_boot() == 0
    assert guest.lines() == ["boot"]


def _fake_tools(folder, mount_rc: int) -> dict:
    os.makedirs(folder, exist_ok=True)
    calls = os.path.join(folder, "calls")
    for name, body in (("mountpoint", "exit 1"), ("mount", f'echo "mount $*" >> {calls}; exit {mount_rc}')):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"#!/bin/sh\n{body}\n")
        os.chmod(path, 0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.mark.parametrize("mount_rc", [0, 32])
def test_shares_script_adds_fstab_lines_once_and_never_fails(tmp_path, mount_rc):
    targets = [str(tmp_path / "mnt" / "src"), str(tmp_path / "mnt" / "ro")]
    config = ci.vm_user_data(hostname="h", mounts=[
        {"tag": "src", "target": targets[0]},
        {"tag": "ro", "target": targets[1], "readonly": True, "driver": "9p"},
    ])
    fstab = tmp_path / "fstab"
    fstab.write_text("LABEL=root / ext4 defaults 0 1\n")
    script = tmp_path / "mount-shares"
    script.write_text(_files(config)[ci.SHARES_PATH]["content"].replace("/etc/fstab", str(fstab)))
    script.chmod(0o700)
    env = _fake_tools(str(tmp_path / "bin"), mount_rc)
    runs = [subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False)
            for attempt in ("first boot", "second run")]
    assert [run.returncode for run in runs] == [0, 0]
    proc = runs[-1]
    assert fstab.read_text().splitlines() == [
        "LABEL=root / ext4 defaults 0 1",
        f"src\t{targets[0]}\tvirtiofs\tdefaults,nofail\t0\t0",
        f"ro\t{targets[1]}\t9p\ttrans=virtio,version=9p2000.L,nofail,ro\t0\t0",
    ]
    assert all(os.path.isdir(target) for target in targets)
    assert (tmp_path / "bin" / "calls").read_text().splitlines() == [
        f"mount {targets[0]}", f"mount {targets[1]}"] * 2
    if mount_rc:
        assert "rum.pool: could not mount src on" in proc.stderr
