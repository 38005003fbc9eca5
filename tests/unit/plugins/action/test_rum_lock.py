"""The rum_lock action plugin: rounds, takeover of a dead holder, and real ansible-playbook runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from unittest import mock

import pytest

from ansible_collections.rum.pool.plugins.action import rum_lock as plugin
from ansible_collections.rum.pool.plugins.module_utils import _lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
ME = {"controller": "ctl1", "pid": 100, "boot_id": "boot-a", "started": 50}
DEAD = {"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}


# -- the round loop, with a scripted module -----------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _held(holder, lid="aaaaaaaaaaaa"):
    return {"failed": True, "msg": "rum_lock: lock 'slot' is held by ...",
            "held_by": {"owner": "first run", "since": 1.0, "held_for": 9.0, "holder": holder, "lock_id": lid}}


def _action(args, replies, clock, *, check_mode=False, procs=None):
    """An ActionModule whose module runs are the ``replies`` in turn; the calls are recorded."""
    task = mock.MagicMock(args=args, async_val=0, check_mode=check_mode)
    connection = mock.MagicMock()
    connection._shell.tmpdir = None
    action = plugin.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock())
    calls = []

    def execute(module_name=None, module_args=None, task_vars=None):
        assert module_name == "rum.pool.rum_lock"
        calls.append(dict(module_args))
        reply = replies.pop(0)
        clock.now += module_args.get("timeout", 0) if reply.get("failed") else 0.2
        return dict(reply)

    action._execute_module = execute
    action._remove_tmp_path = mock.MagicMock()
    return action, calls


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(plugin.time, "monotonic", fake)
    monkeypatch.setattr(plugin, "local_holder", lambda pid: dict(ME))
    monkeypatch.setattr(plugin, "process_start_time", {5: 1, 6: 99}.get)
    return fake


def test_uncontended_lock_is_one_round_trip_with_the_holder_added(clock):
    action, calls = _action({"name": "slot", "owner": "me"}, [{"changed": True, "token": "t", "waited_seconds": 0.1}], clock)
    result = action.run(task_vars={})
    assert calls == [{"name": "slot", "owner": "me", "holder": ME, "timeout": 0}]
    assert result["token"] == "t" and result["waited_seconds"] == 0.2


def test_a_live_holder_is_waited_for_in_rounds_until_the_timeout(clock):
    replies = [_held(DEAD | {"pid": 6, "started": 99})] * 4  # pid 6 runs, with its recorded start time
    action, calls = _action({"name": "slot", "timeout": 40}, replies, clock)
    result = action.run(task_vars={})
    assert [c["timeout"] for c in calls] == [0, 15, 15, 10]
    assert not any("take_over" in c for c in calls)
    assert result["failed"] is True and result["waited_seconds"] == 40
    assert result["msg"] == ("rum_lock: lock 'slot' is held by first run (ansible-playbook pid 6 on ctl1, "
                             "lock aaaaaaaaaaaa) for 9s; gave up after 40s")


def test_a_holder_on_another_controller_is_waited_for(clock):
    action, calls = _action({"name": "slot", "timeout": 3}, [_held(DEAD | {"controller": "ctl2"})] * 2, clock)
    assert action.run(task_vars={})["failed"] is True
    assert [c.get("take_over") for c in calls] == [None, None]


@pytest.mark.parametrize("holder, why", [
    (DEAD | {"pid": 7}, "its ansible-playbook process 7 on ctl1 is gone"),
    (DEAD | {"pid": 6, "started": 12}, "its ansible-playbook process 6 on ctl1 is gone"),  # pid reused
    (DEAD | {"pid": 6, "started": 99, "boot_id": "boot-old"}, "it ran on ctl1 before that controller rebooted"),
])
def test_a_dead_holder_on_this_controller_is_taken_over_at_once(clock, holder, why):
    took = {"changed": True, "token": "new", "waited_seconds": 0.01,
            "took_over": {"owner": "first run", "holder": holder, "lock_id": "aaaaaaaaaaaa", "since": 1.0}}
    action, calls = _action({"name": "slot", "timeout": 0}, [_held(holder), took], clock)
    with mock.patch.object(plugin.display, "warning") as warning:
        result = action.run(task_vars={})
    assert [(c["timeout"], c.get("take_over")) for c in calls] == [(0, None), (0, "aaaaaaaaaaaa")]
    assert result["token"] == "new" and result["took_over"]["owner"] == "first run"
    warning.assert_called_once_with(
        f"rum_lock: took over lock 'slot' from first run (ansible-playbook pid {holder['pid']} on ctl1, "
        f"lock aaaaaaaaaaaa): {why}")


def test_a_failed_takeover_at_timeout_zero_is_not_retried_forever(clock):
    action, calls = _action({"name": "slot", "timeout": 0}, [_held(DEAD | {"pid": 7})] * 2, clock)
    assert action.run(task_vars={})["failed"] is True
    assert [c.get("take_over") for c in calls] == [None, "aaaaaaaaaaaa"]


def test_other_failures_and_unlocking_and_check_mode_pass_straight_through(clock):
    action, calls = _action({"name": "../x"}, [{"failed": True, "msg": "rum_lock: invalid lock name"}], clock)
    assert action.run(task_vars={})["msg"] == "rum_lock: invalid lock name" and len(calls) == 1

    unlock = {"name": "slot", "state": "unlocked", "token": "t"}
    action, calls = _action(dict(unlock), [{"changed": True}], clock)
    assert action.run(task_vars={}) == {"changed": True} and calls == [unlock]

    action, calls = _action({"name": "slot"}, [{"skipped": True, "msg": "no check mode"}], clock, check_mode=True)
    assert action.run(task_vars={})["skipped"] is True and calls == [{"name": "slot"}]


def test_a_bad_timeout_is_a_clear_error(clock):
    action, _calls = _action({"name": "slot", "timeout": "soon"}, [], clock)
    with pytest.raises(plugin.AnsibleActionFail, match="rum_lock 'slot': timeout must be a whole number"):
        action.run(task_vars={})


# -- real ansible-playbook runs on localhost -----------------------------------------------------------
HOLD = """
- name: Take the lock and keep it
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Lock
      rum.pool.rum_lock:
        name: slot
        lock_dir: {lock_dir}
        owner: first holder
    - name: Keep it
      ansible.builtin.pause:
        seconds: 120
"""

NEXT = """
- name: Take the lock after the first holder
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Lock
      rum.pool.rum_lock:
        name: slot
        lock_dir: {lock_dir}
        owner: second holder
        timeout: {timeout}
      register: lock
      ignore_errors: true
    - name: Report
      ansible.builtin.copy:
        content: "{{{{ lock | to_json }}}}"
        dest: {report}
        mode: "0600"
    - name: Release
      rum.pool.rum_lock:
        name: slot
        lock_dir: {lock_dir}
        state: unlocked
        token: "{{{{ lock.token }}}}"
      when: lock.token is defined
"""


def _env(marker: str = "") -> dict:
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_NOCOLOR": "1", "PYTHONPATH": os.path.join(ROOT, ".collections")})
    if marker:
        env[MARKER_ENV] = marker
    return env


MARKER_ENV = "RUM_POOL_TEST_HOLDER"


def _kill_marked(marker: str) -> None:
    """SIGKILL every process started with ``marker`` in its environment.

    ansible-core runs each task's worker in a session of its own, so killing the playbook's
    process group leaves a worker behind (seen as ``hold.yml`` processes living on for hours).
    """
    needle = f"{MARKER_ENV}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _playbook(tmp_path, name, text, **fmt) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).format(**fmt))
    return str(path)


def _cmd(path):
    return [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), path]


@pytest.fixture
def holder(tmp_path):
    """Start a playbook that takes the lock and pauses; yield (process, lock dir, its record)."""
    lock_dir = tmp_path / "locks"
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen(_cmd(_playbook(tmp_path, "hold.yml", HOLD, lock_dir=lock_dir)), cwd=ROOT, env=_env(marker),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    owner = lock_dir / "slot.lock" / "owner.json"
    deadline = time.monotonic() + 120
    while not owner.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.poll() is not None else ""
            os.killpg(proc.pid, signal.SIGKILL)
            _kill_marked(marker)
            proc.wait()
            pytest.fail(f"the holding playbook never took the lock (rc={proc.returncode})\n{out}")
        time.sleep(0.1)
    yield proc, lock_dir, json.loads(owner.read_text())
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    _kill_marked(marker)
    proc.wait()
    proc.stdout.close()


def _next(tmp_path, lock_dir, timeout):
    report = tmp_path / "report.json"
    started = time.monotonic()
    run = subprocess.run(_cmd(_playbook(tmp_path, "next.yml", NEXT, lock_dir=lock_dir, timeout=timeout, report=report)),
                         cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600, check=False)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    return json.loads(report.read_text()), run.stdout + run.stderr, elapsed


def test_the_holder_records_its_ansible_playbook_process(holder):
    proc, _lock_dir, record = holder
    assert record["holder"]["pid"] == proc.pid
    assert record["holder"]["boot_id"] == _lock.read_boot_id() != ""
    assert record["holder"]["started"] == _lock.process_start_time(proc.pid)
    assert record["owner"] == "first holder"


def test_a_killed_holder_is_taken_over_at_once(tmp_path, holder):
    proc, lock_dir, record = holder
    os.killpg(proc.pid, signal.SIGKILL)  # as the webhook service does at shutdown: no always: runs
    proc.wait()
    assert (lock_dir / "slot.lock").exists()

    lock, output, _elapsed = _next(tmp_path, lock_dir, timeout=600)
    assert not lock.get("failed"), lock
    # taken over (its holder is dead), not waited out: the 600 s timeout would have failed it and
    # the 3600 s stale_after is far off
    assert lock["took_over"]["owner"] == "first holder"
    assert lock["took_over"]["lock_id"] == _lock.lock_id(record["token"]) and "token" not in lock["took_over"]
    assert lock["waited_seconds"] < 600
    assert (f"took over lock 'slot' from first holder (ansible-playbook pid {proc.pid} on "
            f"{record['holder']['controller']}") in " ".join(output.split())
    assert record["token"] not in output
    assert not (lock_dir / "slot.lock").exists()  # released by the second run


def test_a_live_holder_is_waited_for_until_the_timeout(tmp_path, holder):
    proc, lock_dir, record = holder
    lock, output, _elapsed = _next(tmp_path, lock_dir, timeout=3)
    assert lock["failed"] is True
    assert "is held by first holder" in lock["msg"] and "gave up after 3s" in lock["msg"]
    assert lock["held_by"]["lock_id"] == _lock.lock_id(record["token"]) and "token" not in lock["held_by"]
    assert lock["held_by"]["holder"]["pid"] == proc.pid
    assert lock["waited_seconds"] >= 3  # its whole timeout
    assert "took over" not in output and record["token"] not in json.dumps(lock)
    assert proc.poll() is None
    assert json.loads((lock_dir / "slot.lock" / "owner.json").read_text())["token"] == record["token"]


def test_check_mode_is_still_not_supported(tmp_path):
    lock_dir = tmp_path / "locks"
    run = subprocess.run(_cmd(_playbook(tmp_path, "hold.yml", HOLD.replace("seconds: 120", "seconds: 1"),
                                        lock_dir=lock_dir)) + ["--check"],
                         cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipping: [localhost]" in run.stdout
    assert not (lock_dir / "slot.lock").exists()
