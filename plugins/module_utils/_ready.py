# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for a guest to be reachable: IP, SSH banner, cloud-init finished.

Internal to the rum.pool collection: not a public API. The probes are passed in, and so are the
clock and sleep, so every decision here is unit-testable without a guest.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
import typing as t

WAIT_LEVELS = ("none", "ip", "ssh", "cloud_init")


class NotReady(Exception):
    """The guest did not reach the wanted level in time; the message says which level and why."""


def tail(path: str | None, lines: int = 30, max_bytes: int = 65536) -> str:
    """The last lines of a (serial log) file, or a note that it is missing."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(serial log {path} unreadable: {exc.strerror})"
    text = "\n".join(data.replace("\r", "").splitlines()[-lines:])
    return text


def ssh_banner(host: str, port: int, timeout: float = 5.0) -> str | None:
    """The SSH server's identification line, or None when nothing answers like SSH."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return line if line.startswith("SSH-") else None


def ssh_argv(host: str, port: int, user: str, identity_file: str | None, command: str,
             connect_timeout: int = 10) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={connect_timeout}", "-p", str(port)]
    if identity_file:
        argv += ["-i", identity_file, "-o", "IdentitiesOnly=yes"]
    return argv + [f"{user}@{host}", command]


def run_ssh(host: str, port: int, user: str, identity_file: str | None, command: str,
            timeout: float = 60) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(ssh_argv(host, port, user, identity_file, command),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 255, "", f"ssh command timed out after {timeout:.0f}s"
    except FileNotFoundError:
        return 127, "", "ssh client not found (install openssh-client)"
    return proc.returncode, proc.stdout, proc.stderr


def parse_cloud_init_status(output: str) -> str:
    """'done', 'error', 'running', 'disabled' or 'unknown' from `cloud-init status` output."""
    for line in output.splitlines():
        if line.strip().startswith("status:"):
            value = line.split(":", 1)[1].strip()
            if value in ("done", "error", "running", "disabled", "not started", "degraded done"):
                return "done" if value == "degraded done" else value
    return "unknown"


class Waiter:
    """Poll a guest until it reaches a level; each level implies the ones before it."""

    def __init__(self, *, find_ip: t.Callable[[], str | None], ssh_endpoint: t.Callable[[str | None], tuple[str, int] | None],
                 ssh_user: str, identity_file: str | None,
                 banner: t.Callable[[str, int], str | None] = ssh_banner,
                 remote: t.Callable[..., tuple[int, str, str]] = run_ssh,
                 clock: t.Callable[[], float] = time.monotonic, sleep: t.Callable[[float], None] = time.sleep,
                 interval: float = 2.0) -> None:
        self.find_ip = find_ip
        self.ssh_endpoint = ssh_endpoint
        self.ssh_user = ssh_user
        self.identity_file = identity_file
        self.banner = banner
        self.remote = remote
        self.clock = clock
        self.sleep = sleep
        self.interval = interval

    def unmounted(self, host: str, port: int, targets: t.Sequence[str]) -> list[str]:
        """The ``targets`` that are not mount points in the guest, asked over SSH."""
        script = "; ".join(f"mountpoint -q {shlex.quote(target)} || echo {shlex.quote(target)}"
                           for target in targets)
        rc, out, err = self.remote(host, port, self.ssh_user, self.identity_file, script, timeout=30)
        if rc != 0:
            raise NotReady(f"could not look at the guest's mounts over SSH: {(err or out).strip()[:300]}")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def wait(self, level: str, timeout: float) -> dict:
        """Return {'ip', 'ssh_host', 'ssh_port', 'cloud_init'} reached; raise NotReady on timeout."""
        if level not in WAIT_LEVELS:
            raise ValueError(f"unknown wait level {level!r}")
        result: dict = {"ip": None, "ssh_host": None, "ssh_port": None, "cloud_init": None}
        if level == "none":
            return result
        deadline = self.clock() + timeout
        last = "no IP address yet"
        while True:
            ip = self.find_ip()
            result["ip"] = ip
            endpoint = self.ssh_endpoint(ip)
            reached = None
            if level == "ip" and ip:
                return result
            if endpoint and level in ("ssh", "cloud_init"):
                host, port = endpoint
                result["ssh_host"], result["ssh_port"] = host, port
                if self.banner(host, port):
                    if level == "ssh":
                        return result
                    rc, out, err = self.remote(host, port, self.ssh_user, self.identity_file,
                                               "cloud-init status --long || true", timeout=30)
                    status = parse_cloud_init_status(out) if rc == 0 else "unknown"
                    if status in ("done", "disabled"):
                        result["cloud_init"] = status
                        return result
                    if status == "error":
                        raise NotReady(f"cloud-init finished with errors:\n{out.strip()}")
                    reached = f"SSH answers, cloud-init is {status}" + (f" ({err.strip()[:200]})" if rc else "")
                else:
                    reached = f"{'IP ' + ip + ', ' if ip else ''}no SSH banner on {host}:{port} yet"
            elif ip:
                reached = f"IP {ip}, waiting for SSH"
            last = reached or last
            if self.clock() >= deadline:
                raise NotReady(f"timed out after {timeout:.0f}s waiting for {level}: {last}")
            self.sleep(self.interval)
