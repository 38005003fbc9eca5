# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runner pool filters: slot and runner names, the slot plan and its status table.

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


class FilterModule:
    """rum.pool runner pool filters."""

    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {
            "host_short_name": host_short_name,
            "slot_names": slot_names,
            "runner_name": runner_name,
            "slot_plan": slot_plan,
            "slot_table": slot_table,
        }
