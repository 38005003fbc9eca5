# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for the GitHub Actions runner, baked into the rum.pool test image (../run.sh, ../config.sh).

It keeps the real runner's command-line contract for both ways of starting a runner, and refuses
to run as root unless ``RUNNER_ALLOW_RUNASROOT`` is set (as the real runner does):

- just-in-time: ``run.sh --jitconfig <encoded JIT config>``. The config is decoded the way the
  real runner does: base64 of a JSON object whose values are the base64 settings files, which it
  writes into the runner directory (``.runner``, ``.credentials``, ``.credentials_rsaparams``,
  mode 0600 here) and then runs from, as below. A bootstrap that writes those files itself (so
  the config is never on a command line, which any process can read) starts ``run.sh`` with no
  argument, and it works the same.
- classic (registration token): ``config.sh --unattended --url URL --token TOKEN [--name NAME]
  [--labels a,b] [--runnergroup GROUP] [--work DIR] [--ephemeral] [--disableupdate] [--replace]
  [--no-default-labels]`` registers the runner and writes ``.runner``, ``.credentials`` and
  ``.credentials_rsaparams`` (0600) into the runner directory (the parent of ``bin/``); then
  ``run.sh`` with no arguments reads the settings files from there. Like the real runner, config.sh
  takes each option's value also from the environment, ``ACTIONS_RUNNER_INPUT_<NAME>`` (for example
  ``ACTIONS_RUNNER_INPUT_TOKEN``, so a token need not be on the command line; the command line wins), and
  derives the API from URL (``github.com`` -> ``https://api.github.com``, ``*.ghe.com`` ->
  ``https://api.<host>``, any other host -> ``<scheme>://<host>/api/v3``), trades the token at
  ``POST <api>/actions/runner-registration`` (``Authorization: RemoteAuth <token>``) for the
  Actions service's URL and an access token, and registers there (the fake's
  ``POST runners/register``), which adds the default labels ``self-hosted``, ``Linux`` and the
  architecture unless ``--no-default-labels``. Bad arguments exit 2 with the usage; a refused
  registration exits 1 naming the HTTP status and the server's message (never the token); an
  unreachable server is retried as below. An already configured directory is refused (exit 1).

Either way ``run.sh`` runs from the settings files: it needs ``.runner`` and ``.credentials`` (a
runner without its credentials is refused, as the real one refuses it), and ``.runner`` gives
``AgentId``, ``AgentName`` and ``ServerUrl``. ``ServerUrl`` is the
fake GitHub's admin API (tests/tools/fake_github), where this runner:

1. says it is online (``POST runners/{id}/status``);
2. polls ``GET jobs?status=queued&scope=...`` for a job whose labels are all among its own (read
   from ``GET runners/{id}``; matched without regard to case, as GitHub does) and claims it with
   ``POST runners/{id}/job {job_id}``; a 409 means another runner took it first: keep polling;
3. "runs" the job for a few seconds, printing lines with the job id (the guest's service sends
   stdout to the serial console);
4. reports it done (``POST runners/{id}/done``; the fake then drops the ephemeral runner) and,
   when ``.runner`` says ``Ephemeral`` is ``True`` (a JIT config, or ``config.sh --ephemeral``),
   exits 0 after that one job; a runner that is not ephemeral goes back to step 2 for the next.

Exit codes are the real listener's, which ``run.sh`` reads as the real one does: 0 done, 1 a
terminated error (bad arguments, a refused or vanished registration, no job within the idle
time-out) and 2 a retryable one; ``run.sh`` itself exits 0 unless restarting (see run.sh).
``config.sh`` exits 2 for bad arguments and 1 when refused.

The server is retried while it cannot be reached or answers 5xx (the guest's network may come
late). If its runner record disappears while it waits, it exits 1, as a real runner whose registration
was deleted does. Test knobs (environment): ``RUM_STANDIN_POLL_SECONDS`` (default 2),
``RUM_STANDIN_JOB_SECONDS`` (default 3; a job the fake GitHub lists with ``run_seconds`` lasts that long), ``RUM_STANDIN_IDLE_TIMEOUT`` (seconds without a job
before giving up with exit 3; default 0, wait for ever). Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import platform
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

PROG = "rum-standin-runner"
USAGE = "usage: run.sh --jitconfig <encoded JIT config>"
CONFIG_USAGE = ("usage: config.sh --unattended --url URL --token TOKEN [--name NAME] [--labels L1,L2] "
                "[--runnergroup GROUP] [--work DIR] [--ephemeral] [--disableupdate] [--replace] [--no-default-labels]")
CONFIGURE = "--configure"  # the first argument config.sh passes
ENV_PREFIX = "ACTIONS_RUNNER_INPUT_"  # the real runner's way to pass an option's value in the environment
SETTINGS_FILES = (".credentials", ".credentials_rsaparams", ".runner")  # .runner last: it means "configured"
EXIT_USAGE = 2  # config.sh's bad arguments
EXIT_TERMINATED = 1  # the listener's "terminated error": run.sh stops (and exits 0)
EXIT_IDLE = EXIT_TERMINATED
HTTP_TIMEOUT = 15
# Waits between attempts when the server cannot be reached (the guest's network may come late).
BACKOFF = (1, 2, 3, 5)


class RunnerFailure(Exception):
    """The runner cannot go on; the message says why. ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def parse_args(argv: list[str]) -> str:
    """The JIT config from ``--jitconfig <blob>``; anything else is refused (exit 2)."""
    if len(argv) == 2 and argv[0] == "--jitconfig" and argv[1] and not argv[1].startswith("-"):
        return argv[1]
    if not argv:
        raise RunnerFailure("not configured: no JIT config given; " + USAGE, EXIT_USAGE)
    if argv[0] == "--jitconfig":
        raise RunnerFailure("--jitconfig needs one value, the encoded JIT config; " + USAGE, EXIT_USAGE)
    raise RunnerFailure(f"unsupported arguments {' '.join(a[:20] for a in argv)!r}; " + USAGE, EXIT_USAGE)


def refuse_root(environ: dict) -> None:
    if os.geteuid() == 0 and not environ.get("RUNNER_ALLOW_RUNASROOT"):
        raise RunnerFailure("must not run as root (set RUNNER_ALLOW_RUNASROOT=1 to allow it)")


def save_jit_config(blob: str, runner_dir: str) -> None:
    """What the real ``run.sh --jitconfig`` does first: each settings file of the config, decoded, into the runner directory."""
    try:
        files = json.loads(base64.b64decode(blob, validate=True))
        if not isinstance(files, dict):
            raise ValueError("not a JSON object")
        contents = {name: base64.b64decode(content, validate=True) for name, content in files.items()}
    except (binascii.Error, ValueError, TypeError) as exc:
        raise RunnerFailure(f"the --jitconfig value is not an encoded JIT config ({exc.__class__.__name__})") from None
    for name, content in contents.items():
        if name not in SETTINGS_FILES:
            raise RunnerFailure(f"the JIT config holds {name!r}, which is not a runner settings file")
        write_private_bytes(runner_dir, name, content)


def decode_jit_config(blob: str) -> dict:
    """The settings files of an encoded JIT config: {file name: parsed JSON}."""
    try:
        files = json.loads(base64.b64decode(blob, validate=True))
        if not isinstance(files, dict):
            raise ValueError("not a JSON object")
        return {name: json.loads(base64.b64decode(content, validate=True)) for name, content in files.items()}
    except (binascii.Error, ValueError, TypeError) as exc:
        raise RunnerFailure(f"the --jitconfig value is not an encoded JIT config ({exc.__class__.__name__})") from None


def runner_settings(files: dict, source: str = "the JIT config") -> tuple[int, str, str]:
    """(AgentId, AgentName, ServerUrl) from the ``.runner`` settings file."""
    settings = files.get(".runner")
    if not isinstance(settings, dict):
        raise RunnerFailure(f"{source} has no .runner settings file")
    missing = [key for key in ("AgentId", "AgentName", "ServerUrl") if not settings.get(key)]
    if missing:
        raise RunnerFailure(f"{source}'s .runner lacks {', '.join(missing)}")
    try:
        agent_id = int(settings["AgentId"])
    except (TypeError, ValueError):
        raise RunnerFailure(f".runner AgentId {settings['AgentId']!r} is not a number") from None
    server = str(settings["ServerUrl"])
    if not server.endswith("/"):
        server += "/"
    return agent_id, str(settings["AgentName"]), server


class Server:
    """JSON calls to the fake GitHub's admin API, retried while the server cannot be reached."""

    def __init__(self, base_url: str, sleep=time.sleep):
        self.base_url = base_url
        self.sleep = sleep

    def call(self, method: str, path: str, body: dict | None = None, attempts: int = 0,
             headers: dict | None = None) -> tuple[int, object]:
        """(status, parsed body). ``attempts`` 0: retry unreachable/5xx for ever. ``headers`` are added."""
        url = urllib.parse.urljoin(self.base_url, path)
        data = json.dumps(body).encode() if body is not None else None
        tries = 0
        while True:
            problem = ""
            request = urllib.request.Request(url, data=data, method=method, headers={
                "Content-Type": "application/json", "User-Agent": PROG, **(headers or {})})
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as resp:  # noqa: S310 - test tool
                    return resp.status, _json(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return exc.code, _json(exc.read())
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                problem = str(getattr(exc, "reason", exc))
            tries += 1
            if attempts and tries >= attempts:
                raise RunnerFailure(f"{method} {url}: {problem}")
            wait = BACKOFF[min(tries, len(BACKOFF)) - 1]
            if tries == 1 or tries % 10 == 0:
                say(f"{method} {url}: {problem}; retrying every {wait} s")
            self.sleep(wait)


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _env_seconds(environ: dict, name: str, default: float) -> float:
    value = environ.get(name)
    if value in (None, ""):
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise RunnerFailure(f"{name}={value!r} is not a number of seconds", EXIT_USAGE) from None
    if seconds < 0:
        raise RunnerFailure(f"{name}={value!r} must not be negative", EXIT_USAGE)
    return seconds


def _error(body: object) -> str:
    """The server's message: the fake admin API's ``error`` or GitHub's ``message``."""
    if isinstance(body, dict):
        for key in ("error", "message"):
            if body.get(key):
                return str(body[key]).splitlines()[0]
    return json.dumps(body)


class StandInRunner:
    """One runner (just-in-time or configured by config.sh): online, one job, done."""

    def __init__(self, agent_id: int, name: str, server: Server, poll: float = 2.0, job_seconds: float = 3.0,
                 idle_timeout: float = 0.0, clock=time.monotonic, sleep=time.sleep, ephemeral: bool = True):
        self.ephemeral = ephemeral
        self.agent_id = agent_id
        self.name = name
        self.server = server
        self.poll = poll
        self.job_seconds = job_seconds
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.sleep = sleep

    def _runner(self) -> dict:
        status, body = self.server.call("GET", f"runners/{self.agent_id}")
        if status == 404:
            raise RunnerFailure(f"runner {self.name} (id {self.agent_id}) is no longer registered; exiting")
        if status != 200 or not isinstance(body, dict):
            raise RunnerFailure(f"reading runner {self.agent_id}: HTTP {status} {_error(body)}")
        return body

    def go_online(self) -> None:
        status, body = self.server.call("POST", f"runners/{self.agent_id}/status", {"status": "online", "os": "Linux"})
        if status == 404:
            raise RunnerFailure(f"runner {self.name} (id {self.agent_id}) is not registered: {_error(body)}")
        if status != 200:
            raise RunnerFailure(f"going online: HTTP {status} {_error(body)}")
        say(f"runner {self.name} (id {self.agent_id}) is online at {self.server.base_url}, waiting for a job")

    def take_job(self) -> dict:
        """Poll until a matching queued job is ours; a job another runner took first is skipped."""
        started = self.clock()
        lost: set = set()
        while True:
            runner = self._runner()
            mine = {str(label.get("name", "")).casefold() for label in runner.get("labels", [])
                    if isinstance(label, dict)}
            query = urllib.parse.urlencode({"status": "queued", "scope": runner.get("scope", "")})
            status, body = self.server.call("GET", f"jobs?{query}")
            if status != 200 or not isinstance(body, dict):
                raise RunnerFailure(f"listing queued jobs: HTTP {status} {_error(body)}")
            for job in body.get("jobs", []):
                wanted = {str(label).casefold() for label in job.get("labels", [])}
                if job["id"] in lost or not wanted <= mine:
                    continue
                status, answer = self.server.call("POST", f"runners/{self.agent_id}/job", {"job_id": job["id"]})
                if status == 200:
                    return job
                if status == 409:
                    say(f"job {job['id']} was taken by another runner first: {_error(answer)}")
                    lost.add(job["id"])
                    continue
                raise RunnerFailure(f"claiming job {job['id']}: HTTP {status} {_error(answer)}")
            if self.idle_timeout and self.clock() - started >= self.idle_timeout:
                raise RunnerFailure(f"no job for runner {self.name} within {self.idle_timeout:g} s", EXIT_IDLE)
            self.sleep(self.poll)

    def run(self) -> int:
        self.go_online()
        while True:
            job = self.take_job()
            say(f"running job {job['id']} ({job.get('name', '')}) with labels {', '.join(job.get('labels', []))}")
            self.sleep(job_seconds(job, self.job_seconds))
            say(f"job {job['id']} finished: success")
            status, body = self.server.call("POST", f"runners/{self.agent_id}/done", {"conclusion": "success"})
            if status != 200:
                raise RunnerFailure(f"reporting job {job['id']} done: HTTP {status} {_error(body)}")
            removed = bool(isinstance(body, dict) and body.get("removed"))
            if self.ephemeral:
                say(f"runner {self.name} is done after its one job (removed: {removed})")
                return 0
            say(f"runner {self.name} is not ephemeral: waiting for its next job")


# ---------------------------------------------------------------------- classic flow: config.sh
_VALUE_FLAGS = {"--url": "url", "--token": "token", "--name": "name", "--labels": "labels",
                "--runnergroup": "runnergroup", "--work": "work"}
_SWITCHES = {"--unattended": "unattended", "--ephemeral": "ephemeral", "--disableupdate": "disableupdate",
             "--replace": "replace", "--no-default-labels": "no_default_labels"}


def job_seconds(job: dict, default: float) -> float:
    """How long to "run" ``job``: the fake GitHub's ``run_seconds`` for it (a test queues a job that
    lasts), else the runner's own ``RUM_STANDIN_JOB_SECONDS``."""
    seconds = job.get("run_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        return default
    return float(seconds)


def _usage_error(message: str) -> RunnerFailure:
    return RunnerFailure(f"{message}; {CONFIG_USAGE}", EXIT_USAGE)


def parse_config_args(argv: list[str], hostname=socket.gethostname, environ: dict | None = None) -> dict:
    """config.sh's options as a dict; unknown, repeated or incomplete options are refused (exit 2).

    A value option missing from the command line is taken from ``ACTIONS_RUNNER_INPUT_<NAME>`` in
    ``environ`` (``--runnergroup``: ``ACTIONS_RUNNER_INPUT_RUNNERGROUP``), as the real runner does.
    Messages name options, never the values given (one of them is the token).
    """
    options: dict = {key: False for key in _SWITCHES.values()}
    seen: set = set()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in seen:
            raise _usage_error(f"{arg} is given more than once")
        if arg in _SWITCHES:
            options[_SWITCHES[arg]] = True
        elif arg in _VALUE_FLAGS:
            if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
                raise _usage_error(f"{arg} needs a value")
            index += 1
            options[_VALUE_FLAGS[arg]] = argv[index]
        elif arg.startswith("-"):
            shown = arg.split("=", 1)[0][:40]
            hint = " (give an option's value as the next argument)" if "=" in arg else ""
            raise _usage_error(f"unknown option {shown!r}{hint}")
        else:
            raise _usage_error(f"unexpected argument number {index + 1} (not an option)")
        seen.add(arg)
        index += 1
    for flag, key in _VALUE_FLAGS.items():
        value = (environ or {}).get(f"{ENV_PREFIX}{flag[2:].upper()}", "").strip()
        if key not in options and value:
            options[key] = value
    if not options["unattended"]:
        raise _usage_error("--unattended is required (this stand-in never prompts)")
    for flag in ("--url", "--token"):
        if not options.get(_VALUE_FLAGS[flag]):
            raise _usage_error(f"{flag} is required")
    if "name" in options and not options["name"].strip():
        raise _usage_error("--name must not be empty")
    options["name"] = options.get("name") or hostname()
    options["labels"] = [x.strip() for x in options.get("labels", "").split(",") if x.strip()]
    if options["no_default_labels"] and not options["labels"]:
        raise _usage_error("--no-default-labels needs --labels (a runner needs at least one label)")
    options["runnergroup"] = options.get("runnergroup") or "Default"
    options["work"] = options.get("work") or "_work"
    api_url(options["url"])  # refuse a URL that names no scope before anything else
    return options


def api_url(web_url: str) -> str:
    """The REST API base for a runner's ``--url``, as the real config.sh derives it."""
    parts = urllib.parse.urlsplit(web_url)
    path = [p for p in parts.path.split("/") if p]
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise _usage_error("--url must be an http(s) URL of a repository, organization or enterprise")
    if len(path) not in (1, 2) or parts.query or parts.fragment:
        raise _usage_error(f"--url {web_url!r} must name a repository (/OWNER/REPO), an organization (/ORG) "
                           "or an enterprise (/enterprises/ENT)")
    if host in ("github.com", "www.github.com"):
        return "https://api.github.com"
    if host.endswith(".ghe.com"):
        return f"https://api.{host}"
    return f"{parts.scheme}://{parts.netloc}/api/v3"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64"}.get(
        machine, "ARM" if machine.startswith("arm") else "X64")


def write_private(directory: str, name: str, content: dict) -> None:
    """``directory/name`` as JSON, mode 0600, written atomically (temp file, fsync, rename)."""
    write_private_bytes(directory, name, json.dumps(content, indent=2).encode("utf-8"))


def write_private_bytes(directory: str, name: str, content: bytes) -> None:
    """``directory/name``, mode 0600, written atomically (temp file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name.lstrip('.')}-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def configure(options: dict, runner_dir: str, sleep=time.sleep) -> int:
    """config.sh's registration: token -> Actions service -> runner; writes the settings files."""
    if os.path.exists(os.path.join(runner_dir, ".runner")):
        raise RunnerFailure(f"cannot configure the runner because it is already configured ({runner_dir}/.runner "
                            "exists); remove it first")
    api = api_url(options["url"])
    say(f"authenticating at {api} for {options['url']}")
    status, body = Server(api + "/", sleep=sleep).call(
        "POST", "actions/runner-registration", {"url": options["url"], "runner_event": "register"},
        headers={"Authorization": f"RemoteAuth {options['token']}"})
    if status != 200 or not isinstance(body, dict) or not body.get("url") or not body.get("token"):
        hint = " (the token is wrong or expired, or was made for another scope than --url)" if status == 404 else ""
        raise RunnerFailure(f"registration token refused by {api}/actions/runner-registration: "
                            f"HTTP {status} {_error(body)}{hint}")
    service = str(body["url"])
    if not service.endswith("/"):
        service += "/"
    say(f"connected to GitHub; the Actions service is {service}")
    status, answer = Server(service, sleep=sleep).call("POST", "runners/register", {
        "token": body["token"], "name": options["name"], "labels": options["labels"],
        "runner_group": options["runnergroup"], "ephemeral": options["ephemeral"], "replace": options["replace"],
        "work_folder": options["work"], "os": "Linux", "arch": _arch(),
        "no_default_labels": options["no_default_labels"], "disable_update": options["disableupdate"]})
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("files"), dict):
        raise RunnerFailure(f"registering runner {options['name']} in group {options['runnergroup']!r}: "
                            f"HTTP {status} {_error(answer)}")
    files = answer["files"]
    missing = [name for name in SETTINGS_FILES if not isinstance(files.get(name), dict)]
    if missing:
        raise RunnerFailure(f"the Actions service's answer lacks {', '.join(missing)}")
    runner_settings(files, "the Actions service's answer")
    runner = answer.get("runner") or {}
    labels = ", ".join(str(x.get("name")) for x in runner.get("labels", []) if isinstance(x, dict))
    say(f"runner {options['name']} added (id {runner.get('id')}, labels {labels})")
    for name in SETTINGS_FILES:
        write_private(runner_dir, name, files[name])
    say(f"settings saved in {runner_dir}")
    return 0


# ---------------------------------------------------------------------- run.sh with no arguments
def read_runner_file(runner_dir: str) -> dict:
    """The settings files in the runner directory, ``{".runner": {...}, ".credentials": {...}, ...}``.

    "Not configured" (exit 2) without ``.runner``; a runner without ``.credentials`` is refused (exit 1).
    """
    files = {}
    for name in SETTINGS_FILES:
        path = os.path.join(runner_dir, name)
        try:
            with open(path, encoding="utf-8-sig") as fh:
                files[name] = json.load(fh)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise RunnerFailure(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None
    if ".runner" not in files:
        raise RunnerFailure(f"not configured: there is no {os.path.join(runner_dir, '.runner')} (run config.sh "
                            "first, or give a JIT config); " + USAGE, EXIT_USAGE)
    return files


def require_credentials(files: dict, runner_dir: str) -> None:
    """A runner needs its credentials as well as its settings (the real one cannot connect without)."""
    if not isinstance(files.get(".credentials"), dict):
        raise RunnerFailure(f"no credentials: {os.path.join(runner_dir, '.credentials')} is missing or not a JSON "
                            "object (the runner's settings files are incomplete)")


def default_runner_dir() -> str:
    """The runner directory: the parent of ``bin/`` (where run.sh and config.sh are)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None, environ: dict | None = None, runner_dir: str | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    argv = sys.argv[1:] if argv is None else list(argv)
    runner_dir = runner_dir or default_runner_dir()
    try:
        if argv[:1] == [CONFIGURE]:
            options = parse_config_args(argv[1:], environ=environ)
            refuse_root(environ)
            return configure(options, runner_dir)
        if argv:
            blob = parse_args(argv)
            refuse_root(environ)
            runner_settings(decode_jit_config(blob))  # a config without a usable .runner writes nothing
            save_jit_config(blob, runner_dir)
        else:
            refuse_root(environ)
        files = read_runner_file(runner_dir)
        agent_id, name, server_url = runner_settings(files, os.path.join(runner_dir, ".runner"))
        require_credentials(files, runner_dir)
        runner = StandInRunner(
            agent_id, name, Server(server_url),
            poll=_env_seconds(environ, "RUM_STANDIN_POLL_SECONDS", 2.0),
            job_seconds=_env_seconds(environ, "RUM_STANDIN_JOB_SECONDS", 3.0),
            idle_timeout=_env_seconds(environ, "RUM_STANDIN_IDLE_TIMEOUT", 0.0),
            ephemeral=str(files[".runner"].get("Ephemeral", "")).lower() == "true")
        return runner.run()
    except RunnerFailure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        # config.sh keeps its own codes; the listener (run.sh) ends every failure as terminated
        return exc.code if argv[:1] == [CONFIGURE] else EXIT_TERMINATED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
