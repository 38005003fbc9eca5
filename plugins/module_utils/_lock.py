# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named locks that outlive one module run (held across the tasks of a slot recreate).

Internal to the rum.pool collection: not a public API. A lock is a directory made with mkdir (atomic
on one host) holding an ``owner.json``; releasing it needs the token its holder got, so one run can
never release another's lock. A lock older than ``stale_after`` seconds is taken over (its holder
died), and the takeover is reported.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
import typing as t

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LockError(Exception):
    """The lock could not be taken or released; the message names the lock and its holder."""


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

    def holder(self, name: str) -> dict | None:
        try:
            with open(os.path.join(self.path(name), "owner.json")) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError:
            return {"token": None, "since": 0}  # half written: treat as held since the epoch

    def acquire(self, name: str, *, timeout: float = 600, stale_after: float = 3600, owner: str = "",
                poll: float = 0.5) -> dict:
        """Take the lock, waiting up to ``timeout`` seconds; return the owner record (with token)."""
        path = self.path(name)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        deadline = self.clock() + timeout
        took_over = None
        while True:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                held = self.holder(name)
                if held is None:
                    continue  # released between our mkdir and our read
                age = self.clock() - float(held.get("since") or 0)
                if age > stale_after:
                    shutil.rmtree(path, ignore_errors=True)
                    took_over = held
                    continue
                if self.clock() >= deadline:
                    raise LockError(
                        f"lock '{name}' is held by {held.get('owner') or 'another run'} "
                        f"(pid {held.get('pid')} on {held.get('host')}) for {age:.0f}s; "
                        f"gave up after {timeout:.0f}s")
                self.sleep(poll)
                continue
            record = {"token": secrets.token_hex(16), "since": self.clock(), "owner": owner,
                      "pid": os.getppid(), "host": socket.gethostname()}
            tmp = os.path.join(path, ".owner.tmp")
            with open(tmp, "w") as fh:
                json.dump(record, fh)
            os.replace(tmp, os.path.join(path, "owner.json"))
            if took_over:
                record["took_over"] = {k: v for k, v in took_over.items() if k != "token"}
            return record

    def release(self, name: str, token: str) -> bool:
        """Release a lock we hold; False when it was not held; an error when someone else holds it."""
        held = self.holder(name)
        if held is None:
            return False
        if held.get("token") != token:
            raise LockError(f"lock '{name}' is held by {held.get('owner') or 'another run'}, not by this token")
        shutil.rmtree(self.path(name), ignore_errors=True)
        return True
