# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runner pool planning: slot and runner names, and what each slot needs next.

Internal to the rum.pool collection: not a public API. Everything here is a pure function of its
arguments (the clock and the random source are passed in), so the roles only orchestrate and every
decision - which slot to create, recreate, keep or remove, which runner records to spare from an
orphan prune - is unit-tested without libvirt or GitHub.

Names (see the pool contract):

- host short name: first DNS label of the inventory hostname, lowercased, other characters -> ``-``;
- slot: ``<pool>-<host>-<index>``, the libvirt domain name, stable across generations;
- runner name: ``<slot>-<suffix>``, one per generation. The 6 base36 characters of the suffix are
  the creation second modulo 36**4 (about 19.4 days) followed by 2 random characters, so two
  generations of one slot made at least a second apart within that window never share a name, and
  a runner's age can be read back from its name.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import typing as t

POOL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,19}\Z")
_SHORT_NAME_BAD_CHARS = re.compile(r"[^a-z0-9-]")
_SLOT_RE = re.compile(r"[a-z0-9][a-z0-9-]*-[1-9][0-9]*\Z")
_INDEX_SUFFIX_RE = re.compile(r"([1-9][0-9]*)-([0-9a-z]{6})\Z")
_INDEX_RE = re.compile(r"[1-9][0-9]*\Z")
# Any runner name this collection makes, whatever its pool and host.
_RUNNER_SHAPE_RE = re.compile(r"[a-z0-9][a-z0-9-]*-[1-9][0-9]*-[0-9a-z]{6}\Z")

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
SUFFIX_LEN = 6
_RANDOM_CHARS = 2
_TIME_MODULUS = 36 ** (SUFFIX_LEN - _RANDOM_CHARS)  # seconds before the time part wraps (~19.4 days)
_RANDOM_MODULUS = 36 ** _RANDOM_CHARS

# A runner name is also the guest's hostname: keep it one DNS label long.
MAX_RUNNER_NAME_LEN = 63
MAX_SLOT_LEN = MAX_RUNNER_NAME_LEN - SUFFIX_LEN - 1

ACTIONS = ("create", "recreate", "keep", "remove")

# libvirt power states (virsh domstate names) and what they mean for a runner VM.
RUNNING_STATES = ("running", "blocked")
DEAD_STATES = {
    "shutoff": "VM shut off (its job finished or the guest powered off)",
    "paused": "VM paused",
    "crashed": "VM crashed",
    "pmsuspended": "VM suspended by its guest",
}

_SYSTEM_RANDOM = random.SystemRandom()


class PoolError(ValueError):
    """A pool name, host name, slot or observation is not what the planner can work with."""


# --- names -----------------------------------------------------------------------------------------

def validate_pool_name(name: t.Any) -> str:
    """Return ``name`` if it is a valid pool name, else raise ``PoolError`` saying why."""
    if not isinstance(name, str) or not name:
        raise PoolError(f"runner pool name must be a non-empty string, got {name!r}")
    if not POOL_NAME_RE.match(name):
        raise PoolError(
            f"runner pool name {name!r} is invalid: use 1 to 20 characters of a-z, 0-9 and '-', "
            "starting with a letter or a digit")
    return name


def host_short_name(inventory_hostname: t.Any) -> str:
    """The host part of slot names: first DNS label, lowercased, other characters made ``-``.

    An IP address is kept whole (``10.0.0.5`` -> ``10-0-0-5``): its first "label" alone would give
    every host of a subnet the same name and let one host's plan touch another's slots.
    """
    if not isinstance(inventory_hostname, str) or not inventory_hostname.strip():
        raise PoolError(f"host name must be a non-empty string, got {inventory_hostname!r}")
    name = inventory_hostname.strip().lower()
    try:
        ipaddress.ip_address(name)
        label = name
    except ValueError:
        label = name.split(".", 1)[0]
    short = _SHORT_NAME_BAD_CHARS.sub("-", label)
    if not re.search(r"[a-z0-9]", short):
        raise PoolError(
            f"host name {inventory_hostname!r} has no usable first label: the slot names need at "
            "least one letter or digit before the first '.'")
    return short


def _as_int(value: t.Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise PoolError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise PoolError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise PoolError(f"{what} must be a whole number, got {value!r}")
    if number < minimum:
        raise PoolError(f"{what} must be at least {minimum}, got {value!r}")
    return number


def _as_seconds(value: t.Any, what: str) -> float:
    if isinstance(value, bool):
        raise PoolError(f"{what} must be a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PoolError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise PoolError(f"{what} must be a non-negative number of seconds, got {value!r}")
    return number


def slot_prefix(pool: str, host: str) -> str:
    """``<pool>-<host>-``: the prefix of every slot and runner name of this pool on this host."""
    return f"{validate_pool_name(pool)}-{host_short_name(host)}-"


def slot_name(pool: str, host: str, index: t.Any) -> str:
    """The slot ``<pool>-<host>-<index>``; raises if the runner names would be too long."""
    slot = slot_prefix(pool, host) + str(_as_int(index, "slot index", 1))
    if len(slot) > MAX_SLOT_LEN:
        raise PoolError(
            f"slot name {slot!r} is {len(slot)} characters long; runner names ({slot}-xxxxxx) must "
            f"fit in {MAX_RUNNER_NAME_LEN} characters (a hostname label): use a shorter pool or host name")
    return slot


def slot_names(pool: str, host: str, size: t.Any) -> list[str]:
    """The ``size`` wanted slots of ``pool`` on ``host``, index 1..size."""
    count = _as_int(size, "pool size")
    return [slot_name(pool, host, index) for index in range(1, count + 1)]


def slot_index(slot: t.Any, pool: str, host: str) -> int | None:
    """Index of ``slot`` if it is ``<pool>-<host>-<index>`` exactly, else None."""
    if not isinstance(slot, str):
        return None
    prefix = slot_prefix(pool, host)
    if not slot.startswith(prefix):
        return None
    rest = slot[len(prefix):]
    return int(rest) if _INDEX_RE.match(rest) else None


def _base36(value: int, width: int) -> str:
    chars = []
    for _position in range(width):
        value, digit = divmod(value, 36)
        chars.append(BASE36[digit])
    return "".join(reversed(chars))


def runner_name(slot: t.Any, now: t.Any, rand: random.Random | None = None) -> str:
    """A fresh runner name ``<slot>-<suffix>`` for a new generation of ``slot`` at time ``now``."""
    if not isinstance(slot, str) or not _SLOT_RE.match(slot):
        raise PoolError(f"slot name must look like <pool>-<host>-<index> (e.g. ci-hv1-1), got {slot!r}")
    if len(slot) > MAX_SLOT_LEN:
        raise PoolError(
            f"slot name {slot!r} is too long for runner names of at most {MAX_RUNNER_NAME_LEN} characters")
    seconds = int(_as_seconds(now, "now (epoch seconds)"))
    noise = (rand or _SYSTEM_RANDOM).randrange(_RANDOM_MODULUS)
    value = (seconds % _TIME_MODULUS) * _RANDOM_MODULUS + noise
    return f"{slot}-{_base36(value, SUFFIX_LEN)}"


def slot_of(name: t.Any, pool: str, host: str) -> str | None:
    """The slot of runner ``name`` if it is ``<pool>-<host>-<index>-<suffix>`` exactly, else None.

    The index and the 6-character suffix are matched strictly, so host ``hv1`` does not claim
    ``ci-hv10-1-…`` and host ``hv`` does not claim host ``hv-2``'s ``ci-hv-2-1-…``. Note that pool
    ``ci`` on host ``big-hv1`` and pool ``ci-big`` on host ``hv1`` make identical names: avoid
    pool names that end where another pool's host names begin.
    """
    if not isinstance(name, str):
        return None
    prefix = slot_prefix(pool, host)
    if not name.startswith(prefix):
        return None
    match = _INDEX_SUFFIX_RE.match(name[len(prefix):])
    if not match:
        return None
    return prefix + match.group(1)


def minted_at(name: t.Any, now: t.Any) -> int | None:
    """Epoch second at which runner ``name`` was named, read back from its suffix (None if unknown).

    The suffix keeps the second modulo about 19.4 days, so the answer is the latest such second
    not after ``now``.
    """
    if not isinstance(name, str):
        return None
    match = re.search(r"-([0-9a-z]{6})\Z", name)
    if not match:
        return None
    value = 0
    for char in match.group(1):
        value = value * 36 + BASE36.index(char)
    stamp = value // _RANDOM_MODULUS
    current = int(_as_seconds(now, "now (epoch seconds)"))
    return current - ((current - stamp) % _TIME_MODULUS)


# --- planning ----------------------------------------------------------------------------------------

def _mapping(value: t.Any, what: str) -> t.Mapping[str, t.Any]:
    if not isinstance(value, t.Mapping):
        raise PoolError(f"{what} must be a dict, got {type(value).__name__}: {value!r:.80}")
    return value


def _entries(value: t.Any, what: str) -> list[t.Mapping[str, t.Any]]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, t.Iterable):
        raise PoolError(f"{what} must be a list of dicts, got {type(value).__name__}")
    return [_mapping(item, f"each of {what}") for item in value]


def _label(labels: t.Mapping[str, t.Any], key: str) -> str:
    value = labels.get(key)
    return "" if value is None else str(value).strip()


def _created_at(labels: t.Mapping[str, t.Any]) -> float | None:
    try:
        value = float(_label(labels, "created_at"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _runner_id(value: t.Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class _Vm:
    """One VM of this pool and host, as the planner sees it."""

    def __init__(self, slot: str, index: int, entry: t.Mapping[str, t.Any], labels: t.Mapping[str, t.Any]):
        self.slot = slot
        self.index = index
        self.state = str(entry.get("state") or "nostate")
        self.runner_name = _label(labels, "runner_name") or None
        self.runner_id = _runner_id(labels.get("runner_id"))
        self.created_at = _created_at(labels)


def _own_vms(vms: t.Iterable[t.Mapping[str, t.Any]], pool: str, host: str) -> tuple[dict[int, _Vm], int]:
    """This pool's VMs on this host by slot index, and how many other VMs were ignored."""
    own: dict[int, _Vm] = {}
    ignored = 0
    for entry in vms:
        labels = entry.get("labels") or {}
        if not isinstance(labels, t.Mapping):
            ignored += 1
            continue
        label_host = _label(labels, "host")
        try:
            same_host = bool(label_host) and host_short_name(label_host) == host
        except PoolError:
            same_host = False
        if _label(labels, "pool") != pool or not same_host:
            ignored += 1
            continue
        name = entry.get("name")
        slot = _label(labels, "slot") or (name if isinstance(name, str) else "")
        index = slot_index(slot, pool, host)
        # The VM is named after its slot: a label that disagrees with the name is not ours to judge.
        if index is None or (isinstance(name, str) and name and name != slot) or index in own:
            ignored += 1
            continue
        own[index] = _Vm(slot, index, entry, labels)
    return own, ignored


def _find_runner(vm: _Vm, by_name: dict[str, t.Mapping[str, t.Any]],
                 by_id: dict[int, t.Mapping[str, t.Any]]) -> t.Mapping[str, t.Any] | None:
    if vm.runner_name and vm.runner_name in by_name:
        return by_name[vm.runner_name]
    if vm.runner_id is not None and vm.runner_id in by_id:
        found = by_id[vm.runner_id]
        if not vm.runner_name or found.get("name") == vm.runner_name:
            return found
    return None


def _decide(vm: _Vm | None, runner: t.Mapping[str, t.Any] | None, wanted: bool, size: int,
            age: int | None, timeout: float) -> tuple[str, str]:
    """(action, reason) for one slot."""
    busy = bool(runner and runner.get("busy"))
    online = bool(runner and runner.get("status") == "online")
    if vm is None:
        return "create", "no VM"
    if not wanted:
        if busy:
            return "keep", "draining: busy"
        return "remove", f"beyond pool size {size}"
    state = vm.state
    if state in DEAD_STATES:
        if busy or online:
            # GitHub's flags lag behind the guest; never act on a runner it still shows working.
            shown = "busy" if busy else "online"
            return "keep", f"{DEAD_STATES[state]}, but GitHub still shows its runner {shown}: waiting"
        return "recreate", DEAD_STATES[state]
    if state == "shutdown":
        return "keep", "VM shutting down"
    if state not in RUNNING_STATES:
        return "keep", f"VM state {state!r} not understood: left alone"
    if busy:
        return "keep", "runner busy"
    if online:
        return "keep", "runner online, idle"
    if age is None:
        return "recreate", "runner not online and the VM has no valid created_at label"
    if runner is None:
        if age < timeout:
            return "keep", f"booting: runner not listed yet ({age}s of {int(timeout)}s)"
        return "recreate", f"runner record gone {age}s after creation while the VM runs (timeout {int(timeout)}s)"
    if age < timeout:
        return "keep", f"booting: runner offline ({age}s of {int(timeout)}s)"
    return "recreate", f"runner not online {age}s after creation (timeout {int(timeout)}s)"


def plan(*, pool: str, host: str, size: t.Any, vms: t.Any, runners: t.Any, now: t.Any,
         online_timeout: t.Any) -> dict[str, t.Any]:
    """Compare the VMs on a host and the runners at GitHub with the wanted slots.

    ``vms`` are rum_vm_info entries (``name``, ``state``, ``labels``); only VMs labelled with this
    pool and host count, the others are ignored. ``runners`` are gh_runner_info entries (``id``,
    ``name``, ``status``, ``busy``). Returns ``slots`` (one entry per wanted or existing slot, by
    index), ``keep_runners`` (names an orphan prune of ``<pool>-<host>-`` must spare), ``orphans``
    (the offline, idle runners with no VM that such a prune then deletes: this host's, and names
    under the prefix that no pool makes, with ``slot`` None), ``by_action`` and ``summary``.
    """
    pool = validate_pool_name(pool)
    host = host_short_name(host)
    wanted_size = _as_int(size, "pool size")
    clock = _as_seconds(now, "now (epoch seconds)")
    timeout = _as_seconds(online_timeout, "online timeout")
    wanted = slot_names(pool, host, wanted_size)
    prefix = slot_prefix(pool, host)

    own, ignored = _own_vms(_entries(vms, "vms"), pool, host)
    runner_list = _entries(runners, "runners")
    by_name: dict[str, t.Mapping[str, t.Any]] = {}
    by_id: dict[int, t.Mapping[str, t.Any]] = {}
    for entry in runner_list:
        name = entry.get("name")
        if isinstance(name, str) and name:
            by_name.setdefault(name, entry)
        runner_id = _runner_id(entry.get("id"))
        if runner_id is not None:
            by_id.setdefault(runner_id, entry)

    slots = []
    attached: set[str] = set()
    for index in sorted(set(range(1, wanted_size + 1)) | set(own)):
        vm = own.get(index)
        runner = _find_runner(vm, by_name, by_id) if vm else None
        if vm and vm.runner_name:
            attached.add(vm.runner_name)
        if runner is not None:
            attached.add(str(runner.get("name")))
        age = None
        if vm is not None:
            born = vm.created_at
            if born is None and vm.runner_name:
                born = minted_at(vm.runner_name, clock)
            if born is not None:
                age = max(0, int(clock - born))
        action, reason = _decide(vm, runner, index <= wanted_size, wanted_size, age, timeout)
        if runner is not None:
            runner_status = str(runner.get("status") or "offline")
        else:
            runner_status = "missing" if vm and (vm.runner_name or vm.runner_id is not None) else None
        slots.append({
            "slot": wanted[index - 1] if index <= wanted_size else vm.slot,
            "index": index,
            "action": action,
            "reason": reason,
            "vm_state": vm.state if vm else "absent",
            "runner_name": (vm.runner_name or (runner.get("name") if runner else None)) if vm else None,
            "runner_id": (_runner_id(runner.get("id")) if runner else vm.runner_id) if vm else None,
            "runner_status": runner_status,
            "runner_busy": bool(runner and runner.get("busy")),
            "age": age,
        })

    keep = set(attached)
    orphans = []
    for entry in sorted(runner_list, key=lambda r: (str(r.get("name")), _runner_id(r.get("id")) or 0)):
        name = entry.get("name")
        if not isinstance(name, str) or not name.startswith(prefix) or name in attached:
            continue
        slot = slot_of(name, pool, host)
        if slot is None and _RUNNER_SHAPE_RE.match(name):
            # Shares the prune prefix but is another host's or pool's (host hv-2 for host hv).
            keep.add(name)
            continue
        if entry.get("busy") or entry.get("status") != "offline":
            continue  # a prune spares these anyway; never propose them for deletion
        born = minted_at(name, clock) if slot else None
        if born is not None and clock - born < timeout:
            keep.add(name)  # named moments ago: its VM may still be being made by another run
            continue
        orphans.append({"name": name, "id": _runner_id(entry.get("id")), "slot": slot})

    by_action: dict[str, list[str]] = {action: [] for action in ACTIONS}
    for row in slots:
        by_action[row["action"]].append(row["slot"])
    summary = {
        "size": wanted_size,
        "slots": len(slots),
        "vms": len(own),
        "ignored_vms": ignored,
        "busy": sum(1 for row in slots if row["runner_busy"]),
        "online": sum(1 for row in slots if row["runner_status"] == "online"),
        "draining": sum(1 for row in slots if row["reason"] == "draining: busy"),
        "orphans": len(orphans),
    }
    summary.update({action: len(names) for action, names in by_action.items()})
    summary["changes"] = summary["create"] + summary["recreate"] + summary["remove"] + summary["orphans"]
    return {
        "pool": pool,
        "host": host,
        "slots": slots,
        "keep_runners": sorted(keep),
        "orphans": orphans,
        "by_action": by_action,
        "summary": summary,
    }


# --- reporting ----------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("SLOT", "slot"),
    ("VM STATE", "vm_state"),
    ("RUNNER", "runner_name"),
    ("STATUS", "runner_status"),
    ("BUSY", "runner_busy"),
    ("ACTION", "action"),
    ("REASON", "reason"),
)


def _cell(row: t.Mapping[str, t.Any], key: str) -> str:
    value = row.get(key)
    if key == "runner_busy":
        if not row.get("runner_status") or row.get("runner_status") == "missing":
            return "-"
        return "yes" if value else "no"
    if value is None or value == "":
        return "-"
    return str(value)


def summary_line(summary: t.Mapping[str, t.Any]) -> str:
    """One line of counts, e.g. ``2 slots (size 2): 0 create, 1 recreate, 1 keep, 0 remove; 0 orphan runners``."""
    counts = ", ".join(f"{summary.get(action, 0)} {action}" for action in ACTIONS)
    slots = summary.get("slots", 0)
    orphans = summary.get("orphans", 0)
    line = f"{slots} slot{'' if slots == 1 else 's'} (size {summary.get('size', 0)}): {counts}"
    if summary.get("draining"):
        line += f" ({summary['draining']} draining)"
    return line + f"; {orphans} orphan runner{'' if orphans == 1 else 's'}"


def status_table(plan_or_rows: t.Any) -> str:
    """A fixed-width text table of slots, with a summary line when given a whole plan."""
    summary = None
    if isinstance(plan_or_rows, t.Mapping):
        if "slots" not in plan_or_rows:
            raise PoolError("status table needs a pool plan (a dict with 'slots') or a list of slot rows")
        rows = _entries(plan_or_rows["slots"], "the plan's slots")
        summary = plan_or_rows.get("summary")
    elif plan_or_rows is None:
        raise PoolError("status table needs a pool plan or a list of slot rows, got None")
    else:
        rows = _entries(plan_or_rows, "slot rows")
    cells = [[column[0] for column in TABLE_COLUMNS]]
    cells += [[_cell(row, column[1]) for column in TABLE_COLUMNS] for row in rows]
    widths = [max(len(line[col]) for line in cells) for col in range(len(TABLE_COLUMNS) - 1)]
    lines = []
    for line in cells:
        padded = [cell.ljust(width) for cell, width in zip(line, widths)]
        lines.append("  ".join(padded + [line[-1]]).rstrip())
    if not rows:
        lines.append("(no slots)")
    if isinstance(summary, t.Mapping):
        lines.append(summary_line(summary))
    return "\n".join(lines)
