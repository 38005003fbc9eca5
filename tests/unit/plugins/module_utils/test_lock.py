"""Named locks held across tasks: exclusion, tokens, waiting, stale takeover."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from ansible_collections.rum.pool.plugins.module_utils._lock import LockDir, LockError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_acquire_release_and_token(tmp_path):
    locks = LockDir(str(tmp_path))
    rec = locks.acquire("ci-hv1-1", owner="test")
    assert len(rec["token"]) == 32
    with pytest.raises(LockError, match="held by test, not by this token"):
        locks.release("ci-hv1-1", "wrong")
    assert locks.release("ci-hv1-1", rec["token"]) is True
    assert locks.release("ci-hv1-1", rec["token"]) is False


def test_other_slots_are_independent(tmp_path):
    locks = LockDir(str(tmp_path))
    locks.acquire("ci-hv1-1")
    assert locks.acquire("ci-hv1-2", timeout=0)["token"]


def test_waits_then_gives_up_naming_the_holder(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    locks.acquire("slot", owner="pool.yml")
    with pytest.raises(LockError, match=r"lock 'slot' is held by pool.yml .* gave up after 5s"):
        locks.acquire("slot", timeout=5, poll=1)
    assert clock.now >= 1005


def test_stale_lock_is_taken_over(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    old = locks.acquire("slot", owner="dead run")
    clock.now += 7200
    new = locks.acquire("slot", timeout=0, stale_after=3600)
    assert new["token"] != old["token"]
    assert new["took_over"]["owner"] == "dead run" and "token" not in new["took_over"]


def test_bad_name(tmp_path):
    with pytest.raises(LockError, match="invalid lock name"):
        LockDir(str(tmp_path)).acquire("../x")


def _hold(root, name, journal, delay):
    locks = LockDir(root)
    rec = locks.acquire(name, timeout=30, poll=0.01)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND)
    try:  # appends land in the order they are made: the journal is the order of events
        os.write(fd, f"in {os.getpid()}\n".encode())
        time.sleep(delay)  # long enough for the others to try, not a measurement
        os.write(fd, f"out {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    locks.release(name, rec["token"])


def test_processes_exclude_each_other(tmp_path):
    journal = tmp_path / "journal"
    journal.write_text("")
    procs = [multiprocessing.Process(target=_hold, args=(str(tmp_path), "slot", str(journal), 0.2))
             for _worker in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = [line.split() for line in journal.read_text().splitlines()]
    # never two "in" without an "out" between them, and each "out" is its own "in"'s
    assert [kind for kind, _pid in events] == ["in", "out"] * 3
    assert [pid for _kind, pid in events[0::2]] == [pid for _kind, pid in events[1::2]]
    assert len({pid for _kind, pid in events}) == 3
    assert not os.path.exists(tmp_path / "slot.lock")


# -- identities and liveness (the action plugin's questions) ------------------------------------------
from ansible_collections.rum.pool.plugins.module_utils import _lock  # noqa: E402


def test_lock_id_is_a_short_stable_hash_of_the_token():
    token = "0123456789abcdef0123456789abcdef"
    assert _lock.lock_id(token) == _lock.lock_id(token)
    assert len(_lock.lock_id(token)) == 12 and _lock.lock_id(token) not in token
    assert _lock.lock_id(token) != _lock.lock_id(token[::-1])
    assert _lock.lock_id(None) == "" and _lock.lock_id("") == ""


def _stat(pid, comm, state, started):
    # fields 1-2, then state (3) and 18 more fields up to starttime (22)
    rest = [state] + [str(n) for n in range(4, 22)] + [str(started), "99", "100"]
    return f"{pid} ({comm}) " + " ".join(rest) + "\n"


def test_process_start_time_reads_field_22_after_an_awkward_comm(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(_stat(42, "ansible-play) (x y", "S", 987654))
    assert _lock.process_start_time(42, proc=str(tmp_path)) == 987654
    assert _lock.process_start_time(43, proc=str(tmp_path)) is None


def test_process_start_time_zombie_counts_as_gone_and_garbage_as_unknown(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text(_stat(7, "ansible-playbook", "Z", 5))
    assert _lock.process_start_time(7, proc=str(tmp_path)) is None
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "stat").write_text("8 (x) S 1 2\n")
    assert _lock.process_start_time(8, proc=str(tmp_path)) == _lock.UNKNOWN_START


def test_process_start_time_of_this_process_matches_proc():
    started = _lock.process_start_time(os.getpid())
    with open(f"/proc/{os.getpid()}/stat") as fh:
        assert started == int(fh.read().rsplit(")", 1)[1].split()[19])
    assert started > 0


def test_local_holder_uses_the_readers_given():
    me = _lock.local_holder(4242, hostname=lambda: "ctl1", boot_id=lambda: "boot-a", start_time={4242: 777}.get)
    assert me == {"controller": "ctl1", "pid": 4242, "boot_id": "boot-a", "started": 777}
    unknown = _lock.local_holder(1, hostname=lambda: "c", boot_id=lambda: "", start_time=lambda pid: _lock.UNKNOWN_START)
    assert unknown["started"] is None and unknown["boot_id"] == ""


ME = {"controller": "ctl1", "pid": 100, "boot_id": "boot-a", "started": 50}


@pytest.mark.parametrize("holder, procs, expected", [
    (None, {}, None),                                                                   # no identity recorded
    ({"controller": "ctl2", "pid": 5, "boot_id": "boot-a", "started": 1}, {}, None),    # another controller
    ({"controller": "ctl1", "pid": 5, "boot_id": "", "started": 1}, {}, None),          # no boot id to compare
    ({"controller": "ctl1", "pid": 5, "boot_id": "boot-old", "started": 1}, {5: 1}, False),  # earlier boot
    ({"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}, {}, False),   # process gone
    ({"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}, {5: 2}, False),  # pid reused
    ({"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}, {5: 1}, True),   # alive
    ({"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": None}, {5: 9}, True),  # start unknown
    ({"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}, {5: _lock.UNKNOWN_START}, True),
    ({"controller": "ctl1", "pid": "x", "boot_id": "boot-a", "started": 1}, {}, None),
])
def test_holder_alive(holder, procs, expected):
    assert _lock.holder_alive(holder, ME, procs.get) is expected


def test_holder_alive_without_my_boot_id_knows_nothing():
    holder = {"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}
    assert _lock.holder_alive(holder, dict(ME, boot_id=""), {}.get) is None


def test_dead_reason_names_process_or_reboot():
    gone = {"controller": "ctl1", "pid": 5, "boot_id": "boot-a"}
    assert _lock.dead_reason(gone, ME) == "its ansible-playbook process 5 on ctl1 is gone"
    assert "before that controller rebooted" in _lock.dead_reason(dict(gone, boot_id="boot-old"), ME)


# -- held_by and take_over on the lock directory ------------------------------------------------------
DEAD = {"controller": "ctl1", "pid": 5, "boot_id": "boot-a", "started": 1}


def test_held_lock_fails_with_held_by_but_never_the_token(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    rec = locks.acquire("slot", owner="recreate of slot", holder=DEAD)
    clock.now += 30
    with pytest.raises(_lock.LockHeld) as err:
        locks.acquire("slot", timeout=0)
    held = err.value.held_by
    assert held["lock_id"] == _lock.lock_id(rec["token"])
    assert held["owner"] == "recreate of slot" and held["holder"] == DEAD
    assert held["since"] == 1000.0 and held["held_for"] == 30
    assert "token" not in held and rec["token"] not in repr(held) and rec["token"] not in str(err.value)
    assert "ansible-playbook pid 5 on ctl1" in str(err.value) and held["lock_id"] in str(err.value)


def test_owner_record_is_private_and_holds_the_holder(tmp_path):
    locks = LockDir(str(tmp_path))
    rec = locks.acquire("slot", holder=DEAD)
    owner = tmp_path / "slot.lock" / "owner.json"
    assert owner.stat().st_mode & 0o777 == 0o600
    assert locks.holder("slot")["holder"] == DEAD and locks.holder("slot")["token"] == rec["token"]
    assert not (tmp_path / "slot.lock" / ".owner.tmp").exists()


def test_take_over_by_lock_id_is_at_once(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    old = locks.acquire("slot", owner="killed run", holder=DEAD)
    new = locks.acquire("slot", timeout=0, take_over=_lock.lock_id(old["token"]), owner="next run")
    assert new["token"] != old["token"] and clock.now == 1000.0  # no waiting
    assert new["took_over_why"] == "dead"
    assert new["took_over"]["owner"] == "killed run" and new["took_over"]["holder"] == DEAD
    assert new["took_over"]["lock_id"] == _lock.lock_id(old["token"]) and "token" not in new["took_over"]
    assert locks.holder("slot")["token"] == new["token"]
    assert [p.name for p in tmp_path.iterdir()] == ["slot.lock"]  # the old lock is gone, not set aside


def test_take_over_never_removes_a_lock_taken_anew(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    dead = locks.acquire("slot", holder=DEAD)
    first = locks.acquire("slot", timeout=0, take_over=_lock.lock_id(dead["token"]))
    # a second run found the same dead holder: by now the lock is someone else's and is waited for
    with pytest.raises(_lock.LockHeld) as err:
        locks.acquire("slot", timeout=2, poll=1, take_over=_lock.lock_id(dead["token"]))
    assert err.value.held_by["lock_id"] == _lock.lock_id(first["token"])
    assert locks.release("slot", first["token"]) is True


def test_take_over_waits_while_another_run_is_taking_over(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    dead = locks.acquire("slot", holder=DEAD)
    (tmp_path / "slot.lock.takeover").mkdir()
    with pytest.raises(_lock.LockHeld):
        locks.acquire("slot", timeout=1, poll=0.5, take_over=_lock.lock_id(dead["token"]))
    assert locks.holder("slot")["token"] == dead["token"]


def test_a_guard_left_by_a_dead_taker_expires(tmp_path):
    locks = LockDir(str(tmp_path))
    dead = locks.acquire("slot", holder=DEAD)
    guard = tmp_path / "slot.lock.takeover"
    guard.mkdir()
    old = time.time() - _lock.GUARD_STALE_AFTER - 5
    os.utime(guard, (old, old))
    new = locks.acquire("slot", timeout=5, poll=0.01, take_over=_lock.lock_id(dead["token"]))
    assert new["took_over_why"] == "dead"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot.lock"]


def test_stale_takeover_reports_why(tmp_path):
    clock = Clock()
    locks = LockDir(str(tmp_path), clock=clock, sleep=clock.sleep)
    locks.acquire("slot")
    clock.now += 7200
    assert locks.acquire("slot", timeout=0, stale_after=3600)["took_over_why"] == "stale"


def test_a_lock_whose_maker_died_before_writing_its_record(tmp_path):
    sleeps = []
    locks = LockDir(str(tmp_path), clock=time.time, sleep=sleeps.append)
    (tmp_path / "slot.lock").mkdir()
    with pytest.raises(_lock.LockHeld, match="held by another run"):
        locks.acquire("slot", timeout=0)
    assert sleeps == []  # held, not spun on
    with pytest.raises(LockError, match="not by this token"):
        locks.release("slot", "")
    old = time.time() - 7200
    os.utime(tmp_path / "slot.lock", (old, old))
    assert locks.acquire("slot", timeout=0, stale_after=3600)["took_over_why"] == "stale"


# -- the module itself --------------------------------------------------------------------------------
def _run_module(capsys, args):
    import json

    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.rum.pool.plugins.modules import rum_lock

    with patch_module_args(args), pytest.raises(SystemExit):
        rum_lock.main()
    return json.loads(capsys.readouterr().out)


def test_module_fails_with_held_by_and_takes_over_a_dead_holder(tmp_path, capsys):
    base = {"name": "slot", "lock_dir": str(tmp_path), "timeout": 0}
    first = _run_module(capsys, dict(base, owner="killed run", holder=DEAD))
    assert first["changed"] is True and len(first["token"]) == 32

    held = _run_module(capsys, dict(base, owner="next run"))
    assert held["failed"] is True and "gave up after 0s" in held["msg"]
    assert held["held_by"]["lock_id"] == _lock.lock_id(first["token"]) and "token" not in held["held_by"]
    assert held["held_by"]["holder"] == dict(DEAD)
    assert first["token"] not in json.dumps(held)

    taken = _run_module(capsys, dict(base, owner="next run", take_over=held["held_by"]["lock_id"]))
    assert taken["changed"] is True and taken["token"] != first["token"]
    assert taken["took_over"]["owner"] == "killed run" and "token" not in taken["took_over"]
    assert not taken.get("warnings")  # the action plugin names a dead holder, not the module

    released = _run_module(capsys, {"name": "slot", "lock_dir": str(tmp_path), "state": "unlocked",
                                    "token": taken["token"]})
    assert released["changed"] is True and not (tmp_path / "slot.lock").exists()


def _take_over(root, lid, start, out):
    start.wait(10)
    try:
        rec = LockDir(root).acquire("slot", timeout=0, take_over=lid)
        out.put(("took", rec["token"]))
    except _lock.LockHeld as exc:
        out.put(("held", exc.held_by["lock_id"]))


def test_runs_taking_over_the_same_dead_lock_at_once_leave_one_winner(tmp_path):
    dead = LockDir(str(tmp_path)).acquire("slot", holder=DEAD)
    start, out = multiprocessing.Event(), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_take_over, args=(str(tmp_path), _lock.lock_id(dead["token"]), start, out))
             for _worker in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
    results = [out.get(timeout=5) for _result in procs]
    winners = [value for kind, value in results if kind == "took"]
    assert len(winners) == 1
    assert LockDir(str(tmp_path)).holder("slot")["token"] == winners[0]
    # the losers saw the dead lock (its takeover under way) or the winner's (its record maybe not yet written)
    seen = {value for kind, value in results if kind == "held"}
    assert seen <= {_lock.lock_id(dead["token"]), _lock.lock_id(winners[0]), ""}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot.lock"]
