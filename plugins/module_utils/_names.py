# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The names rum.pool accepts for VMs, guest users, host names and MAC addresses, each rule once.

Internal to the rum.pool collection: not a public API. Each rule is a pattern with the hint an
error message gives when a value breaks it; the domain XML, the cloud-init data, the runner
bootstrap and rum_vm's own checks all use these.
"""

from __future__ import annotations

import re
import typing as t


class Rule(t.NamedTuple):
    """A pattern a whole value must match, and how to say what it allows."""

    pattern: t.Pattern[str]
    hint: str

    def ok(self, value: t.Any) -> bool:
        return isinstance(value, str) and self.pattern.match(value) is not None


def rule(pattern: str, hint: str) -> Rule:
    """A Rule for the whole value (``\\Z``: no trailing newline slips through)."""
    return Rule(re.compile(pattern + r"\Z"), hint)


VM_NAME = rule(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}",
               "use 1-63 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit")
USER_NAME = rule(r"[a-z_][a-z0-9_-]{0,31}",
                 "lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 32")
MAC = rule(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", "a MAC address like 52:54:00:12:34:56")
HOST_LABEL = rule(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
                  "letters, digits and '-', labels of 1-63 characters separated by '.', at most 253")


def is_hostname(name: t.Any) -> bool:
    """A DNS host name: labels of HOST_LABEL separated by dots, 253 characters at most."""
    return isinstance(name, str) and 0 < len(name) <= 253 and all(map(HOST_LABEL.ok, name.split(".")))
