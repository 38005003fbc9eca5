# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One playbook run that outlives the service: ``python -m rum_pool_webhook.runner_job RUN_DIR``.

The ansible-runner dispatcher writes ``RUN_DIR/job.json`` and starts this module in a session of
its own, so a service that is killed (or restarted) mid-run does not take the playbook with it:
the next start of the service finds the run by its handle and follows it to its end instead of
starting a second one.

It runs the playbook through ansible-runner, appends one progress line per task event to
``RUN_DIR/progress``, deletes the playbook's inputs (``env/``, ``job.json``) and kills what is
left of the run's processes when it ends, and writes ``RUN_DIR/result.json`` last (atomically):
status, rc, the first failure, and what the play published with ``set_stats``. SIGTERM asks
ansible-runner to cancel the run.

Progress lines carry task names, hosts and statuses only; a failure's ``msg`` comes from
Ansible's already-censored result (``no_log`` tasks give only the censored marker).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
import threading
from typing import Any, Callable, Mapping

JOB = "job.json"
PROGRESS = "progress"
RESULT = "result.json"
RUN_MARKER = "RUM_POOL_WEBHOOK_RUN"
# Processes a run starts to outlive it, by their name (/proc/<pid>/comm): rum_vm's and rum_slots'
# seed watcher (it ejects and deletes each new guest's seed, with its runner credential, once the
# guest has read it; a recreate starts it and returns long before the guest boots).
DETACHED_ON_PURPOSE = frozenset({b"rum-seed-watch"})


def task_title(data: Mapping[str, Any]) -> str:
    name = str(data.get("task") or data.get("name") or data.get("task_action") or "?")
    role = data.get("role")
    if role and not name.startswith(f"{role} : "):
        return f"{role} : {name}"
    return name


def failure_text(res: Any) -> str:
    """The ``msg`` of a failed result; never more than that (and nothing for no_log tasks)."""
    if not isinstance(res, Mapping):
        return "failed"
    if "censored" in res:
        return "output hidden (no_log)"
    msg = res.get("msg") or res.get("reason")
    if msg:
        return str(msg)
    return "failed"


class EventReporter:
    """Turns ansible-runner events into progress lines; keeps the first failure and the stats."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.first_failure: str | None = None
        self.failures = 0
        self.stats: dict[str, Any] = {}

    def __call__(self, event: Mapping[str, Any]) -> bool:
        try:
            self._handle(event)
        except Exception:  # pylint: disable=broad-except  # never break the run over a log line
            pass
        return True  # let ansible-runner keep the event in the artifact dir

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            custom = data.get("artifact_data")
            if isinstance(custom, dict):
                self.stats = custom
            return
        if kind == "playbook_on_task_start":
            self.write(f"TASK [{task_title(data)}]")
            return
        host = data.get("host") or "?"
        res = data.get("res")
        if kind == "runner_on_ok":
            changed = isinstance(res, Mapping) and bool(res.get("changed"))
            status = "changed" if changed else "ok"
        elif kind == "runner_on_skipped":
            status = "skipping"
        elif kind == "runner_on_unreachable":
            status = "unreachable"
            self._failed(data, res, "unreachable")
        elif kind == "runner_on_failed":
            if data.get("ignore_errors"):
                status = "failed (ignored)"
            else:
                status = "failed"
                self._failed(data, res, "failed")
        else:
            return
        self.write(f"TASK [{task_title(data)}] {host}: {status}")

    def _failed(self, data: Mapping[str, Any], res: Any, how: str) -> None:
        self.failures += 1
        if self.first_failure is None:
            host = data.get("host") or "?"
            where = host if how == "failed" else f"{host} {how}"
            self.first_failure = f"TASK [{task_title(data)}] {where}: {failure_text(res)}"


def leftover_processes(marker: str, proc: str = "/proc", exclude: int | None = None) -> list[int]:
    """Pids whose environment holds ``RUM_POOL_WEBHOOK_RUN=<marker>`` (Linux; [] elsewhere).

    ansible-core puts each task's worker process in a session of its own, so when ansible-runner
    kills the playbook's process group (timeout, cancel) a worker can go on alone, still acting
    on the slot. Every process of a run inherits the marker, which finds them wherever they are.
    This process (and ``exclude``) are never listed; neither are zombies, nor the helpers named in
    ``DETACHED_ON_PURPOSE``.
    """
    needle = f"{RUN_MARKER}={marker}".encode()
    found: list[int] = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    skip = {os.getpid(), exclude}
    for entry in entries:
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open(os.path.join(proc, entry, "environ"), "rb") as fh:
                if needle in fh.read().split(b"\0") and not _zombie(proc, entry) and not _on_purpose(proc, entry):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours to read
    return sorted(found)


def _on_purpose(proc: str, entry: str) -> bool:
    try:
        with open(os.path.join(proc, entry, "comm"), "rb") as fh:
            return fh.read().strip() in DETACHED_ON_PURPOSE
    except OSError:
        return False


def _zombie(proc: str, entry: str) -> bool:
    try:
        with open(os.path.join(proc, entry, "stat"), "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def describe_process(pid: int, proc: str = "/proc", limit: int = 120) -> str:
    """``pid (name: command line)`` for a log line; what /proc no longer has is left out."""
    what = str(pid)
    try:
        with open(os.path.join(proc, str(pid), "comm"), "rb") as fh:
            name = fh.read().strip().decode("utf-8", "replace")
    except OSError:
        return what
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as fh:
            args = fh.read(4096).replace(b"\0", b" ").strip().decode("utf-8", "replace")
    except OSError:
        args = ""
    if len(args) > limit:
        args = args[: limit - 3] + "..."
    return f"{what} ({name}: {args})" if args else f"{what} ({name})"


def kill_leftovers(marker: str, proc: str = "/proc", kill: Callable[[int, int], None] = os.kill,
                   exclude: int | None = None, said: list[str] | None = None) -> list[int]:
    """SIGKILL what is left of a run (see leftover_processes); return the pids signalled.

    With ``said``, each process is described there (``describe_process``) before it is killed.
    """
    pids = leftover_processes(marker, proc, exclude)
    for pid in pids:
        if said is not None:
            said.append(describe_process(pid, proc))
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def make_private(path: str) -> None:
    """Take group/other access away from everything under ``path`` (ansible-runner leaves
    some of its artifact files and directories at the umask's mode)."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                    os.chmod(full, stat.S_IMODE(st.st_mode) & 0o700)
            except OSError:
                pass
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


def write_json(path: str, data: Any) -> None:
    """Write ``data`` to ``path`` atomically, 0600, synced to disk."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when it is missing or not (yet) whole."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def execute(run_dir: str, spec: Mapping[str, Any], runner_module: Any,
            cancelled: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Run the playbook ``spec`` describes in ``run_dir``; write and return the result."""
    progress = open(os.path.join(run_dir, PROGRESS), "a", encoding="utf-8")  # noqa: SIM115
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            progress.write(" ".join(line.split()) + "\n")
            progress.flush()

    reporter = EventReporter(write)
    kwargs: dict[str, Any] = dict(
        private_data_dir=run_dir, ident=spec["ident"], playbook=spec["playbook"],
        inventory=spec["inventory"], extravars=dict(spec.get("extravars") or {}),
        envvars=dict(spec.get("envvars") or {}), quiet=True, event_handler=reporter,
        cancel_callback=cancelled,
    )
    if spec.get("timeout"):
        kwargs["timeout"] = int(spec["timeout"])
    if spec.get("project_dir") and os.path.isdir(spec["project_dir"]):
        kwargs["project_dir"] = spec["project_dir"]  # its ansible.cfg applies, as from a shell
    result: dict[str, Any] = {"ident": spec["ident"]}
    try:
        runner = runner_module.run(**kwargs)
    except Exception as exc:  # pylint: disable=broad-except  # ansible-runner raises many kinds
        text = " ".join(str(exc).split())
        result.update(status="error", rc=None,
                      error=f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    else:
        config = getattr(runner, "config", None)
        result.update(
            status=getattr(runner, "status", None) or "unknown", rc=getattr(runner, "rc", None),
            artifact_dir=getattr(config, "artifact_dir", None),
            first_failure=reporter.first_failure, stats=reporter.stats)
    finally:
        progress.close()
        shutil.rmtree(os.path.join(run_dir, "env"), ignore_errors=True)
        try:
            os.unlink(os.path.join(run_dir, JOB))
        except OSError:
            pass
        marker = (spec.get("envvars") or {}).get(RUN_MARKER)
        if marker:
            said: list[str] = []
            result["stray"] = kill_leftovers(marker, said=said)
            result["stray_said"] = said
    make_private(run_dir)
    write_json(os.path.join(run_dir, RESULT), result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m rum_pool_webhook.runner_job RUN_DIR\n")
        return 2
    run_dir = os.path.abspath(args[0])
    spec = read_json(os.path.join(run_dir, JOB))
    if not isinstance(spec, dict):
        sys.stderr.write(f"{run_dir}: no readable {JOB}\n")
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    import ansible_runner  # pylint: disable=import-outside-toplevel

    result = execute(run_dir, spec, ansible_runner, stop.is_set)
    return 0 if result.get("status") == "successful" else 1


if __name__ == "__main__":
    sys.exit(main())
