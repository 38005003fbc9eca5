# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-script logs: what ``rum log`` showed, kept in the guest and read from the host over SSH.

Internal to the rum.pool collection: not a public API.

Guest side: cloud-init runs a VM's provision (first boot) and boot (every boot) scripts through
``RUNNER`` (``runner_script()``), which keeps each run's output, still shown on the console, in
``LOG_DIR/<UTC time>_<script>_<ok|failed>.log`` (root only) ending with a line giving the exit
status, and keeps the newest ``KEEP`` logs of each script, as rum did.

Host side: ``fetch()`` reads them over SSH as one base64 tar stream (``sudo -n``: the logs are
root's) and ``select()`` picks what ``rum log``, ``rum log --failed`` and ``rum log --list`` showed.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import tarfile
import typing as t

from ansible_collections.rum.pool.plugins.module_utils import _ready as ready

LOG_DIR = "/var/log/rum/scripts"
RUNNER = "/var/lib/rum/run-logged"
KEEP = 10
STATUS_PREFIX = "[rum.pool] exit status "
MODES = ("none", "list", "latest", "failed", "all")

_NAME = re.compile(r"(?P<time>\d{8}T\d{6}(?:\.\d+)?Z)_(?P<script>[a-z0-9-]+)_(?P<status>ok|failed)\.log\Z")


class ScriptLogError(Exception):
    """The logs could not be read; the message says from where and why."""


def runner_script() -> str:
    """The guest's ``run-logged NAME SCRIPT``: runs SCRIPT (directly when it has ``#!``, else with
    /bin/sh), shows its output, keeps it with its exit status, and exits with that status."""
    return "\n".join([
        "#!/bin/sh",
        "# Written by rum.pool (cloud-init): run one of the VM's scripts and keep its output and exit",
        f"# status in {LOG_DIR}, the newest {KEEP} of each script (rum.pool's script logs).",
        "set -u",
        'name=$1 script=$2',
        f"dir=${{RUM_SCRIPT_LOGS:-{LOG_DIR}}}  # the variable is for tests",
        'mkdir -p "$dir" && chmod 0700 "$dir"',
        'stamp=$(date -u +%Y%m%dT%H%M%S.%NZ)',
        'work="$dir/.$stamp.$name.running"',
        "# The folder is root's alone (0700); the script keeps the umask it would have had without us.",
        'if [ "$(head -c 2 "$script")" = "#!" ]; then set -- "$script"; else set -- /bin/sh "$script"; fi',
        "# The output goes to the console (cloud-init's log) and to the log; the status through a file,",
        "# as a POSIX shell has no pipefail.",
        '{ "$@" 2>&1; echo $? > "$work.status"; } | tee "$work"',
        'status=$(cat "$work.status" 2>/dev/null || echo 255)',
        f'echo "{STATUS_PREFIX}$status" >> "$work"',
        'if [ "$status" -eq 0 ]; then result=ok; else result=failed; fi',
        'mv -f "$work" "$dir/${stamp}_${name}_${result}.log"',
        'rm -f "$work.status"',
        f'ls -1 "$dir" | grep "_${{name}}_" | sort -r | tail -n +{KEEP + 1} | while read -r old; do '
        'rm -f "$dir/$old"; done',
        'exit "$status"',
        "",
    ])


def run_line(name: str, path: str) -> str:
    """The shell line that runs the script at ``path`` as log ``name``."""
    return f"{RUNNER} {name} {path}"


# The host's side: one command, its output parsed here.
FETCH_COMMAND = (f"sudo -n sh -c 'cd {LOG_DIR} 2>/dev/null || exit 0; set -- *.log; "
                 "[ -e \"$1\" ] || exit 0; tar -cf - -- \"$@\" | base64'")


def parse_archive(encoded: str) -> list[dict]:
    """The logs in FETCH_COMMAND's output, newest first: file, script, status, exit_status, time, output."""
    if not encoded.strip():
        return []
    try:
        raw = base64.b64decode("".join(encoded.split()), validate=True)
        archive = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except (binascii.Error, tarfile.TarError) as exc:
        raise ScriptLogError(f"the guest's script logs came back unreadable: {exc}") from exc
    logs = []
    with archive:
        for member in archive.getmembers():
            match = _NAME.match(member.name)
            handle = archive.extractfile(member) if member.isfile() else None
            if not match or handle is None:
                continue
            text = handle.read().decode("utf-8", "replace")
            body, _sep, last = text.rstrip("\n").rpartition("\n")
            if last.startswith(STATUS_PREFIX) and last[len(STATUS_PREFIX):].strip().isdigit():
                exit_status: int | None = int(last[len(STATUS_PREFIX):])
                output = body + "\n" if body else ""
            else:  # a log cut short (the guest went down mid-script)
                exit_status, output = None, text
            stamp = match.group("time")
            logs.append({"file": member.name, "script": match.group("script"), "status": match.group("status"),
                         "exit_status": exit_status, "output": output,
                         "time": f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:]}"})
    return sorted(logs, key=lambda log: log["file"], reverse=True)  # the name starts with a fixed-width time


def select(logs: list[dict], mode: str) -> list[dict]:
    """``list``: every log without output (``rum log --list``); ``latest``: the newest log of each
    script (the first is ``rum log``); ``failed``: the newest failed log of each script (the first is
    ``rum log --failed``); ``all``: every log with output."""
    if mode not in MODES or mode == "none":
        raise ValueError(f"script_logs must be one of {', '.join(MODES[1:])}, got {mode!r}")
    if mode == "list":
        return [{k: v for k, v in log.items() if k != "output"} for log in logs]
    if mode == "all":
        return list(logs)
    seen: set[str] = set()
    picked = []
    for log in logs:
        if log["script"] in seen or (mode == "failed" and log["status"] != "failed"):
            continue
        seen.add(log["script"])
        picked.append(log)
    return picked


def fetch(remote: t.Callable[..., tuple[int, str, str]], host: str, port: int, user: str,
          identity: str | None) -> list[dict]:
    """Every kept log of the guest at host:port, newest first (``remote`` is ``_ready.run_ssh``)."""
    rc, out, err = remote(host, port, user, identity, FETCH_COMMAND, timeout=60)
    if rc != 0:
        raise ScriptLogError(f"reading {LOG_DIR} over SSH ({user}@{host}:{port}) failed with exit status "
                             f"{rc}: {(err or out).strip()[:300]}")
    return parse_archive(out)


def attach(vms: list[dict], mode: str,
           remote: t.Callable[..., tuple[int, str, str]] | None = None) -> list[str]:
    """Add ``script_logs`` (``select(..., mode)``) to each of rum_vm_info's VMs that runs, None to the
    others (a stopped guest's logs are on its disk); returns the problems, one per VM that runs but
    whose logs could not be read."""
    remote = remote or ready.run_ssh
    problems = []
    for vm in vms:
        ssh = vm.get("ssh") or {}
        vm["script_logs"] = None
        if vm.get("state") != "running":
            continue
        if not ssh.get("host"):
            problems.append(f"{vm['name']}: no address to read its script logs from yet")
            continue
        try:
            vm["script_logs"] = select(fetch(remote, ssh["host"], ssh["port"], ssh["user"], ssh.get("identity_file")), mode)
        except ScriptLogError as exc:
            problems.append(f"{vm['name']}: {exc}")
    return problems
