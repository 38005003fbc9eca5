# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named locks, exactly: the words of every message, the records others see, the modes of what is
made, the defaults, the bounds (at the bound, not past it) and the races between looking at a
lock and acting on it. Each test pins what a mutant of `make mutate` changed unseen (issue 14).

No test here waits for real time: the clock and the sleep are stand-ins, and a loop that would
spin without sleeping fails the test after a bounded number of attempts instead of hanging it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest

from test_lock import DEAD, ME, Clock, _stat

from ansible_collections.rum.pool.plugins.module_utils import _lock
from ansible_collections.rum.pool.plugins.module_utils._lock import LockDir, LockError, LockHeld


@pytest.fixture
def attempts(monkeypatch):
    """Every lock or guard the lock code tries to make, as (path, mode) (its root is left out);
    more than 2000 fails the test: the code spins instead of waiting."""
    made = []
    real = os.mkdir

    def mkdir(path, mode=0o777, **kwargs):
        if ".lock" in os.path.basename(str(path)):
            made.append((str(path), mode))
        if len(made) > 2000:
            raise AssertionError("the lock code tried mkdir 2000 times: it spins instead of waiting")
        return real(path, mode, **kwargs)
    monkeypatch.setattr(_lock.os, "mkdir", mkdir)
    return made


def fake_locks(tmp_path, cls=LockDir):
    clock = Clock()
    return cls(str(tmp_path), clock=clock, sleep=clock.sleep), clock


# -- words ------------------------------------------------------------------------------------------
def test_dead_reason_after_a_reboot_names_the_controller():
    assert _lock.dead_reason(dict(DEAD, boot_id="boot-old"), ME) == "it ran on ctl1 before that controller rebooted"


@pytest.mark.parametrize("record, words", [
    ({"owner": "recreate", "host": "hv1", "token": "t"}, f"recreate (on hv1, lock {_lock.lock_id('t')})"),
    ({}, "another run (on an unknown host, lock unknown)"),
    ({"host": "", "lock_id": "0123abcd4567"}, "another run (on an unknown host, lock 0123abcd4567)"),
    ({"lock_id": "0123abcd4567", "token": "t"}, "another run (on an unknown host, lock 0123abcd4567)"),
    ({"holder": {"controller": "ctl1", "pid": 5}, "host": "hv1"},
     "another run (ansible-playbook pid 5 on ctl1, lock unknown)"),
])
def test_describe_holder(record, words):
    assert _lock.describe_holder(record) == words


def test_public_record_drops_the_token_and_the_record_taken_over():
    record = {"token": "t", "took_over": {"owner": "old"}, "took_over_why": "dead", "owner": "o"}
    assert _lock.public_record(record) == {"owner": "o", "took_over_why": "dead", "lock_id": _lock.lock_id("t")}


def test_releasing_with_a_wrong_token_names_another_run_when_the_owner_is_unknown(tmp_path):
    locks, _clock = fake_locks(tmp_path)
    locks.acquire("slot")
    with pytest.raises(LockError) as err:
        locks.release("slot", "wrong")
    assert str(err.value) == "lock 'slot' is held by another run, not by this token"


@pytest.mark.parametrize("name", ["", None])
def test_an_empty_lock_name_is_invalid(tmp_path, name):
    with pytest.raises(LockError) as err:
        LockDir(str(tmp_path)).path(name)
    assert str(err.value) == f"invalid lock name {name!r}: use letters, digits, '.', '_' and '-'"


def test_a_lock_is_a_directory_named_after_it_in_the_root(tmp_path):
    assert LockDir(str(tmp_path)).path("ci-hv1-1") == os.path.join(str(tmp_path), "ci-hv1-1.lock")


# -- identities read from /proc ---------------------------------------------------------------------
@pytest.mark.parametrize("state", ["X", "x"])
def test_a_dead_process_counts_as_gone(tmp_path, state):
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "stat").write_text(_stat(9, "ansible-playbook", state, 5))
    assert _lock.process_start_time(9, proc=str(tmp_path)) is None


def test_read_boot_id(tmp_path):
    (tmp_path / "boot_id").write_text("  6f1c-boot \n")
    assert _lock.read_boot_id(str(tmp_path / "boot_id")) == "6f1c-boot"
    assert _lock.read_boot_id(str(tmp_path / "none")) == ""
    assert _lock.read_boot_id() == open(_lock.BOOT_ID_PATH, encoding="ascii").read().strip()


@pytest.mark.parametrize("pid, expected", [(0, None), (-1, None), (1, True)])
def test_holder_alive_looks_at_every_real_pid(pid, expected):
    """pid 0 and below are no process; pid 1 is one like any other."""
    holder = dict(DEAD, pid=pid)
    assert _lock.holder_alive(holder, ME, {pid: 1}.get) is expected


# -- records as read and as given out ---------------------------------------------------------------
def test_an_unreadable_record_is_held_since_the_epoch(tmp_path):
    locks, _clock = fake_locks(tmp_path)
    (tmp_path / "slot.lock").mkdir()
    (tmp_path / "slot.lock" / "owner.json").write_text("{not json")
    with pytest.raises(LockHeld) as err:
        locks.acquire("slot", timeout=0, stale_after=10_000)
    assert err.value.held_by == {"since": 0, "lock_id": "", "held_for": 1000.0}


def test_a_record_that_is_not_an_object_is_held_since_the_epoch(tmp_path):
    locks, _clock = fake_locks(tmp_path)
    (tmp_path / "slot.lock").mkdir()
    (tmp_path / "slot.lock" / "owner.json").write_text("[1, 2]")
    assert locks.holder("slot") == {"token": None, "since": 0}
    with pytest.raises(LockHeld) as err:
        locks.acquire("slot", timeout=0, stale_after=10_000)
    assert err.value.held_by == {"since": 0, "lock_id": "", "held_for": 1000.0}


def test_a_record_without_since_is_as_old_as_the_epoch(tmp_path):
    locks, clock = fake_locks(tmp_path)
    assert locks._age({"since": None}) == clock.now  # pylint: disable=protected-access
    assert locks._age({"since": "garbage"}) == clock.now  # pylint: disable=protected-access


def test_a_lock_without_its_record_is_held_since_it_was_made(tmp_path):
    locks, _clock = fake_locks(tmp_path)
    (tmp_path / "slot.lock").mkdir()
    os.utime(tmp_path / "slot.lock", (990.0, 990.0))
    assert locks.holder("slot") == {"token": None, "since": 990.0}
    with pytest.raises(LockHeld) as err:
        locks.acquire("slot", timeout=0)
    assert err.value.held_by == {"since": 990.0, "lock_id": "", "held_for": 10.0}


def test_held_for_is_rounded_to_a_tenth(tmp_path):
    locks, clock = fake_locks(tmp_path)
    locks.acquire("slot")
    clock.now += 12.34
    with pytest.raises(LockHeld) as err:
        locks.acquire("slot", timeout=0)
    assert err.value.held_by["held_for"] == 12.3


def test_the_record_names_this_host_and_an_empty_owner_by_default(tmp_path):
    locks, _clock = fake_locks(tmp_path)
    record = locks.acquire("slot")
    assert (record["owner"], record["host"], record["since"]) == ("", socket.gethostname(), 1000.0)
    assert sorted(record) == ["host", "owner", "since", "token"]
    assert json.loads((tmp_path / "slot.lock" / "owner.json").read_text()) == record


# -- what is made on disk ---------------------------------------------------------------------------
def test_the_root_and_the_lock_are_private_directories(tmp_path):
    root = tmp_path / "locks"
    locks = LockDir(str(root))
    locks.acquire("slot")
    assert root.stat().st_mode & 0o777 == 0o700
    assert (root / "slot.lock").stat().st_mode & 0o777 == 0o700


def test_the_record_is_written_through_a_temporary_file_in_the_lock(tmp_path, monkeypatch):
    moves = []
    real = os.replace

    def replace(src, dst):
        moves.append((src, dst))
        return real(src, dst)
    monkeypatch.setattr(_lock.os, "replace", replace)
    LockDir(str(tmp_path)).acquire("slot")
    lock = os.path.join(str(tmp_path), "slot.lock")
    assert moves == [(os.path.join(lock, ".owner.tmp"), os.path.join(lock, "owner.json"))]


# -- defaults and bounds ----------------------------------------------------------------------------
def test_by_default_a_held_lock_is_waited_for_ten_minutes_polling_every_half_second(tmp_path, attempts):
    sleeps = []
    clock = Clock()

    def sleep(seconds):
        sleeps.append(seconds)
        clock.sleep(seconds)
    locks = LockDir(str(tmp_path), clock=clock, sleep=sleep)
    locks.acquire("slot", owner="first")
    del attempts[:]
    with pytest.raises(LockHeld) as err:
        locks.acquire("slot")
    assert set(sleeps) == {0.5} and len(sleeps) == 1200
    assert str(err.value).endswith("gave up after 600s")
    assert len(attempts) == 1201  # one look at the start and one after every sleep


def test_by_default_a_lock_is_stale_after_an_hour_and_not_at_the_hour(tmp_path):
    locks, clock = fake_locks(tmp_path)
    first = locks.acquire("slot")
    clock.now += 3600
    with pytest.raises(LockHeld):
        locks.acquire("slot", timeout=0)
    clock.now += 0.5
    taken = locks.acquire("slot", timeout=0)
    assert taken["took_over_why"] == "stale" and taken["took_over"]["lock_id"] == _lock.lock_id(first["token"])


def test_a_guard_exactly_as_old_as_the_bound_is_left_alone(tmp_path, attempts):
    locks, clock = fake_locks(tmp_path)
    dead = locks.acquire("slot", holder=DEAD)
    guard = tmp_path / "slot.lock.takeover"
    guard.mkdir()
    os.utime(guard, (clock.now - _lock.GUARD_STALE_AFTER, clock.now - _lock.GUARD_STALE_AFTER))
    with pytest.raises(LockHeld):
        locks.acquire("slot", timeout=0, take_over=_lock.lock_id(dead["token"]))
    assert guard.is_dir() and locks.holder("slot")["token"] == dead["token"]
    assert attempts[-1] == (os.path.join(str(tmp_path), "slot.lock.takeover"), 0o700)


def test_a_take_over_waits_while_another_run_holds_the_guard(tmp_path, attempts):
    """Another run at it: this one polls (sleeps between looks), it never spins or takes the lock."""
    locks, clock = fake_locks(tmp_path)
    dead = locks.acquire("slot", holder=DEAD)
    (tmp_path / "slot.lock.takeover").mkdir()
    del attempts[:]
    with pytest.raises(LockHeld):
        locks.acquire("slot", timeout=2, poll=1, take_over=_lock.lock_id(dead["token"]))
    lock, guard = os.path.join(str(tmp_path), "slot.lock"), os.path.join(str(tmp_path), "slot.lock.takeover")
    assert [path for path, _mode in attempts] == [lock, guard] * 3 and clock.now == 1002.0
    assert locks.holder("slot")["token"] == dead["token"] and "took_over" not in locks.holder("slot")


def test_a_lock_held_is_looked_at_once_per_poll(tmp_path, attempts):
    locks, clock = fake_locks(tmp_path)
    locks.acquire("slot")
    del attempts[:]
    with pytest.raises(LockHeld):
        locks.acquire("slot", timeout=3, poll=1)
    assert len(attempts) == 4 and clock.now == 1003.0


# -- races between a look and the act ---------------------------------------------------------------
class Racing(LockDir):
    """A LockDir whose first look at the lock sees ``earlier`` (what was there a moment ago)."""

    def __init__(self, root, earlier, **kwargs):
        super().__init__(root, **kwargs)
        self.earlier = list(earlier)

    def _read(self, path):
        if self.earlier:
            before = self.earlier.pop(0)
            return before(path) if callable(before) else before
        return super()._read(path)


def racing(tmp_path, *earlier):
    clock = Clock()
    return Racing(str(tmp_path), earlier, clock=clock, sleep=clock.sleep), clock


def test_a_lock_released_between_mkdir_and_the_look_is_taken_at_once(tmp_path, attempts):
    LockDir(str(tmp_path)).acquire("slot")

    def released(path):
        shutil.rmtree(path)
        return None
    locks, clock = racing(tmp_path, released)
    record = locks.acquire("slot", timeout=0, owner="me")
    assert record["owner"] == "me" and "took_over" not in record and clock.now == 1000.0
    assert locks.holder("slot")["token"] == record["token"]


def test_a_stale_lock_taken_anew_before_the_takeover_is_left_alone(tmp_path):
    fresh_locks, _clock = fake_locks(tmp_path)
    fresh = fresh_locks.acquire("slot", owner="new run")
    locks, _clock = racing(tmp_path, {"token": "old", "since": 0, "owner": "dead run"})
    with pytest.raises(LockHeld) as err:
        locks.acquire("slot", timeout=0, stale_after=60)
    assert err.value.held_by["owner"] == "dead run"  # what it saw; the lock itself is untouched
    assert locks.holder("slot")["token"] == fresh["token"]


def test_a_stale_lock_replaced_by_another_stale_one_is_not_taken_over_blindly(tmp_path):
    """The takeover removes only the lock it judged: another one is judged on the next look."""
    (tmp_path / "slot.lock").mkdir()
    (tmp_path / "slot.lock" / "owner.json").write_text(json.dumps({"token": "other", "since": 0}))
    locks, _clock = racing(tmp_path, {"token": "old", "since": 0})
    with pytest.raises(LockHeld):
        locks.acquire("slot", timeout=0, stale_after=60)
    assert locks.holder("slot")["token"] == "other"


def test_the_takeover_judges_the_age_of_the_lock_it_reads_again(tmp_path):
    """Seen stale, but the lock read again right before the takeover is exactly at the bound."""
    (tmp_path / "slot.lock").mkdir()
    os.utime(tmp_path / "slot.lock", (1000.0 - 3600, 1000.0 - 3600))
    locks, _clock = racing(tmp_path, {"token": None, "since": -10_000})
    with pytest.raises(LockHeld):
        locks.acquire("slot", timeout=0, stale_after=3600)
    assert (tmp_path / "slot.lock").is_dir()


class Ticking:
    """A clock that moves one second on every reading (and on every sleep, by the time slept)."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        self.now += 1.0
        return self.now - 1.0

    def sleep(self, seconds):
        self.now += seconds


def test_a_lock_exactly_stale_after_old_when_looked_at_is_not_stale(tmp_path):
    """Readings: the deadline (1000), the lock's age (1001 - since = 3600 exactly), the deadline
    check (1002): not stale at the bound, so the run gives up instead of taking it over."""
    (tmp_path / "slot.lock").mkdir()
    (tmp_path / "slot.lock" / "owner.json").write_text(json.dumps({"token": "t", "since": 1001.0 - 3600}))
    clock = Ticking(1000.0)
    with pytest.raises(LockHeld):
        LockDir(str(tmp_path), clock=clock, sleep=clock.sleep).acquire("slot", timeout=0, stale_after=3600)
    assert json.loads((tmp_path / "slot.lock" / "owner.json").read_text())["token"] == "t"


def test_remove_if_leaves_a_lock_that_is_no_longer_wanted_gone(tmp_path):
    locks, _clock = fake_locks(tmp_path)
    record = locks.acquire("slot")
    path = locks.path("slot")
    assert locks._remove_if(path, lambda cur: False) is False  # pylint: disable=protected-access
    assert locks._remove_if(locks.path("none"), lambda cur: True) is False  # pylint: disable=protected-access
    assert locks.holder("slot")["token"] == record["token"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot.lock"]


def test_remove_if_moves_the_lock_aside_under_a_private_guard(tmp_path, monkeypatch):
    locks, _clock = fake_locks(tmp_path)
    locks.acquire("slot")
    path = locks.path("slot")
    seen = []
    real = os.rename

    def rename(src, dst):
        seen.append((src, dst, os.stat(f"{path}.takeover").st_mode & 0o777))
        return real(src, dst)
    monkeypatch.setattr(_lock.os, "rename", rename)
    assert locks._remove_if(path, lambda cur: True) is True  # pylint: disable=protected-access
    [(src, aside, guard_mode)] = seen
    assert src == path and guard_mode == 0o700
    assert aside.startswith(path + ".gone-") and len(aside) == len(path + ".gone-") + 8
    int(aside[-8:], 16)
    assert list(tmp_path.iterdir()) == []


def test_remove_if_that_cannot_move_the_lock_aside_leaves_it(tmp_path, monkeypatch):
    locks, _clock = fake_locks(tmp_path)
    record = locks.acquire("slot")

    def rename(src, dst):
        raise OSError(16, "busy")
    monkeypatch.setattr(_lock.os, "rename", rename)
    assert locks._remove_if(locks.path("slot"), lambda cur: True) is False  # pylint: disable=protected-access
    assert locks.holder("slot")["token"] == record["token"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot.lock"]  # the guard is gone too


def test_release_of_a_lock_that_vanishes_meanwhile_still_succeeds(tmp_path):
    """A takeover may move a lock aside between release's look and its removal."""

    class Vanishing(LockDir):
        def holder(self, name):
            held = super().holder(name)
            shutil.rmtree(self.path(name))
            return held
    record = LockDir(str(tmp_path)).acquire("slot")
    assert Vanishing(str(tmp_path)).release("slot", record["token"]) is True
    assert list(tmp_path.iterdir()) == []
