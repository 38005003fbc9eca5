# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lock files held for one operation and removed by their holder: exclusion, no leftovers."""

from __future__ import annotations

import fcntl
import os
import threading
import time

from ansible_collections.rum.pool.plugins.module_utils import _flock as flock


def test_held_excludes_and_leaves_no_file(tmp_path):
    path = str(tmp_path / "x.lock")
    with flock.held(path):
        assert os.path.exists(path)
        assert flock.try_hold(path) is None, "a held lock is busy"
    assert not os.path.exists(path), "the holder removes its lock file"
    assert flock.try_hold(path) == -1, "no file: nobody holds it"


def test_waiters_take_turns_and_nothing_is_left(tmp_path):
    """Threads with their own open files contend like processes (flock is per open file)."""
    path = str(tmp_path / "x.lock")
    inside, overlaps, waits = [], [], []

    def worker():
        with flock.held(path, on_wait=lambda: waits.append(1)):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(len(inside))
            time.sleep(0.02)
            inside.pop()

    threads = [threading.Thread(target=worker) for _worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert overlaps == [], "two holders at once"
    assert waits, "some worker had to wait"
    assert not os.path.exists(path)


def test_a_file_left_by_a_dead_holder_is_reused_and_removed(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text("")  # a holder died: the kernel dropped its lock, the file stayed
    with flock.held(str(path)):
        pass
    assert not path.exists()


def test_try_hold_does_not_create_and_sees_the_file_change(tmp_path):
    path = str(tmp_path / "x.lock")
    assert flock.try_hold(path) == -1 and not os.path.exists(path)
    with open(path, "w") as fh:
        fd = flock.try_hold(path)
        assert isinstance(fd, int) and fd >= 0
        os.close(fd)
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert flock.try_hold(path) is None
