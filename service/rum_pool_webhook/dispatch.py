# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dispatchers: how the service has one slot recreated.

A dispatcher takes a queued ``Task`` (a slot, and the runner generation the webhook was about)
and runs the collection's ``recreate.yml`` for it, either locally through ansible-runner or as
an AWX / automation controller job. It reports progress through ``log`` and ends with a
one-line ``Result``. Neither a ``Result`` message nor a progress line ever holds a secret: task
results are not echoed, only task names, hosts and statuses, and a failure's ``msg`` is taken
from Ansible's already-censored result (``no_log`` tasks give only the censored marker).

The worker calls ``run`` from its threads; a dispatcher may run several tasks at once (never
two for one slot: the worker sees to that).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import ssl
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Protocol, Tuple

LogFn = Callable[[str], None]

MESSAGE_DETAIL_MAX = 300
# Environment variables through which the service itself may receive its secrets; they are
# blanked for the playbook so they reach neither Ansible nor ansible-runner's artifact files.
SERVICE_SECRET_ENV = ("RUM_POOL_WEBHOOK_SECRET", "RUM_POOL_AWX_TOKEN")
_RUN_NAME = re.compile(r"^([0-9]+)-([0-9]+)$")


@dataclass
class Task:
    """One unit of queued work: recreate ``slot`` (only while it holds ``runner``, if set)."""

    id: int
    slot: str
    runner: str | None
    delivery: str | None
    attempts: int  # attempts already made before this one
    created_at: float


@dataclass
class Result:
    """How one attempt went; ``message`` is one line for logs and the status page."""

    ok: bool
    message: str
    rc: int | None = None
    ref: str | None = None  # ansible-runner artifact dir, or the AWX job URL


class Dispatcher(Protocol):
    """What the worker needs from a dispatcher."""

    kind: str

    def run(self, task: Task, log: LogFn) -> Result:
        ...


class DispatchError(Exception):
    """A dispatcher cannot be set up, or cannot reach what it dispatches to."""


def _one_line(text: Any, limit: int = MESSAGE_DETAIL_MAX) -> str:
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return flat


def _safe_log(log: LogFn, line: str) -> None:
    try:
        log(line)
    except Exception:  # pylint: disable=broad-except  # a broken log sink must not stop a run
        pass


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
                     checkout: str | None = None) -> List[str]:
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
    roots: List[str] = []
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
                     checkout: str | None = "auto") -> Tuple[str, str | None]:
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
# ansible-runner
# --------------------------------------------------------------------------------------------

def _task_title(data: Mapping[str, Any]) -> str:
    name = str(data.get("task") or data.get("name") or data.get("task_action") or "?")
    role = data.get("role")
    if role and not name.startswith(f"{role} : "):
        return f"{role} : {name}"
    return name


def _failure_text(res: Any) -> str:
    """The ``msg`` of a failed result; never more than that (and nothing for no_log tasks)."""
    if not isinstance(res, Mapping):
        return "failed"
    if "censored" in res:
        return "output hidden (no_log)"
    msg = res.get("msg") or res.get("reason")
    if msg:
        return str(msg)
    return "failed"


class _EventReporter:
    """Turns ansible-runner events into progress lines and remembers the first failure."""

    def __init__(self, prefix: str, log: LogFn):
        self.prefix = prefix
        self.log = log
        self.first_failure: str | None = None
        self.failures = 0

    def __call__(self, event: Mapping[str, Any]) -> bool:
        try:
            self._handle(event)
        except Exception:  # pylint: disable=broad-except  # never break the run over a log line
            pass
        return True  # let ansible-runner keep the event in the artifact dir

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start":
            _safe_log(self.log, f"{self.prefix}TASK [{_task_title(data)}]")
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
        _safe_log(self.log, f"{self.prefix}TASK [{_task_title(data)}] {host}: {status}")

    def _failed(self, data: Mapping[str, Any], res: Any, how: str) -> None:
        self.failures += 1
        if self.first_failure is None:
            host = data.get("host") or "?"
            where = host if how == "failed" else f"{host} {how}"
            self.first_failure = f"TASK [{_task_title(data)}] {where}: {_failure_text(res)}"


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


RUN_MARKER = "RUM_POOL_WEBHOOK_RUN"


def leftover_processes(marker: str, proc: str = "/proc") -> List[int]:
    """Pids whose environment holds ``RUM_POOL_WEBHOOK_RUN=<marker>`` (Linux; [] elsewhere).

    ansible-core puts each task's worker process in a session of its own, so when ansible-runner
    kills the playbook's process group (timeout, cancel) a worker can go on alone, still acting
    on the slot. Every process of a run inherits the marker, which finds them wherever they are.
    """
    needle = f"{RUN_MARKER}={marker}".encode()
    found = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(os.path.join(proc, entry, "environ"), "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours to read
    return sorted(found)


def kill_leftovers(marker: str, proc: str = "/proc", kill: Callable[[int, int], None] = os.kill) -> List[int]:
    """SIGKILL what is left of a run (see leftover_processes); return the pids signalled."""
    pids = leftover_processes(marker, proc)
    for pid in pids:
        try:
            kill(pid, 9)
        except OSError:
            pass
    return pids


def _private(path: str) -> None:
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


class AnsibleRunnerDispatcher:
    """Run ``recreate.yml`` locally through ansible-runner, one private data dir per attempt.

    Each attempt gets ``<state_dir>/runs/<task id>-<attempt>`` (mode 0700). ansible-runner
    writes ``env/extravars`` and ``env/envvars`` there (0600), and keeps the artifacts (stdout,
    events, and the command with its environment) under ``artifacts/<task id>-<attempt>``. After
    the run the ``env`` inputs are deleted, and nothing under the run dir is left readable by
    group or others. Only the newest ``keep_runs`` run dirs are kept.
    """

    kind = "ansible-runner"

    def __init__(self, playbook: str, inventory: str, extravars: Mapping[str, Any] | None = None,
                 envvars: Mapping[str, Any] | None = None,
                 state_dir: str = "/var/lib/rum-pool-webhook", keep_runs: int = 50,
                 timeout: float | None = 1800, runner_module: Any = None,
                 clock: Callable[[], float] = time.monotonic, project_dir: str | None = None,
                 environ: Mapping[str, str] | None = None):
        if runner_module is None:
            try:
                import ansible_runner as runner_module  # pylint: disable=import-outside-toplevel
            except ImportError as exc:
                raise DispatchError(
                    "dispatcher.kind 'ansible-runner': the ansible-runner library is not installed "
                    f"({exc}); pip install 'rum-pool-webhook[ansible-runner]', or use kind 'awx'"
                ) from None
        self._ar = runner_module
        self.playbook, self.project_dir = resolve_playbook(playbook, project_dir, environ)
        self.playbook_name = os.path.basename(self.playbook)
        inventory_path = os.path.abspath(os.path.expanduser(inventory))
        if not os.path.exists(inventory_path):
            raise DispatchError(f"dispatcher.inventory {inventory_path}: no such file or directory")
        self.inventory = inventory_path
        self.extravars = dict(extravars or {})
        self.envvars = {str(k): str(v) for k, v in (envvars or {}).items()}
        env = os.environ if environ is None else environ
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
        self._lock = threading.Lock()
        self._active: set = set()
        self._cancel = threading.Event()

    def cancel_all(self) -> None:
        """Ask running playbooks to stop (at shutdown); later runs are cancelled at once."""
        self._cancel.set()

    def extravars_for(self, task: Task) -> Dict[str, Any]:
        values = dict(self.extravars)
        values.pop("runner", None)
        values["slot"] = task.slot
        if task.runner is not None:
            values["runner"] = task.runner
        return values

    def _make_run_dir(self, name: str) -> str:
        os.makedirs(self.runs_dir, mode=0o700, exist_ok=True)
        os.chmod(self.runs_dir, 0o700)
        run_dir = os.path.join(self.runs_dir, name)
        if os.path.lexists(run_dir):
            # A leftover of an attempt that never finished (the service stopped): its env files
            # would otherwise be reused by ansible-runner instead of this attempt's values.
            shutil.rmtree(run_dir)
        os.mkdir(run_dir, 0o700)
        os.chmod(run_dir, 0o700)
        return run_dir

    def run(self, task: Task, log: LogFn) -> Result:
        name = f"{task.id}-{task.attempts + 1}"
        prefix = f"slot {task.slot}: "
        with self._lock:
            self._active.add(name)
        try:
            return self._run(task, name, prefix, log)
        finally:
            with self._lock:
                self._active.discard(name)
            self.prune()

    def _run(self, task: Task, name: str, prefix: str, log: LogFn) -> Result:
        try:
            run_dir = self._make_run_dir(name)
        except OSError as exc:
            return Result(False, f"{self.playbook_name}: cannot create the run directory under "
                                 f"{self.runs_dir}: {exc.strerror or exc}")
        reporter = _EventReporter(prefix, log)
        marker = f"{os.getpid()}-{name}-{int(self.clock() * 1000)}"
        kwargs: Dict[str, Any] = dict(
            private_data_dir=run_dir, ident=name, playbook=self.playbook,
            inventory=self.inventory, extravars=self.extravars_for(task),
            envvars=dict(self.envvars, **{RUN_MARKER: marker}), quiet=True, event_handler=reporter,
            cancel_callback=self._cancel.is_set,
        )
        if self.timeout:
            kwargs["timeout"] = self.timeout
        if self.project_dir and os.path.isdir(self.project_dir):
            kwargs["project_dir"] = self.project_dir  # its ansible.cfg applies, as from a shell
        started = self.clock()
        _safe_log(log, f"{prefix}{self.playbook_name} starting (task {task.id}, attempt {task.attempts + 1})")
        try:
            runner = self._ar.run(**kwargs)
        except Exception as exc:  # pylint: disable=broad-except  # ansible-runner raises many kinds
            _private(run_dir)
            return Result(False, f"{self.playbook_name} could not start: "
                                 f"{type(exc).__name__}: {_one_line(exc)}", ref=run_dir)
        finally:
            shutil.rmtree(os.path.join(run_dir, "env"), ignore_errors=True)
            stray = kill_leftovers(marker)
            if stray:
                _safe_log(log, f"{prefix}killed {len(stray)} process(es) left over from the run: "
                               f"{', '.join(map(str, stray))}")
        _private(run_dir)
        status = getattr(runner, "status", None) or "unknown"
        rc = getattr(runner, "rc", None)
        config = getattr(runner, "config", None)
        artifact_dir = getattr(config, "artifact_dir", None) or os.path.join(run_dir, "artifacts", name)
        elapsed = self.clock() - started
        ok = status == "successful" and rc == 0
        message = f"{self.playbook_name} rc={rc} ({status})"
        if not ok:
            if status == "timeout":
                detail = f"timed out after {self.timeout} s"
            elif status == "canceled":
                detail = "cancelled (the service is stopping)"
            else:
                detail = reporter.first_failure or _first_error_line(artifact_dir) or \
                    f"see {os.path.join(artifact_dir, 'stdout')}"
            message += f": {_one_line(detail)}"
        _safe_log(log, f"{prefix}{message} after {elapsed:.0f} s")
        return Result(ok=ok, message=message, rc=rc, ref=artifact_dir)

    def prune(self) -> List[str]:
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
            if entry not in keep:
                shutil.rmtree(os.path.join(self.runs_dir, entry), ignore_errors=True)
                removed.append(entry)
        return removed


# --------------------------------------------------------------------------------------------
# AWX / automation controller
# --------------------------------------------------------------------------------------------

AWX_FINAL = ("successful", "failed", "error", "canceled")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Do not follow redirects: urllib would send the token along to wherever they point."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def build_opener(validate_certs: bool = True) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context()
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())


class _HttpError(DispatchError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AwxDispatcher:
    """Launch an AWX (or automation controller) job template and follow the job to its end.

    ``url`` is the server's address (``https://awx.example.com``); if it already contains an
    ``/api/`` path (``https://aap.example.com/api/controller/v2`` on AAP 2.5's gateway) it is
    taken as the API root instead of ``<url>/api/v2``. The job template needs *Prompt on launch*
    for Variables, or AWX drops ``slot`` and ``runner``.
    """

    kind = "awx"

    def __init__(self, url: str, token: str, job_template: int | str, validate_certs: bool = True,
                 poll_seconds: float = 5, timeout: float | None = 1800, opener: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] | None = None, request_timeout: float = 30):
        if not token:
            raise DispatchError("dispatcher.token: empty; give the AWX token in dispatcher.token_file "
                                "or RUM_POOL_AWX_TOKEN")
        base = url.rstrip("/")
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise DispatchError(f"dispatcher.url: must be an http:// or https:// URL, got {url!r}")
        if "/api/" in parsed.path + "/":
            self.api = base
            self.ui = f"{parsed.scheme}://{parsed.netloc}"
        else:
            self.api = base + "/api/v2"
            self.ui = base
        self.url = base
        self._token = token
        self.template_spec = job_template
        self._template_id: int | None = None
        if isinstance(job_template, int) or (isinstance(job_template, str) and job_template.strip().isdigit()):
            self._template_id = int(job_template)
        self.poll_seconds = float(poll_seconds)
        self.timeout = float(timeout) if timeout else None
        self.opener = opener if opener is not None else build_opener(validate_certs)
        self.clock = clock
        self._cancel = threading.Event()
        self.sleep = sleep if sleep is not None else self._cancel.wait
        self.request_timeout = request_timeout

    def __repr__(self) -> str:
        return f"AwxDispatcher(url={self.url!r}, job_template={self.template_spec!r})"

    def cancel_all(self) -> None:
        """Stop following jobs (at shutdown); running jobs are cancelled in AWX."""
        self._cancel.set()

    def job_url(self, job_id: int) -> str:
        return f"{self.ui}/#/jobs/playbook/{job_id}/output"

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        """One API call; return (status, parsed JSON) or raise _HttpError naming method and path."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                   "User-Agent": "rum-pool-webhook"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        where = f"AWX {method} {urllib.parse.urlsplit(self.api).path}{path}"
        try:
            response = self.opener.open(request, timeout=self.request_timeout)
            try:
                status = getattr(response, "status", None) or response.getcode()
                raw = response.read()
            finally:
                response.close()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read()
            except Exception:  # pylint: disable=broad-except
                raw = b""
            finally:
                exc.close()
            if 300 <= status < 400:
                location = exc.headers.get("Location", "") if exc.headers else ""
                raise _HttpError(f"{where}: HTTP {status} redirect to {_one_line(location, 200)}; "
                                 "set dispatcher.url to the address the API answers on", status) from None
        except urllib.error.URLError as exc:
            raise _HttpError(f"{where}: cannot connect: {_one_line(exc.reason, 200)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _HttpError(f"{where}: {type(exc).__name__}: {_one_line(exc, 200)}") from None
        try:
            parsed = json.loads(raw.decode("utf-8")) if raw else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if status == 401:
            raise _HttpError(f"{where}: HTTP 401: AWX rejected the token (expired or wrong?); "
                             "check dispatcher.token_file / RUM_POOL_AWX_TOKEN", status)
        if status == 403:
            raise _HttpError(f"{where}: HTTP 403: the token's user may not do this; give it "
                             "Execute permission on the job template", status)
        if status >= 400:
            raise _HttpError(f"{where}: HTTP {status}{self._detail(parsed)}", status)
        if raw and parsed is None:
            raise _HttpError(f"{where}: HTTP {status}, but the answer is not JSON "
                             "(is dispatcher.url the AWX address?)", status)
        return status, parsed

    @staticmethod
    def _detail(parsed: Any) -> str:
        if isinstance(parsed, Mapping):
            if parsed.get("detail"):
                return ": " + _one_line(parsed["detail"], 200)
            if parsed.get("error"):
                return ": " + _one_line(parsed["error"], 200)
            if parsed:
                return ": " + _one_line(json.dumps(parsed, sort_keys=True), 200)
        return ""

    # -- job template --------------------------------------------------------------------------

    def resolve_template(self) -> int:
        """The job template's id; a name is looked up once. Raises DispatchError."""
        if self._template_id is not None:
            return self._template_id
        name = str(self.template_spec)
        try:
            _status, data = self._request(
                "GET", "/job_templates/?" + urllib.parse.urlencode({"name": name}))
        except _HttpError as exc:
            if exc.status == 404:
                raise DispatchError(f"AWX job template {name!r}: not found ({exc})") from None
            raise
        results = data.get("results") if isinstance(data, Mapping) else None
        matches = [r for r in results or [] if isinstance(r, Mapping) and r.get("name") == name]
        if not matches:
            raise DispatchError(f"AWX job template {name!r}: not found at {self.url} "
                                "(or the token's user cannot see it)")
        if len(matches) > 1:
            ids = ", ".join(str(m.get("id")) for m in matches)
            raise DispatchError(f"AWX job template {name!r}: {len(matches)} templates have this name "
                                f"(ids {ids}); set dispatcher.job_template to the id")
        self._template_id = int(matches[0]["id"])
        return self._template_id

    # -- run -----------------------------------------------------------------------------------

    def run(self, task: Task, log: LogFn) -> Result:
        prefix = f"slot {task.slot}: "
        try:
            return self._run(task, prefix, log)
        except DispatchError as exc:
            message = _one_line(exc, 400)
            _safe_log(log, prefix + message)
            return Result(False, message)

    def _run(self, task: Task, prefix: str, log: LogFn) -> Result:
        template_id = self.resolve_template()
        extra_vars: Dict[str, Any] = {"slot": task.slot}
        if task.runner is not None:
            extra_vars["runner"] = task.runner
        _status, data = self._request("POST", f"/job_templates/{template_id}/launch/",
                                      {"extra_vars": extra_vars})
        job_id = None
        if isinstance(data, Mapping):
            job_id = data.get("job") or data.get("id")
        if not isinstance(job_id, int):
            raise DispatchError(f"AWX POST /job_templates/{template_id}/launch/: "
                                "the answer names no job id")
        ref = self.job_url(job_id)
        ignored = data.get("ignored_fields") or {}
        if "extra_vars" in ignored:
            try:
                self._request("POST", f"/jobs/{job_id}/cancel/")
            except DispatchError:
                pass
            message = (f"job template {template_id} does not prompt for variables on launch; "
                       "enable 'Prompt on launch' for Variables (AWX job "
                       f"{job_id} was started without slot and cancelled)")
            _safe_log(log, prefix + message)
            return Result(False, message, ref=ref)
        _safe_log(log, f"{prefix}AWX job {job_id} launched from job template {template_id}: {ref}")
        return self._follow(job_id, ref, prefix, log, data.get("status"))

    def _follow(self, job_id: int, ref: str, prefix: str, log: LogFn, status: Any) -> Result:
        deadline = self.clock() + self.timeout if self.timeout else None
        shown = status if isinstance(status, str) and status else None
        if shown:
            _safe_log(log, f"{prefix}AWX job {job_id} {shown}")
        job: Mapping[str, Any] = {}
        transient_logged = False
        while True:
            if self._cancel.is_set():
                self._try_cancel(job_id, prefix, log)
                return Result(False, f"AWX job {job_id} cancelled: the service is stopping", ref=ref)
            try:
                _status, data = self._request("GET", f"/jobs/{job_id}/")
                job = data if isinstance(data, Mapping) else {}
                status = job.get("status")
            except _HttpError as exc:
                if exc.status is not None and exc.status < 500:
                    message = _one_line(exc, 400)
                    _safe_log(log, prefix + message)
                    return Result(False, message, ref=ref)
                if not transient_logged:  # AWX restarting or a proxy hiccup: keep polling
                    _safe_log(log, f"{prefix}{_one_line(exc, 300)}; still polling")
                    transient_logged = True
            if status != shown and status:
                _safe_log(log, f"{prefix}AWX job {job_id} {status}")
                shown = status
            if status in AWX_FINAL:
                break
            if deadline is not None and self.clock() >= deadline:
                self._try_cancel(job_id, prefix, log)
                return Result(False, f"AWX job {job_id} timed out after {self.timeout:g} s "
                                     f"(last status {status or 'unknown'}); cancel requested", ref=ref)
            self.sleep(self.poll_seconds)
        if status == "successful":
            return Result(True, f"AWX job {job_id} successful", ref=ref)
        explanation = _one_line(job.get("job_explanation") or "", MESSAGE_DETAIL_MAX)
        message = f"AWX job {job_id} {status}"
        if explanation:
            message += f": {explanation}"
        return Result(False, message, ref=ref)

    def _try_cancel(self, job_id: int, prefix: str, log: LogFn) -> None:
        try:
            self._request("POST", f"/jobs/{job_id}/cancel/")
            _safe_log(log, f"{prefix}AWX job {job_id}: cancel requested")
        except DispatchError as exc:
            _safe_log(log, f"{prefix}AWX job {job_id}: cancel failed: {_one_line(exc, 300)}")


# --------------------------------------------------------------------------------------------

def make_dispatcher(dispatcher_config: Mapping[str, Any], state_dir: str, keep_runs: int,
                    **deps: Any) -> Dispatcher:
    """Build the dispatcher the (validated) ``dispatcher`` config mapping asks for.

    ``deps`` are passed on to the constructor (tests inject ``runner_module``, ``opener``,
    ``clock``, ``sleep``).
    """
    kind = dispatcher_config.get("kind")
    if kind == "ansible-runner":
        return AnsibleRunnerDispatcher(
            playbook=dispatcher_config.get("playbook") or "recreate.yml",
            inventory=dispatcher_config["inventory"],
            extravars=dispatcher_config.get("extravars") or {},
            envvars=dispatcher_config.get("envvars") or {},
            state_dir=state_dir, keep_runs=keep_runs,
            timeout=dispatcher_config.get("timeout", 1800),
            project_dir=dispatcher_config.get("project_dir"), **deps)
    if kind == "awx":
        token = dispatcher_config.get("token")
        if not token:
            raise DispatchError("dispatcher.token_file: no AWX token was loaded")
        return AwxDispatcher(
            url=dispatcher_config["url"], token=token,
            job_template=dispatcher_config["job_template"],
            validate_certs=dispatcher_config.get("validate_certs", True),
            poll_seconds=dispatcher_config.get("poll_seconds", 5),
            timeout=dispatcher_config.get("timeout", 1800), **deps)
    raise DispatchError(f"dispatcher.kind: must be 'ansible-runner' or 'awx', got {kind!r}")
