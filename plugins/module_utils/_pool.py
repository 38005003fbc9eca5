# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runner pool planning: what each slot of a pool on one host needs next, and the status table.

Internal to the rum.pool collection: not a public API. Everything here is a pure function of its
arguments (the clock is passed in), so the roles only orchestrate and every decision - which slot to
create, recreate, keep, remove or stage, which staged or retired VMs to remove, which runner records
to spare from an orphan prune - is unit-tested without libvirt or GitHub. Names and labels follow
the slot contract in ``_slot.py``.

A slot may have, besides its VM, a staged generation (``<slot>.<suffix>``: defined, never started,
its runner minted) waiting for the slot's job to end, and retired generations (``<slot>_<suffix>``)
not yet removed. ``staged_problem`` says whether a staged generation may still be started; the
planner and the batch module (``_slots.py``) both ask it.
"""

from __future__ import annotations

import typing as t

from ansible_collections.rum.pool.plugins.module_utils._slot import (
    SlotError,
    as_int,
    as_seconds,
    host_short_name,
    labels_match,
    minted_at,
    parse_labels,
    parse_runner_name,
    parse_slot,
    parse_vm_name,
    slot_names,
    slot_prefix,
    validate_pool_name,
)

ACTIONS = ("create", "recreate", "keep", "remove", "stage")
# The modes of one rum_slots call, and the outcomes of a slot that count as a change. Here, not in
# _slots, so that the controller's side (the action plugin) does not import libvirt's side.
BATCH_MODES = ("converge", "absent", "recreate", "stage")
CHANGED_OUTCOMES = ("created", "recreated", "removed", "staged", "cleaned")
# A staged generation's runner never connected: GitHub removes such a runner after a day, so a staged
# generation older than this is made again.
STAGE_MAX_AGE = 20 * 3600

# libvirt power states (virsh domstate names) and what they mean for a runner VM.
RUNNING_STATES = ("running", "blocked")
DEAD_STATES = {
    "shutoff": "VM shut off (its job finished or the guest powered off)",
    "paused": "VM paused",
    "crashed": "VM crashed",
    "pmsuspended": "VM suspended by its guest",
}

PoolError = SlotError  # the planner refuses bad input with the contract's error class


# --- planning ----------------------------------------------------------------------------------------

def _mapping(value: t.Any, what: str) -> t.Mapping[str, t.Any]:
    if not isinstance(value, t.Mapping):
        raise PoolError(f"{what} must be a dict, got {type(value).__name__}: {value!r:.80}")
    return value


def entries(value: t.Any, what: str) -> list[t.Mapping[str, t.Any]]:
    """``value`` as a list of dicts (None is an empty list); ``what`` names it in the error."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, t.Iterable):
        raise PoolError(f"{what} must be a list of dicts, got {type(value).__name__}")
    return [_mapping(item, f"each of {what}") for item in value]


def _runner_id(value: t.Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class _Vm:
    """One VM of this pool and host, as the planner sees it."""

    def __init__(self, slot: str, index: int, entry: t.Mapping[str, t.Any], labels: t.Any):
        self.slot = slot
        self.index = index
        self.name = str(entry.get("name") or slot)
        self.state = str(entry.get("state") or "nostate")
        self.runner_name = labels.runner_name
        self.runner_id = labels.runner_id
        self.created_at = labels.created_at
        self.staged = labels.staged
        self.config = labels.config

    def age(self, clock: float) -> int | None:
        born = self.created_at
        if born is None and self.runner_name:
            born = minted_at(self.runner_name, clock)
        return None if born is None else max(0, int(clock - born))


class _Own(t.NamedTuple):
    slots: dict[int, _Vm]  # the slots' VMs, by index
    staged: dict[int, list[_Vm]]  # staged generations, by their slot's index
    retired: list[_Vm]
    ignored: int


def _own_vms(vms: t.Iterable[t.Mapping[str, t.Any]], pool: str, host: str) -> _Own:
    """This pool's VMs on this host: the slots' VMs by index, the staged and the retired ones."""
    own = _Own({}, {}, [], 0)
    ignored = 0
    for entry in vms:
        raw = entry.get("labels") or {}
        labels = parse_labels(raw)
        if not isinstance(raw, t.Mapping) or not labels_match(labels, pool, host):
            ignored += 1
            continue
        name = entry.get("name")
        kind = parse_vm_name(name, [pool]) if isinstance(name, str) and name else None
        if kind is not None and kind.kind != "slot":
            # A staged or retired generation: its name says its slot, and its label must not disagree.
            if kind.slot.host != host or labels.slot not in (None, kind.slot.name):
                ignored += 1
            elif kind.kind == "staged":
                own.staged.setdefault(kind.slot.index, []).append(_Vm(kind.slot.name, kind.slot.index, entry, labels))
            else:
                own.retired.append(_Vm(kind.slot.name, kind.slot.index, entry, labels))
            continue
        slot = labels.slot or (name if isinstance(name, str) else "")
        found = parse_slot(slot, [pool])
        index = found.index if found and found.host == host else None
        # The VM is named after its slot: a label that disagrees with the name is not ours to judge.
        if index is None or (isinstance(name, str) and name and name != slot) or index in own.slots:
            ignored += 1
            continue
        own.slots[index] = _Vm(slot, index, entry, labels)
    return own._replace(ignored=ignored)


def staged_problem(*, state: str, labels: t.Any, now: float, config: str | None = None,
                   max_age: float = STAGE_MAX_AGE, runner_gone: bool = False) -> str | None:
    """Why a staged generation (its VM's state and labels) may not be started, or None when it may.

    ``config`` is the hash of the pool's settings now (None: not judged); ``runner_gone`` says that
    GitHub no longer lists its runner.
    """
    found = parse_labels(labels)
    if state != "shutoff":
        return f"its VM is {state}, not shut off: a staged VM is never started twice"
    if not found.runner_name or found.created_at is None:
        return "it has no runner_name or created_at label"
    if config is not None and found.config != config:
        return "made with other pool settings (image, labels, VM options or isolation changed)"
    age = max(0, int(now - found.created_at))
    if age > max_age:
        return (f"staged {age}s ago, more than {int(max_age)}s (GitHub removes a runner that never "
                "connected after a day)")
    if runner_gone:
        return "GitHub no longer lists its runner"
    return None


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
    if vm.staged and state == "shutoff" and not busy and not online:
        return "recreate", "its staged generation was never started (an interrupted swap)"
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
         online_timeout: t.Any, stage: bool = False, config: str | None = None,
         stage_max_age: float = STAGE_MAX_AGE) -> dict[str, t.Any]:
    """Compare the VMs on a host and the runners at GitHub with the wanted slots.

    ``vms`` are rum_vm_info entries (``name``, ``state``, ``labels``); only VMs labelled with this
    pool and host count, the others are ignored. ``runners`` are gh_runner_info entries (``id``,
    ``name``, ``status``, ``busy``). Returns ``slots`` (one entry per wanted or existing slot, by
    index; ``staged`` names the runner of a slot's staged generation that may be started),
    ``discard`` (staged generations that may not be started, and retired ones: VMs to remove),
    ``keep_runners`` (names an orphan prune of ``<pool>-<host>-`` must spare), ``orphans`` (the
    offline, idle runners with no VM that such a prune then deletes: this host's, and names under
    the prefix that no pool makes, with ``slot`` None), ``by_action`` and ``summary``.

    With ``stage``, a wanted slot whose runner is busy and that has no staged generation gets the
    action ``stage``; without it, staged generations are discarded. ``config`` is the hash of the
    pool's settings now: a staged generation made with others is discarded (see staged_problem).
    """
    pool = validate_pool_name(pool)
    host = host_short_name(host)
    wanted_size = as_int(size, "pool size")
    clock = as_seconds(now, "now (epoch seconds)")
    timeout = as_seconds(online_timeout, "online timeout")
    wanted = slot_names(pool, host, wanted_size)
    prefix = slot_prefix(pool, host)

    found_vms = _own_vms(entries(vms, "vms"), pool, host)
    own, ignored = found_vms.slots, found_vms.ignored
    runner_list = entries(runners, "runners")
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
    discard: list[dict[str, t.Any]] = []
    attached: set[str] = set()
    for gone in found_vms.retired:
        discard.append(_discard_row(gone, "a retired generation not removed yet"))
    for index in sorted(set(range(1, wanted_size + 1)) | set(own) | set(found_vms.staged)):
        vm = own.get(index)
        runner = _find_runner(vm, by_name, by_id) if vm else None
        if vm and vm.runner_name:
            attached.add(vm.runner_name)
        if runner is not None:
            attached.add(str(runner.get("name")))
        age = vm.age(clock) if vm is not None else None
        ready = None  # the staged generation that may be started
        for other in sorted(found_vms.staged.get(index, []), key=lambda v: -(v.created_at or 0)):
            if other.runner_name:
                attached.add(other.runner_name)
            if index > wanted_size:
                problem: str | None = "its slot is removed"
            elif not stage:
                problem = "staging is off (runner_pool_stage, runner_pool_batch, jit registration)"
            elif ready is not None:
                problem = f"the slot has a newer staged generation ({ready.runner_name})"
            else:
                listed = other.runner_name in by_name
                problem = staged_problem(state=other.state, labels={"runner_name": other.runner_name,
                                                                    "created_at": other.created_at,
                                                                    "config": other.config},
                                         now=clock, config=config, max_age=stage_max_age,
                                         runner_gone=not listed and (other.age(clock) or 0) >= timeout)
            if problem is None:
                ready = other
            else:
                discard.append(_discard_row(other, problem))
        if vm is None and index > wanted_size:
            continue  # only staged generations of a removed slot: discarded above
        action, reason = _decide(vm, runner, index <= wanted_size, wanted_size, age, timeout)
        if action == "create" and ready is not None:
            reason = "no VM; its staged generation is started"
        elif action == "keep" and reason == "runner busy" and stage and ready is None and vm.state in RUNNING_STATES:
            action, reason = "stage", "runner busy: its next generation is staged meanwhile"
        elif ready is not None:
            reason += "; next generation staged"
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
            "staged": ready.runner_name if ready is not None else None,
        })

    keep = set(attached)
    orphans = []
    for entry in sorted(runner_list, key=lambda r: (str(r.get("name")), _runner_id(r.get("id")) or 0)):
        name = entry.get("name")
        if not isinstance(name, str) or not name.startswith(prefix) or name in attached:
            continue
        parsed = parse_runner_name(name, [pool])
        slot = parsed.slot if parsed and parsed.host == host else None
        if slot is None and parsed is not None:
            # Shares the prune prefix but is another host's (host hv-2's names for host hv).
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
    discard.sort(key=lambda row: row["vm"])
    summary = {
        "size": wanted_size,
        "slots": len(slots),
        "vms": len(own),
        "ignored_vms": ignored,
        "busy": sum(1 for row in slots if row["runner_busy"]),
        "online": sum(1 for row in slots if row["runner_status"] == "online"),
        "draining": sum(1 for row in slots if row["reason"] == "draining: busy"),
        "orphans": len(orphans),
        "discard": len(discard),
    }
    summary.update({action: len(names) for action, names in by_action.items()})
    summary["changes"] = (summary["create"] + summary["recreate"] + summary["remove"] + summary["stage"]
                          + summary["orphans"] + summary["discard"])
    return {
        "pool": pool,
        "host": host,
        "slots": slots,
        "discard": discard,
        "keep_runners": sorted(keep),
        "orphans": orphans,
        "by_action": by_action,
        "summary": summary,
    }


def _discard_row(vm: _Vm, reason: str) -> dict[str, t.Any]:
    return {"vm": vm.name, "slot": vm.slot, "state": vm.state, "runner_name": vm.runner_name,
            "runner_id": vm.runner_id, "reason": reason}


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
    """One line of counts, e.g. ``2 slots (size 2): 0 create, 1 recreate, 1 keep, 0 remove; 0 orphan runners``.

    Staging shows only when there is some: ``, 1 stage`` and ``; 1 staged or retired VM to remove``.
    """
    counts = ", ".join(f"{summary.get(action, 0)} {action}" for action in ACTIONS
                       if action != "stage" or summary.get(action))
    slots = summary.get("slots", 0)
    orphans = summary.get("orphans", 0)
    line = f"{slots} slot{'' if slots == 1 else 's'} (size {summary.get('size', 0)}): {counts}"
    if summary.get("draining"):
        line += f" ({summary['draining']} draining)"
    line += f"; {orphans} orphan runner{'' if orphans == 1 else 's'}"
    extra = summary.get("discard", 0)
    return line + (f"; {extra} staged or retired VM{'' if extra == 1 else 's'} to remove" if extra else "")


def status_table(plan_or_rows: t.Any) -> str:
    """A fixed-width text table of slots, with a summary line when given a whole plan."""
    summary = None
    if isinstance(plan_or_rows, t.Mapping):
        if "slots" not in plan_or_rows:
            raise PoolError("status table needs a pool plan (a dict with 'slots') or a list of slot rows")
        rows = entries(plan_or_rows["slots"], "the plan's slots")
        summary = plan_or_rows.get("summary")
    elif plan_or_rows is None:
        raise PoolError("status table needs a pool plan or a list of slot rows, got None")
    else:
        rows = entries(plan_or_rows, "slot rows")
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
