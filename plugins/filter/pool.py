# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runner pool filters: slot and runner names, the slot plan and its status table, one slot's guard and labels.

Each filter is documented in its own ``<name>.yml`` beside this file. Names follow the slot contract
(``module_utils/_slot.py``), the decisions are made by the planner (``module_utils/_pool.py``);
these wrappers only fill in defaults (the clock) and turn their errors into ``AnsibleFilterError``.
"""

from __future__ import annotations

import time
import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.module_utils import _pool, _slot


def _call(func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
    """Run a planner function; Ansible names the failing filter, the message says what was wrong."""
    try:
        return func(*args, **kwargs)
    except _slot.SlotError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def _now(now: t.Any) -> t.Any:
    return time.time() if now is None else now


def host_short_name(inventory_hostname: t.Any) -> str:
    """``hv1.example.com`` -> ``hv1``."""
    return _call(_slot.host_short_name, inventory_hostname)


def slot_names(pool: t.Any, host: t.Any, size: t.Any) -> list[str]:
    """``'ci' | rum.pool.slot_names('hv1', 2)`` -> ``['ci-hv1-1', 'ci-hv1-2']``."""
    return _call(_slot.slot_names, pool, host, size)


def runner_name(slot: t.Any, now: t.Any = None) -> str:
    """A new runner name for one generation of ``slot``."""
    return _call(_slot.runner_name, slot, _now(now))


def slot_plan(vms: t.Any, pool: t.Any = None, host: t.Any = None, size: t.Any = 2, runners: t.Any = None,
              online_timeout: t.Any = 600, now: t.Any = None) -> dict[str, t.Any]:
    """What each slot of ``pool`` on ``host`` needs, from rum_vm_info VMs and gh_runner_info runners."""
    for option, value in (("pool", pool), ("host", host)):
        if value is None:
            raise AnsibleFilterError(f"rum.pool.slot_plan: the {option} option is required")
    return _call(_pool.plan, pool=pool, host=host, size=size, vms=vms,
                 runners=[] if runners is None else runners, now=_now(now), online_timeout=online_timeout)


def slot_table(plan: t.Any) -> str:
    """The plan as a fixed-width text table with a summary line."""
    return _call(_pool.status_table, plan)


def _settings(settings: t.Any, name: str) -> t.Mapping[str, t.Any]:
    """The pool's settings mapping, or a message that never shows it (it holds credentials)."""
    if not isinstance(settings, t.Mapping) or not all(key in settings for key in ("name", "host", "backend")):
        raise AnsibleFilterError(
            f"rum.pool.{name}: settings must be the pool's settings, lookup('rum.pool.pool_settings') "
            f"(got {type(settings).__name__})")
    return settings


def slot_guard(vms: t.Any, settings: t.Any = None, slot: t.Any = None, action: t.Any = None,
               runner_name: t.Any = None, now: t.Any = None) -> dict[str, t.Any]:
    """Whether to act on ``slot`` now, from its observed VM (the generation check), and a fresh runner name."""
    pool = _settings(settings, "slot_guard")
    found = _call(_pool.entries, vms, "vms")
    if len(found) > 1:
        raise AnsibleFilterError(f"rum.pool.slot_guard: one slot has one VM at most, got {len(found)} VMs named {slot!r}")
    guard = _call(_slot.check_generation, action=action, slot=slot, pool=pool["name"], host=pool["host"],
                  vm=found[0] if found else None, runner_name=runner_name)
    creates = guard["act"] and action in ("create", "recreate")
    guard["new_runner_name"] = _call(_slot.runner_name, slot, _now(now)) if creates else None
    return guard


def slot_labels(slot: t.Any, settings: t.Any = None, runner_name: t.Any = None, runner_id: t.Any = None,
                now: t.Any = None) -> dict[str, str]:
    """The labels of a new generation of ``slot``, made ``now``."""
    pool = _settings(settings, "slot_labels")
    return _call(_slot.build_labels, pool=pool["name"], host=pool["host"], slot=slot, backend=pool["backend"],
                 runner_name=runner_name, runner_id=runner_id, created_at=_now(now))


class FilterModule:
    """rum.pool runner pool filters."""

    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {
            "host_short_name": host_short_name,
            "slot_names": slot_names,
            "runner_name": runner_name,
            "slot_plan": slot_plan,
            "slot_table": slot_table,
            "slot_guard": slot_guard,
            "slot_labels": slot_labels,
        }
