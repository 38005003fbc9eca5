# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWX dispatcher: launch a job template on AWX / automation controller and follow the job.

Before it launches, the dispatcher records that it is launching (and when); as soon as AWX names
the job, it records the job id. A service killed in between finds the record at its next start:
with a job id it follows that job; without one it looks for a job of the template with this
task's variables created since then, and adopts it, so it never launches the same attempt twice.
A successful job's ``artifacts`` (what the play published with ``set_stats``) say whether the
slot was recreated or left alone.
"""

from __future__ import annotations

import datetime
import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping

from .dispatch import MESSAGE_DETAIL_MAX, DispatchError, one_line, safe_log
from .tasks import RECONCILE, LogFn, RecordFn, Result, Task, outcome_of, outcome_said, task_vars

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
    for Variables, or AWX drops ``slot``, ``runner_name`` and ``stage``. ``reconcile_job_template`` (the
    template that runs ``pool.yml``) is launched for a reconcile task, without variables.
    """

    kind = "awx"

    def __init__(self, url: str, token: str, job_template: int | str, validate_certs: bool = True,
                 poll_seconds: float = 5, timeout: float | None = 1800, opener: Any = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Any] | None = None, request_timeout: float = 30,
                 reconcile_job_template: int | str | None = None):
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
        self.reconcile_template_spec = reconcile_job_template
        self._template_ids: dict[str, int] = {}
        self.poll_seconds = float(poll_seconds)
        self.timeout = float(timeout) if timeout else None
        self.opener = opener if opener is not None else build_opener(validate_certs)
        self.clock = clock
        self._detach = threading.Event()
        self.sleep = sleep if sleep is not None else self._detach.wait
        self.request_timeout = request_timeout

    def __repr__(self) -> str:
        return f"AwxDispatcher(url={self.url!r}, job_template={self.template_spec!r})"

    def detach_all(self) -> None:
        """Stop following jobs (the service is stopping); the jobs go on in AWX, and the next
        start of the service follows them by their recorded ids."""
        self._detach.set()

    def job_url(self, job_id: int) -> str:
        return f"{self.ui}/#/jobs/playbook/{job_id}/output"

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
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
                raise _HttpError(f"{where}: HTTP {status} redirect to {one_line(location, 200)}; "
                                 "set dispatcher.url to the address the API answers on", status) from None
        except urllib.error.URLError as exc:
            raise _HttpError(f"{where}: cannot connect: {one_line(exc.reason, 200)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _HttpError(f"{where}: {type(exc).__name__}: {one_line(exc, 200)}") from None
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
                return ": " + one_line(parsed["detail"], 200)
            if parsed.get("error"):
                return ": " + one_line(parsed["error"], 200)
            if parsed:
                return ": " + one_line(json.dumps(parsed, sort_keys=True), 200)
        return ""

    # -- job template --------------------------------------------------------------------------

    def resolve_template(self, spec: int | str | None = None, what: str = "dispatcher.job_template") -> int:
        """A job template's id (the recreate one by default); a name is looked up once.

        Raises DispatchError.
        """
        spec = self.template_spec if spec is None else spec
        if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
            return int(spec)
        name = str(spec)
        if name in self._template_ids:
            return self._template_ids[name]
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
                                f"(ids {ids}); set {what} to the id")
        self._template_ids[name] = int(matches[0]["id"])
        return self._template_ids[name]

    # -- run -----------------------------------------------------------------------------------

    def run(self, task: Task, log: LogFn, record: RecordFn | None = None) -> Result:
        prefix = f"slot {task.slot}: "
        try:
            return self._run(task, prefix, log, record if record is not None else (lambda _h: None))
        except DispatchError as exc:
            message = one_line(exc, 400)
            safe_log(log, prefix + message)
            return Result(False, message)

    def extra_vars_for(self, task: Task) -> dict[str, Any]:
        return task_vars(task)

    def _template_for(self, task: Task) -> int:
        if task.kind != RECONCILE:
            return self.resolve_template()
        if self.reconcile_template_spec is None:
            raise DispatchError("reconcile.job_template: not set; the AWX dispatcher cannot "
                                "reconcile the pool without it")
        return self.resolve_template(self.reconcile_template_spec, "reconcile.job_template")

    def _run(self, task: Task, prefix: str, log: LogFn, record: RecordFn) -> Result:
        template_id = self._template_for(task)
        extra_vars = self.extra_vars_for(task)
        handle = task.handle if (task.handle or {}).get("kind") == self.kind else None
        if handle is not None and isinstance(handle.get("job_id"), int):
            job_id = handle["job_id"]
            safe_log(log, f"{prefix}following AWX job {job_id}, launched before the restart")
            return self._follow(task, job_id, prefix, log, None, handle.get("since"))
        if handle is not None:
            known = [int(ref.split(":", 1)[1]) for ref in task.launches
                     if ref.startswith("awx:") and ref.split(":", 1)[1].isdigit()]
            found = self._find_launched(template_id, extra_vars, float(handle.get("since") or 0), known)
            if found is not None:
                record(dict(handle, job_id=found, launched=True))
                safe_log(log, f"{prefix}found AWX job {found}, launched just before the restart; "
                              "following it")
                return self._follow(task, found, prefix, log, None, handle.get("since"))
        since = self.clock()
        intent = {"kind": self.kind, "template": template_id, "since": since}
        record(intent)  # durable before the launch: a restart looks for this job, not a new one
        _status, data = self._request("POST", f"/job_templates/{template_id}/launch/",
                                      {"extra_vars": extra_vars} if extra_vars else {})
        job_id = None
        if isinstance(data, Mapping):
            job_id = data.get("job") or data.get("id")
        if not isinstance(job_id, int):
            raise DispatchError(f"AWX POST /job_templates/{template_id}/launch/: "
                                "the answer names no job id")
        record(dict(intent, job_id=job_id, launched=True))
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
            safe_log(log, prefix + message)
            return Result(False, message, ref=ref)
        safe_log(log, f"{prefix}AWX job {job_id} launched from job template {template_id}: {ref}")
        return self._follow(task, job_id, prefix, log, data.get("status"), since)

    def _find_launched(self, template_id: int, extra_vars: Mapping[str, Any], since: float,
                       known: list[int]) -> int | None:
        """The job of ``template_id`` with these variables created since ``since``, if any.

        ``since`` is this service's clock; a margin allows for AWX's clock differing from it.
        Jobs in ``known`` (earlier attempts of the same task) are not candidates.
        """
        after = datetime.datetime.fromtimestamp(since - 300, datetime.timezone.utc)
        query = urllib.parse.urlencode({"created__gte": after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                        "order_by": "-id", "page_size": 50})
        _status, data = self._request("GET", f"/job_templates/{template_id}/jobs/?{query}")
        results = data.get("results") if isinstance(data, Mapping) else None
        for item in results or []:
            job_id = item.get("id") if isinstance(item, Mapping) else None
            if not isinstance(job_id, int) or job_id in known:
                continue
            _status, job = self._request("GET", f"/jobs/{job_id}/")
            try:
                variables = json.loads(job.get("extra_vars") or "{}")
            except (TypeError, ValueError, AttributeError):
                continue
            if isinstance(variables, dict) and all(variables.get(k) == v for k, v in extra_vars.items()):
                return job_id
        return None

    def _follow(self, task: Task, job_id: int, prefix: str, log: LogFn, status: Any,
                since: Any) -> Result:
        ref = self.job_url(job_id)
        begun = float(since) if isinstance(since, (int, float)) else self.clock()
        deadline = begun + self.timeout if self.timeout else None
        shown = status if isinstance(status, str) and status else None
        if shown:
            safe_log(log, f"{prefix}AWX job {job_id} {shown}")
        job: Mapping[str, Any] = {}
        transient_logged = False
        while True:
            if self._detach.is_set():
                return Result(False, f"AWX job {job_id} left running; the service follows it "
                                     "again at its next start", ref=ref, detached=True)
            try:
                _status, data = self._request("GET", f"/jobs/{job_id}/")
                job = data if isinstance(data, Mapping) else {}
                status = job.get("status")
            except _HttpError as exc:
                if exc.status is not None and exc.status < 500:
                    message = one_line(exc, 400)
                    safe_log(log, prefix + message)
                    return Result(False, message, ref=ref)
                if not transient_logged:  # AWX restarting or a proxy hiccup: keep polling
                    safe_log(log, f"{prefix}{one_line(exc, 300)}; still polling")
                    transient_logged = True
            if status != shown and status:
                safe_log(log, f"{prefix}AWX job {job_id} {status}")
                shown = status
            if status in AWX_FINAL:
                break
            if deadline is not None and self.clock() >= deadline:
                self._try_cancel(job_id, prefix, log)
                return Result(False, f"AWX job {job_id} timed out after {self.timeout:g} s "
                                     f"(last status {status or 'unknown'}); cancel requested", ref=ref)
            self.sleep(self.poll_seconds)
        if status == "successful":
            outcome, reason = outcome_of(job.get("artifacts"), task.slot)
            message = f"AWX job {job_id} successful" + outcome_said(outcome, one_line(reason))
            return Result(True, message, ref=ref, outcome=outcome)
        explanation = one_line(job.get("job_explanation") or "", MESSAGE_DETAIL_MAX)
        message = f"AWX job {job_id} {status}"
        if explanation:
            message += f": {explanation}"
        return Result(False, message, ref=ref)

    def _try_cancel(self, job_id: int, prefix: str, log: LogFn) -> None:
        try:
            self._request("POST", f"/jobs/{job_id}/cancel/")
            safe_log(log, f"{prefix}AWX job {job_id}: cancel requested")
        except DispatchError as exc:
            safe_log(log, f"{prefix}AWX job {job_id}: cancel failed: {one_line(exc, 300)}")
