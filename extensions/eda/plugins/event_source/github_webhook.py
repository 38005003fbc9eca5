# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum.pool.github_webhook: GitHub webhook deliveries as Event-Driven Ansible events.

An aiohttp listener for ``POST`` deliveries (any path). It checks ``X-Hub-Signature-256`` the way
the collection's webhook service does (the HMAC-SHA256 of the raw body, computed as it streams in
and compared in constant time; the service's own ``signature.py`` from this collection is loaded),
and answers:

* 401 for a missing or wrong signature: nothing is put on the queue;
* 411, 413, 400 for a body without a length, over ``max_body_bytes``, or not a JSON object;
* 200 once a signed delivery is on the queue.

Arguments:

* ``host`` (default ``0.0.0.0``) and ``port`` (required): where to listen;
* ``secret``: the webhook's secret (required);
* ``pools``: the runner pool names (``runner_pool_name``) whose runners get a ``rum_pool`` block;
* ``max_body_bytes``: 25 MiB by default, GitHub's cap;
* ``stage`` (default false): mark a job's start on a pool runner (``in_progress``) with
  ``rum_pool.stage: true``, so that the rulebook stages the slot's next generation while the job
  runs (for pools with ``runner_pool_batch: true``; see recreate.yml's ``-e stage=true``).

Each event is ``{"payload": <the delivery>, "meta": {"headers": {...}}, "rum_pool": {...}}``.
``meta.headers`` holds ``X-GitHub-Event``, ``X-GitHub-Delivery`` and ``X-GitHub-Hook-ID`` (never the
signature). For a ``workflow_job`` on a runner of one of ``pools``, ``rum_pool`` holds ``event``,
``action``, ``delivery``, ``runner_name``, ``pool``, ``slot`` (the runner name without its
generation suffix, parsed with the collection's slot grammar) and ``stage``, which the rulebook
``rum.pool.recreate_on_completed_job`` passes to ``recreate.yml``; it is empty otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from typing import Any

from aiohttp import web

COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))
MAX_BODY = 25 * 1024 * 1024
KEPT_HEADERS = ("X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID")


def _load(name: str, *parts: str) -> Any:
    """A module of this collection by its path (the source runs outside any import path)."""
    path = os.path.join(COLLECTION, *parts)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError("rum.pool.github_webhook: cannot load %s" % path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


signature = _load("rum_pool_eda_signature", "service", "rum_pool_webhook", "signature.py")
slot = _load("rum_pool_eda_slot", "plugins", "module_utils", "_slot.py")


def _names(value: Any) -> list[str]:
    """Pool names from a list, or from a string (a rulebook variable may arrive rendered as
    "['ci', 'gpu']", or as "ci, gpu")."""
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    text = str(value or "").strip().strip("[]")
    return [part.strip().strip("'\"") for part in text.replace(",", " ").split() if part.strip("'\"")]


def _flag(value: Any, name: str) -> bool:
    """A boolean argument, also as a rulebook renders one ("True", "false", "yes", "0", "")."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    raise ValueError("rum.pool.github_webhook: %s must be true or false, got %r" % (name, value))


def describe(payload: dict[str, Any], headers: Any, pools: list[str], stage: bool = False) -> dict[str, Any]:
    """The ``rum_pool`` block of an event: what a rulebook needs to recreate (or stage) a slot."""
    if headers.get("X-GitHub-Event") != "workflow_job":
        return {}
    job = payload.get("workflow_job")
    runner = job.get("runner_name") if isinstance(job, dict) else None
    found = slot.parse_runner_name(runner, pools) if pools else None
    if found is None:
        return {}
    return {"event": "workflow_job", "action": payload.get("action"),
            "delivery": headers.get("X-GitHub-Delivery"), "runner_name": runner,
            "pool": found.pool, "slot": found.slot,
            "stage": bool(stage) and payload.get("action") == "in_progress"}


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"error": message} if status >= 400 else {"ok": True}, status=status)


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    """Listen until cancelled; put every signed delivery on ``queue``."""
    secret = str(args.get("secret") or "").strip().encode("utf-8")
    if not secret:
        raise ValueError("rum.pool.github_webhook: the secret argument is required")
    if not args.get("port"):
        raise ValueError("rum.pool.github_webhook: the port argument is required")
    pools = _names(args.get("pools"))
    limit = int(args.get("max_body_bytes") or MAX_BODY)
    stage = _flag(args.get("stage"), "stage")

    async def delivery(request: web.Request) -> web.Response:
        length = request.content_length
        if length is None:
            return _answer(411, "Content-Length required")
        if length > limit:
            return _answer(413, "body of %d bytes is over the limit" % length)
        header = request.headers.get("X-Hub-Signature-256")
        if not header:
            return _answer(401, "signature missing or wrong")
        verifier = signature.Verifier(secret)
        body = bytearray()
        async for chunk in request.content.iter_any():
            verifier.update(chunk)
            body += chunk
        if not verifier.matches(header):
            return _answer(401, "signature missing or wrong")
        try:
            payload = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return _answer(400, "body is not a JSON object")
        if not isinstance(payload, dict):
            return _answer(400, "body is not a JSON object")
        kept = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
        await queue.put({"payload": payload, "meta": {"headers": kept},
                         "rum_pool": describe(payload, request.headers, pools, stage)})
        return _answer(200, "ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", delivery)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, str(args.get("host") or "0.0.0.0"), int(args["port"])).start()
        await asyncio.Future()  # serve until the rulebook stops the source
    finally:
        await runner.cleanup()


if __name__ == "__main__":

    class _Print(asyncio.Queue):  # pylint: disable=too-few-public-methods
        async def put(self, item: Any) -> None:
            print(json.dumps(item)[:300], flush=True)

    asyncio.run(main(_Print(), {"port": int(os.environ.get("PORT", "5000")),
                                "secret": os.environ.get("SECRET", ""),
                                "pools": os.environ.get("POOLS", "").split()}))
