# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse a webhook delivery and decide what it means for our runner slots.

``parse_delivery`` turns headers and the raw body into a ``Delivery`` (or raises
``EventError`` with the HTTP status to answer). ``decide`` is a pure function from a delivery
and the configured pools to a ``Decision``:

* ``ping``      the hook was just set up;
* ``recreate``  a ``workflow_job`` on one of our runners completed: recreate its slot;
* ``stage``     a job started (``in_progress``) on one of our runners and the service stages:
  prepare the slot's next generation while the job runs (and remember it, as ``record``);
* ``record``    one of our runners is ``queued``/``waiting``/``in_progress``: remember it for
  the status page;
* ``ignore``    anything else (other events, other runners, jobs not yet on a runner).

It routes on the delivery's ``action``; ``workflow_job.status`` can disagree with it (GitHub
sends action ``queued`` with status ``waiting`` for jobs held by an environment rule).

Bodies are parsed with orjson when it is installed (about twice as fast on GitHub's 10-13 KB
payloads) and with the standard library otherwise. Both give the same delivery for the same
bytes: whatever orjson refuses or reads differently (NaN and Infinity, lone surrogates,
integers past 64 bits, which it reads as floats) is parsed again by the standard library, whose
answer and error messages are the ones that count. Nesting is the one limit the two parsers
draw differently (orjson stops at 1024 levels, the standard library near its recursion limit),
so orjson is only asked about bodies with at most ``FAST_BRACKETS`` opening brackets, which no
parser refuses for depth; GitHub's payloads have a few dozen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import parse_qs

from .slot import parse_runner_name

try:  # optional: the service runs on the standard library's parser without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on what is installed
    _orjson = None

# A delivery id is a GUID; anything much longer or with odd characters is refused.
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_EVENT_NAME = re.compile(r"^[a-z_]{1,64}$")
RECORDED_ACTIONS = ("queued", "waiting", "in_progress")


class EventError(Exception):
    """A delivery that cannot be handled; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Delivery:
    """What the service keeps of one webhook delivery (never the whole payload)."""

    id: str
    event: str
    action: str | None = None
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    runner_name: str | None = None
    repository: str | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)
    conclusion: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do about a delivery; ``reason`` is one line for logs and the status page."""

    kind: str  # "recreate" | "stage" | "record" | "ignore" | "ping"
    slot: str | None = None
    pool: str | None = None
    runner: str | None = None
    reason: str = ""


def _headers(headers: Any) -> dict:
    """Lower-case header names; accepts a dict or an ``email.message.Message``."""
    out = {}
    for key, value in headers.items():
        out.setdefault(str(key).lower(), value)
    return out


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


# Bodies with more opening brackets than this are left to the standard library (see above).
FAST_BRACKETS = 256


def _fast_object(data: bytes) -> dict | None:
    """The body parsed by orjson when that is installed and agrees it is an object, else None
    (then the standard library decides, with its own messages)."""
    if _orjson is None or data.count(b"{") + data.count(b"[") > FAST_BRACKETS:
        return None
    try:
        parsed = _orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError; its refusals are not always the stdlib's
        return None
    return parsed if isinstance(parsed, dict) else None


def _json_object(text: Any) -> dict:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EventError(400, "body is not valid JSON: %s" % exc) from None
    except RecursionError:  # nested deeper than the parser goes: never a webhook payload
        raise EventError(400, "body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise EventError(400, "body is JSON but not an object")
    return data


def _float_ids(payload: dict) -> bool:
    """Whether the job's ids are floats: orjson reads integers past 64 bits so."""
    job = payload.get("workflow_job")
    return isinstance(job, dict) and (isinstance(job.get("id"), float)
                                      or isinstance(job.get("run_id"), float))


def _payload(body: bytes, content_type: str | None) -> dict:
    media = _media_type(content_type)
    if media in ("", "application/json") or media.endswith("+json"):
        fast = _fast_object(body)  # orjson refuses bytes that are not UTF-8, as decode() does
        if fast is not None and not _float_ids(fast):
            return fast
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(400, "body is not UTF-8") from None
        return _json_object(text)
    if media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("ascii"), keep_blank_values=True, errors="strict",
                              max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            raise EventError(400, "form body is not valid URL encoding") from None
        values = fields.get("payload")
        if not values:
            raise EventError(400, "form body has no payload field")
        return _json_object(values[0])
    raise EventError(
        415,
        "content type %r is not supported; use application/json or "
        "application/x-www-form-urlencoded" % media[:100],
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_delivery(headers: Any, body: bytes, content_type: str | None = None) -> Delivery:
    """Build a ``Delivery`` from a (signature-checked) request; ``EventError`` if unusable."""
    hdrs = _headers(headers)
    if content_type is None:
        content_type = hdrs.get("content-type")
    event = (hdrs.get("x-github-event") or "").strip()
    if not event:
        raise EventError(400, "X-GitHub-Event header missing")
    if not _EVENT_NAME.match(event):
        raise EventError(400, "X-GitHub-Event header is not an event name")
    delivery_id = (hdrs.get("x-github-delivery") or "").strip()
    if not delivery_id:
        raise EventError(400, "X-GitHub-Delivery header missing")
    if not _DELIVERY_ID.match(delivery_id):
        raise EventError(400, "X-GitHub-Delivery header is not a delivery id")
    payload = _payload(body, content_type)
    action = _opt_str(payload.get("action"))
    repo = payload.get("repository")
    repository = _opt_str(repo.get("full_name")) if isinstance(repo, dict) else None
    if event != "workflow_job":
        return Delivery(id=delivery_id, event=event, action=action, repository=repository)
    job = payload.get("workflow_job")
    if not isinstance(job, dict):
        raise EventError(400, "workflow_job delivery without a workflow_job object")
    labels = job.get("labels")
    return Delivery(
        id=delivery_id,
        event=event,
        action=action,
        job_id=_opt_int(job.get("id")),
        job_name=_opt_str(job.get("name")),
        run_id=_opt_int(job.get("run_id")),
        runner_name=_opt_str(job.get("runner_name")),
        repository=repository,
        labels=tuple(x for x in labels if isinstance(x, str)) if isinstance(labels, list) else (),
        conclusion=_opt_str(job.get("conclusion")),
    )


def slot_of(runner_name: str | None, pools: Iterable[str]) -> tuple[str, str] | None:
    """``(pool, slot)`` for a runner name of one of ``pools``, else None (the slot contract's grammar).

    When pool names overlap (``ci`` and ``ci-gpu``) the longest matching pool wins.
    """
    found = parse_runner_name(runner_name, pools)
    if found is None:
        return None
    return found.pool, found.slot


def _short(value: str | None, limit: int = 80) -> str:
    text = value or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decide(delivery: Delivery, pools: list[str], stage: bool = False) -> Decision:
    """What to do about ``delivery`` for a service serving ``pools`` (staging when ``stage``)."""
    if delivery.event == "ping":
        return Decision("ping", reason="ping")
    if delivery.event != "workflow_job":
        return Decision("ignore", reason="event %r is not handled" % _short(delivery.event))
    action = delivery.action
    job = "job %s" % delivery.job_id if delivery.job_id is not None else "job"
    if action not in ("completed",) + RECORDED_ACTIONS:
        return Decision("ignore", reason="%s: action %r is not handled" % (job, _short(action)))
    if not delivery.runner_name:
        return Decision("ignore", reason="%s %s: not on a runner yet" % (job, action))
    found = slot_of(delivery.runner_name, pools)
    if found is None:
        return Decision(
            "ignore",
            reason="%s %s: runner %r is not in pools %s"
            % (job, action, _short(delivery.runner_name), ", ".join(pools)),
        )
    pool, slot = found
    if action == "completed":
        how = " (%s)" % delivery.conclusion if delivery.conclusion else ""
        return Decision("recreate", slot=slot, pool=pool, runner=delivery.runner_name,
                        reason="%s completed%s on %s" % (job, how, delivery.runner_name))
    if stage and action == "in_progress":
        return Decision("stage", slot=slot, pool=pool, runner=delivery.runner_name,
                        reason="%s in_progress on %s: stage the next generation" % (job, delivery.runner_name))
    return Decision("record", slot=slot, pool=pool, runner=delivery.runner_name,
                    reason="%s %s on %s" % (job, action, delivery.runner_name))
