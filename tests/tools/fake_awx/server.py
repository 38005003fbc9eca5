# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fake AWX over HTTP: in-process (``FakeAwx().start()``) or as a command.

    python tests/tools/fake_awx/server.py --port 0 --token T [--template NAME[:noprompt][:fail]]

prints its base URL on the first line of stdout and serves until killed.

It serves the few AWX API v2 endpoints the webhook service uses, with AWX's status codes and
the fields the service reads: job template lookup by name, launch (``ignored_fields`` when the
template does not prompt for variables), a template's jobs (filtered by ``created__gte``), job
status and ``artifacts``, cancel. Jobs move along a script
(``pending`` -> ``running`` -> ``successful`` by default), one step per ``GET`` of the job, or
stay put until a test moves them (``set_job_status`` or ``POST /_fake/jobs/{id}/status``).

Faults are injected with ``add_fault`` (or ``POST /_fake/faults``): the next ``times`` requests
whose method and path match answer with ``status`` instead (AWX's error body), and/or only after
``delay`` seconds (a slow or hung server: the client's read time-out fires first). A faulted
request is recorded but changes nothing (a 5xx from a proxy in front of AWX never reached it).
Two templates may share a name, as in AWX (names are unique per organization only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import threading
import time
import typing as t
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
FINAL = ("successful", "failed", "error", "canceled")
_TEMPLATE = re.compile(r"^/api/v2/job_templates/([0-9]+)/$")
_TEMPLATE_JOBS = re.compile(r"^/api/v2/job_templates/([0-9]+)/jobs/$")
_LAUNCH = re.compile(r"^/api/v2/job_templates/([0-9]+)/launch/$")
_JOB = re.compile(r"^/api/v2/jobs/([0-9]+)/$")
_CANCEL = re.compile(r"^/api/v2/jobs/([0-9]+)/cancel/$")
_ADMIN_STATUS = re.compile(r"^/_fake/jobs/([0-9]+)/status$")


class FakeAwxModel:
    """State and request handling, independent of sockets (``handle`` is the whole API)."""

    def __init__(self, tokens: t.Mapping[str, str] | None = None,
                 clock: t.Callable[[], float] = time.time):
        self.clock = clock
        # token -> "execute" (may launch) or "read" (GET only: POSTs get 403)
        self.tokens: dict[str, str] = dict(tokens or {})
        self.templates: dict[int, dict] = {}
        self.jobs: dict[int, dict] = {}
        self.requests: list[dict] = []
        self._next_template = 7
        self._next_job = 100
        self._lock = threading.RLock()
        self.faults: list[dict] = []

    # -- setup (tests) -------------------------------------------------------------------------

    def add_template(self, name: str, ask_variables_on_launch: bool = True,
                     script: t.Sequence[str] = ("pending", "running", "successful"),
                     auto_advance: bool = True, job_explanation: str = "",
                     template_id: int | None = None,
                     artifacts: t.Callable[[dict], dict] | dict | None = None) -> int:
        """Add a job template; its jobs follow ``script`` (``auto_advance``: one step per GET).

        ``artifacts`` is what a successful job published with ``set_stats`` (a dict, or a
        function of the job's extra vars).
        """
        with self._lock:
            if template_id is None:
                template_id = self._next_template
                self._next_template += 1
            self.templates[template_id] = {
                "id": template_id, "type": "job_template", "name": name,
                "url": f"/api/v2/job_templates/{template_id}/",
                "ask_variables_on_launch": ask_variables_on_launch,
                "playbook": "playbooks/recreate.yml",
                "_script": list(script), "_auto": auto_advance, "_explanation": job_explanation,
                "_artifacts": artifacts,
            }
            return template_id

    def set_job_status(self, job_id: int, status: str, job_explanation: str | None = None) -> dict:
        with self._lock:
            job = self.jobs[job_id]
            job["status"] = status
            job["failed"] = status in ("failed", "error")
            if status == "successful":
                job["artifacts"] = job["_artifacts"]
            if job_explanation is not None:
                job["job_explanation"] = job_explanation
            job["_auto"] = False
            return self._public(job)

    def add_fault(self, method: str, path: str, status: int | None = 500, times: int = 1,
                  delay: float = 0.0, detail: str | None = None) -> dict:
        """The next ``times`` ``method`` requests to ``path`` (a regular expression matched
        against the whole path) answer ``status`` (None: the real answer) after ``delay`` s."""
        fault = {"method": method.upper(), "path": path, "status": status, "times": int(times),
                 "delay": float(delay), "detail": detail, "hits": 0}
        with self._lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, target: str) -> dict | None:
        """The fault this request meets (its count taken), or None."""
        path = urllib.parse.urlsplit(target).path
        with self._lock:
            for fault in self.faults:
                if (fault["times"] > fault["hits"] and fault["method"] == method.upper()
                        and re.fullmatch(fault["path"], path)):
                    fault["hits"] += 1
                    return dict(fault)
        return None

    def launches(self) -> list[dict]:
        """The jobs launched so far, oldest first (public fields, extra_vars decoded)."""
        with self._lock:
            out = []
            for job in self.jobs.values():
                item = self._public(job)
                item["extra_vars"] = json.loads(job["extra_vars"])
                out.append(item)
            return out

    # -- HTTP ----------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: t.Mapping[str, str],
               body: bytes, fault: dict | None = None) -> tuple[int, dict]:
        split = urllib.parse.urlsplit(target)
        path, query = split.path, urllib.parse.parse_qs(split.query)
        lower = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            if path.startswith("/_fake/"):
                return self._admin(method, path, body)
            auth = self._auth(lower.get("authorization"))
            entry = {"method": method, "path": path, "query": split.query, "auth": auth,
                     "body": None}
            malformed = None
            if body:
                try:
                    entry["body"] = json.loads(body)
                except ValueError as exc:
                    entry["body"] = body.decode("utf-8", "replace")
                    malformed = str(exc)
            self.requests.append(entry)
            if auth in ("missing", "bad"):
                detail = ("Authentication credentials were not provided." if auth == "missing"
                          else "Invalid token.")
                return 401, {"detail": detail}
            if fault is not None and fault["status"] is not None:
                entry["fault"] = fault["status"]
                return fault["status"], {"detail": fault["detail"] or _REASONS.get(
                    fault["status"], "A server error occurred.")}
            if method == "POST" and auth != "execute":
                return 403, {"detail": "You do not have permission to perform this action."}
            if method == "POST" and malformed is not None:  # Django REST framework's ParseError
                return 400, {"detail": f"JSON parse error - {malformed}"}
            return self._api(method, path, query, entry["body"])

    def _auth(self, header: str | None) -> str:
        if not header:
            return "missing"
        scheme, _sep, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            return "bad"
        return self.tokens[token.strip()]

    def _api(self, method: str, path: str, query: dict, body: t.Any) -> tuple[int, dict]:
        if method == "GET" and path == "/api/v2/job_templates/":
            results = [self._public(tpl) for tpl in self.templates.values()
                       if "name" not in query or tpl["name"] == query["name"][0]]
            return 200, {"count": len(results), "next": None, "previous": None, "results": results}
        match = _TEMPLATE_JOBS.match(path)
        if match and method == "GET":
            return self._template_jobs(int(match.group(1)), query)
        match = _TEMPLATE.match(path)
        if match and method == "GET":
            tpl = self.templates.get(int(match.group(1)))
            return (200, self._public(tpl)) if tpl else (404, {"detail": "Not found."})
        match = _LAUNCH.match(path)
        if match:
            if method != "POST":
                return 405, {"detail": f'Method "{method}" not allowed.'}
            return self._launch(int(match.group(1)), body)
        match = _JOB.match(path)
        if match and method == "GET":
            return self._poll(int(match.group(1)))
        match = _CANCEL.match(path)
        if match:
            job = self.jobs.get(int(match.group(1)))
            if job is None:
                return 404, {"detail": "Not found."}
            if method == "GET":
                return 200, {"can_cancel": job["status"] not in FINAL}
            if job["status"] in FINAL:
                return 405, {"error": "Job cannot be canceled."}
            job["status"] = "canceled"
            job["_auto"] = False
            job["_cancel_requested"] = True
            return 202, {}
        return 404, {"detail": "Not found."}

    def _launch(self, template_id: int, body: t.Any) -> tuple[int, dict]:
        tpl = self.templates.get(template_id)
        if tpl is None:
            return 404, {"detail": "Not found."}
        body = body if isinstance(body, dict) else {}
        extra = body.get("extra_vars", {})
        if isinstance(extra, str):  # AWX also takes a JSON (or YAML) string
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except ValueError:
                return 400, {"extra_vars": ["Cannot parse as JSON (error: invalid) or YAML."]}
        if not isinstance(extra, dict):
            return 400, {"extra_vars": ["Must be a valid JSON or YAML dictionary."]}
        ignored: dict = {}
        if extra and not tpl["ask_variables_on_launch"]:
            ignored["extra_vars"] = extra
            extra = {}
        job_id = self._next_job
        self._next_job += 1
        artifacts = tpl["_artifacts"](extra) if callable(tpl["_artifacts"]) else tpl["_artifacts"]
        job = {
            "id": job_id, "type": "job", "url": f"/api/v2/jobs/{job_id}/",
            "job_template": template_id, "name": tpl["name"], "launch_type": "manual",
            "created": _iso(self.clock()), "status": tpl["_script"][0], "failed": False,
            "job_explanation": "", "extra_vars": json.dumps(extra), "artifacts": {},
            "_script": list(tpl["_script"]), "_step": 0, "_artifacts": dict(artifacts or {}),
            "_auto": tpl["_auto"], "_explanation": tpl["_explanation"], "_polls": 0,
            "_cancel_requested": False,
        }
        self.jobs[job_id] = job
        data = {"job": job_id, "ignored_fields": ignored}
        data.update(self._public(job))
        return 201, data

    def _poll(self, job_id: int) -> tuple[int, dict]:
        job = self.jobs.get(job_id)
        if job is None:
            return 404, {"detail": "Not found."}
        job["_polls"] += 1
        if job["_auto"] and job["status"] not in FINAL and job["_step"] + 1 < len(job["_script"]):
            job["_step"] += 1
            job["status"] = job["_script"][job["_step"]]
            if job["status"] in ("failed", "error"):
                job["failed"] = True
                job["job_explanation"] = job["_explanation"]
        if job["status"] == "successful":
            job["artifacts"] = job["_artifacts"]
        return 200, self._public(job)

    def _template_jobs(self, template_id: int, query: dict) -> tuple[int, dict]:
        """``GET /job_templates/{id}/jobs/?created__gte=&order_by=-id``: summaries, as AWX lists
        them (no extra_vars: the detail has them)."""
        if template_id not in self.templates:
            return 404, {"detail": "Not found."}
        jobs = [j for j in self.jobs.values() if j["job_template"] == template_id]
        if "created__gte" in query:
            since = _parse_iso(query["created__gte"][0])
            jobs = [j for j in jobs if _parse_iso(j["created"]) >= since]
        jobs.sort(key=lambda j: j["id"], reverse=query.get("order_by", ["id"])[0] == "-id")
        size = int(query.get("page_size", ["25"])[0])
        results = [{k: v for k, v in self._public(j).items() if k not in ("extra_vars", "artifacts")}
                   for j in jobs[:size]]
        return 200, {"count": len(jobs), "next": None, "previous": None, "results": results}

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, t.Any]:
        data = json.loads(body) if body else {}
        if method == "GET" and path == "/_fake/requests":
            return 200, {"requests": self.requests}
        if method == "GET" and path == "/_fake/jobs":
            return 200, {"jobs": self.launches()}
        if method == "POST" and path == "/_fake/templates":
            template_id = self.add_template(
                data["name"], bool(data.get("ask_variables_on_launch", True)),
                tuple(data.get("script") or ("pending", "running", "successful")),
                bool(data.get("auto_advance", True)), str(data.get("job_explanation", "")),
                data.get("id"))
            return 201, self._public(self.templates[template_id])
        if method == "POST" and path == "/_fake/faults":
            return 201, self.add_fault(data["method"], data["path"], data.get("status", 500),
                                       int(data.get("times", 1)), float(data.get("delay", 0.0)),
                                       data.get("detail"))
        if method == "POST" and path == "/_fake/tokens":
            self.tokens[str(data["token"])] = str(data.get("role", "execute"))
            return 201, {}
        match = _ADMIN_STATUS.match(path)
        if match and method == "POST":
            if int(match.group(1)) not in self.jobs:
                return 404, {"detail": "Not found."}
            return 200, self.set_job_status(int(match.group(1)), data["status"],
                                            data.get("job_explanation"))
        return 404, {"detail": "Not found."}

    @staticmethod
    def _public(obj: dict | None) -> dict:
        return {k: v for k, v in (obj or {}).items() if not k.startswith("_")}


_REASONS = {500: "A server error occurred.", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 404: "Not found.", 409: "Conflict"}


def _iso(stamp: float) -> str:
    """AWX's timestamps: ISO 8601 in UTC with microseconds and a ``Z``."""
    when = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model: FakeAwxModel

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-body (killed): no request to answer
            self.close_connection = True
            return
        fault = None if self.path.startswith("/_fake/") else self.model.take_fault(self.command, self.path)
        if fault is not None and fault["delay"]:
            time.sleep(fault["delay"])  # outside the model's lock: other requests go on
        status, data = self.model.handle(self.command, self.path, dict(self.headers.items()), body,
                                         fault)
        raw = json.dumps(data).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: t.Any) -> None:  # pylint: disable=redefined-builtin
        if os.environ.get("FAKE_AWX_LOG"):
            sys.stderr.write("fake-awx: " + (format % args) + "\n")


class FakeAwx:
    """The fake AWX server. ``start()`` returns its base URL; ``stop()`` shuts it down.

    ``token`` is accepted with execute rights; ``read_token`` (if given) may only GET.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = "awx-test-token",
                 read_token: str | None = None):
        tokens = {token: "execute"}
        if read_token:
            tokens[read_token] = "read"
        self.host = host
        self.port = port
        self.model = FakeAwxModel(tokens)
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"model": self.model})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        self.url = f"http://{shown}:{port}"
        httpd = self._httpd
        threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.05), name="fake-awx",
                         daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeAwx:
        self.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()

    # Shortcuts to the model.
    def add_template(self, name: str, **kwargs: t.Any) -> int:
        return self.model.add_template(name, **kwargs)

    def set_job_status(self, job_id: int, status: str, job_explanation: str | None = None) -> dict:
        return self.model.set_job_status(job_id, status, job_explanation)

    def add_fault(self, method: str, path: str, **kwargs: t.Any) -> dict:
        return self.model.add_fault(method, path, **kwargs)

    @property
    def requests(self) -> list[dict]:
        return list(self.model.requests)

    def launches(self) -> list[dict]:
        return self.model.launches()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake AWX API for rum.pool tests.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--token", default="awx-test-token", help="the accepted Bearer token")
    parser.add_argument("--template", action="append", default=[],
                        help="NAME[:noprompt][:fail][:manual]: add a job template (ids from 7 up)")
    args = parser.parse_args(argv)
    fake = FakeAwx(host=args.host, port=args.port, token=args.token)
    for spec in args.template:
        name, *flags = spec.split(":")
        script = ("pending", "running", "failed" if "fail" in flags else "successful")
        fake.add_template(name, ask_variables_on_launch="noprompt" not in flags, script=script,
                          auto_advance="manual" not in flags)
    print(fake.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
