# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP side: ``POST /webhook`` and the read-only status routes, on aiohttp.

An asyncio server (HTTP/1.1 keep-alive, a real listen backlog) in a thread of its own. A
delivery is answered once its change is on disk: the handler verifies the signature while the
body streams in, parses the delivery, and hands it to the store, whose group commit syncs it
together with every other delivery that arrived meanwhile; only then does the answer go out.
The playbook runs later, in a worker thread.

What a request may cost is bounded before it is read: a body needs a ``Content-Length`` of at
most ``listen.max_body_bytes``, a signature header, and room in ``listen.max_inflight_bytes``
(bodies of 1 MiB or less may use all of it, larger ones all but a reserve, so a flood of big
uploads cannot crowd out GitHub's small deliveries); the body must arrive within
``listen.body_timeout`` seconds, the headers of a request within ``listen.idle_timeout``.
Anything else is answered 4xx (or 503 when the server is full) and the connection closed
without reading the body. Malformed bodies are 4xx too: the parser's errors, deep nesting
included, never escape as a 500.

Rejected requests are counted and listed on the status page, but their delivery ids are never
marked "seen" (they are unauthenticated). Each request is logged as one line: client, method,
path (without query), status, delivery id and time taken. Deliveries that were taken but set
nothing going (recorded, ignored, coalesced with a task already queued, duplicates) are logged
at debug level only: they are most of the traffic, and ``/metrics`` and the status page count
them by outcome. Deliveries that queue a task, pings, refusals, errors and the other routes are
logged at info. Bodies, signatures and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from . import __version__, status_page
from .config import Config
from .events import EventError, decide, parse_delivery
from .metrics import CONTENT_TYPE, Metrics
from .signature import Verifier
from .store import Store, one_line

LogFn = Callable[[str], None]
JSON_TYPE = "application/json"
MIB = 1024 * 1024
MAX_BODY = 25 * MIB  # the default of listen.max_body_bytes: GitHub caps payloads at 25 MB
SMALL_BODY = MIB  # bodies up to this size may use the in-flight reserve
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


class _Budget:
    """Body bytes being received at once; used from the event loop thread only."""

    def __init__(self, limit: int, reserve: int) -> None:
        self.limit = limit
        self.reserve = reserve
        self.used = 0

    def take(self, size: int) -> bool:
        room = self.limit if size <= SMALL_BODY else self.limit - self.reserve
        if self.used + size > room:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class _Refused(Exception):
    """A request answered without (or before the end of) its body; the connection is closed."""

    def __init__(self, status: int, message: str, reason: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or {}


def _response(status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> web.Response:
    out = {"Content-Type": content_type, "Cache-Control": "no-store"}
    out.update(headers or {})
    return web.Response(status=status, body=body, headers=out)


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return _response(status, json.dumps(data).encode("utf-8"), JSON_TYPE, headers)


# The answers that never change, encoded once.
_OK, _DUPLICATE, _RECORDED = (json.dumps(x).encode("utf-8") for x in
                              ({"ok": True}, {"duplicate": True}, {"recorded": True}))


class WebhookServer:
    """The aiohttp application of one service instance, bound at construction.

    ``serve_forever()`` runs its event loop (call it in a thread); ``shutdown()`` stops it and
    ``server_close()`` closes the listening socket and open connections.
    """

    def __init__(self, config: Config, store: Store, worker: Any, dispatcher_kind: str,
                 clock: Callable[[], float], log: LogFn, warn: LogFn, started_at: float,
                 metrics: Metrics | None = None, debug: LogFn | None = None) -> None:
        self.config = config
        self.store = store
        self.worker = worker
        self.dispatcher_kind = dispatcher_kind
        self.clock = clock
        self.log = log
        self.warn = warn
        self.debug = debug  # None: the quiet deliveries' lines are not even formatted
        self.started_at = started_at
        self.metrics = metrics or Metrics(store.metrics, started_at)
        store.on_commit = self.metrics.observe_commit
        self._timers = {route: self.metrics.request_seconds.labels(route)
                        for route in list(ROUTES) + ["other"]}
        self.budget = _Budget(config.max_inflight_bytes,
                              min(8 * MIB, config.max_inflight_bytes // 4))
        self._served = threading.Event()
        self._serving = False
        self.loop = asyncio.new_event_loop()
        app = web.Application(handler_args={"max_field_size": 16384})
        app.router.add_route("*", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     keepalive_timeout=config.idle_timeout, lingering_time=0)
        try:
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, config.listen_host, config.listen_port,
                               backlog=config.listen_backlog, reuse_address=True)
            self.loop.run_until_complete(site.start())
        except BaseException:
            self.loop.run_until_complete(self._runner.cleanup())
            self.loop.close()
            raise
        self.server_address = self._runner.addresses[0]

    # -- the loop -----------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:  # noqa: ARG002  # socketserver's signature
        asyncio.set_event_loop(self.loop)
        self._serving = True
        try:
            self.loop.run_forever()
        finally:
            self._served.set()

    def shutdown(self) -> None:
        if self._serving and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._served.wait(30)

    def server_close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    # -- views --------------------------------------------------------------------------------

    def service_info(self) -> dict[str, Any]:
        return {
            "version": __version__, "started_at": self.started_at, "now": self.clock(),
            "dispatcher": self.dispatcher_kind, "pools": list(self.config.pools),
            "max_parallel": self.config.max_parallel,
        }

    def snapshot(self) -> dict[str, Any]:
        info = self.service_info()
        return self.store.snapshot(info["now"], info)

    async def _off_loop(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking read (the database, rendering) in the default executor."""
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    # -- routing ------------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        allowed = ROUTES.get(path)
        ctx: dict[str, Any] = {"delivery": None, "quiet": False}
        if allowed is None:
            response = _json(404, {"error": "not found"})
        elif request.method not in allowed:
            response = _json(405, {"error": "method not allowed"}, {"Allow": ", ".join(allowed)})
        else:
            try:
                response = await self._handlers[path](self, request, ctx)
            except Exception as exc:  # pylint: disable=broad-except  # answer 500, keep serving
                self.warn("%s %s: internal error: %s: %s"
                          % (request.method, path, type(exc).__name__, one_line(exc, 300)))
                response = _json(500, {"error": "internal error"})
                response.force_close()
        elapsed = time.monotonic() - started
        self._timers[path if allowed else "other"].observe(elapsed)
        log = self.debug if ctx["quiet"] else self.log
        if log is None:
            return response
        line = '%s "%s %s" %s' % (request.remote, request.method, one_line(path, 200),
                                  response.status)
        if ctx["delivery"]:
            line += " delivery %s" % one_line(ctx["delivery"], 128)
        try:
            log(line + " %.0f ms" % (elapsed * 1000))
        except Exception:  # pylint: disable=broad-except  # logging must not break a response
            pass
        return response

    async def _healthz(self, _request: web.Request, _ctx: dict[str, Any]) -> web.Response:
        counts = await self._off_loop(self.store.task_counts)
        return _json(200, dict({"ok": True}, **counts))

    async def _api_status(self, _request: web.Request, _ctx: dict[str, Any]) -> web.Response:
        return _json(200, await self._off_loop(self.snapshot))

    async def _page(self, _request: web.Request, _ctx: dict[str, Any]) -> web.Response:
        html = await self._off_loop(lambda: status_page.render_html(self.snapshot()))
        return _response(200, html.encode("utf-8"), "text/html; charset=utf-8")

    async def _svg(self, _request: web.Request, _ctx: dict[str, Any]) -> web.Response:
        svg = await self._off_loop(lambda: status_page.render_svg(self.snapshot()))
        return _response(200, svg.encode("utf-8"), "image/svg+xml")

    async def _metrics(self, _request: web.Request, _ctx: dict[str, Any]) -> web.Response:
        self.metrics.inflight_bytes.set(self.budget.used)
        return _response(200, await self._off_loop(self.metrics.render), CONTENT_TYPE)

    # -- the webhook --------------------------------------------------------------------------

    async def _webhook(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        now = self.clock()
        headers = request.headers
        ctx["delivery"] = headers.get("X-GitHub-Delivery")
        try:
            body = await self._admit_and_read(request)
        except _Refused as refused:
            self.metrics.refused.labels(refused.reason).inc()
            response = await self._reject(request, now, refused.status, refused.message,
                                          refused.headers)
            response.force_close()
            return response
        verifier, data = body
        if not verifier.matches(headers.get("X-Hub-Signature-256")):
            return await self._reject(request, now, 401, "signature missing or wrong")
        try:
            delivery = parse_delivery(
                {"x-github-event": headers.get("X-GitHub-Event"), "x-github-delivery":
                 ctx["delivery"]}, data, headers.get("Content-Type"))
        except EventError as exc:
            return await self._reject(request, now, exc.status, exc.message)
        del data
        decision = decide(delivery, self.config.pools, self.config.stage)
        accepted = await self.store.accept_async(delivery, decision, now)
        if decision.kind == "ping":
            return _response(200, _OK, JSON_TYPE)
        if accepted.outcome == "queued":
            try:
                self.worker.wake()
            except Exception:  # pylint: disable=broad-except  # the worker polls anyway
                pass
            return _json(202, {"queued": accepted.task_id, "slot": accepted.slot})
        ctx["quiet"] = True  # taken, but nothing set going: a debug line
        if accepted.outcome == "duplicate":
            return _response(200, _DUPLICATE, JSON_TYPE)
        if accepted.outcome == "coalesced":
            return _json(202, {"coalesced": accepted.task_id, "slot": accepted.slot})
        if accepted.outcome == "recorded":
            return _response(200, _RECORDED, JSON_TYPE)
        return _json(200, {"ignored": decision.reason})

    async def _admit_and_read(self, request: web.Request) -> tuple[Verifier, bytearray]:
        """Check what the request may cost, then read its body into the signature check."""
        config = self.config
        if "Transfer-Encoding" in request.headers:
            raise _Refused(411, "Content-Length required (chunked bodies are not accepted)",
                           "chunked")
        length = request.content_length
        if length is None:
            raise _Refused(411, "Content-Length required", "no-length")
        if length > config.max_body_bytes:
            raise _Refused(413, "body of %d bytes is over the %s limit"
                           % (length, _size(config.max_body_bytes)), "too-large")
        if not request.headers.get("X-Hub-Signature-256"):
            raise _Refused(401, "signature missing or wrong", "unsigned")
        if not self.budget.take(length):
            raise _Refused(503, "too many request bodies in flight; try again",
                           "inflight", {"Retry-After": "5"})
        try:
            return await self._read_body(request)
        finally:
            self.budget.give(length)

    async def _read_body(self, request: web.Request) -> tuple[Verifier, bytearray]:
        content = request.content
        verifier = Verifier(self.config.secret)
        buf = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.body_timeout
        try:
            while True:
                chunk = content.read_nowait(-1)  # what has arrived already, without waiting
                if chunk:
                    verifier.update(chunk)
                    buf += chunk
                    continue
                if content.is_eof():
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise asyncio.TimeoutError()
                chunk = await asyncio.wait_for(content.readany(), remaining)
                verifier.update(chunk)
                buf += chunk
        except asyncio.TimeoutError:
            raise _Refused(408, "body not received within %g s" % self.config.body_timeout,
                           "slow") from None
        except Exception:  # pylint: disable=broad-except  # the client went away mid-body
            raise _Refused(400, "body shorter than its Content-Length", "cut-off") from None
        return verifier, buf  # not copied: a body may be 25 MiB

    async def _reject(self, request: web.Request, now: float, status: int, message: str,
                      headers: dict[str, str] | None = None) -> web.Response:
        await self.store.reject_async(now, message, request.headers.get("X-GitHub-Delivery"),
                                      request.headers.get("X-GitHub-Event"))
        return _json(status, {"error": message}, headers)

    _handlers: dict[str, Callable[[WebhookServer, web.Request, dict[str, Any]],
                                  Awaitable[web.Response]]] = {
        "/webhook": _webhook, "/healthz": _healthz, "/api/status": _api_status, "/": _page,
        "/status.svg": _svg, "/metrics": _metrics,
    }


def _size(limit: int) -> str:
    return "%d MiB" % (limit // MIB) if limit % MIB == 0 else "%d bytes" % limit


def make_server(config: Config, store: Store, worker: Any, dispatcher_kind: str,
                clock: Callable[[], float] = time.time, log: LogFn | None = None,
                warn: LogFn | None = None, started_at: float | None = None,
                metrics: Metrics | None = None, debug: LogFn | None = None) -> WebhookServer:
    """Bind the HTTP server to ``config.listen_host:listen_port`` (not yet serving).

    ``worker`` needs only ``wake()``. Call ``serve_forever()`` (in a thread) and
    ``shutdown()`` / ``server_close()`` to stop. ``debug`` gets the lines of deliveries that
    set nothing going (None: they are not logged).
    """
    log = log or _quiet
    return WebhookServer(
        config, store, worker, dispatcher_kind, clock, log, warn or log,
        clock() if started_at is None else started_at, metrics, debug,
    )
