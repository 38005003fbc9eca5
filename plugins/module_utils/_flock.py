# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lock files held with flock(2) for the length of one operation, removed when it is done.

Internal to the rum.pool collection: not a public API. Used by the image cache (one download of
an image at a time) and by rum_vm (one converge of a VM at a time). A lock file is removed by its
holder while it still holds it, so lock files do not pile up; whoever was waiting on the removed
file sees that its path now names another file (or none) and locks that one instead. A holder
that dies leaves its file unlocked (the kernel drops the lock), and the next taker reuses it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import typing as t

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def same_file(fd: int, path: str) -> bool:
    """True while ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


@contextlib.contextmanager
def held(path: str, *, mode: int = 0o600, on_wait: t.Callable[[], None] | None = None) -> t.Iterator[None]:
    """Hold the lock file ``path`` (created if missing) for the ``with`` block, then remove it.

    ``on_wait`` is called once when another process holds it, before waiting for it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                os.close(fd)
                raise
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        if same_file(fd, path):
            break
        os.close(fd)  # its holder removed it meanwhile: lock the file that is there now
    try:
        yield
    finally:
        try:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still holding it (see the module docstring)
        finally:
            os.close(fd)  # closing releases the lock


def try_hold(path: str) -> int | None:
    """Lock ``path`` if nobody holds it: its fd, -1 when there is no such file, None when busy.

    The file is never created here (a missing lock file is held by nobody), so a caller in check
    mode leaves no trace. The caller closes the fd to release it.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return -1
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not same_file(fd, path):
        os.close(fd)
        return None
    return fd
