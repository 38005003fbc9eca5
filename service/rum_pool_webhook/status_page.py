# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the service's status snapshot as an SVG picture and a small HTML page.

Both renderers are pure functions of the snapshot (see the service contract, "Snapshot"): every
time shown is relative to ``snapshot["service"]["now"]``, never to the wall clock, so the same
snapshot always gives the same bytes. Slot and runner names arrive in webhooks from the internet,
so every piece of text goes through :func:`_esc` before it reaches the markup.
"""

from __future__ import annotations

import math
import re
import time
from html import escape
from typing import Any, Iterable, Mapping, Sequence

# Slot states, in the order the legend shows them; colours are mid tones that carry dark text in
# both light and dark mode, and every state is also written out in words next to its colour.
SLOT_LEGEND: tuple[tuple[str, str, str], ...] = (  # state, colour, meaning
    ("idle", "#c9d1d9", "runner waiting"),
    ("busy", "#54aeff", "job in progress"),
    ("queued", "#e3b341", "recreate queued"),
    ("running", "#b083f0", "recreating"),
    ("failed", "#ff7b72", "recreate failed"),
)
SLOT_STATES: tuple[str, ...] = tuple(state for state, _colour, _meaning in SLOT_LEGEND)
SLOT_COLOURS: dict[str, str] = {state: colour for state, colour, _meaning in SLOT_LEGEND}
SLOT_MEANING: dict[str, str] = {state: meaning for state, _colour, meaning in SLOT_LEGEND}
# "skipped": the run succeeded but left the slot alone (it held another runner generation).
TASK_COLOURS: dict[str, str] = {
    "queued": "#e3b341", "running": "#b083f0", "done": "#4ac26b", "skipped": "#8fd3e8", "failed": "#ff7b72",
}
TASK_STATES: tuple[str, ...] = tuple(TASK_COLOURS)
UNKNOWN_COLOUR = "#8c959f"
COUNTERS: tuple[str, ...] = (
    "deliveries", "duplicates", "rejected", "ignored", "recorded",
    "queued", "running", "done", "skipped", "failed",
)

WIDTH = 960
MARGIN = 16
TIMELINE_SECONDS = 30 * 60
TIMELINE_TICK = 5 * 60
TILE_COLUMNS = 4
TILE_GAP = 8
TILE_HEIGHT = 78
TILE_WIDTH = (WIDTH - 2 * MARGIN - (TILE_COLUMNS - 1) * TILE_GAP) // TILE_COLUMNS
ROW_HEIGHT = 16
LABEL_WIDTH = 250
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"

# Characters XML 1.0 cannot carry even when escaped: C0 controls except tab/LF/CR, lone
# surrogates (JSON can smuggle them in as \ud800) and the two non-characters U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# ---------------------------------------------------------------- text and time helpers
def _text(value: Any) -> str:
    """Any value as text XML can hold (None -> '')."""
    if value is None:
        return ""
    return _NOT_XML.sub("\ufffd", str(value))


def _esc(value: Any) -> str:
    """Text safe in element content and in double- or single-quoted attributes."""
    return escape(_text(value), quote=True)


def _clip(value: Any, limit: int) -> str:
    """Shorten text to ``limit`` characters with an ellipsis (SVG text does not wrap)."""
    text = _text(value)
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "\u2026"


def _num(value: Any) -> float | None:
    """A finite number, or None for anything else (missing keys, strings, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(value: Any) -> int:
    number = _num(value)
    return int(number) if number is not None else 0


def format_duration(seconds: float | None) -> str:
    """A short human duration: '4s', '2m 05s', '1h 03m', '2d 4h'."""
    if seconds is None:
        return "\u2013"
    total = int(round(max(seconds, 0.0)))
    if total < 60:
        return "%ds" % total
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return "%dm %02ds" % (minutes, secs)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return "%dh %02dm" % (hours, minutes)
    days, hours = divmod(hours, 24)
    return "%dd %dh" % (days, hours)


def format_age(when: Any, now: float) -> str:
    """``when`` relative to ``now``: 'just now', '12s ago', '3m ago', 'in 4s' (clock skew)."""
    moment = _num(when)
    if moment is None:
        return "never"
    delta = now - moment
    if abs(delta) < 1:
        return "just now"
    if delta < 0:
        return "in " + _coarse(-delta)
    return _coarse(delta) + " ago"


def _coarse(seconds: float) -> str:
    total = int(seconds)
    if total < 60:
        return "%ds" % total
    if total < 3600:
        return "%dm" % (total // 60)
    if total < 86400:
        hours, rest = divmod(total, 3600)
        return "%dh %dm" % (hours, rest // 60) if rest >= 60 else "%dh" % hours
    return "%dd %dh" % (total // 86400, (total % 86400) // 3600)


def format_clock(when: Any) -> str:
    """UTC wall time of a timestamp, 'HH:MM:SS' (the date is left to the relative age)."""
    moment = _num(when)
    if moment is None:
        return "\u2013"
    return time.strftime("%H:%M:%S", time.gmtime(moment))


def format_stamp(when: Any) -> str:
    """UTC date and time of a timestamp, ISO 8601 with a Z."""
    moment = _num(when)
    if moment is None:
        return "\u2013"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _natural(name: str) -> list[Any]:
    """Sort key putting ci-hv1-2 before ci-hv1-10 (digit runs compare as numbers)."""
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name))]


# ---------------------------------------------------------------- reading the snapshot
def _section(snapshot: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snapshot.get(key) if isinstance(snapshot, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _rows(snapshot: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = snapshot.get(key) if isinstance(snapshot, Mapping) else None
    if not isinstance(value, (list, tuple)):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def _now(snapshot: Mapping[str, Any]) -> float:
    service = _section(snapshot, "service")
    for key in ("now", "started_at"):
        value = _num(service.get(key))
        if value is not None:
            return value
    return 0.0


def _slot_pool(slot: Mapping[str, Any]) -> str:
    pool = _text(slot.get("pool"))
    if pool:
        return pool
    # <pool>-<host>-<index>: the pool may itself contain dashes, so this is only a fallback.
    name = _text(slot.get("slot"))
    parts = name.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else "?"


def _pools(snapshot: Mapping[str, Any]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Slots grouped by pool: configured pools first in their order, then any others by name."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    configured = _section(snapshot, "service").get("pools")
    for pool in configured if isinstance(configured, (list, tuple)) else ():
        grouped.setdefault(_text(pool), [])
    extra: list[str] = []
    for slot in _rows(snapshot, "slots"):
        pool = _slot_pool(slot)
        if pool not in grouped:
            grouped[pool] = []
            extra.append(pool)
        grouped[pool].append(slot)
    order = [pool for pool in grouped if pool not in extra] + sorted(extra, key=_natural)
    return [
        (pool, sorted(grouped[pool], key=lambda s: (_natural(_text(s.get("slot"))), _text(s.get("slot")))))
        for pool in order
    ]


def _last_event(slot: Mapping[str, Any], now: float) -> str:
    """The slot's most recent event in words, with its age."""
    events: list[tuple[float, str]] = []
    job = slot.get("job")
    if isinstance(job, Mapping) and _num(job.get("at")) is not None:
        events.append((_num(job.get("at")) or 0.0, "job " + (_text(job.get("action")) or "event")))
    task = slot.get("last_task")
    if isinstance(task, Mapping) and _num(task.get("finished_at")) is not None:
        events.append((_num(task.get("finished_at")) or 0.0, "recreate " + (_text(task.get("state")) or "ended")))
    if not events:
        return "no events yet"
    when, what = max(events, key=lambda event: event[0])
    return "%s %s" % (what, format_age(when, now))


def _task_slot(task: Mapping[str, Any]) -> str:
    """The task's slot, and "(stage)" for a stage of the slot's next generation."""
    slot = _text(task.get("slot")) or "?"
    return slot + " (stage)" if task.get("kind") == "stage" else slot


def _task_segments(task: Mapping[str, Any], now: float) -> list[tuple[float, float, str]]:
    """The bars of one task as (start, end, colour key).

    A finished or running task is one bar from its start to its end (or now). A queued task
    waits from its creation to now; one waiting for a retry shows its failed attempt and then
    the wait since.
    """
    state = _text(task.get("state")) or "unknown"
    created = _num(task.get("created_at"))
    started = _num(task.get("started_at"))
    finished = _num(task.get("finished_at"))
    if state == "queued":
        if started is not None and finished is not None and finished >= started:
            return [(started, finished, "failed"), (finished, max(finished, now), "queued")]
        begin = created if created is not None else started
        return [] if begin is None else [(begin, max(begin, now), "queued")]
    begin = started if started is not None else created
    if begin is None:
        return []
    end = finished if finished is not None else now
    return [(begin, max(begin, end), state)]


# ---------------------------------------------------------------- SVG
_SVG_STYLE = """
.rp-bg{fill:#ffffff}
.rp-fg{fill:#1f2328}
.rp-dim{fill:#59636e}
.rp-grid{stroke:#d1d9e0}
.rp-axis{stroke:#59636e}
.rp-box{fill:#f6f8fa;stroke:#d1d9e0}
.rp-t{fill:#1f2328}
@media (prefers-color-scheme: dark){
.rp-bg{fill:#0d1117}
.rp-fg{fill:#e6edf3}
.rp-dim{fill:#9198a1}
.rp-grid{stroke:#30363d}
.rp-axis{stroke:#9198a1}
.rp-box{fill:#151b23;stroke:#30363d}
}
"""


class _Svg:
    """A list of SVG fragments with a y cursor; all text is escaped on the way in."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.y = 0

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def text(self, x: float, y: float, value: Any, size: int = 12, cls: str = "rp-fg",
             anchor: str = "start", weight: str = "normal", mono: bool = False) -> None:
        extra = ""
        if anchor != "start":
            extra += ' text-anchor="%s"' % anchor
        if weight != "normal":
            extra += ' font-weight="%s"' % weight
        if mono:
            extra += ' font-family="%s"' % _esc(MONO)
        self.add('<text x="%s" y="%s" font-size="%d" class="%s"%s>%s</text>'
                 % (_n(x), _n(y), size, cls, extra, _esc(value)))


def _n(value: float) -> str:
    """Coordinates with at most one decimal, so output is stable and short."""
    text = "%.1f" % value
    return text[:-2] if text.endswith(".0") else text


def render_svg(snapshot: Mapping[str, Any]) -> str:
    """Return a self-contained SVG picture of the snapshot.

    Tiles per slot grouped by pool and coloured by state, a legend, a timeline of the recent
    tasks over the last 30 minutes, and the counters. The width is fixed; the height grows with
    the number of slots and tasks.
    """
    now = _now(snapshot)
    svg = _Svg()
    _svg_header(svg, snapshot, now)
    _svg_legend(svg)
    _svg_slots(svg, snapshot, now)
    _svg_timeline(svg, snapshot, now)
    _svg_counters(svg, snapshot)
    height = svg.y + MARGIN
    counts = _section(snapshot, "counts")
    label = "rum-pool-webhook status: %d slots, %d tasks queued, %d running, %d failed, as of %s" % (
        len(_rows(snapshot, "slots")), _int(counts.get("queued")), _int(counts.get("running")),
        _int(counts.get("failed")), format_stamp(now),
    )
    head = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
        'role="img" aria-labelledby="rp-title" font-family="%s" class="rp-status">'
        '<title id="rp-title">%s</title>'
        "<style>%s</style>"
        '<rect class="rp-bg" x="0" y="0" width="%d" height="%d" fill="#ffffff"/>'
        % (WIDTH, height, WIDTH, height, _esc(SANS), _esc(label), _SVG_STYLE, WIDTH, height)
    )
    return head + "".join(svg.parts) + "</svg>\n"


def _svg_header(svg: _Svg, snapshot: Mapping[str, Any], now: float) -> None:
    service = _section(snapshot, "service")
    svg.y = MARGIN + 18
    svg.text(MARGIN, svg.y, "rum-pool-webhook", size=18, weight="bold")
    svg.text(WIDTH - MARGIN, svg.y, "as of %s UTC" % format_stamp(now).replace("T", " ").rstrip("Z"),
             size=12, cls="rp-dim", anchor="end")
    pools = service.get("pools")
    pool_text = ", ".join(_text(p) for p in pools) if isinstance(pools, (list, tuple)) and pools else "none"
    started = _num(service.get("started_at"))
    line = "version %s \u00b7 dispatcher %s \u00b7 pools %s \u00b7 max parallel %s \u00b7 up %s" % (
        _text(service.get("version")) or "?", _text(service.get("dispatcher")) or "?", pool_text,
        _int(service.get("max_parallel")),
        format_duration(now - started) if started is not None else "?",
    )
    svg.y += 20
    svg.text(MARGIN, svg.y, _clip(line, 140), size=12, cls="rp-dim")


def _svg_legend_row(svg: _Svg, label: str, entries: list[tuple[str, str]], pad: float, per_char: float) -> None:
    """One legend line: the label, then a colour swatch and its text per entry."""
    x = MARGIN
    svg.text(x, svg.y, label, size=12, cls="rp-dim")
    x += 44
    for colour, text in entries:
        svg.add('<rect x="%s" y="%s" width="12" height="12" rx="2" fill="%s"/>'
                % (_n(x), _n(svg.y - 10), colour))
        svg.text(x + 16, svg.y, text, size=11)
        x += pad + per_char * len(text)


def _svg_legend(svg: _Svg) -> None:
    svg.y += 24
    _svg_legend_row(svg, "slots:", [(SLOT_COLOURS[state], "%s (%s)" % (state, SLOT_MEANING[state]))
                                    for state in SLOT_STATES], 24, 6.2)
    svg.y += 20
    _svg_legend_row(svg, "tasks:", [(TASK_COLOURS[state], state) for state in TASK_STATES], 30, 7)


def _svg_slots(svg: _Svg, snapshot: Mapping[str, Any], now: float) -> None:
    pools = _pools(snapshot)
    svg.y += 14
    if not pools:
        svg.y += 24
        svg.text(MARGIN, svg.y, "No pools configured and no slots heard of yet.", size=13, cls="rp-dim")
        return
    for pool, slots in pools:
        svg.y += 26
        states = _count_states(slots)
        summary = ", ".join("%d %s" % (states[s], s) for s in sorted(states, key=_state_order))
        svg.text(MARGIN, svg.y, _clip("pool %s \u2013 %d slot%s%s" % (
            pool, len(slots), "" if len(slots) == 1 else "s", (": " + summary) if summary else ""), 120),
            size=14, weight="bold")
        if not slots:
            svg.y += 20
            svg.text(MARGIN, svg.y, "no slots heard of yet (they appear with their first webhook)",
                     size=12, cls="rp-dim")
            continue
        top = svg.y + 10
        for index, slot in enumerate(slots):
            row, col = divmod(index, TILE_COLUMNS)
            _svg_tile(svg, slot, MARGIN + col * (TILE_WIDTH + TILE_GAP),
                      top + row * (TILE_HEIGHT + TILE_GAP), now)
        rows = (len(slots) + TILE_COLUMNS - 1) // TILE_COLUMNS
        svg.y = top + rows * (TILE_HEIGHT + TILE_GAP) - TILE_GAP


def _state_order(state: str) -> tuple[int, str]:
    return (SLOT_STATES.index(state) if state in SLOT_STATES else len(SLOT_STATES), state)


def _count_states(slots: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for slot in slots:
        state = _text(slot.get("state")) or "unknown"
        counts[state] = counts.get(state, 0) + 1
    return counts


def _svg_tile(svg: _Svg, slot: Mapping[str, Any], x: float, y: float, now: float) -> None:
    state = _text(slot.get("state")) or "unknown"
    colour = SLOT_COLOURS.get(state, UNKNOWN_COLOUR)
    name = _text(slot.get("slot")) or "?"
    runner = _text(slot.get("runner"))
    event = _last_event(slot, now)
    task = slot.get("last_task") if isinstance(slot.get("last_task"), Mapping) else None
    tip = ["%s: %s" % (name, state), "runner: %s" % (runner or "none seen"), event]
    if task is not None:
        tip.append("last recreate #%s %s: %s" % (_int(task.get("id")), _text(task.get("state")),
                                                 _clip(task.get("message"), 300)))
    chars = int((TILE_WIDTH - 16) / 7.3)
    svg.add('<g class="rp-tile rp-state-%s"><title>%s</title>' % (_esc(_clip(state, 20)), _esc("\n".join(tip))))
    svg.add('<rect x="%s" y="%s" width="%d" height="%d" rx="6" fill="%s"/>'
            % (_n(x), _n(y), TILE_WIDTH, TILE_HEIGHT, colour))
    svg.add('<rect x="%s" y="%s" width="6" height="%d" rx="2" fill="#1f2328" fill-opacity="0.35"/>'
            % (_n(x), _n(y), TILE_HEIGHT))
    svg.text(x + 12, y + 18, _clip(name, chars - 2), size=13, weight="bold", mono=True, cls="rp-t")
    svg.text(x + 12, y + 35, _clip(state.upper(), chars), size=11, weight="bold", cls="rp-t")
    svg.text(x + 12, y + 52, _clip(runner or "no runner seen", chars), size=12, mono=True, cls="rp-t")
    svg.text(x + 12, y + 69, _clip(event, chars + 4), size=11, cls="rp-t")
    svg.add("</g>")


def _svg_timeline(svg: _Svg, snapshot: Mapping[str, Any], now: float) -> None:
    start = now - TIMELINE_SECONDS
    rows = []
    for task in _rows(snapshot, "tasks"):
        segments = [seg for seg in _task_segments(task, now) if seg[1] >= start]
        if segments:
            rows.append((task, segments))
    svg.y += 34
    svg.text(MARGIN, svg.y, "recreates in the last 30 minutes (%d)" % len(rows), size=14, weight="bold")
    left = MARGIN + LABEL_WIDTH
    right = WIDTH - MARGIN
    scale = (right - left) / float(TIMELINE_SECONDS)
    axis_y = svg.y + 22
    # time axis: a tick every five minutes, labelled relative to now
    svg.add('<line class="rp-axis" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#59636e"/>'
            % (_n(left), _n(axis_y), _n(right), _n(axis_y)))
    body_top = axis_y + 6
    body_bottom = body_top + max(len(rows), 1) * ROW_HEIGHT
    for offset in range(0, TIMELINE_SECONDS + 1, TIMELINE_TICK):
        x = right - offset * scale
        label = "now" if offset == 0 else "-%dm" % (offset // 60)
        svg.add('<line class="rp-grid" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#d1d9e0"/>'
                % (_n(x), _n(axis_y - 4), _n(x), _n(body_bottom)))
        svg.text(x, axis_y - 7, label, size=11, cls="rp-dim", anchor="middle" if offset else "end")
    svg.text(MARGIN, axis_y - 7, "task  slot  state", size=11, cls="rp-dim")
    if not rows:
        svg.text(left + 8, body_top + 12, "no recreates in this window", size=12, cls="rp-dim")
    for index, (task, segments) in enumerate(rows):
        top = body_top + index * ROW_HEIGHT
        state = _text(task.get("state")) or "unknown"
        retrying = state == "queued" and _num(task.get("started_at")) is not None
        label = "#%d %s %s%s" % (_int(task.get("id")), _task_slot(task), state,
                                 " (retry)" if retrying else "")
        svg.text(MARGIN, top + 12, _clip(label, 34), size=11, mono=True)
        for begin, end, key in segments:
            colour = TASK_COLOURS.get(key, UNKNOWN_COLOUR)
            x1 = left + (max(begin, start) - start) * scale
            x2 = left + (min(end, now) - start) * scale
            if key == "queued":
                what = "waiting %s" % format_duration(end - begin)
            elif key == "failed" and state == "queued":
                what = "attempt failed after %s, %s" % (format_duration(end - begin), format_age(end, now))
            else:
                what = "%s, started %s" % (format_duration(end - begin), format_age(begin, now))
            tip = "task #%d %s: slot %s, runner %s, attempts %d, %s%s" % (
                _int(task.get("id")), state, _text(task.get("slot")) or "?",
                _text(task.get("runner")) or "none", _int(task.get("attempts")), what,
                (": " + _clip(task.get("message"), 300)) if _text(task.get("message")) else "",
            )
            queued = key == "queued"
            svg.add('<rect x="%s" y="%s" width="%s" height="%d" rx="2" fill="%s"%s><title>%s</title></rect>'
                    % (_n(x1), _n(top + 3), _n(max(x2 - x1, 4.0)), ROW_HEIGHT - 5, colour,
                       ' fill-opacity="0.45" stroke="%s" stroke-dasharray="3 2"' % colour if queued else "",
                       _esc(tip)))
    svg.y = body_bottom + 4


def _svg_counters(svg: _Svg, snapshot: Mapping[str, Any]) -> None:
    counts = _section(snapshot, "counts")
    svg.y += 30
    svg.text(MARGIN, svg.y, "counters", size=14, weight="bold")
    top = svg.y + 10
    gap = 6
    width = (WIDTH - 2 * MARGIN - (len(COUNTERS) - 1) * gap) / float(len(COUNTERS))
    for index, key in enumerate(COUNTERS):
        x = MARGIN + index * (width + gap)
        svg.add('<rect class="rp-box" x="%s" y="%s" width="%s" height="48" rx="4" fill="#f6f8fa" stroke="#d1d9e0"/>'
                % (_n(x), _n(top), _n(width)))
        svg.text(x + width / 2, top + 24, _int(counts.get(key)), size=18, weight="bold", anchor="middle")
        label = key if index < len(COUNTERS) - len(TASK_STATES) else "tasks " + key
        svg.text(x + width / 2, top + 41, label, size=11, cls="rp-dim", anchor="middle")
    svg.y = top + 48


# ---------------------------------------------------------------- HTML
_HTML_STYLE = """
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1f2328;--dim:#59636e;--line:#d1d9e0;--head:#f6f8fa;--link:#0969da}
@media (prefers-color-scheme: dark){
:root{--bg:#0d1117;--fg:#e6edf3;--dim:#9198a1;--line:#30363d;--head:#151b23;--link:#4493f8}
}
body{margin:0 auto;padding:1rem;max-width:1200px;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
h1{font-size:1.4rem;margin:.2rem 0}
h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
a{color:var(--link)}
.meta{color:var(--dim);margin:.2rem 0 1rem}
figure{margin:0}
figure svg{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px}
.msg{max-width:32rem;overflow-wrap:anywhere}
.empty{color:var(--dim);font-style:italic}
.when{white-space:nowrap}
.when small{color:var(--dim)}
.badge{display:inline-block;padding:0 .45rem;border-radius:1em;color:#1f2328;font-weight:600;
font-size:12px;white-space:nowrap;background:#8c959f}
footer{color:var(--dim);margin-top:2rem;font-size:12px}
"""


def _badge(state: str, colours: Mapping[str, str]) -> str:
    return '<span class="badge" style="background:%s">%s</span>' % (
        colours.get(state, UNKNOWN_COLOUR), _esc(state or "unknown"))


def _when(moment: Any, now: float) -> str:
    if _num(moment) is None:
        return '<td class="when">\u2013</td>'
    return '<td class="when"><time datetime="%s">%s</time> <small>%s</small></td>' % (
        format_stamp(moment), format_clock(moment), _esc(format_age(moment, now)))


def _table(headers: Sequence[str], rows: list[str], empty: str) -> str:
    head = "".join('<th scope="col">%s</th>' % _esc(h) for h in headers)
    if not rows:
        rows = ['<tr><td colspan="%d" class="empty">%s</td></tr>' % (len(headers), _esc(empty))]
    return '<div class="scroll"><table><thead><tr>%s</tr></thead><tbody>\n%s\n</tbody></table></div>' % (
        head, "\n".join(rows))


def _ref(value: Any) -> str:
    text = _text(value)
    if not text:
        return "\u2013"
    if re.match(r"^https?://[^\s\"'<>]+$", text):
        return '<a href="%s" rel="noreferrer">%s</a>' % (_esc(text), _esc(_clip(text, 80)))
    return '<code>%s</code>' % _esc(text)


def _slots_table(snapshot: Mapping[str, Any], now: float) -> str:
    rows = []
    for pool, slots in _pools(snapshot):
        for slot in slots:
            state = _text(slot.get("state")) or "unknown"
            job = slot.get("job") if isinstance(slot.get("job"), Mapping) else None
            task = slot.get("last_task") if isinstance(slot.get("last_task"), Mapping) else None
            job_cell = (
                "%s %s%s" % (
                    _esc(_text(job.get("action")) or "event"), _esc(format_age(job.get("at"), now)),
                    " <small>(job %d)</small>" % _int(job.get("id")) if _num(job.get("id")) is not None else "")
                if job else "\u2013"
            )
            task_cell = (
                "#%s %s %s%s" % (
                    _esc(_int(task.get("id"))), _badge(_text(task.get("state")), TASK_COLOURS),
                    _esc(format_age(task.get("finished_at"), now)) if _num(task.get("finished_at")) is not None else "",
                    (": " + _esc(_clip(task.get("message"), 200))) if _text(task.get("message")) else "")
                if task else "\u2013"
            )
            rows.append(
                "<tr><td><code>%s</code></td><td>%s</td><td>%s</td><td><code>%s</code></td>"
                '<td>%s</td><td class="msg">%s</td></tr>' % (
                    _esc(slot.get("slot")), _esc(pool), _badge(state, SLOT_COLOURS),
                    _esc(slot.get("runner")) or "\u2013", job_cell, task_cell))
    return _table(("slot", "pool", "state", "runner", "last job event", "last recreate"), rows,
                  "No slots heard of yet: they appear with the first webhook about one of their runners.")


def _tasks_table(snapshot: Mapping[str, Any], now: float) -> str:
    rows = []
    for task in _rows(snapshot, "tasks"):
        state = _text(task.get("state")) or "unknown"
        started = _num(task.get("started_at"))
        finished = _num(task.get("finished_at"))
        if started is None:
            duration = "waiting %s" % format_duration(now - (_num(task.get("created_at")) or now))
        elif state == "queued":
            duration = "retry pending; last attempt %s" % format_duration(
                (finished if finished is not None else now) - started)
        elif finished is None:
            duration = "%s so far" % format_duration(now - started)
        else:
            duration = format_duration(finished - started)
        rows.append(
            '<tr><td class="num">%d</td><td>%s</td><td><code>%s</code></td><td><code>%s</code></td>'
            '<td class="num">%d</td>%s<td class="when">%s</td><td class="msg">%s</td><td class="msg">%s</td></tr>' % (
                _int(task.get("id")), _badge(state, TASK_COLOURS), _esc(_task_slot(task)),
                _esc(task.get("runner")) or "\u2013", _int(task.get("attempts")),
                _when(task.get("created_at"), now), _esc(duration), _esc(task.get("message")),
                _ref(task.get("ref"))))
    return _table(("task", "state", "slot", "runner", "attempts", "queued", "duration", "message", "ref"),
                  rows, "No recreates yet.")


def _deliveries_table(snapshot: Mapping[str, Any], now: float) -> str:
    rows = []
    for delivery in _rows(snapshot, "deliveries"):
        event = _text(delivery.get("event")) or "?"
        action = _text(delivery.get("action"))
        job_id = delivery.get("job_id")
        rows.append(
            "<tr>%s<td><code>%s</code></td><td><strong>%s</strong></td><td><code>%s</code></td>"
            '<td class="num">%s</td><td class="msg">%s</td><td><code title="%s">%s</code></td></tr>' % (
                _when(delivery.get("received_at"), now),
                _esc(event + ("/" + action if action else "")),
                _esc(delivery.get("outcome") or "?"),
                _esc(delivery.get("slot")) or "\u2013",
                _esc(_int(job_id)) if _num(job_id) is not None else "\u2013",
                _esc(delivery.get("detail")),
                _esc(delivery.get("id")), _esc(_clip(delivery.get("id"), 13))))
    return _table(("received", "event/action", "outcome", "slot", "job id", "detail", "delivery"), rows,
                  "No deliveries yet. GitHub sends a ping when the webhook is created.")


def render_html(snapshot: Mapping[str, Any]) -> str:
    """Return the status page: a small HTML5 document with the SVG inline and three tables.

    No scripts and no external assets; the page reloads itself every 5 seconds.
    """
    now = _now(snapshot)
    service = _section(snapshot, "service")
    counts = _section(snapshot, "counts")
    started = _num(service.get("started_at"))
    pools = service.get("pools")
    title = "rum-pool-webhook \u2013 %d queued, %d running, %d failed" % (
        _int(counts.get("queued")), _int(counts.get("running")), _int(counts.get("failed")))
    meta = "version %s \u00b7 dispatcher %s \u00b7 pools %s \u00b7 at most %d at once \u00b7 up %s \u00b7 as of %s" % (
        _esc(_text(service.get("version")) or "?"),
        _esc(_text(service.get("dispatcher")) or "?"),
        _esc(", ".join(_text(p) for p in pools) if isinstance(pools, (list, tuple)) and pools else "none"),
        _int(service.get("max_parallel")),
        _esc(format_duration(now - started) if started is not None else "?"),
        '<time datetime="%s">%s</time>' % (format_stamp(now), format_stamp(now)),
    )
    return "\n".join((
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8" />',
        '<meta http-equiv="refresh" content="5" />',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; img-src data:" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1" />',
        '<meta name="color-scheme" content="light dark" />',
        '<meta name="referrer" content="no-referrer" />',
        "<title>%s</title>" % _esc(title),
        "<style>%s</style>" % _HTML_STYLE,
        "</head>",
        "<body>",
        "<header><h1>rum-pool-webhook</h1>",
        '<p class="meta">%s</p></header>' % meta,
        "<main>",
        "<figure>%s</figure>" % render_svg(snapshot).rstrip("\n"),
        '<section aria-labelledby="h-slots"><h2 id="h-slots">Slots</h2>',
        _slots_table(snapshot, now),
        "</section>",
        '<section aria-labelledby="h-tasks"><h2 id="h-tasks">Recent recreates</h2>',
        _tasks_table(snapshot, now),
        "</section>",
        '<section aria-labelledby="h-deliveries"><h2 id="h-deliveries">Recent deliveries</h2>',
        _deliveries_table(snapshot, now),
        "</section>",
        "</main>",
        '<footer>Reloads every 5 seconds. Times are UTC. Also: <a href="status.svg">status.svg</a> \u00b7 '
        '<a href="api/status">api/status</a> (JSON) \u00b7 <a href="metrics">metrics</a> \u00b7 '
        '<a href="healthz">healthz</a></footer>',
        "</body>",
        "</html>",
        "",
    ))
