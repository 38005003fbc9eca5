# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the status page renderers (SVG picture and HTML page)."""

from __future__ import annotations

import copy
import re
import time
import xml.etree.ElementTree as ET

import pytest

from rum_pool_webhook import status_page
from rum_pool_webhook.status_page import TASK_COLOURS, format_age, format_duration, render_html, render_svg

SVG = "{http://www.w3.org/2000/svg}"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HOSTILE = "<script>alert(\"x\")</script>&'"


def slot(name, state="idle", runner=None, job=None, last_task=None, pool=None):
    return {"slot": name, "pool": pool or name.split("-")[0], "state": state,
            "runner": runner if runner is not None else name + "-k3x9qa",
            "job": job, "last_task": last_task}


def task(task_id, slot_name, state, created, started=None, finished=None, message="", ref=None, attempts=0):
    return {"id": task_id, "slot": slot_name, "runner": slot_name + "-k3x9qa", "state": state,
            "attempts": attempts, "created_at": created, "started_at": started, "finished_at": finished,
            "message": message, "ref": ref}


def snapshot(slots=(), tasks=(), deliveries=(), pools=("ci",), counts=None):
    base = {key: 0 for key in status_page.COUNTERS}
    base.update(counts or {})
    return {
        "service": {"version": "0.1.0", "started_at": NOW - 3600, "now": NOW,
                    "dispatcher": "ansible-runner", "pools": list(pools), "max_parallel": 2},
        "counts": base,
        "slots": list(slots),
        "tasks": list(tasks),
        "deliveries": list(deliveries),
    }


@pytest.fixture
def busy_snapshot():
    return snapshot(
        slots=[
            slot("ci-hv1-1", "idle", job={"id": 11, "name": "build", "action": "queued", "at": NOW - 40}),
            slot("ci-hv1-2", "busy", job={"id": 12, "name": "test", "action": "in_progress", "at": NOW - 125}),
            slot("ci-hv1-10", "running", job={"id": 14, "name": "t", "action": "completed", "at": NOW - 90}),
            slot("ci-hv2-1", "failed", job={"id": 15, "name": "t", "action": "completed", "at": NOW - 900},
                 last_task={"id": 7, "state": "failed", "finished_at": NOW - 600, "message": "rc 2: unreachable"}),
            slot("ci-hv2-2", "queued"),
        ],
        tasks=[
            task(9, "ci-hv2-2", "queued", NOW - 5),
            task(8, "ci-hv1-10", "running", NOW - 90, NOW - 88, message="TASK [boot] ok"),
            task(7, "ci-hv2-1", "failed", NOW - 900, NOW - 850, NOW - 600, "rc 2: unreachable",
                 "https://awx.example.com/#/jobs/playbook/77", attempts=3),
            task(6, "ci-hv1-1", "done", NOW - 1300, NOW - 1290, NOW - 1200, "ok", "/var/lib/x/runs/6"),
            task(2, "ci-hv1-2", "done", NOW - 7200, NOW - 7100, NOW - 7000, "ancient"),
        ],
        deliveries=[
            {"id": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "event": "workflow_job", "action": "completed",
             "received_at": NOW - 5, "outcome": "queued", "detail": "task 9", "slot": "ci-hv2-2",
             "runner": "ci-hv2-2-k3x9qa", "job_id": 16},
            {"id": "d-ping", "event": "ping", "action": None, "received_at": NOW - 3720,
             "outcome": "ignored", "detail": "ping", "slot": None, "runner": None, "job_id": None},
        ],
        counts={"deliveries": 120, "duplicates": 2, "rejected": 1, "ignored": 30, "recorded": 60,
                "queued": 1, "running": 1, "done": 25, "failed": 1},
    )


def texts(root):
    """Every <text> element's content in an SVG tree, in document order."""
    return ["".join(el.itertext()) for el in root.iter(SVG + "text")]


def tiles(root):
    return [g for g in root.iter(SVG + "g") if "rp-tile" in (g.get("class") or "").split()]


def parse_html(page):
    # The page is written as polyglot markup, so an XML parser is a strict check of its structure.
    return ET.fromstring(page.split("\n", 1)[1])


# ---------------------------------------------------------------- SVG
def test_svg_is_valid_xml_with_fixed_width(busy_snapshot):
    root = ET.fromstring(render_svg(busy_snapshot))
    assert root.tag == SVG + "svg"
    assert root.get("width") == "960"
    assert root.get("viewBox") == "0 0 960 %s" % root.get("height")
    assert root.find(SVG + "title") is not None


def test_svg_one_tile_per_slot_grouped_by_pool_in_natural_order():
    snap = snapshot(
        slots=[slot("ci-hv1-10"), slot("gpu-hv1-1"), slot("ci-hv1-2"), slot("ci-hv1-1")],
        pools=("ci", "gpu"),
    )
    root = ET.fromstring(render_svg(snap))
    names = [texts(g)[0] for g in tiles(root)]
    assert names == ["ci-hv1-1", "ci-hv1-2", "ci-hv1-10", "gpu-hv1-1"]
    headings = [t for t in texts(root) if t.startswith("pool ")]
    assert headings[0].startswith("pool ci \u2013 3 slots")
    assert headings[1].startswith("pool gpu \u2013 1 slot:")


def test_svg_tile_shows_state_in_words_runner_and_age(busy_snapshot):
    root = ET.fromstring(render_svg(busy_snapshot))
    by_name = {texts(g)[0]: texts(g) for g in tiles(root)}
    assert by_name["ci-hv1-2"] == ["ci-hv1-2", "BUSY", "ci-hv1-2-k3x9qa", "job in_progress 2m ago"]
    # the newer of the job event and the last recreate wins
    assert by_name["ci-hv2-1"][1:] == ["FAILED", "ci-hv2-1-k3x9qa", "recreate failed 10m ago"]
    assert by_name["ci-hv2-2"][3] == "no events yet"
    fills = {texts(g)[0]: g.find(SVG + "rect").get("fill") for g in tiles(root)}
    assert fills["ci-hv1-2"] == status_page.SLOT_COLOURS["busy"]
    assert fills["ci-hv2-1"] == status_page.SLOT_COLOURS["failed"]


def test_svg_legend_lists_every_state(busy_snapshot):
    all_text = texts(ET.fromstring(render_svg(snapshot())))
    for state in status_page.SLOT_STATES:
        assert any(t.startswith(state + " (") for t in all_text), state
    for state in status_page.TASK_STATES:
        assert state in all_text, state
    assert set(status_page.SLOT_STATES) == {"idle", "busy", "queued", "running", "failed"}


def test_svg_empty_snapshot():
    svg = render_svg(snapshot())
    root = ET.fromstring(svg)
    all_text = texts(root)
    assert not tiles(root)
    assert "no slots heard of yet (they appear with their first webhook)" in all_text
    assert "no recreates in this window" in all_text
    assert "recreates in the last 30 minutes (0)" in all_text


def test_svg_survives_a_bare_or_broken_snapshot():
    for snap in ({}, {"service": None, "slots": None, "tasks": "x", "deliveries": [None, 3]},
                 {"slots": [{"slot": None, "state": None, "job": "x", "last_task": 5}]}):
        ET.fromstring(render_svg(snap))
        parse_html(render_html(snap))
    assert "No pools configured" in render_svg({})


def test_svg_height_grows_with_slots_width_does_not():
    small = ET.fromstring(render_svg(snapshot(slots=[slot("ci-hv1-%d" % i) for i in range(1, 5)])))
    many_slots = [slot("ci-hv%d-%d" % (h, i)) for h in range(1, 6) for i in range(1, 21)]
    many_slots += [slot("gpu-hv1-%d" % i, pool="gpu") for i in range(1, 4)]
    big = ET.fromstring(render_svg(snapshot(slots=many_slots, pools=("ci", "gpu"))))
    assert len(tiles(big)) == 103
    assert small.get("width") == big.get("width") == "960"
    # 100 ci slots in rows of 4 -> 25 rows; 4 slots -> 1 row
    rows_added = 25 - 1 + 1 + 1  # plus the gpu pool's heading area and its row
    assert int(big.get("height")) - int(small.get("height")) >= rows_added * status_page.TILE_HEIGHT
    # every tile lies inside the picture
    for g in tiles(big):
        rect = g.find(SVG + "rect")
        assert float(rect.get("x")) + float(rect.get("width")) <= 960
        assert float(rect.get("y")) + float(rect.get("height")) <= float(big.get("height"))


def test_svg_timeline_covers_the_last_30_minutes(busy_snapshot):
    root = ET.fromstring(render_svg(busy_snapshot))
    all_text = texts(root)
    for label in ("-30m", "-25m", "-20m", "-15m", "-10m", "-5m", "now"):
        assert label in all_text
    assert "recreates in the last 30 minutes (4)" in all_text  # task 2 ended 2h ago: not shown
    assert not any("ancient" in (el.text or "") for el in root.iter(SVG + "title"))
    bars = {
        re.match(r"task #(\d+)", el.find(SVG + "title").text).group(1): el
        for el in root.iter(SVG + "rect") if el.find(SVG + "title") is not None
    }
    assert set(bars) == {"9", "8", "7", "6"}
    right = 960 - status_page.MARGIN
    left = status_page.MARGIN + status_page.LABEL_WIDTH
    scale = (right - left) / 1800.0
    # the running task reaches "now"; the failed one spans 850 s .. 600 s before now
    assert float(bars["8"].get("x")) + float(bars["8"].get("width")) == pytest.approx(right, abs=0.2)
    assert float(bars["7"].get("x")) == pytest.approx(left + (1800 - 850) * scale, abs=0.2)
    assert float(bars["7"].get("width")) == pytest.approx(250 * scale, abs=0.2)
    assert bars["7"].get("fill") == status_page.TASK_COLOURS["failed"]
    assert bars["6"].get("fill") == status_page.TASK_COLOURS["done"]
    assert "4m 10s" in bars["7"].find(SVG + "title").text
    assert "waiting 5s" in bars["9"].find(SVG + "title").text
    assert bars["9"].get("stroke-dasharray")  # waiting is drawn dashed, not only in another colour


def test_svg_timeline_shows_a_failed_attempt_waiting_for_its_retry():
    retry = task(5, "ci-hv1-1", "queued", NOW - 200, NOW - 190, NOW - 130, "attempt 1/3 failed: rc 2; retry in 30 s",
                 attempts=1)
    root = ET.fromstring(render_svg(snapshot(tasks=[retry])))
    assert "#5 ci-hv1-1 queued (retry)" in texts(root)
    bars = [el for el in root.iter(SVG + "rect") if el.find(SVG + "title") is not None]
    assert [rect.get("fill") for rect in bars] == [status_page.TASK_COLOURS["failed"], status_page.TASK_COLOURS["queued"]]
    assert "attempt failed after 1m 00s, 2m ago" in bars[0].find(SVG + "title").text
    assert "waiting 2m 10s" in bars[1].find(SVG + "title").text
    rows = _table_rows(parse_html(render_html(snapshot(tasks=[retry]))), "h-tasks")[1]
    assert rows[0][6] == "retry pending; last attempt 1m 00s"


def test_svg_timeline_clips_a_task_that_began_before_the_window():
    snap = snapshot(tasks=[task(1, "ci-hv1-1", "done", NOW - 2500, NOW - 2400, NOW - 1500)])
    root = ET.fromstring(render_svg(snap))
    clipped = [el for el in root.iter(SVG + "rect") if el.find(SVG + "title") is not None][0]
    left = status_page.MARGIN + status_page.LABEL_WIDTH
    assert float(clipped.get("x")) == pytest.approx(left)
    assert "15m 00s" in clipped.find(SVG + "title").text


def test_svg_counters(busy_snapshot):
    all_text = texts(ET.fromstring(render_svg(busy_snapshot)))
    index = all_text.index("deliveries")
    assert all_text[index - 1] == "120"
    assert all_text[all_text.index("tasks done") - 1] == "25"
    assert all_text[all_text.index("rejected") - 1] == "1"


def test_svg_escapes_hostile_names():
    nasty = snapshot(
        slots=[slot("ci-hv1-1", HOSTILE, runner=HOSTILE, pool=HOSTILE,
                    job={"id": 1, "name": HOSTILE, "action": HOSTILE, "at": NOW - 1},
                    last_task={"id": 1, "state": HOSTILE, "finished_at": None, "message": HOSTILE})],
        tasks=[task(1, HOSTILE, HOSTILE, NOW - 60, message=HOSTILE + "\x00\x1b\ud800")],
        pools=(HOSTILE,),
    )
    svg = render_svg(nasty)
    assert "<script" not in svg
    root = ET.fromstring(svg)  # control characters and lone surrogates were replaced
    svg.encode("utf-8")
    runner_line = texts(tiles(root)[0])[2]
    assert runner_line == HOSTILE[: len(runner_line) - 1] + "\u2026"
    titles = "".join(el.text or "" for el in root.iter(SVG + "title"))
    assert HOSTILE in titles
    assert "\ufffd" in titles and "\x00" not in titles


def test_svg_is_deterministic_and_ignores_the_wall_clock(busy_snapshot, monkeypatch):
    first = render_svg(busy_snapshot)
    page = render_html(busy_snapshot)

    def no_wall_clock():
        raise AssertionError("the status page must not read the wall clock")

    monkeypatch.setattr(time, "time", no_wall_clock)
    assert render_svg(copy.deepcopy(busy_snapshot)) == first
    assert render_html(copy.deepcopy(busy_snapshot)) == page
    later = copy.deepcopy(busy_snapshot)
    later["service"]["now"] = NOW + 60
    assert render_svg(later) != first


# ---------------------------------------------------------------- HTML
def test_html_page_shape(busy_snapshot):
    page = render_html(busy_snapshot)
    assert page.startswith("<!DOCTYPE html>\n")
    root = parse_html(page)
    head = root.find("head")
    metas = {(m.get("http-equiv") or m.get("name") or "charset"): m.get("content") for m in head.iter("meta")}
    assert metas["refresh"] == "5"
    assert "default-src 'none'" in metas["Content-Security-Policy"]
    assert "prefers-color-scheme: dark" in head.find("style").text
    assert root.find(".//figure/" + SVG + "svg") is not None
    # no scripts, no external assets
    assert "<script" not in page.lower()
    for el in root.iter():
        assert el.get("src") is None
        href = el.get("href") or ""
        assert not href.startswith(("http:", "https:", "//")) or el.tag == "a"
    headings = [h.text for h in root.iter("h2")]
    assert headings == ["Slots", "Recent recreates", "Recent deliveries"]


def _table_rows(root, heading_id):
    section = [s for s in root.iter("section") if s.get("aria-labelledby") == heading_id][0]
    headers = ["".join(th.itertext()) for th in section.iter("th")]
    rows = [["".join(td.itertext()) for td in tr.findall("td")] for tr in section.find(".//tbody").findall("tr")]
    return headers, rows


def test_html_tasks_table(busy_snapshot):
    headers, rows = _table_rows(parse_html(render_html(busy_snapshot)), "h-tasks")
    assert headers == ["task", "state", "slot", "runner", "attempts", "queued", "duration", "message", "ref"]
    by_id = {row[0]: dict(zip(headers, row)) for row in rows}
    assert by_id["7"]["state"] == "failed"
    assert by_id["7"]["attempts"] == "3"
    assert by_id["7"]["duration"] == "4m 10s"
    assert by_id["7"]["queued"] == "21:58:20 15m ago"
    assert by_id["7"]["ref"] == "https://awx.example.com/#/jobs/playbook/77"
    assert by_id["8"]["duration"] == "1m 28s so far"
    assert by_id["9"]["duration"] == "waiting 5s"
    assert by_id["2"]["queued"].endswith("2h ago")
    assert by_id["6"]["ref"] == "/var/lib/x/runs/6"


def test_html_deliveries_table(busy_snapshot):
    headers, rows = _table_rows(parse_html(render_html(busy_snapshot)), "h-deliveries")
    assert headers == ["received", "event/action", "outcome", "slot", "job id", "detail", "delivery"]
    assert rows[0][:6] == ["22:13:15 5s ago", "workflow_job/completed", "queued", "ci-hv2-2", "16", "task 9"]
    assert rows[1][:6] == ["21:11:20 1h 2m ago", "ping", "ignored", "\u2013", "\u2013", "ping"]


def test_html_slots_table_shows_states_in_words(busy_snapshot):
    headers, rows = _table_rows(parse_html(render_html(busy_snapshot)), "h-slots")
    states = {row[0]: row[2] for row in rows}
    assert states == {"ci-hv1-1": "idle", "ci-hv1-2": "busy", "ci-hv1-10": "running",
                      "ci-hv2-1": "failed", "ci-hv2-2": "queued"}
    failed = [row for row in rows if row[0] == "ci-hv2-1"][0]
    assert failed[4] == "completed 15m ago (job 15)"
    assert failed[5] == "#7 failed 10m ago: rc 2: unreachable"
    assert [row for row in rows if row[0] == "ci-hv2-2"][0][4] == "\u2013"


def test_html_job_without_an_id():
    snap = snapshot(slots=[slot("ci-hv1-1", job={"id": None, "name": None, "action": "queued", "at": NOW - 3})])
    rows = _table_rows(parse_html(render_html(snap)), "h-slots")[1]
    assert rows[0][4] == "queued 3s ago"


def test_html_empty_snapshot():
    root = parse_html(render_html(snapshot(pools=())))
    for heading_id, text in (("h-slots", "No slots heard of yet"), ("h-tasks", "No recreates yet."),
                             ("h-deliveries", "No deliveries yet.")):
        rows = _table_rows(root, heading_id)[1]
        assert len(rows) == 1 and rows[0][0].startswith(text)


def test_html_escapes_hostile_text():
    nasty = snapshot(
        slots=[slot("ci-hv1-1", runner=HOSTILE)],
        tasks=[task(1, "ci-hv1-1", "failed", NOW - 10, message=HOSTILE, ref="javascript:alert(1)")],
        deliveries=[{"id": HOSTILE, "event": HOSTILE, "action": HOSTILE, "received_at": NOW,
                     "outcome": HOSTILE, "detail": HOSTILE + "\x07", "slot": HOSTILE, "runner": HOSTILE,
                     "job_id": "<b>"}],
    )
    nasty["service"]["version"] = HOSTILE
    page = render_html(nasty)
    assert "<script" not in page
    root = parse_html(page)
    assert HOSTILE in "".join(root.find("body").itertext())
    rows = _table_rows(root, "h-tasks")[1]
    assert rows[0][7] == HOSTILE
    assert rows[0][8] == "javascript:alert(1)"
    assert all(a.get("href") != "javascript:alert(1)" for a in root.iter("a"))
    rows = _table_rows(root, "h-deliveries")[1]
    assert rows[0][1] == HOSTILE + "/" + HOSTILE
    assert rows[0][4] == "\u2013"  # a job id that is not a number is not shown


# ---------------------------------------------------------------- time formatting
@pytest.mark.parametrize("when, text", [
    (NOW, "just now"), (NOW - 0.4, "just now"), (NOW - 12, "12s ago"), (NOW - 59.9, "59s ago"),
    (NOW - 60, "1m ago"), (NOW - 3599, "59m ago"), (NOW - 3600, "1h ago"), (NOW - 3720, "1h 2m ago"),
    (NOW - 90000, "1d 1h ago"), (NOW + 4, "in 4s"), (None, "never"), ("soon", "never"),
])
def test_format_age(when, text):
    assert format_age(when, NOW) == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (4.4, "4s"), (65, "1m 05s"), (3600 + 180, "1h 03m"), (2 * 86400 + 4 * 3600, "2d 4h"),
    (-3, "0s"), (None, "\u2013"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# ---------------------------------------------------------------- the real store's snapshot
def test_renders_the_snapshot_the_store_produces(tmp_path):
    from rum_pool_webhook.tasks import Result  # pylint: disable=import-outside-toplevel
    from rum_pool_webhook.events import Delivery, decide  # pylint: disable=import-outside-toplevel
    from rum_pool_webhook.store import Store  # pylint: disable=import-outside-toplevel

    store = Store(str(tmp_path / "state.db"))
    try:
        def deliver(delivery_id, action, runner, at):
            delivery = Delivery(id=delivery_id, event="workflow_job", action=action, job_id=7,
                                job_name="build", runner_name=runner)
            store.accept(delivery, decide(delivery, ["ci"]), at)

        deliver("d1", "in_progress", "ci-hv1-2-aaaaaa", NOW - 300)
        deliver("d2", "completed", "ci-hv1-1-k3x9qa", NOW - 120)
        deliver("d3", "completed", "other-hv1-1-k3x9qa", NOW - 100)
        claimed = store.claim(NOW - 110)
        store.finish(claimed.id, Result(False, "rc 2: <unreachable>"), NOW - 60, 3, 30)
        snap = store.snapshot(NOW, {"version": "0.1.0", "started_at": NOW - 600,
                                    "dispatcher": "ansible-runner", "pools": ["ci"], "max_parallel": 2})
    finally:
        store.close()
    svg = ET.fromstring(render_svg(snap))
    by_name = {texts(g)[0]: texts(g) for g in tiles(svg)}
    assert by_name["ci-hv1-1"][1] == "QUEUED"  # waiting for its retry
    assert by_name["ci-hv1-2"][1:] == ["BUSY", "ci-hv1-2-aaaaaa", "job in_progress 5m ago"]
    assert "#%d ci-hv1-1 queued (retry)" % claimed.id in texts(svg)
    page = parse_html(render_html(snap))
    rows = _table_rows(page, "h-deliveries")[1]
    assert [row[2] for row in rows] == ["ignored", "queued", "recorded"]
    tasks_rows = _table_rows(page, "h-tasks")[1]
    assert tasks_rows[0][6] == "retry pending; last attempt 50s"
    assert "rc 2: <unreachable>" in tasks_rows[0][7]


def test_a_skipped_recreate_shows_as_skipped(tmp_path):
    from rum_pool_webhook.tasks import Result  # pylint: disable=import-outside-toplevel
    from rum_pool_webhook.store import Store  # pylint: disable=import-outside-toplevel

    store = Store(str(tmp_path / "state.db"))
    try:
        task_id = store.enqueue("ci-hv1-1", "ci-hv1-1-k3x9qa", "d1", NOW - 30, pool="ci")[0]
        store.claim(NOW - 30)
        store.finish(task_id, Result(True, "skipped: the slot holds another runner", rc=0,
                                     outcome="skipped"), NOW - 20, 3, 30)
        snap = store.snapshot(NOW, {"version": "0.1.0", "started_at": NOW - 600,
                                    "dispatcher": "ansible-runner", "pools": ["ci"], "max_parallel": 2})
    finally:
        store.close()
    page = parse_html(render_html(snap))
    tasks_rows = _table_rows(page, "h-tasks")[1]
    assert tasks_rows[0][1] == "skipped" and "slot holds another runner" in tasks_rows[0][7]
    svg = render_svg(snap)
    assert TASK_COLOURS["skipped"] in svg and "skipped" in svg
