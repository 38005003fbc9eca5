# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named locks that outlive one module run (held across the tasks of a slot recreate).

Internal to the rum.pool collection: not a public API. A lock is a directory made with mkdir (atomic
on one host) holding an ``owner.json``; releasing it needs the token its holder got, so one run can
never release another's lock. Others see a lock by its ``lock_id`` (a short hash of the token), never
by its token.

Two ways out of a lock whose holder is gone: one older than ``stale_after`` seconds is taken over
(its holder is presumed dead), and one whose holder the caller has found dead (the rum_lock action
plugin checks the holder's ansible-playbook process on its own controller) is taken over when asked
for by its ``lock_id``. Either takeover re-reads the record under a guard directory right before
moving the lock aside, so a lock taken anew meanwhile is never removed.

The holder identity (``holder``) and its liveness check run on the controller; the functions for
them take their readers as arguments so that they can be tested without real processes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import time
import typing as t

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OWNER_FILE = "owner.json"
GUARD = "takeover"          # <lock>.takeover: made beside a lock by the one run allowed to take it over
GUARD_STALE_AFTER = 30.0    # a takeover takes milliseconds; a guard this old was left by a dead run
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
UNKNOWN_START = -1          # process_start_time(): the process exists, its start time is unreadable


class LockError(Exception):
    """The lock could not be taken or released; the message names the lock and its holder."""


class LockHeld(LockError):
    """The lock is held by another run; ``held_by`` describes that run (without its token)."""

    def __init__(self, message: str, held_by: dict) -> None:
        super().__init__(message)
        self.held_by = held_by


# -- identities -------------------------------------------------------------------------------------
def lock_id(token: str | None) -> str:
    """A short public name for one taking of a lock; "" for a record without a token."""
    if not token:
        return ""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def public_record(record: dict) -> dict:
    """The record as others may see it: no token, its lock_id instead."""
    out = {k: v for k, v in record.items() if k not in ("token", "took_over")}
    out["lock_id"] = lock_id(record.get("token"))
    return out


def describe_holder(record: dict) -> str:
    """'recreate of slot1 (ansible-playbook pid 42 on ctl1, lock 0123abcd4567)' for messages."""
    who = record.get("owner") or "another run"
    holder = record.get("holder")
    if isinstance(holder, dict) and holder.get("controller"):
        where = f"ansible-playbook pid {holder.get('pid')} on {holder.get('controller')}"
    else:  # no holder recorded: taken without the action plugin, or by an older release
        where = f"on {record.get('host') or 'an unknown host'}"
    lid = record.get("lock_id") or lock_id(record.get("token"))
    return f"{who} ({where}, lock {lid or 'unknown'})"


def held_message(name: str, record: dict, held_for: float, gave_up_after: float) -> str:
    return (f"lock '{name}' is held by {describe_holder(record)} for {held_for:.0f}s; "
            f"gave up after {gave_up_after:.0f}s")


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    """This boot's random id (Linux), or "" where there is none."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def process_start_time(pid: int, proc: str = "/proc") -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22).

    None when there is no such process, or only its zombie (a killed ansible-playbook whose parent
    never reaped it); UNKNOWN_START when it exists but its stat cannot be read or parsed.
    """
    try:
        with open(os.path.join(proc, str(int(pid)), "stat")) as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except (OSError, ValueError):
        return UNKNOWN_START
    # field 2 (comm) is in parentheses and may hold spaces or ')': split after the last ')'
    fields = stat[stat.rfind(")") + 1:].split()
    try:
        state, started = fields[0], int(fields[19])  # fields 3 and 22
    except (IndexError, ValueError):
        return UNKNOWN_START
    if state in ("Z", "X", "x"):
        return None
    return started


def local_holder(pid: int, *, hostname: t.Callable[[], str] = socket.gethostname,
                 boot_id: t.Callable[[], str] = read_boot_id,
                 start_time: t.Callable[[int], int | None] = process_start_time) -> dict:
    """The holder identity of process ``pid`` on this machine (the controller)."""
    started = start_time(pid)
    return {"controller": hostname(), "pid": pid, "boot_id": boot_id(),
            "started": None if started in (None, UNKNOWN_START) else started}


def holder_alive(holder: t.Any, me: dict, proc_reader: t.Callable[[int], int | None]) -> bool | None:
    """Whether the holder of a lock still runs, judged from controller ``me``.

    True: it runs (or it cannot be shown not to); False: its process is gone, or it ran on this
    controller in an earlier boot; None: unknown (no holder recorded, another controller, or no
    boot id to compare). ``proc_reader(pid)`` is process_start_time or a stand-in.
    """
    if not isinstance(holder, dict) or not holder.get("controller"):
        return None
    if holder.get("controller") != me.get("controller"):
        return None
    if not holder.get("boot_id") or not me.get("boot_id"):
        return None
    if holder["boot_id"] != me["boot_id"]:
        return False
    try:
        pid = int(holder.get("pid"))
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    started = proc_reader(pid)
    if started is None:
        return False
    if started == UNKNOWN_START or holder.get("started") is None:
        return True
    return started == holder.get("started")


def dead_reason(holder: dict, me: dict) -> str:
    """Why holder_alive() said False, for the warning."""
    if holder.get("boot_id") != me.get("boot_id"):
        return f"it ran on {holder.get('controller')} before that controller rebooted"
    return f"its ansible-playbook process {holder.get('pid')} on {holder.get('controller')} is gone"


# -- the lock directory -----------------------------------------------------------------------------
class LockDir:
    def __init__(self, root: str, *, clock: t.Callable[[], float] = time.time,
                 sleep: t.Callable[[float], None] = time.sleep) -> None:
        self.root = root
        self.clock = clock
        self.sleep = sleep

    def path(self, name: str) -> str:
        if not NAME_RE.match(name or ""):
            raise LockError(f"invalid lock name {name!r}: use letters, digits, '.', '_' and '-'")
        return os.path.join(self.root, f"{name}.lock")

    def _read(self, path: str) -> dict | None:
        """The owner record of the lock at ``path``; None when there is no lock."""
        try:
            with open(os.path.join(path, OWNER_FILE)) as fh:
                record = json.load(fh)
        except FileNotFoundError:
            # the directory without its record: being made right now, or its maker died in between
            try:
                return {"token": None, "since": os.stat(path).st_mtime}
            except FileNotFoundError:
                return None
        except ValueError:
            return {"token": None, "since": 0}  # unreadable: treat as held since the epoch
        if not isinstance(record, dict):
            return {"token": None, "since": 0}
        return record

    def holder(self, name: str) -> dict | None:
        return self._read(self.path(name))

    def acquire(self, name: str, *, timeout: float = 600, stale_after: float = 3600, owner: str = "",
                holder: dict | None = None, take_over: str | None = None, poll: float = 0.5) -> dict:
        """Take the lock, waiting up to ``timeout`` seconds; return the owner record (with token).

        ``take_over`` is the lock_id of a holder found dead: that lock (and only that one) is taken
        over at once. The record returned has ``took_over`` (the old record, without token) and
        ``took_over_why`` ("stale" or "dead") when a lock was taken over.
        """
        path = self.path(name)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        deadline = self.clock() + timeout
        took_over = None
        why = ""
        while True:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                held = self._read(path)
                if held is None:
                    continue  # released between our mkdir and our read: try again at once
                lid = lock_id(held.get("token"))
                if take_over and lid == take_over:
                    if self._remove_if(path, lambda cur, lid=lid: lock_id(cur.get("token")) == lid):
                        took_over, why = held, "dead"
                        continue
                elif self._age(held) > stale_after:
                    if self._remove_if(path, lambda cur, lid=lid: (lock_id(cur.get("token")) == lid
                                                                   and self._age(cur) > stale_after)):
                        took_over, why = held, "stale"
                        continue
                if self.clock() >= deadline:
                    raise LockHeld(held_message(name, held, self._age(held), timeout),
                                   dict(public_record(held), held_for=round(self._age(held), 1)))
                self.sleep(poll)
                continue
            record = {"token": secrets.token_hex(16), "since": self.clock(), "owner": owner,
                      "host": socket.gethostname()}
            if holder:
                record["holder"] = holder
            self._write_record(path, record)
            if took_over:
                record["took_over"] = public_record(took_over)
                record["took_over_why"] = why
            return record

    def release(self, name: str, token: str) -> bool:
        """Release a lock we hold; False when it was not held; an error when someone else holds it."""
        held = self.holder(name)
        if held is None:
            return False
        mine = str(held.get("token") or "")
        if not mine or not hmac.compare_digest(mine.encode(), str(token or "").encode()):
            raise LockError(f"lock '{name}' is held by {held.get('owner') or 'another run'}, not by this token")
        shutil.rmtree(self.path(name), ignore_errors=True)
        return True

    # -- helpers -------------------------------------------------------------------------------------
    def _age(self, record: dict) -> float:
        try:
            return self.clock() - float(record.get("since") or 0)
        except (TypeError, ValueError):
            return self.clock()

    @staticmethod
    def _write_record(path: str, record: dict) -> None:
        """owner.json holds the token: 0600, written whole (temp file, fsync, rename)."""
        tmp = os.path.join(path, ".owner.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(path, OWNER_FILE))

    def _remove_if(self, path: str, still_wanted: t.Callable[[dict], bool]) -> bool:
        """Move the lock at ``path`` aside and delete it, if its record (re-read) is still wanted gone.

        Only the run that makes the guard directory beside the lock may do it, so two runs taking
        over the same dead lock cannot both act; the lock is renamed away (atomic) before the guard
        goes, so a lock made anew at ``path`` meanwhile is never touched. False when another run is
        at it, or the lock has changed or is gone (the caller then looks again).
        """
        guard = f"{path}.{GUARD}"
        try:
            os.mkdir(guard, 0o700)
        except FileExistsError:
            try:
                if self.clock() - os.stat(guard).st_mtime > GUARD_STALE_AFTER:
                    os.rmdir(guard)  # left by a run that died taking over; the next look may act
            except OSError:
                pass
            return False
        try:
            current = self._read(path)
            if current is None or not still_wanted(current):
                return False
            aside = f"{path}.gone-{secrets.token_hex(4)}"
            try:
                os.rename(path, aside)
            except OSError:
                return False
        finally:
            try:
                os.rmdir(guard)
            except OSError:
                pass
        shutil.rmtree(aside, ignore_errors=True)
        return True
