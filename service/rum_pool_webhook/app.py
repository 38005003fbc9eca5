# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP side: ``POST /webhook`` and the read-only status routes.

``/webhook`` answers within milliseconds: it verifies the signature over the raw body, parses
the delivery, and hands it to ``Store.accept`` (dedupe, record, enqueue) in one transaction;
the playbook runs later in a worker thread. Rejected requests are counted and listed on the
status page, but their delivery ids are never marked "seen" (they are unauthenticated).

Each request is logged as one line: client, method, path (without query), status, delivery id
and time taken. Bodies, signatures and secrets are never logged.
"""

from __future__ import annotations

import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

from . import __version__, status_page
from .config import Config
from .events import EventError, decide, parse_delivery
from .signature import verify
from .store import OUTCOMES, Store, one_line

MAX_BODY = 25 * 1024 * 1024
LogFn = Callable[[str], None]
JSON_TYPE = "application/json"
ROUTES = {
    "/webhook": ("POST",),
    "/healthz": ("GET",),
    "/api/status": ("GET",),
    "/": ("GET",),
    "/status.svg": ("GET",),
    "/metrics": ("GET",),
}


def _quiet(_line: str) -> None:
    return None


def render_metrics(metrics: Dict[str, Any], started_at: float) -> str:
    """Prometheus text exposition of ``Store.metrics()``."""
    lines = [
        "# HELP rum_pool_webhook_deliveries_total Webhook deliveries received, by outcome.",
        "# TYPE rum_pool_webhook_deliveries_total counter",
    ]
    for outcome in OUTCOMES:
        lines.append('rum_pool_webhook_deliveries_total{outcome="%s"} %d'
                     % (outcome, metrics["deliveries"].get(outcome, 0)))
    lines += [
        "# HELP rum_pool_webhook_tasks Recreate tasks: queued and running now, "
        "done and failed in total.",
        "# TYPE rum_pool_webhook_tasks gauge",
    ]
    for state in ("queued", "running", "done", "failed"):
        lines.append('rum_pool_webhook_tasks{state="%s"} %d' % (state, metrics["tasks"][state]))
    lines += [
        "# HELP rum_pool_webhook_task_seconds Time spent running tasks (every attempt).",
        "# TYPE rum_pool_webhook_task_seconds summary",
        "rum_pool_webhook_task_seconds_sum %r" % float(metrics["task_seconds_sum"]),
        "rum_pool_webhook_task_seconds_count %d" % metrics["task_seconds_count"],
        "# HELP rum_pool_webhook_start_time_seconds When the service started (Unix time).",
        "# TYPE rum_pool_webhook_start_time_seconds gauge",
        "rum_pool_webhook_start_time_seconds %r" % float(started_at),
        "# HELP rum_pool_webhook_info The service version.",
        "# TYPE rum_pool_webhook_info gauge",
        'rum_pool_webhook_info{version="%s"} 1' % __version__,
    ]
    return "\n".join(lines) + "\n"


class WebhookServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer carrying the service's state for its handlers."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], config: Config, store: Store, worker: Any,
                 dispatcher_kind: str, clock: Callable[[], float], log: LogFn,
                 warn: LogFn, started_at: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.store = store
        self.worker = worker
        self.dispatcher_kind = dispatcher_kind
        self.clock = clock
        self.log = log
        self.warn = warn
        self.started_at = started_at
        super().__init__(address, _Handler)

    def service_info(self) -> Dict[str, Any]:
        return {
            "version": __version__, "started_at": self.started_at, "now": self.clock(),
            "dispatcher": self.dispatcher_kind, "pools": list(self.config.pools),
            "max_parallel": self.config.max_parallel,
        }

    def snapshot(self) -> Dict[str, Any]:
        info = self.service_info()
        return self.store.snapshot(info["now"], info)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    server_version = "rum-pool-webhook/" + __version__
    timeout = 30  # seconds a client may take to send its request

    _delivery: Optional[str] = None
    _started: float = 0.0

    # -- logging ------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # stdlib's name
        return None

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        # http.server's own errors (bad request line, timeouts); the status line follows.
        return None

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        path = (getattr(self, "path", "") or "").split("?", 1)[0]
        line = '%s "%s %s" %s' % (self.client_address[0], getattr(self, "command", None) or "-",
                                  one_line(path, 200), getattr(code, "value", code))
        if self._delivery:
            line += " delivery %s" % one_line(self._delivery, 128)
        if self._started:
            line += " %.0f ms" % ((time.monotonic() - self._started) * 1000)
        try:
            self.server.log(line)
        except Exception:  # pylint: disable=broad-except  # logging must not break a response
            pass

    # -- responses ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), JSON_TYPE, headers)

    def _route(self, method: str) -> None:
        self._started = time.monotonic()
        self._delivery = None
        path = self.path.split("?", 1)[0]
        allowed = ROUTES.get(path)
        if allowed is None:
            self._json(404, {"error": "not found"})
            return
        if method not in allowed:
            self._json(405, {"error": "method not allowed"}, {"Allow": ", ".join(allowed)})
            return
        try:
            if path == "/webhook":
                self._webhook()
            elif path == "/healthz":
                self._json(200, dict({"ok": True}, **self.server.store.task_counts()))
            elif path == "/api/status":
                self._json(200, self.server.snapshot())
            elif path == "/":
                self._send(200, status_page.render_html(self.server.snapshot()).encode("utf-8"),
                           "text/html; charset=utf-8")
            elif path == "/status.svg":
                self._send(200, status_page.render_svg(self.server.snapshot()).encode("utf-8"),
                           "image/svg+xml")
            elif path == "/metrics":
                text = render_metrics(self.server.store.metrics(), self.server.started_at)
                self._send(200, text.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")
        except Exception as exc:  # pylint: disable=broad-except  # answer 500, keep serving
            self.server.warn("%s %s: internal error: %s: %s"
                             % (method, path, type(exc).__name__, one_line(exc, 300)))
            self.close_connection = True
            try:
                self._json(500, {"error": "internal error"})
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802  # http.server's naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    # -- the webhook --------------------------------------------------------------------------

    def _reject(self, now: float, status: int, message: str) -> None:
        self.server.store.reject(now, message, self._delivery,
                                 self.headers.get("X-GitHub-Event"))
        self._json(status, {"error": message})

    def _read_body(self, now: float) -> Optional[bytes]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._reject(now, 411, "Content-Length required (chunked bodies are not accepted)")
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            self._reject(now, 411, "Content-Length required")
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True
            self._reject(now, 400, "Content-Length is not a number")
            return None
        if length > MAX_BODY:
            # Not read at all: the connection is closed after the answer.
            self.close_connection = True
            self._reject(now, 413, "body of %d bytes is over the %d MiB limit"
                         % (length, MAX_BODY // (1024 * 1024)))
            return None
        chunks = []
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining:
            self.close_connection = True
            self._reject(now, 400, "body shorter than its Content-Length")
            return None
        return b"".join(chunks)

    def _webhook(self) -> None:
        server = self.server
        now = server.clock()
        self._delivery = self.headers.get("X-GitHub-Delivery")
        body = self._read_body(now)
        if body is None:
            return
        if not verify(server.config.secret, body, self.headers.get("X-Hub-Signature-256")):
            self._reject(now, 401, "signature missing or wrong")
            return
        try:
            delivery = parse_delivery(self.headers, body, self.headers.get("Content-Type"))
        except EventError as exc:
            self._reject(now, exc.status, exc.message)
            return
        decision = decide(delivery, server.config.pools)
        accepted = server.store.accept(delivery, decision, now)
        if decision.kind == "ping":
            self._json(200, {"ok": True})
        elif accepted.outcome == "duplicate":
            self._json(200, {"duplicate": True})
        elif accepted.outcome == "queued":
            try:
                server.worker.wake()
            except Exception:  # pylint: disable=broad-except  # the worker polls anyway
                pass
            self._json(202, {"queued": accepted.task_id, "slot": accepted.slot})
        elif accepted.outcome == "coalesced":
            self._json(202, {"coalesced": accepted.task_id, "slot": accepted.slot})
        elif accepted.outcome == "recorded":
            self._json(200, {"recorded": True})
        else:
            self._json(200, {"ignored": decision.reason})


def make_server(config: Config, store: Store, worker: Any, dispatcher_kind: str,
                clock: Callable[[], float] = time.time, log: Optional[LogFn] = None,
                warn: Optional[LogFn] = None,
                started_at: Optional[float] = None) -> WebhookServer:
    """Bind the HTTP server to ``config.listen_host:listen_port`` (not yet serving).

    ``worker`` needs only ``wake()``. Call ``serve_forever()`` (in a thread) and
    ``shutdown()`` / ``server_close()`` to stop.
    """
    log = log or _quiet
    return WebhookServer(
        (config.listen_host, config.listen_port), config, store, worker, dispatcher_kind,
        clock, log, warn or log, clock() if started_at is None else started_at,
    )
