# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What rum_vm reports, exactly: the whole vm result, describe() of running, stopped, forwarded
and foreign domains, power-only runs, waiting (and the shares it checks), and the small helpers
(SSH config, forwards, mount tags and sources), against libvirt's test driver."""

from __future__ import annotations

import hashlib
import re

import pytest

from test_vm import base, manager  # pylint: disable=unused-import  # base is a fixture
from test_vm_failures import conn  # noqa: F401  pylint: disable=unused-import  # a fixture

from ansible_collections.rum.pool.plugins.module_utils import _ready as ready
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm


def ssh_command(host, port, user, identity):
    return " ".join(["ssh"] + ready.ssh_argv(host, port, user, identity, "")[1:-1])


def test_a_created_vm_is_reported_whole(conn, base, tmp_path):
    result = manager(conn, base, tmp_path, labels={"pool": "ci"}).run()
    d = f"{tmp_path}/vms/unit1"
    dom = conn.lookupByName("unit1")
    got = result["vm"]
    assert re.fullmatch(r"[0-9a-f]{16}", got.pop("config_hash"))
    assert re.fullmatch(r"iid-[0-9a-f]{16}", got.pop("instance_id"))
    digest = hashlib.sha256(open(base["url"][len("file://"):], "rb").read()).hexdigest()
    ip = got["ip"]
    assert ip and got["ip_source"] == "lease"
    assert got == {
        "name": "unit1", "uuid": dom.UUIDString(), "state": "running", "domain_type": "qemu",
        "autostart": False, "mac": "52:54:00:53:2d:02", "macs": ["52:54:00:53:2d:02"], "ip": ip,
        "ip_source": "lease", "labels": {"pool": "ci"}, "managed": True,
        "ssh": {"host": ip, "port": 22, "user": "rum", "identity_file": f"{d}/id_ed25519"},
        "ssh_command": ssh_command(ip, 22, "rum", f"{d}/id_ed25519"),
        "ssh_config": (f"Host unit1\n  HostName {ip}\n  Port 22\n  User rum\n  IdentityFile {d}/id_ed25519\n"
                       "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                       "  LogLevel ERROR\n"),
        "paths": {"dir": d, "overlay": f"{d}/disk.qcow2", "seed": f"{d}/seed.iso", "serial_log": f"{d}/serial.log",
                  "identity_file": f"{d}/id_ed25519"},
        "image": {"path": f"{tmp_path}/cache/sha256/{digest}", "digest": f"sha256:{digest}"},
    }
    assert result["changed"] is True and result["diff"]["before"] == "state: shutoff\n"
    assert result["diff"]["after"].startswith("state: running\nname: unit1\n")
    assert result["changes"][-2:] == ["define domain", "start"]


def test_describe_without_an_address(conn, base, tmp_path):
    manager(conn, base, tmp_path, user="ops").run()
    info = vm.describe(conn.lookupByName("unit1"), with_ip=False)
    assert (info["ip"], info["ip_source"], info["ssh"]["host"], info["ssh"]["user"]) == (None, None, None, "ops")
    assert info["ssh_command"] is None and info["ssh_config"] == ""
    assert "identity_file" not in info["paths"] and info["paths"]["dir"] == f"{tmp_path}/vms/unit1"


def test_describe_a_stopped_vm(conn, base, tmp_path):
    result = manager(conn, base, tmp_path, state="stopped").run()
    assert result["vm"]["state"] == "shutoff" and result["vm"]["ip"] is None and result["vm"]["ssh"]["host"] is None
    assert "start" not in result["changes"]


def test_describe_a_domain_rum_did_not_make(conn):
    info = vm.describe(conn.lookupByName("test"))
    assert (info["managed"], info["labels"], info["paths"], info["config_hash"]) == (False, {}, {}, None)
    assert info["ssh"]["user"] == "rum" and info["ssh"]["identity_file"] is None


def test_describe_a_forwarded_ssh_port_and_its_client(conn, base, tmp_path):
    manager(conn, base, tmp_path, interfaces=[{"user": True}], ports=[{"host": 2222, "guest": 22}],
            ssh_client="/usr/bin/ssh").run()
    info = vm.describe(conn.lookupByName("unit1"))
    assert (info["ssh"]["host"], info["ssh"]["port"]) == ("127.0.0.1", 2222)
    assert info["ssh_command"].startswith("/usr/bin/ssh -o BatchMode=yes ") and " -p 2222 " in info["ssh_command"]
    assert "  HostName 127.0.0.1\n  Port 2222\n" in info["ssh_config"]


# ---------------------------------------------------------------- power only (no image given)
def test_power_only_runs(conn, base, tmp_path):
    manager(conn, base, tmp_path).run()

    def power(**options):
        return vm.VMManager(vm.VMParams.from_dict(dict({"name": "unit1", "uri": "test:///default",
                                                        "storage_dir": str(tmp_path / "vms")}, **options)),
                            connect=lambda uri: conn).run()

    stopped = power(state="stopped")
    assert stopped["changes"] == ["shut down"] and stopped["vm"]["state"] == "shutoff"
    assert stopped["diff"] == {"before": "state: running\n", "after": "state: shutoff\n"}
    assert power(state="stopped")["changed"] is False
    started = power(state="running")
    assert started["changes"] == ["start"] and started["vm"]["state"] == "running"
    assert started["diff"] == {"before": "state: shutoff\n", "after": "state: running\n"}
    restarted = power(state="restarted")
    assert restarted["changes"] == ["restart"] and restarted["vm"]["state"] == "running"
    checked = vm.VMManager(vm.VMParams.from_dict({"name": "unit1", "uri": "test:///default", "state": "stopped",
                                                  "storage_dir": str(tmp_path / "vms")}),
                           connect=lambda uri: conn, check_mode=True).run()
    assert checked["changes"] == ["shut down"] and conn.lookupByName("unit1").isActive()
    with pytest.raises(vm.VMError) as info:
        vm.VMManager(vm.VMParams.from_dict({"name": "nope1", "uri": "test:///default",
                                            "storage_dir": str(tmp_path / "vms")}), connect=lambda uri: conn).run()
    assert str(info.value) == "rum_vm 'nope1': no such VM on test:///default, and image.url is required to create it"


# ---------------------------------------------------------------- waiting
class FakeWaiter:
    """Stands in for ready.Waiter: records what it was given, reaches every level at once."""

    made = []
    unmounted_targets = []

    def __init__(self, *, find_ip, ssh_endpoint, ssh_user, identity_file):
        self.find_ip, self.ssh_endpoint = find_ip, ssh_endpoint
        self.ssh_user, self.identity_file = ssh_user, identity_file
        self.asked = []
        FakeWaiter.made.append(self)

    def wait(self, level, timeout):
        self.asked.append((level, timeout))
        ip = self.find_ip()
        host, port = self.ssh_endpoint(ip)
        return {"ip": ip, "ssh_host": host, "ssh_port": port, "cloud_init": "done"}

    def unmounted(self, host, port, targets):
        self.asked.append(("mounts", host, port, list(targets)))
        return [t for t in targets if t in FakeWaiter.unmounted_targets]


@pytest.fixture
def waiter(monkeypatch):
    FakeWaiter.made = []
    FakeWaiter.unmounted_targets = []
    monkeypatch.setattr(vm.ready, "Waiter", FakeWaiter)
    yield FakeWaiter
    FakeWaiter.made = []  # they hold the test driver's domains (and so its state) alive


def test_waiting_uses_the_vm_user_key_and_timeout(conn, base, tmp_path, waiter):
    result = manager(conn, base, tmp_path, wait_for="ssh", wait_timeout=77, user="ops").run()
    (made,) = waiter.made
    assert made.asked == [("ssh", 77)]
    assert (made.ssh_user, made.identity_file) == ("ops", f"{tmp_path}/vms/unit1/id_ed25519")
    assert made.ssh_endpoint(None) is None and made.ssh_endpoint("10.0.0.9") == ("10.0.0.9", 22)
    assert result["vm"]["cloud_init"] == "done" and result["vm"]["ip"] == made.find_ip()


def test_waiting_on_a_forwarded_port(conn, base, tmp_path, waiter):
    manager(conn, base, tmp_path, interfaces=[{"user": True}], ports=[{"host": 2201, "guest": 22, "bind": "127.0.0.2"}],
            wait_for="ssh").run()
    assert waiter.made[0].ssh_endpoint(None) == ("127.0.0.2", 2201)


def test_power_only_waits_with_the_vm_key(conn, base, tmp_path, waiter):
    manager(conn, base, tmp_path, state="stopped").run()
    result = vm.VMManager(vm.VMParams.from_dict({"name": "unit1", "uri": "test:///default", "wait_for": "ip",
                                                 "wait_timeout": 9, "storage_dir": str(tmp_path / "vms")}),
                          connect=lambda uri: conn).run()
    (made,) = waiter.made
    assert made.asked == [("ip", 9)] and made.identity_file == f"{tmp_path}/vms/unit1/id_ed25519"
    assert result["vm"]["cloud_init"] == "done"


def test_shares_are_looked_at_once_cloud_init_is_done(conn, base, tmp_path, waiter):
    share = tmp_path / "share"
    share.mkdir()
    mounts = [{"source": str(share), "target": "/srv/data", "driver": "9p"},
              {"source": str(share), "target": "/", "tag": "all", "driver": "9p", "readonly": True}]
    result = manager(conn, base, tmp_path, wait_for="cloud_init", mounts=mounts).run()
    made = waiter.made[0]
    assert made.asked[-1][0] == "mounts" and made.asked[-1][3] == ["/srv/data", "/"]
    assert result["vm"]["mounts"] == [
        {"target": "/srv/data", "tag": "srv_data", "driver": "9p", "mounted": True},
        {"target": "/", "tag": "all", "driver": "9p", "mounted": True}]


def test_a_share_that_did_not_mount_fails_with_what_the_guest_said(conn, base, tmp_path, waiter):
    share = tmp_path / "share"
    share.mkdir()
    waiter.unmounted_targets = ["/srv/data"]
    (tmp_path / "vms" / "unit1").mkdir(parents=True)
    manager(conn, base, tmp_path).run()  # the VM exists, then its guest reports
    (tmp_path / "vms" / "unit1" / "serial.log").write_text(
        "boot\nmount: /srv/data: unknown filesystem type '9p'.\nrum: could not mount srv_data\nlogin:\n")
    with pytest.raises(vm.VMError) as info:
        manager(conn, base, tmp_path, wait_for="cloud_init", apply_changes="restart",
                mounts=[{"source": str(share), "target": "/srv/data", "driver": "9p"}]).run()
    assert str(info.value).startswith(
        "rum_vm 'unit1': shared folders did not mount in the guest: /srv/data (tag srv_data, 9p); does the guest "
        "kernel have that driver (Debian's cloud kernels have virtiofs, not 9p)? The guest said: "
        "mount: /srv/data: unknown filesystem type '9p'. | rum: could not mount srv_data\n")
    del info  # its traceback holds the test driver's connection (and so its domains) alive


# ---------------------------------------------------------------- small helpers
def test_ssh_config_snippets():
    assert vm.ssh_config_snippet("a", None, 22, "rum", "/k") == ""
    assert vm.ssh_config_snippet("a", "h", 2200, "u", None) == (
        "Host a\n  HostName h\n  Port 2200\n  User u\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n")


def test_ssh_forwards():
    assert vm.ssh_forward({}) is None and vm.ssh_forward({"ports": None}) is None
    assert vm.ssh_forward({"ports": [{"host": 8080, "guest": 80}]}) is None
    assert vm.ssh_forward({"ports": [{"host": 8080, "guest": 80}, {"host": "2222", "guest": "22"}]}) == ("127.0.0.1", 2222)
    assert vm.ssh_forward({"ports": [{"host": 2222, "guest": 22, "bind": "0.0.0.0"}]}) == ("0.0.0.0", 2222)


def test_mount_tags_and_paths():
    assert vm._mount_tag({"target": "/srv/a/b"}) == "srv_a_b"  # pylint: disable=protected-access
    assert vm._mount_tag({"target": "/"}) == "root"  # pylint: disable=protected-access
    assert vm._mount_tag({"target": "/x", "tag": "mine"}) == "mine"  # pylint: disable=protected-access
    assert vm.mount_driver({}) == vm.DEFAULT_MOUNT_DRIVER and vm.mount_driver({"driver": "9p"}) == "9p"
    paths = vm.Paths.for_vm("/s", "web")
    assert paths.drive("data") == "/s/web/drive-data.qcow2" and paths.lock == "/s/.locks/web.lock"
    assert (paths.nvram, paths.identity) == ("/s/web/nvram.fd", "/s/web/id_ed25519")


def test_mount_sources():
    assert vm.resolve_mount_source("/a/../b/", None) == "/b"
    assert vm.resolve_mount_source(".", "/p/q") == "/p/q"
    assert vm.resolve_mount_source("sub/../x", "/p") == "/p/x"
    with pytest.raises(ValueError) as info:
        vm.resolve_mount_source("rel", None)
    assert str(info.value) == "'rel' is relative: set project_dir (rum: the rum.toml's folder)"
    asked = []
    assert vm.resolve_mount_source("git", "/p/q", run=lambda argv: asked.append(argv) or (0, "/p\n", "")) == "/p"
    assert asked == [["git", "-C", "/p/q", "rev-parse", "--show-toplevel"]]
    with pytest.raises(ValueError) as info:
        vm.resolve_mount_source("git", "/p", run=lambda argv: (128, "", "fatal: not a git repository\n"))
    assert str(info.value) == "'git': the top of the git work tree of /p is unknown: fatal: not a git repository"
    with pytest.raises(ValueError) as info:
        vm.resolve_mount_source("git", "/p", run=lambda argv: (3, "", ""))
    assert str(info.value) == "'git': the top of the git work tree of /p is unknown: git exited 3"


def test_the_default_command_runner():
    assert vm._run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")  # pylint: disable=protected-access


def test_read_meta_tolerates_bad_json(conn, base, tmp_path):
    manager(conn, base, tmp_path, name="meta1").run()
    xml = conn.lookupByName("meta1").XMLDesc(0)
    meta = vm.read_meta(xml)
    assert meta["paths"]["dir"] == f"{tmp_path}/vms/meta1" and meta["ports"] == []
    broken = xml.replace(">[]<", ">not json<", 1)
    assert vm.read_meta(broken)["ports"] is None
    assert vm.read_meta("<domain><name>x</name></domain>") == {}
