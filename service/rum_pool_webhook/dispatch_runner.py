# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ansible-runner dispatcher: run ``recreate.yml`` (or ``pool.yml``) on this machine.

Each attempt gets a private run directory, ``<state_dir>/runs/<task id>-<attempt>`` (0700),
whose name is also the run's ansible-runner ident. The playbook runs in a process of its own
(``runner_job``, in a new session), so it survives the service: the dispatcher records the run's
handle (ident, run directory, marker, and the launcher's pid) before it counts the run as
launched, then follows the run's progress file and waits for its ``result.json``. A service that
was killed finds the handle at its next start and follows the same run to its end, or, when the
run left nothing behind (it never started), launches it then; it never runs one attempt twice.

ansible-runner writes ``env/extravars`` and ``env/envvars`` in the run directory (0600) and keeps
the artifacts (stdout, events, and the command with its environment) under
``artifacts/<ident>``. When the run ends its inputs are deleted, and nothing under the run
directory is left readable by group or others. Only the newest ``keep_runs`` run directories
are kept.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Mapping

from . import runner_job
from .dispatch import SERVICE_SECRET_ENV, DispatchError, one_line, safe_log
from .runner_job import RUN_MARKER, describe_process, kill_leftovers, leftover_processes, make_private, read_json
from .tasks import RECONCILE, TASK_VARS, LogFn, RecordFn, Result, Task, outcome_of, outcome_said, task_vars

_RUN_NAME = re.compile(r"^([0-9]+)-([0-9]+)$")
# After a run's deadline (its timeout plus this), the launcher is told to stop; after as much
# again it is killed with everything the run left.
DEADLINE_GRACE = 30.0
# A run recorded as launching that shows no sign of life yet may still be starting up.
START_GRACE = 3.0
# The launcher writes result.json last and exits right after it: how long it has for that before it
# counts as a leftover of its own run.
EXIT_GRACE = 2.0


# --------------------------------------------------------------------------------------------
# Finding the playbook
# --------------------------------------------------------------------------------------------

DEFAULT_COLLECTION_PATHS = ("~/.ansible/collections", "/usr/share/ansible/collections")


def _checkout_root() -> str | None:
    """The repository root when this package runs from a rum.pool checkout, else None."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    galaxy = os.path.join(root, "galaxy.yml")
    try:
        with open(galaxy, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    if re.search(r"^namespace:\s*rum\s*$", text, re.M) and re.search(r"^name:\s*pool\s*$", text, re.M):
        return root
    return None


def collection_roots(environ: Mapping[str, str] | None = None,
                     checkout: str | None = None) -> list[str]:
    """Directories where the rum.pool collection may be installed, in search order.

    ``ANSIBLE_COLLECTIONS_PATH`` (or the older ``ANSIBLE_COLLECTIONS_PATHS``) first, then
    Ansible's default paths, Python's ``site-packages``, and last the checkout this package
    runs from. Entries may name the directory holding ``ansible_collections`` or that
    directory itself, as Ansible accepts both.
    """
    env = os.environ if environ is None else environ
    raw = env.get("ANSIBLE_COLLECTIONS_PATH") or env.get("ANSIBLE_COLLECTIONS_PATHS") or ""
    entries = [p for p in raw.split(os.pathsep) if p] + list(DEFAULT_COLLECTION_PATHS)
    entries += [p for p in sys.path if p and p.endswith("-packages")]
    roots: list[str] = []
    for entry in entries:
        base = os.path.expanduser(entry)
        if os.path.basename(os.path.normpath(base)) == "ansible_collections":
            roots.append(os.path.join(base, "rum", "pool"))
        else:
            roots.append(os.path.join(base, "ansible_collections", "rum", "pool"))
    if checkout:
        roots.append(checkout)
    seen = set()
    return [r for r in roots if not (r in seen or seen.add(r))]


def resolve_playbook(playbook: str, project_dir: str | None = None,
                     environ: Mapping[str, str] | None = None,
                     checkout: str | None = "auto") -> tuple[str, str | None]:
    """Return (absolute playbook path, collection root or None); raise DispatchError if absent.

    An absolute ``playbook`` is used as it is. A relative one is looked up under
    ``<project_dir>/playbooks``, or without ``project_dir`` under the ``playbooks`` directory
    of the installed collection (see ``collection_roots``).
    """
    if os.path.isabs(playbook):
        if not os.path.isfile(playbook):
            raise DispatchError(f"dispatcher.playbook {playbook}: no such file")
        return playbook, project_dir
    if project_dir:
        path = os.path.join(project_dir, "playbooks", playbook)
        if not os.path.isfile(path):
            raise DispatchError(
                f"dispatcher.playbook {playbook!r}: not found as {path} "
                f"(dispatcher.project_dir should be the collection's directory, the one with playbooks/)")
        return os.path.abspath(path), os.path.abspath(project_dir)
    if checkout == "auto":
        checkout = _checkout_root()
    roots = collection_roots(environ, checkout)
    for root in roots:
        path = os.path.join(root, "playbooks", playbook)
        if os.path.isfile(path):
            return os.path.abspath(path), os.path.abspath(root)
    raise DispatchError(
        f"dispatcher.playbook {playbook!r}: not found in the rum.pool collection; looked in "
        + ", ".join(os.path.join(r, "playbooks") for r in roots)
        + " (install the collection, set dispatcher.project_dir, or give an absolute path)")


def _path_with_ansible(environ: Mapping[str, str]) -> str | None:
    """A PATH that finds the ansible-playbook installed beside this Python (in its venv) first.

    ansible-runner runs ``ansible-playbook`` from PATH; a service started as
    ``/opt/venv/bin/rum-pool-webhook`` often has no venv on PATH. None: leave PATH alone.
    """
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    beside = os.path.join(bindir, "ansible-playbook")
    if not (os.path.isfile(beside) and os.access(beside, os.X_OK)):
        return None
    path = environ.get("PATH", os.defpath)
    found = shutil.which("ansible-playbook", path=path)
    if found and os.path.realpath(found) == os.path.realpath(beside):
        return None
    return bindir + os.pathsep + path if path else bindir


# --------------------------------------------------------------------------------------------
# The run's process
# --------------------------------------------------------------------------------------------

def _first_error_line(artifact_dir: str) -> str | None:
    """An ``ERROR!`` line from the run's stdout, for runs that failed before any task did."""
    path = os.path.join(artifact_dir, "stdout")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    for line in lines:
        clean = ansi.sub("", line).strip()
        if clean.startswith("ERROR!") or clean.startswith("[ERROR]:"):
            return clean
    return None


def _exits(launched: Any, seconds: float, step: float = 0.02) -> bool:
    """Whether ``launched`` is gone within about ``seconds`` (looked at every ``step``)."""
    for _look in range(int(seconds / step)):
        if not launched.alive():
            return True
        time.sleep(step)
    return not launched.alive()


def pid_alive(pid: int | None, marker: str, proc: str = "/proc") -> bool:
    """True while ``pid`` runs and carries the run's marker (not a reused pid, not a zombie)."""
    if not pid:
        return False
    return int(pid) in leftover_processes(marker, proc, exclude=-1)


class _Launched:
    """A launcher process this service started (reaped by ``poll``)."""

    def __init__(self, popen: subprocess.Popen, marker: str):
        self.popen = popen
        self.pid = popen.pid
        self.marker = marker

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        try:
            self.popen.send_signal(signum)
        except OSError:
            pass


class _Adopted:
    """A launcher started by an earlier run of the service, known by its pid and marker."""

    def __init__(self, pid: int | None, marker: str):
        self.pid = pid
        self.marker = marker

    def alive(self) -> bool:
        if self.pid and pid_alive(self.pid, self.marker):
            return True
        # Without a pid (or once the launcher is gone), any process of the run still counts.
        return bool(leftover_processes(self.marker))

    def signal(self, signum: int) -> None:
        if self.pid and pid_alive(self.pid, self.marker):
            try:
                os.kill(self.pid, signum)
            except OSError:
                pass


class _InThread:
    """``runner_job.execute`` in a thread of this process (tests, with a stand-in ansible_runner)."""

    def __init__(self, run_dir: str, spec: Mapping[str, Any], runner_module: Any):
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=runner_job.execute, name="rum-pool-run",
                                        args=(run_dir, spec, runner_module, self._stop.is_set),
                                        daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def signal(self, signum: int) -> None:
        self._stop.set()


def spawn_process(run_dir: str, env: Mapping[str, str]) -> _Launched:
    """Start ``python -m rum_pool_webhook.runner_job RUN_DIR`` in a session of its own."""
    with open(os.path.join(run_dir, "launcher.log"), "ab") as log:
        popen = subprocess.Popen(  # pylint: disable=consider-using-with  # followed, then reaped
            [sys.executable, "-m", "rum_pool_webhook.runner_job", run_dir], cwd=run_dir,
            env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    return _Launched(popen, env[RUN_MARKER])


class AnsibleRunnerDispatcher:
    """Run the collection's playbooks through ansible-runner, one private run dir per attempt."""

    kind = "ansible-runner"

    def __init__(self, playbook: str, inventory: str, extravars: Mapping[str, Any] | None = None,
                 envvars: Mapping[str, Any] | None = None,
                 state_dir: str = "/var/lib/rum-pool-webhook", keep_runs: int = 50,
                 timeout: float | None = 1800, runner_module: Any = None,
                 clock: Callable[[], float] = time.time, project_dir: str | None = None,
                 environ: Mapping[str, str] | None = None, reconcile_playbook: str = "pool.yml",
                 spawn: Callable[[str, Mapping[str, str]], Any] | None = None,
                 poll_seconds: float = 0.2):
        if runner_module is None:
            try:
                import ansible_runner  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
            except ImportError as exc:
                raise DispatchError(
                    "dispatcher.kind 'ansible-runner': the ansible-runner library is not installed "
                    f"({exc}); pip install 'rum-pool-webhook[ansible-runner]', or use kind 'awx'"
                ) from None
            self._spawn = spawn or spawn_process
        else:
            self._spawn = spawn or (lambda run_dir, _env: _InThread(run_dir, read_json(
                os.path.join(run_dir, runner_job.JOB)), runner_module))
        self.playbook, self.project_dir = resolve_playbook(playbook, project_dir, environ)
        self.playbook_name = os.path.basename(self.playbook)
        try:
            self.reconcile_playbook: str | None = resolve_playbook(
                reconcile_playbook, self.project_dir, environ)[0]
        except DispatchError:
            self.reconcile_playbook = None  # only an error when a reconcile is asked for
        self._reconcile_spec = reconcile_playbook
        inventory_path = os.path.abspath(os.path.expanduser(inventory))
        if not os.path.exists(inventory_path):
            raise DispatchError(f"dispatcher.inventory {inventory_path}: no such file or directory")
        self.inventory = inventory_path
        self.extravars = dict(extravars or {})
        self.envvars = {str(k): str(v) for k, v in (envvars or {}).items()}
        env = os.environ if environ is None else environ
        self._environ = dict(env)
        for name in SERVICE_SECRET_ENV:
            if env.get(name) and name not in self.envvars:
                self.envvars[name] = ""
        if "PATH" not in self.envvars:
            path = _path_with_ansible(env)
            if path:
                self.envvars["PATH"] = path
        self.runs_dir = os.path.join(os.path.abspath(state_dir), "runs")
        self.keep_runs = max(int(keep_runs), 0)
        self.timeout = int(math.ceil(timeout)) if timeout else None
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._detach = threading.Event()

    def detach_all(self) -> None:
        """Stop following runs (the service is stopping); the runs go on, and the next start
        of the service follows them by their handles."""
        self._detach.set()

    def extravars_for(self, task: Task) -> dict[str, Any]:
        values = {name: value for name, value in self.extravars.items() if name not in TASK_VARS}
        values.update(task_vars(task))
        return values

    def _playbook_for(self, task: Task) -> str:
        if task.kind != RECONCILE:
            return self.playbook
        if self.reconcile_playbook is None:
            raise DispatchError(f"reconcile.playbook {self._reconcile_spec!r}: not found next to "
                                f"{self.playbook}")
        return self.reconcile_playbook

    def _make_run_dir(self, name: str) -> str:
        os.makedirs(self.runs_dir, mode=0o700, exist_ok=True)
        os.chmod(self.runs_dir, 0o700)
        run_dir = os.path.join(self.runs_dir, name)
        if os.path.lexists(run_dir):
            # A leftover of an attempt that never started: its env files would otherwise be
            # reused by ansible-runner instead of this attempt's values.
            shutil.rmtree(run_dir)
        os.mkdir(run_dir, 0o700)
        os.chmod(run_dir, 0o700)
        return run_dir

    def run(self, task: Task, log: LogFn, record: RecordFn | None = None) -> Result:
        record = record if record is not None else (lambda _handle: None)
        handle = task.handle if (task.handle or {}).get("kind") == self.kind else None
        name = handle["ident"] if handle else f"{task.id}-{task.attempts + 1}"
        prefix = f"slot {task.slot}: "
        with self._lock:
            self._active.add(name)
        try:
            try:
                playbook = self._playbook_for(task)
            except DispatchError as exc:
                return Result(False, one_line(exc, 400))
            if handle is not None:
                resumed = self._resume(task, handle, playbook, prefix, log, record)
                if resumed is not None:
                    return resumed
            return self._launch(task, name, playbook, prefix, log, record)
        finally:
            with self._lock:
                self._active.discard(name)
            self.prune()

    # -- launching -----------------------------------------------------------------------------

    def _launch(self, task: Task, name: str, playbook: str, prefix: str, log: LogFn,
                record: RecordFn) -> Result:
        playbook_name = os.path.basename(playbook)
        try:
            run_dir = self._make_run_dir(name)
        except OSError as exc:
            return Result(False, f"{playbook_name}: cannot create the run directory under "
                                 f"{self.runs_dir}: {exc.strerror or exc}")
        marker = f"{os.getpid()}-{name}-{int(self.clock() * 1000)}"
        self._write_job(run_dir, name, playbook, self.extravars_for(task), marker, self.timeout)
        started = self.clock()
        handle: dict[str, Any] = {"kind": self.kind, "ident": name, "run_dir": run_dir,
                                  "marker": marker, "started_at": started, "playbook": playbook}
        record(handle)  # durable before anything runs: a restart finds this run, not a new one
        env = self._launch_env(marker)
        safe_log(log, f"{prefix}{playbook_name} starting (task {task.id}, attempt {task.attempts + 1})")
        try:
            launched = self._spawn(run_dir, env)
        except Exception as exc:  # pylint: disable=broad-except  # OSError, a broken spawn
            _drop_inputs(run_dir)
            make_private(run_dir)
            return Result(False, f"{playbook_name} could not start: {type(exc).__name__}: "
                                 f"{one_line(exc)}", ref=run_dir)
        record(dict(handle, pid=launched.pid, launched=True))
        return self._follow(task, handle, launched, prefix, log, skip_progress=False)

    def _write_job(self, run_dir: str, name: str, playbook: str, extravars: Mapping[str, Any], marker: str,
                   timeout: int | None) -> None:
        """The launcher's ``job.json``: what to run, as ansible-runner takes it."""
        spec = {"ident": name, "playbook": playbook, "inventory": self.inventory, "extravars": dict(extravars),
                "envvars": dict(self.envvars, **{RUN_MARKER: marker}), "timeout": timeout,
                "project_dir": self.project_dir}
        runner_job.write_json(os.path.join(run_dir, runner_job.JOB), spec)

    def _launch_env(self, marker: str) -> dict[str, str]:
        """The launcher's environment: the service's, without its secrets, with the run's marker."""
        env = {k: v for k, v in self._environ.items() if k not in SERVICE_SECRET_ENV}
        env[RUN_MARKER] = marker
        return env

    def _resume(self, task: Task, handle: Mapping[str, Any], playbook: str, prefix: str,
                log: LogFn, record: RecordFn) -> Result | None:
        """Follow the run a previous service left, or None when it never started."""
        run_dir = str(handle.get("run_dir") or "")
        marker = str(handle.get("marker") or "")
        adopted = _Adopted(handle.get("pid"), marker)
        finished = os.path.exists(os.path.join(run_dir, runner_job.RESULT))
        started = finished or adopted.alive() or os.path.isdir(
            os.path.join(run_dir, "artifacts", str(handle.get("ident"))))
        if not started and not handle.get("launched"):
            time.sleep(START_GRACE)  # a launcher forked just before the crash may still be starting
            started = adopted.alive() or os.path.exists(os.path.join(run_dir, runner_job.RESULT))
        if not started and not handle.get("launched"):
            safe_log(log, f"{prefix}the run recorded before the restart never started; starting it")
            return None
        if not handle.get("launched"):
            record(dict(handle, launched=True))  # it did start: count it, once
        safe_log(log, f"{prefix}{os.path.basename(playbook)}: following run {handle.get('ident')} "
                      "started before the restart")
        return self._follow(task, handle, adopted, prefix, log, skip_progress=True)

    # -- following -----------------------------------------------------------------------------

    def _follow(self, task: Task, handle: Mapping[str, Any], launched: Any, prefix: str,
                log: LogFn, skip_progress: bool) -> Result:
        run_dir = str(handle["run_dir"])
        marker = str(handle["marker"])
        name = str(handle["ident"])
        playbook_name = os.path.basename(str(handle.get("playbook") or self.playbook))
        progress_path = os.path.join(run_dir, runner_job.PROGRESS)
        position = _size(progress_path) if skip_progress else 0
        started = float(handle.get("started_at") or self.clock())
        deadline = started + self.timeout + DEADLINE_GRACE if self.timeout else None
        stopping_since: float | None = None
        result = None
        while True:
            position = self._tail(progress_path, position, prefix, log)
            result = read_json(os.path.join(run_dir, runner_job.RESULT))
            if result is not None or not launched.alive():
                result = result or read_json(os.path.join(run_dir, runner_job.RESULT))
                break
            if self._detach.is_set():
                return Result(False, f"{playbook_name}: run {name} left running; the service "
                                     "follows it again at its next start", detached=True)
            now = self.clock()
            if deadline is not None and now >= deadline and stopping_since is None:
                safe_log(log, f"{prefix}{playbook_name}: run {name} is past its deadline; stopping it")
                launched.signal(signal.SIGTERM)
                stopping_since = now
            elif stopping_since is not None and now - stopping_since >= DEADLINE_GRACE:
                launched.signal(signal.SIGKILL)
                kill_leftovers(marker)
            time.sleep(self.poll_seconds)
        self._tail(progress_path, position, prefix, log)
        said = [str(x) for x in (result or {}).get("stray_said") or (result or {}).get("stray") or []]
        own = launched.pid if result is not None and launched.pid != os.getpid() else None
        kill_leftovers(marker, said=said, exclude=own)  # the launcher itself is exiting: not a leftover
        if own is not None and not _exits(launched, EXIT_GRACE):
            said.append(describe_process(own))
            launched.signal(signal.SIGKILL)
        if said:
            safe_log(log, f"{prefix}killed {len(said)} process(es) left over from the run: "
                          f"{', '.join(said)}")
        make_private(run_dir)
        _drop_inputs(run_dir)
        message = self._message(task, result, playbook_name, run_dir, name)
        safe_log(log, f"{prefix}{message.message} after {self.clock() - started:.0f} s")
        return message

    def _message(self, task: Task, result: Mapping[str, Any] | None, playbook_name: str,
                 run_dir: str, name: str) -> Result:
        artifact_dir = os.path.join(run_dir, "artifacts", name)
        if result is None:
            return Result(False, f"{playbook_name}: run {name} ended without a result (the "
                                 f"process was killed?); see {run_dir}", ref=run_dir)
        if result.get("error"):
            return Result(False, f"{playbook_name} could not start: {one_line(result['error'])}",
                          ref=artifact_dir)
        artifact_dir = str(result.get("artifact_dir") or artifact_dir)
        status = str(result.get("status") or "unknown")
        rc = result.get("rc")
        ok = status == "successful" and rc == 0
        message = f"{playbook_name} rc={rc} ({status})"
        outcome, reason = outcome_of(result.get("stats"), task.slot)
        if ok:
            message += outcome_said(outcome, one_line(reason))
        else:
            if status == "timeout":
                detail = f"timed out after {self.timeout} s"
            elif status == "canceled":
                detail = "cancelled"
            else:
                detail = result.get("first_failure") or _first_error_line(artifact_dir) or \
                    f"see {os.path.join(artifact_dir, 'stdout')}"
            message += f": {one_line(detail)}"
        return Result(ok=ok, message=message, rc=rc, ref=artifact_dir,
                      outcome=outcome if ok else None)

    @staticmethod
    def _tail(path: str, position: int, prefix: str, log: LogFn) -> int:
        """Log the progress lines written since ``position``; return the new position."""
        try:
            with open(path, "rb") as fh:
                fh.seek(position)
                data = fh.read()
        except OSError:
            return position
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        for line in data[:end].decode("utf-8", "replace").splitlines():
            if line:
                safe_log(log, prefix + line)
        return position + end

    def prune(self) -> list[str]:
        """Delete run dirs other than the newest ``keep_runs`` and the running ones; return them."""
        try:
            names = os.listdir(self.runs_dir)
        except OSError:
            return []
        runs = []
        for entry in names:
            match = _RUN_NAME.match(entry)
            if match:
                runs.append(((int(match.group(1)), int(match.group(2))), entry))
        runs.sort()
        with self._lock:
            keep = set(self._active)
        if self.keep_runs:
            keep.update(entry for _key, entry in runs[-self.keep_runs:])
        removed = []
        for _key, entry in runs:
            if entry not in keep and not os.path.exists(os.path.join(self.runs_dir, entry, runner_job.JOB)):
                shutil.rmtree(os.path.join(self.runs_dir, entry), ignore_errors=True)
                removed.append(entry)
        return removed


def _drop_inputs(run_dir: str) -> None:
    """A run that ended keeps no inputs: ``env/`` and ``job.json`` (the launcher deletes them when it
    ends by itself, not when it was killed or never started), so prune can remove the directory."""
    shutil.rmtree(os.path.join(run_dir, "env"), ignore_errors=True)
    try:
        os.unlink(os.path.join(run_dir, runner_job.JOB))
    except FileNotFoundError:
        pass


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
