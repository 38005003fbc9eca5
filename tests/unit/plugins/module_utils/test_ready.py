"""Readiness decisions with fake probes and a fake clock."""

from __future__ import annotations

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _ready as ready


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def make(clock, ips, banner_after=None, statuses=()):
    ips = list(ips)
    statuses = list(statuses)

    def find_ip():
        return ips.pop(0) if len(ips) > 1 else ips[0]

    def banner(host, port):
        return "SSH-2.0-OpenSSH_9.2" if banner_after is not None and clock.now >= banner_after else None

    def remote(host, port, user, identity, command, timeout=30):
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return 0, f"status: {status}\n", ""

    return ready.Waiter(find_ip=find_ip, ssh_endpoint=lambda ip: (ip, 22) if ip else None, ssh_user="rum",
                        identity_file="/k", banner=banner, remote=remote, clock=clock, sleep=clock.sleep,
                        interval=1)


def test_wait_ip():
    clock = Clock()
    w = make(clock, [None, None, "10.0.0.2"])
    assert w.wait("ip", 30)["ip"] == "10.0.0.2"
    assert clock.now == 2


def test_wait_ssh_needs_banner():
    clock = Clock()
    w = make(clock, ["10.0.0.2"], banner_after=5)
    out = w.wait("ssh", 30)
    assert out["ssh_host"] == "10.0.0.2" and out["ssh_port"] == 22
    assert clock.now == 5


def test_wait_cloud_init_polls_until_done():
    clock = Clock()
    w = make(clock, ["10.0.0.2"], banner_after=0, statuses=["running", "running", "done"])
    assert w.wait("cloud_init", 60)["cloud_init"] == "done"


def test_wait_cloud_init_error_fails_at_once():
    clock = Clock()
    w = make(clock, ["10.0.0.2"], banner_after=0, statuses=["error"])
    with pytest.raises(ready.NotReady, match="cloud-init finished with errors"):
        w.wait("cloud_init", 60)
    assert clock.now == 0


def test_timeout_names_the_level_and_the_last_observation():
    clock = Clock()
    w = make(clock, ["10.0.0.9"], banner_after=None)
    with pytest.raises(ready.NotReady, match=r"timed out after 10s waiting for ssh: IP 10.0.0.9, no SSH banner"):
        w.wait("ssh", 10)


def test_none_returns_at_once():
    clock = Clock()
    assert make(clock, [None]).wait("none", 1)["ip"] is None


@pytest.mark.parametrize("text,expected", [
    ("status: done\n", "done"), ("\nstatus: running\ntime: x", "running"), ("status: error", "error"),
    ("status: degraded done", "done"), ("garbage", "unknown"),
])
def test_parse_cloud_init_status(text, expected):
    assert ready.parse_cloud_init_status(text) == expected


def test_tail(tmp_path):
    log = tmp_path / "serial.log"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(100)))
    assert ready.tail(str(log), 3) == "line 97\nline 98\nline 99"
    assert "unreadable" in ready.tail(str(tmp_path / "missing"))


def test_ssh_argv_uses_identity_and_port():
    argv = ready.ssh_argv("127.0.0.1", 2222, "rum", "/k/id", "true")
    assert argv[0] == "ssh" and "-p" in argv and "2222" in argv and "-i" in argv and argv[-2:] == ["rum@127.0.0.1", "true"]


def _waiter_with(remote):
    return ready.Waiter(find_ip=lambda: None, ssh_endpoint=lambda ip: None, ssh_user="rum", identity_file="/k",
                        remote=remote)


def test_unmounted_runs_mountpoint_for_each_target_and_lists_the_missing():
    """The command is real shell: run here against this machine's own mounts."""
    import subprocess  # pylint: disable=import-outside-toplevel

    seen = []

    def remote(host, port, user, identity, command, timeout=30):
        seen.append(command)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    missing = _waiter_with(remote).unmounted("h", 22, ["/", "/proc", "/rum/not mounted", "/tmp/x'y"])
    assert missing == ["/rum/not mounted", "/tmp/x'y"]
    assert "mountpoint -q '/rum/not mounted'" in seen[0]


def test_unmounted_fails_when_ssh_fails():
    with pytest.raises(ready.NotReady, match="could not look at the guest's mounts over SSH: Permission denied"):
        _waiter_with(lambda *a, **k: (255, "", "Permission denied (publickey)")).unmounted("h", 22, ["/src"])
