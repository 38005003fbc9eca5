# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for the GitHub Actions runner, baked into the rum.pool test image (started by ../run.sh).

It keeps the real runner's command-line contract for just-in-time runners,
``run.sh --jitconfig <encoded JIT config>``, refuses to run as root unless
``RUNNER_ALLOW_RUNASROOT`` is set (as the real runner does), and decodes the config the way the
real runner does: base64 of a JSON object whose values are the base64 settings files; ``.runner``
gives ``AgentId``, ``AgentName`` and ``ServerUrl``. ``ServerUrl`` is the fake GitHub's admin API
(tests/tools/fake_github), where this runner:

1. says it is online (``POST runners/{id}/status``);
2. polls ``GET jobs?status=queued&scope=...`` for a job whose labels are all among its own (read
   from ``GET runners/{id}``; matched without regard to case, as GitHub does) and claims it with
   ``POST runners/{id}/job {job_id}``; a 409 means another runner took it first: keep polling;
3. "runs" the job for a few seconds, printing lines with the job id (the guest's service sends
   stdout to the serial console);
4. reports it done (``POST runners/{id}/done``; the fake then drops the ephemeral runner) and exits 0.

If its runner record disappears while it waits, it exits 1, as a real runner whose registration
was deleted does. Test knobs (environment): ``RUM_STANDIN_POLL_SECONDS`` (default 2),
``RUM_STANDIN_JOB_SECONDS`` (default 3), ``RUM_STANDIN_IDLE_TIMEOUT`` (seconds without a job
before giving up with exit 3; default 0, wait for ever). Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PROG = "rum-standin-runner"
USAGE = "usage: run.sh --jitconfig <encoded JIT config>"
EXIT_USAGE = 2
EXIT_IDLE = 3
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
        raise RunnerFailure("not configured: this stand-in runs only just-in-time runners; " + USAGE, EXIT_USAGE)
    if argv[0] == "--jitconfig":
        raise RunnerFailure("--jitconfig needs one value, the encoded JIT config; " + USAGE, EXIT_USAGE)
    raise RunnerFailure(f"unsupported arguments {' '.join(a[:20] for a in argv)!r}; " + USAGE, EXIT_USAGE)


def refuse_root(environ: dict) -> None:
    if os.geteuid() == 0 and not environ.get("RUNNER_ALLOW_RUNASROOT"):
        raise RunnerFailure("must not run as root (set RUNNER_ALLOW_RUNASROOT=1 to allow it)")


def decode_jit_config(blob: str) -> dict:
    """The settings files of an encoded JIT config: {file name: parsed JSON}."""
    try:
        files = json.loads(base64.b64decode(blob, validate=True))
        if not isinstance(files, dict):
            raise ValueError("not a JSON object")
        return {name: json.loads(base64.b64decode(content, validate=True)) for name, content in files.items()}
    except (binascii.Error, ValueError, TypeError) as exc:
        raise RunnerFailure(f"the --jitconfig value is not an encoded JIT config ({exc.__class__.__name__})") from None


def runner_settings(files: dict) -> tuple[int, str, str]:
    """(AgentId, AgentName, ServerUrl) from the ``.runner`` settings file."""
    settings = files.get(".runner")
    if not isinstance(settings, dict):
        raise RunnerFailure("the JIT config has no .runner settings file")
    missing = [key for key in ("AgentId", "AgentName", "ServerUrl") if not settings.get(key)]
    if missing:
        raise RunnerFailure(f"the JIT config's .runner lacks {', '.join(missing)}")
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

    def call(self, method: str, path: str, body: dict | None = None, attempts: int = 0) -> tuple[int, object]:
        """(status, parsed body). ``attempts`` 0: retry unreachable/5xx for ever."""
        url = urllib.parse.urljoin(self.base_url, path)
        data = json.dumps(body).encode() if body is not None else None
        tries = 0
        while True:
            problem = ""
            request = urllib.request.Request(url, data=data, method=method, headers={
                "Content-Type": "application/json", "User-Agent": PROG})
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
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return json.dumps(body)


class StandInRunner:
    """One just-in-time runner: online, one job, done."""

    def __init__(self, agent_id: int, name: str, server: Server, poll: float = 2.0, job_seconds: float = 3.0,
                 idle_timeout: float = 0.0, clock=time.monotonic, sleep=time.sleep):
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
        job = self.take_job()
        say(f"running job {job['id']} ({job.get('name', '')}) with labels {', '.join(job.get('labels', []))}")
        self.sleep(self.job_seconds)
        say(f"job {job['id']} finished: success")
        status, body = self.server.call("POST", f"runners/{self.agent_id}/done", {"conclusion": "success"})
        if status != 200:
            raise RunnerFailure(f"reporting job {job['id']} done: HTTP {status} {_error(body)}")
        say(f"runner {self.name} is done after its one job (removed: {bool(isinstance(body, dict) and body.get('removed'))})")
        return 0


def main(argv: list[str] | None = None, environ: dict | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    try:
        blob = parse_args(sys.argv[1:] if argv is None else argv)
        refuse_root(environ)
        agent_id, name, server_url = runner_settings(decode_jit_config(blob))
        runner = StandInRunner(
            agent_id, name, Server(server_url),
            poll=_env_seconds(environ, "RUM_STANDIN_POLL_SECONDS", 2.0),
            job_seconds=_env_seconds(environ, "RUM_STANDIN_JOB_SECONDS", 3.0),
            idle_timeout=_env_seconds(environ, "RUM_STANDIN_IDLE_TIMEOUT", 0.0))
        return runner.run()
    except RunnerFailure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
