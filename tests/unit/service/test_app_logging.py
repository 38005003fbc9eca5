# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which request lines go to the info log and which to the debug log: deliveries that set
nothing going (recorded, ignored, coalesced, duplicates) are debug lines; tasks queued, pings,
refusals and the other routes stay info lines. The answers are the same either way."""

from __future__ import annotations

import threading

import pytest

from rum_pool_webhook.app import make_server
from rum_pool_webhook.config import Config
from rum_pool_webhook.store import Store

from test_app import OURS, SECRET, FakeWorker, Service


def start(tmp_path, debug):
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=SECRET,
                    state_dir=str(tmp_path), pools=["ci"], max_parallel=2, retry_attempts=2,
                    retry_backoff=0)
    store = Store(str(tmp_path / "state.db"))
    info = []
    server = make_server(config, store, FakeWorker(), "fake", log=info.append, started_at=1000.0,
                         debug=debug)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return Service(server, store, server.worker, info)


@pytest.fixture()
def logged(tmp_path):
    debug = []
    service = start(tmp_path, debug.append)
    yield service, debug
    service.server.shutdown()
    service.server.server_close()
    service.store.close()


def lines_for(lines, delivery):
    return [line for line in lines if line.endswith(" ms") and " delivery %s " % delivery in line]


def test_deliveries_that_set_nothing_going_are_debug_lines(logged, example):
    svc, debug = logged
    done = example("completed", runner_name=OURS)
    answers = {
        "queued-1": svc.post(done, delivery="queued-1"),
        "coalesced-1": svc.post(done, delivery="coalesced-1"),
        "duplicate-1": svc.post(done, delivery="queued-1"),
        "recorded-1": svc.post(example("in_progress", runner_name=OURS), delivery="recorded-1"),
        "ignored-1": svc.post(example("completed"), delivery="ignored-1"),
        "ping-1": svc.post({"zen": "z", "hook_id": 1}, event="ping", delivery="ping-1"),
        "refused-1": svc.post(done, delivery="refused-1", secret=b"wrong"),
    }
    assert answers["queued-1"] == (202, {"queued": 1, "slot": "ci-hv1-1"})
    assert answers["coalesced-1"] == (202, {"coalesced": 1, "slot": "ci-hv1-1"})
    assert answers["duplicate-1"] == (200, {"duplicate": True})
    assert answers["recorded-1"] == (200, {"recorded": True})
    assert answers["ignored-1"][0] == 200 and "not in pools ci" in answers["ignored-1"][1]["ignored"]
    assert answers["ping-1"] == (200, {"ok": True})
    assert answers["refused-1"][0] == 401
    # the duplicate shares its delivery id with the queued one: one line at each level
    assert [line.split('"')[2].split()[0] for line in lines_for(svc.log, "queued-1")] == ["202"]
    assert [line.split('"')[2].split()[0] for line in lines_for(debug, "queued-1")] == ["200"]
    for delivery in ("coalesced-1", "recorded-1", "ignored-1"):
        assert len(lines_for(debug, delivery)) == 1 and not lines_for(svc.log, delivery), delivery
    for delivery in ("ping-1", "refused-1"):
        assert len(lines_for(svc.log, delivery)) == 1 and not lines_for(debug, delivery), delivery
    assert svc.request("GET", "/healthz")[0] == 200
    assert any('"GET /healthz" 200' in line for line in svc.log)
    assert not any("/healthz" in line for line in debug)


def test_without_a_debug_log_the_quiet_deliveries_leave_no_line(tmp_path, example):
    svc = start(tmp_path, None)
    try:
        assert svc.post(example("in_progress", runner_name=OURS), delivery="rec-2") == \
            (200, {"recorded": True})
        assert svc.post(example("completed", runner_name=OURS), delivery="q-2")[0] == 202
        assert not any("rec-2" in line for line in svc.log)
        assert len(lines_for(svc.log, "q-2")) == 1
        counts = svc.store.snapshot(0)["counts"]
        assert counts["recorded"] == 1 and counts["queued"] == 1  # still counted
    finally:
        svc.server.shutdown()
        svc.server.server_close()
        svc.store.close()
