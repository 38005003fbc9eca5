# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The warm standby (dispatcher.standby: true), for real: ansible-runner in a process of its own
runs a playbook that waits in the collection's rum.pool.rum_standby, as recreate.yml does, and
publishes what it was asked in rum_pool_outcome. The dispatcher hands it a task by writing the
request; without a waiting standby, a task is launched the usual way."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from rum_pool_webhook.dispatch import make_dispatcher
from rum_pool_webhook.dispatch_runner import AnsibleRunnerDispatcher
from rum_pool_webhook import standby as standby_module
from rum_pool_webhook.standby import HANDOVER_MARGIN, REQUEST, StandbyRunnerDispatcher
from rum_pool_webhook.tasks import RECONCILE, STAGE
from tests.unit.service.helpers import RUNNER, SLOT, Lines, task
from tests.unit.service.test_dispatch_runner import Records, private_tree_problems

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# recreate.yml's protocol, without the pool: wait for the request when started as a standby, then
# say what was asked (the slot from the request, or from -e slot= when started for a task).
STANDBY_PLAYBOOK = """\
- name: Stand-in recreate
  hosts: all
  gather_facts: false
  tasks:
    - name: Wait for the request
      rum.pool.rum_standby:
        path: "{{ standby }}"
        timeout: "{{ standby_timeout | default(3600) | int }}"
      register: waited
      when: standby is defined
    - name: End without a request
      ansible.builtin.meta: end_play
      when: standby is defined and not waited.request
    - name: Publish what was asked
      ansible.builtin.set_stats:
        data:
          rum_pool_outcome: "{{ {asked.slot: {'outcome': 'staged' if asked.stage else 'recreated',
                                'reason': 'standby ' ~ (standby is defined) ~ ' runner ' ~ asked.runner_name}} }}"
        per_host: false
      vars:
        asked: "{{ waited.request if standby is defined else
                   {'slot': slot, 'runner_name': runner_name | default(none), 'stage': stage | default(false)} }}"
"""
ENV = {"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections"), "ANSIBLE_NOCOLOR": "1"}


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "recreate.yml").write_text(STANDBY_PLAYBOOK)
    (tmp_path / "pool.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    (tmp_path / "inventory").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    made = []

    def make(**more):
        disp = StandbyRunnerDispatcher(playbook=str(tmp_path / "recreate.yml"), inventory=str(tmp_path / "inventory"),
                                       envvars=ENV, state_dir=str(tmp_path / "state"), timeout=120,
                                       reconcile_playbook=str(tmp_path / "pool.yml"),
                                       poll_seconds=0.05, **more)
        made.append(disp)
        return disp

    yield make
    for disp in made:
        disp.close()


def wait_ready(warm, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(warm["request"] + ".ready"):
        assert warm["launched"].alive(), "the standby run ended before it waited"
        assert time.monotonic() < deadline, "the standby never got to its wait"
        time.sleep(0.05)


def test_a_task_is_handed_to_the_waiting_standby_and_the_next_one_starts(setup):
    disp = setup()
    warm = disp.ensure_standby()
    assert warm["name"].startswith("0-") and disp.ensure_standby() is warm  # one at a time
    wait_ready(warm)
    records, log = Records(), Lines()
    result = disp.run(task(task_id=3), log, records)
    assert result.ok and result.outcome == "recreated", result
    assert result.message.startswith("recreate.yml rc=0 (successful)")
    assert [h["ident"] for h in records] == [warm["name"]] and records[0]["launched"] is True
    assert records[0]["request"] == os.path.join(warm["run_dir"], REQUEST)
    with open(records[0]["request"], encoding="utf-8") as fh:
        assert json.load(fh) == {"slot": SLOT, "runner_name": RUNNER, "stage": False}
    assert f"slot {SLOT}: recreate.yml: handed to the warm standby run {warm['name']} (task 3, attempt 1)" in log
    assert private_tree_problems(warm["run_dir"]) == []
    # the standby was taken: the next one is a new run, started once the handed run ended
    nxt = disp.ensure_standby()
    assert nxt["name"] != warm["name"]
    wait_ready(nxt)
    staged = disp.run(task(task_id=4, kind=STAGE), Lines(), Records())
    assert staged.ok and staged.outcome == "staged", staged


def test_without_a_waiting_standby_a_task_is_launched_as_usual(setup):
    disp = setup()
    records = Records()
    result = disp.run(task(task_id=5), Lines(), records)  # no standby started
    assert result.ok and result.outcome == "recreated"
    assert [h["ident"] for h in records.launched] == ["5-1"] and "request" not in records[0]
    # a reconcile never takes the standby
    warm = disp.ensure_standby()
    wait_ready(warm)
    records = Records()
    assert disp.run(task(task_id=6, slot="(reconcile)", runner=None, kind=RECONCILE), Lines(), records).ok
    assert [h["ident"] for h in records.launched] == ["6-1"]
    assert disp.ensure_standby() is warm and warm["launched"].alive()


def test_a_standby_near_its_expiry_is_not_handed_a_task(setup):
    now = [1000.0]
    disp = setup(standby_seconds=HANDOVER_MARGIN + 30, clock=lambda: now[0])
    warm = disp.ensure_standby()
    wait_ready(warm)
    now[0] += 30  # standby_seconds - margin reached
    assert disp.take_standby() is None
    fresh = disp.ensure_standby()
    assert fresh["name"] != warm["name"]
    assert not os.path.exists(warm["run_dir"]), "the old standby and its directory are gone"


def test_a_restarted_service_writes_the_request_it_recorded_and_follows_the_run(setup):
    first = setup()
    warm = first.ensure_standby()
    wait_ready(warm)
    # the first service recorded the hand-over and died before writing the request
    handle = {"kind": "ansible-runner", "ident": warm["name"], "run_dir": warm["run_dir"],
              "marker": warm["marker"], "started_at": time.time(), "playbook": first.playbook,
              "pid": warm["launched"].pid, "launched": True, "request": warm["request"]}
    with first._warm_lock:  # pylint: disable=protected-access
        first._warm = None  # pylint: disable=protected-access  # gone with the first service
    second = setup()
    log = Lines()
    result = second.run(task(task_id=7, handle=handle), log, Records())
    assert result.ok and result.outcome == "recreated", (result, log)
    assert f"slot {SLOT}: wrote the request the standby run {warm['name']} was handed before the restart" in log


def test_a_standby_that_ends_without_reading_its_request_is_a_failed_attempt(setup, tmp_path):
    disp = setup()
    (tmp_path / "recreate.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                           "    - ansible.builtin.wait_for:\n        path: \"{{ standby }}.ready\"\n"
                                           "      delegate_to: localhost\n")
    warm = disp.ensure_standby()
    ready = warm["request"] + ".ready"
    with open(ready, "w", encoding="utf-8") as fh:  # looks ready; the play ends without reading anything
        fh.write("1")
    result = disp.run(task(task_id=8), Lines(), Records())
    assert not result.ok
    assert result.message.startswith(f"the standby run ended without taking the request for {SLOT} (recreate.yml rc=0")


def test_close_stops_the_waiting_standby_and_the_config_switch(setup, tmp_path):
    disp = setup()
    warm = disp.ensure_standby()
    wait_ready(warm)
    disp.close()
    deadline = time.monotonic() + 30
    while warm["launched"].alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not warm["launched"].alive() and not os.path.exists(warm["run_dir"])
    assert disp.ensure_standby() is None  # closed: no new one
    with pytest.raises(ValueError, match=r"^standby_seconds must be more than 60$"):
        setup(standby_seconds=60)
    config = {"kind": "ansible-runner", "playbook": str(tmp_path / "recreate.yml"),
              "inventory": str(tmp_path / "inventory")}
    plain = make_dispatcher(config, str(tmp_path / "s"), 5)
    assert isinstance(plain, AnsibleRunnerDispatcher) and not isinstance(plain, StandbyRunnerDispatcher)
    assert isinstance(make_dispatcher(dict(config, standby=True), str(tmp_path / "s"), 5), StandbyRunnerDispatcher)


def test_a_standby_that_fails_by_itself_is_started_again_only_after_a_growing_pause(setup, tmp_path):
    now = [1000.0]
    lines = Lines()
    disp = setup(clock=lambda: now[0])
    disp.standby_log = lines
    (tmp_path / "recreate.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                           "    - name: Broken\n      ansible.builtin.fail:\n        msg: inventory gone\n")
    first = disp.ensure_standby()
    deadline = time.monotonic() + 60
    while first["launched"].alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert disp.ensure_standby() is None  # ended by itself: no new one at once
    assert lines == [f"warm standby: run {first['name']} ended before it was used "
                     "(TASK [Broken] localhost: inventory gone); the next one in 10 s"]
    now[0] += 9.9
    assert disp.ensure_standby() is None
    now[0] += 0.1
    second = disp.ensure_standby()
    assert second is not None and second["name"] != first["name"]
    while second["launched"].alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert disp.ensure_standby() is None
    assert lines[-1].endswith("; the next one in 20 s")  # doubled
    assert disp.take_standby() is None


def test_the_next_standby_starts_when_the_run_it_was_handed_to_ends(setup, monkeypatch):
    """No second ansible-playbook start-up competes with the handed task's hot path for a core."""
    disp = setup()
    warm = disp.ensure_standby()
    wait_ready(warm)
    assert disp.take_standby() is warm
    assert disp.ensure_standby() is None  # the handed run is still going: no new standby yet
    later = disp.clock() + standby_module.HOLD_SECONDS
    monkeypatch.setattr(disp, "clock", lambda: later)
    assert disp.ensure_standby() is not None  # a run that never reports its end holds it back no longer
    monkeypatch.undo()
    disp._discard(warm)  # taken and never handed a request: stopped here, as nobody follows it
    disp.close()
    deadline = time.monotonic() + 20
    while warm["launched"].alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not warm["launched"].alive()


def test_a_handed_recreate_that_ended_releases_the_next_standby_and_a_stage_does_not_hold_it(setup):
    disp = setup()
    warm = disp.ensure_standby()
    wait_ready(warm)
    seen = []
    real_follow = disp._follow

    def follow(*args, **kwargs):
        seen.append(disp.ensure_standby())  # while the handed run goes on
        return real_follow(*args, **kwargs)

    disp._follow = follow
    result = disp.run(task(task_id=5), Lines(), Records())
    assert result.ok and result.outcome == "recreated", result
    assert seen == [None]
    nxt = disp.ensure_standby()  # ended: released
    assert nxt is not None and nxt["name"] != warm["name"]
    # a stage task: its job may end seconds later, so the next standby starts while the stage runs
    wait_ready(nxt)
    staged = disp.run(task(task_id=6, kind=STAGE), Lines(), Records())
    assert staged.ok and staged.outcome == "staged", staged
    assert seen[1] is not None and seen[1]["name"] not in (warm["name"], nxt["name"])
