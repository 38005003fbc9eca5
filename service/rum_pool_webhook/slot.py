# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The slot contract: slot and runner names, the VM labels, and the generation check.

This file exists twice, byte for byte: ``plugins/module_utils/_slot.py`` in the rum.pool collection
(internal, not a public API) and ``service/rum_pool_webhook/slot.py`` in the webhook service, which
installs without the collection. ``tests/unit/plugins/module_utils/test_slot.py`` proves the two
identical. Pure Python (3.8 and later), no Ansible: the pool planner, the filters (and through them
the roles) and the webhook service read and write names and labels only through it.

Names:

- pool: 1 to 20 characters of ``a-z``, ``0-9`` and ``-``, starting with a letter or a digit;
- host short name: the first DNS label of the inventory hostname (an IP address whole), lowercased,
  other characters made ``-``; it has at least one letter or digit;
- slot: ``<pool>-<host>-<index>``, index 1, 2, ... without leading zeros. The slot's VM has this
  name; it stays the same across the slot's generations;
- runner name: ``<slot>-<suffix>``, one per generation, at most 63 characters (it is also the
  guest's hostname). The 6 base36 characters of the suffix are the creation second modulo 36**4
  (about 19.4 days) followed by 2 random ones, so two generations of a slot made at least a second
  apart within that window never share a name, and a runner's age can be read from its name.

Given its pool, a name splits one way only: the index is the last ``-``-separated part before the
suffix, the host everything between pool and index. Pool ``ci`` on host ``big-hv1`` and pool
``ci-big`` on host ``hv1`` make identical names; when both pools are given, the longer pool wins.

A slot's generation is its runner name, kept in the VM's ``runner_name`` label; the webhook's
``workflow_job.runner_name`` names the same thing. ``None`` is the only spelling of "no runner".

A slot's other VMs: libvirt's domain names are unique on a host and the slot's VM keeps the slot's
name, so a slot's next generation is defined, never started, as ``<slot>.<suffix>`` (its staged
name, the suffix of its runner name), and a generation on its way out is renamed
``<slot>_<suffix>`` once its VM is off, until it is removed (its retired name). Neither ``.`` nor
``_`` occurs in slot and runner names, so the three kinds never mix.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import typing as t

MAX_POOL_LEN = 20
SUFFIX_LEN = 6
# A runner name is also the guest's hostname: keep it one DNS label long.
MAX_RUNNER_NAME_LEN = 63
MAX_SLOT_LEN = MAX_RUNNER_NAME_LEN - SUFFIX_LEN - 1

POOL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,%d}\Z" % (MAX_POOL_LEN - 1))
# After "<pool>-": the host (it must also hold a letter or a digit), the index, and for a runner name
# the suffix. The host takes everything up to the last "-<index>", so a name splits one way only.
_SLOT_REST_RE = re.compile(r"([a-z0-9-]+)-([1-9][0-9]*)\Z")
_RUNNER_REST_RE = re.compile(r"([a-z0-9-]+)-([1-9][0-9]*)-([0-9a-z]{%d})\Z" % SUFFIX_LEN)
_ALNUM_RE = re.compile(r"[a-z0-9]")
_SUFFIX_AT_END_RE = re.compile(r"-([0-9a-z]{%d})\Z" % SUFFIX_LEN)
_SHORT_NAME_BAD_CHARS = re.compile(r"[^a-z0-9-]")

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 2
_TIME_MODULUS = 36 ** (SUFFIX_LEN - _RANDOM_CHARS)  # seconds before the time part wraps (~19.4 days)
_RANDOM_MODULUS = 36 ** _RANDOM_CHARS
_SYSTEM_RANDOM = random.SystemRandom()


class SlotError(ValueError):
    """A name, label set or request that does not follow the slot contract."""


class SlotName(t.NamedTuple):
    """A slot name taken apart."""

    pool: str
    host: str
    index: int

    @property
    def name(self) -> str:
        return "%s-%s-%d" % self


class RunnerName(t.NamedTuple):
    """A runner name taken apart: its slot's parts and its generation suffix."""

    pool: str
    host: str
    index: int
    suffix: str

    @property
    def slot(self) -> str:
        return SlotName(*self[:3]).name

    @property
    def name(self) -> str:
        return "%s-%s" % (self.slot, self.suffix)


# --- numbers -----------------------------------------------------------------------------------------

def as_int(value: t.Any, what: str, minimum: int = 0) -> int:
    """``value`` as a whole number of at least ``minimum`` (digit strings too, never a bool)."""
    if isinstance(value, bool):
        raise SlotError("%s must be an integer, got %r" % (what, value))
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise SlotError("%s must be an integer, got %r" % (what, value)) from None
    if isinstance(value, float) and value != number:
        raise SlotError("%s must be a whole number, got %r" % (what, value))
    if number < minimum:
        raise SlotError("%s must be at least %d, got %r" % (what, minimum, value))
    return number


def as_seconds(value: t.Any, what: str) -> float:
    """``value`` as a finite, non-negative number of seconds."""
    if isinstance(value, bool):
        raise SlotError("%s must be a number of seconds, got %r" % (what, value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SlotError("%s must be a number of seconds, got %r" % (what, value)) from None
    if not math.isfinite(number) or number < 0:
        raise SlotError("%s must be a non-negative number of seconds, got %r" % (what, value))
    return number


# --- names: build ---------------------------------------------------------------------------------

def validate_pool_name(name: t.Any) -> str:
    """Return ``name`` if it is a valid pool name, else raise ``SlotError`` saying why."""
    if not isinstance(name, str) or not name:
        raise SlotError("runner pool name must be a non-empty string, got %r" % (name,))
    if not POOL_NAME_RE.match(name):
        raise SlotError(
            "runner pool name %r is invalid: use 1 to %d characters of a-z, 0-9 and '-', "
            "starting with a letter or a digit" % (name, MAX_POOL_LEN))
    return name


def host_short_name(inventory_hostname: t.Any) -> str:
    """The host part of slot names: first DNS label, lowercased, other characters made ``-``.

    An IP address is kept whole (``10.0.0.5`` -> ``10-0-0-5``): its first "label" alone would give
    every host of a subnet the same name and let one host's plan touch another's slots.
    """
    if not isinstance(inventory_hostname, str) or not inventory_hostname.strip():
        raise SlotError("host name must be a non-empty string, got %r" % (inventory_hostname,))
    name = inventory_hostname.strip().lower()
    try:
        ipaddress.ip_address(name)
        label = name
    except ValueError:
        label = name.split(".", 1)[0]
    short = _SHORT_NAME_BAD_CHARS.sub("-", label)
    if not _ALNUM_RE.search(short):
        raise SlotError(
            "host name %r has no usable first label: the slot names need at least one letter or "
            "digit before the first '.'" % (inventory_hostname,))
    return short


def slot_prefix(pool: str, host: str) -> str:
    """``<pool>-<host>-``: the prefix of every slot and runner name of this pool on this host."""
    return "%s-%s-" % (validate_pool_name(pool), host_short_name(host))


def slot_name(pool: str, host: str, index: t.Any) -> str:
    """The slot ``<pool>-<host>-<index>``; raises if its runner names would be too long."""
    slot = slot_prefix(pool, host) + str(as_int(index, "slot index", 1))
    if len(slot) > MAX_SLOT_LEN:
        raise SlotError(
            "slot name %r is %d characters long; runner names (%s-xxxxxx) must fit in %d characters "
            "(a hostname label): use a shorter pool or host name"
            % (slot, len(slot), slot, MAX_RUNNER_NAME_LEN))
    return slot


def slot_names(pool: str, host: str, size: t.Any) -> list[str]:
    """The ``size`` slots of ``pool`` on ``host``, index 1..size."""
    count = as_int(size, "pool size")
    return [slot_name(pool, host, index) for index in range(1, count + 1)]


def _base36(value: int, width: int) -> str:
    chars = []
    for _position in range(width):
        value, digit = divmod(value, 36)
        chars.append(BASE36[digit])
    return "".join(reversed(chars))


def runner_name(slot: t.Any, now: t.Any, rand: random.Random | None = None) -> str:
    """A fresh runner name ``<slot>-<suffix>`` for a new generation of ``slot`` at time ``now``."""
    if not is_slot_name(slot):
        raise SlotError("slot name must look like <pool>-<host>-<index> (e.g. ci-hv1-1), got %r" % (slot,))
    if len(slot) > MAX_SLOT_LEN:
        raise SlotError("slot name %r is too long for runner names of at most %d characters"
                        % (slot, MAX_RUNNER_NAME_LEN))
    seconds = int(as_seconds(now, "now (epoch seconds)"))
    noise = (rand or _SYSTEM_RANDOM).randrange(_RANDOM_MODULUS)
    value = (seconds % _TIME_MODULUS) * _RANDOM_MODULUS + noise
    return "%s-%s" % (slot, _base36(value, SUFFIX_LEN))


# --- names: parse ---------------------------------------------------------------------------------

def _pools_longest_first(pools: t.Iterable[str]) -> list[str]:
    if isinstance(pools, str):
        pools = [pools]
    return sorted((validate_pool_name(pool) for pool in pools), key=len, reverse=True)


def _rest(name: str, pool: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """``pattern`` matched on what follows ``<pool>-`` in ``name``, if its host part is usable."""
    if not name.startswith(pool + "-"):
        return None
    match = pattern.match(name, len(pool) + 1)
    return match if match and _ALNUM_RE.search(match.group(1)) else None


def is_slot_name(name: t.Any) -> bool:
    """Whether ``name`` is ``<pool>-<host>-<index>`` for some valid pool name."""
    if not isinstance(name, str):
        return False
    return any(POOL_NAME_RE.match(name[:end]) and _rest(name, name[:end], _SLOT_REST_RE)
               for end in range(1, min(len(name), MAX_POOL_LEN) + 1))


def _parse(name: t.Any, pools: t.Iterable[str], pattern: re.Pattern[str]) -> tuple[str, re.Match[str]] | None:
    if isinstance(name, str):
        for pool in _pools_longest_first(pools):
            match = _rest(name, pool, pattern)
            if match:
                return pool, match
    return None


def parse_slot(name: t.Any, pools: t.Iterable[str]) -> SlotName | None:
    """``name`` taken apart if it is a slot of one of ``pools`` (the longest pool first), else None."""
    found = _parse(name, pools, _SLOT_REST_RE)
    return SlotName(found[0], found[1].group(1), int(found[1].group(2))) if found else None


def parse_runner_name(name: t.Any, pools: t.Iterable[str]) -> RunnerName | None:
    """``name`` taken apart if it is a runner name of one of ``pools`` (the longest first), else None."""
    found = _parse(name, pools, _RUNNER_REST_RE)
    return RunnerName(found[0], found[1].group(1), int(found[1].group(2)), found[1].group(3)) if found else None


def minted_at(name: t.Any, now: t.Any) -> int | None:
    """Epoch second at which runner ``name`` was named, read back from its suffix (None if unknown).

    The suffix keeps the second modulo about 19.4 days, so the answer is the latest such second
    not after ``now``.
    """
    if not isinstance(name, str):
        return None
    match = _SUFFIX_AT_END_RE.search(name)
    if not match:
        return None
    value = 0
    for char in match.group(1):
        value = value * 36 + BASE36.index(char)
    stamp = value // _RANDOM_MODULUS
    current = int(as_seconds(now, "now (epoch seconds)"))
    return current - ((current - stamp) % _TIME_MODULUS)


# --- a slot's staged and retired VMs ----------------------------------------------------------------

STAGED_SEP = "."
RETIRED_SEP = "_"
VM_KINDS = ("slot", "staged", "retired")


class VmName(t.NamedTuple):
    """A VM name of a slot taken apart: its slot, its kind and (staged, retired) its suffix."""

    slot: SlotName
    kind: str  # one of VM_KINDS
    suffix: str | None


def _split_runner_name(name: t.Any) -> tuple[str, str]:
    """(slot, suffix) of a runner name (any pool), or SlotError."""
    slot, _dash, suffix = name.rpartition("-") if isinstance(name, str) else ("", "", "")
    if not is_slot_name(slot) or not _SUFFIX_AT_END_RE.match("-" + suffix):
        raise SlotError("runner name must look like <slot>-<6 characters of a-z and 0-9>, got %r" % (name,))
    return slot, suffix


def staged_name(runner_name: t.Any) -> str:
    """The VM name under which generation ``runner_name`` waits, defined and never started."""
    slot, suffix = _split_runner_name(runner_name)
    return slot + STAGED_SEP + suffix


def retired_name(slot: t.Any, runner_name: t.Any = None, rand: random.Random | None = None) -> str:
    """The VM name of ``slot``'s generation ``runner_name`` on its way out (a random suffix without one)."""
    if not is_slot_name(slot):
        raise SlotError("slot name must look like <pool>-<host>-<index> (e.g. ci-hv1-1), got %r" % (slot,))
    try:
        owner, suffix = _split_runner_name(runner_name)
    except SlotError:
        owner, suffix = slot, _base36((rand or _SYSTEM_RANDOM).randrange(36 ** SUFFIX_LEN), SUFFIX_LEN)
    if owner != slot:
        raise SlotError("runner name %r is not a generation of slot %r" % (runner_name, slot))
    return slot + RETIRED_SEP + suffix


def parse_vm_name(name: t.Any, pools: t.Iterable[str]) -> VmName | None:
    """A VM name of one of ``pools`` taken apart (slot, staged or retired), else None."""
    if not isinstance(name, str):
        return None
    for sep, kind in ((STAGED_SEP, "staged"), (RETIRED_SEP, "retired")):
        if sep in name:
            slot, _sep, suffix = name.rpartition(sep)
            found = parse_slot(slot, pools) if _SUFFIX_AT_END_RE.match("-" + suffix) else None
            return VmName(found, kind, suffix) if found else None
    found = parse_slot(name, pools)
    return VmName(found, "slot", None) if found else None


# --- labels -----------------------------------------------------------------------------------------
# What the collection keeps on each slot VM, as string key/value labels (libvirt <metadata>, Hyper-V
# notes). Absent keys and empty values both read back as None.

LABEL_KEYS = ("pool", "host", "slot", "backend", "runner_name", "runner_id", "created_at", "staged", "config")


class SlotLabels(t.NamedTuple):
    """A slot VM's labels, typed."""

    pool: str | None
    host: str | None
    slot: str | None
    backend: str | None
    runner_name: str | None
    runner_id: int | None
    created_at: int | float | None  # epoch seconds; a fraction only in a label written by hand
    staged: bool = False  # a generation defined and never started (label "staged": "yes")
    config: str | None = None  # the hash of the pool settings the generation was made with


def build_labels(*, pool: str, host: str, slot: str, backend: str, runner_name: str | None = None,
                 runner_id: t.Any = None, created_at: t.Any, staged: bool = False,
                 config: str | None = None) -> dict[str, str]:
    """The labels of a new generation of ``slot``; keys whose value is None are left out."""
    found = parse_slot(slot, [pool])
    if found is None or found.host != host_short_name(host):
        raise SlotError("slot %r is not a slot of pool %r on host %r" % (slot, pool, host))
    if runner_name is not None:
        parsed = parse_runner_name(runner_name, [pool])
        if parsed is None or parsed.slot != slot:
            raise SlotError("runner name %r is not a generation of slot %r" % (runner_name, slot))
    if not isinstance(backend, str) or not backend:
        raise SlotError("backend must be a non-empty string, got %r" % (backend,))
    labels = {
        "pool": pool,
        "host": found.host,
        "slot": slot,
        "backend": backend,
        "runner_name": runner_name,
        "runner_id": None if runner_id is None else str(as_int(runner_id, "runner id", 1)),
        "created_at": str(int(as_seconds(created_at, "created_at (epoch seconds)"))),
        "staged": "yes" if staged else None,
        "config": config or None,
    }
    return {key: value for key, value in labels.items() if value is not None}


def _text(labels: t.Mapping[str, t.Any], key: str) -> str | None:
    value = labels.get(key)
    text = "" if value is None else str(value).strip()
    return text or None


def _number(text: str | None) -> int | float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def _whole(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_labels(labels: t.Any) -> SlotLabels:
    """A VM's labels read back, typed; anything missing or unreadable is None (never raises)."""
    if not isinstance(labels, t.Mapping):
        labels = {}
    return SlotLabels(
        pool=_text(labels, "pool"),
        host=_text(labels, "host"),
        slot=_text(labels, "slot"),
        backend=_text(labels, "backend"),
        runner_name=_text(labels, "runner_name"),
        runner_id=_whole(_text(labels, "runner_id")),
        created_at=_number(_text(labels, "created_at")),
        staged=_text(labels, "staged") == "yes",
        config=_text(labels, "config"),
    )


def labels_match(labels: SlotLabels, pool: str, host: str) -> bool:
    """Whether the labels name this pool and host (the host label may be a full host name)."""
    if labels.pool != pool or not labels.host:
        return False
    try:
        return host_short_name(labels.host) == host_short_name(host)
    except SlotError:
        return False


# --- the generation check -----------------------------------------------------------------------------

ACTIONS = ("create", "recreate", "remove", "stage")
OUTCOMES = {"create": "created", "recreate": "recreated", "remove": "removed", "stage": "staged"}


def _held(runner: str | None) -> str:
    return "runner %s" % runner if runner else "a VM without a runner name"


def check_generation(*, action: str, slot: str, pool: str, host: str, vm: t.Any = None,
                     runner_name: str | None = None) -> dict[str, t.Any]:
    """Whether to act on ``slot`` now, given its VM (``{name, state, labels}`` or None for no VM).

    ``create`` acts only on an empty slot. ``recreate`` and ``remove`` act on whatever the slot
    holds when ``runner_name`` is None, else only while the slot still holds that generation, so a
    repeated or late request about a generation another run already replaced does nothing.
    ``stage`` (prepare the slot's next generation) needs ``runner_name`` and acts only while the
    slot holds it. A VM whose labels name another pool, host or slot is never acted on.

    Returns ``act``, ``outcome`` (``created``/``recreated``/``removed``/``staged``, or ``skipped``), ``reason``
    (one line), ``vm`` (whether the slot has a VM) and ``runner_name`` (the generation it holds).
    """
    if action not in ACTIONS:
        raise SlotError("action must be one of %s, got %r" % (", ".join(ACTIONS), action))
    found = parse_slot(slot, [pool])
    if found is None or found.host != host_short_name(host):
        raise SlotError("slot %r is not a slot of pool %r on host %r (names are <pool>-<host>-<index>)"
                        % (slot, pool, host_short_name(host)))
    if runner_name is not None and not isinstance(runner_name, str):
        raise SlotError("runner_name must be a runner name or null, got %r" % (runner_name,))
    if action == "create" and runner_name is not None:
        raise SlotError("create makes a new generation in an empty slot: it takes no runner_name (got %r)"
                        % (runner_name,))
    if action == "stage" and runner_name is None:
        raise SlotError("stage prepares the generation after runner_name: it needs one")
    labels = parse_labels(vm.get("labels") if isinstance(vm, t.Mapping) else None)
    held = labels.runner_name
    result = {"act": False, "outcome": "skipped", "vm": vm is not None, "runner_name": held}
    if vm is not None and not (labels_match(labels, pool, host) and labels.slot in (None, slot)):
        result["reason"] = "its VM is not this pool's slot (labels pool=%s host=%s slot=%s): left alone" % (
            labels.pool, labels.host, labels.slot)
    elif action == "create" and vm is not None:
        result["reason"] = "it already holds %s" % _held(held)
    elif runner_name is not None and (vm is None or held != runner_name):
        now_holds = _held(held) if vm is not None else "no VM"
        result["reason"] = "it now holds %s, not runner %s" % (now_holds, runner_name)
    else:
        result.update(act=True, outcome=OUTCOMES[action],
                      reason="it held %s" % (_held(held) if vm is not None else "no VM"))
    return result
