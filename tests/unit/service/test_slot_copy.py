# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service's copy of the slot contract reads every name the collection's planner makes.

``rum_pool_webhook/slot.py`` is a byte-for-byte copy of the collection's ``_slot.py`` (proved in
tests/unit/plugins/module_utils/test_slot.py); these property tests show what that buys: a runner
name made by the planner is taken apart the same way by the service, and a name either side refuses
is refused by both. The service's decision on the names the planner makes is the one it took before
the contract (its old pattern is kept here as the reference).
"""

from __future__ import annotations

import random
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.rum.pool.plugins.module_utils import _pool as planner
from ansible_collections.rum.pool.plugins.module_utils import _slot as collection
from rum_pool_webhook import events
from rum_pool_webhook import slot as service

POOLS = st.from_regex(r"[a-z0-9][a-z0-9-]{0,19}", fullmatch=True)
HOSTNAMES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
).filter(lambda name: re.search(r"[A-Za-z0-9]", name.split(".", 1)[0]) or re.match(r"[0-9.]+$", name))
INDEXES = st.integers(min_value=1, max_value=99999)
CLOCKS = st.floats(min_value=0, max_value=4e9, allow_nan=False)
# Anything that looks roughly like a name, and some that do not.
NAMES = st.one_of(
    st.text(alphabet="abchv01239-", max_size=40),
    st.text(max_size=30),
    st.from_regex(r"[a-z0-9-]{1,25}-[0-9]{1,3}(-[0-9a-zA-Z]{5,7})?", fullmatch=True),
)
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def old_service_slot_of(name, pools):
    """The service's grammar before the slot contract (events.py, kept as the reference)."""
    for pool in sorted(pools, key=len, reverse=True):
        match = re.match(r"^(%s-[a-z0-9-]+-[0-9]+)-[a-z0-9]{6}$" % re.escape(pool), name or "")
        if match:
            return pool, match.group(1)
    return None


def made_by_the_planner(pool, hostname, index, now, seed):
    """(slot, runner name) as the roles make them, or None when the names would be too long."""
    try:
        slot = collection.slot_name(pool, hostname, index)
    except collection.SlotError:
        return None
    return slot, collection.runner_name(slot, now, random.Random(seed))


@PROPERTY
@given(POOLS, HOSTNAMES, INDEXES, CLOCKS, st.integers(min_value=0))
@example("ci", "hv-2.example.com", 1, 0.0, 0)
@example("ci-", "_x", 10, 1.0, 1)
def test_every_name_the_planner_makes_is_read_back_by_the_service(pool, hostname, index, now, seed):
    made = made_by_the_planner(pool, hostname, index, now, seed)
    if made is None:
        return
    slot, runner = made
    host = collection.host_short_name(hostname)
    assert tuple(service.parse_slot(slot, [pool])) == (pool, host, index)
    assert tuple(service.parse_runner_name(runner, [pool])) == (pool, host, index, runner[-6:])
    assert service.minted_at(runner, now) == int(now)
    assert events.slot_of(runner, [pool]) == (pool, slot)
    # the planner keeps that runner's record for its slot; the service's old pattern agreed too
    vm = {"name": slot, "state": "running", "labels": collection.build_labels(
        pool=pool, host=hostname, slot=slot, backend="libvirt", runner_name=runner, created_at=now)}
    row = planner.plan(pool=pool, host=hostname, size=0, vms=[vm], runners=[{"name": runner, "id": 1, "busy": True,
                       "status": "online"}], now=now, online_timeout=60)["slots"][0]
    assert (row["slot"], row["index"], row["runner_name"], row["runner_status"]) == (slot, index, runner, "online")
    assert old_service_slot_of(runner, [pool]) == (pool, slot)


@PROPERTY
@given(NAMES, st.lists(POOLS, min_size=1, max_size=3, unique=True))
@example("ci-hv1-0-abcdef", ["ci"])
@example("ci-hv1-01-abcdef", ["ci"])
@example("ci--1-abcdef", ["ci"])
@example("ci-gpu-hv1-1-abcdef", ["ci", "ci-gpu"])
def test_a_name_either_side_refuses_is_refused_by_both(name, pools):
    for function in ("parse_slot", "parse_runner_name"):
        here = getattr(collection, function)(name, pools)
        there = getattr(service, function)(name, pools)
        assert (tuple(here) if here else None) == (tuple(there) if there else None), (function, name, pools)
    assert collection.is_slot_name(name) == service.is_slot_name(name)
    parsed = service.parse_runner_name(name, pools)
    assert events.slot_of(name, pools) == ((parsed.pool, parsed.slot) if parsed else None)
    if parsed:
        # whatever the service accepts, the planner would have made: the same slot, the same pool
        assert collection.slot_name(parsed.pool, parsed.host, parsed.index) == parsed.slot
        assert old_service_slot_of(name, pools) == (parsed.pool, parsed.slot)


@PROPERTY
@given(st.dictionaries(st.sampled_from(collection.LABEL_KEYS + ("other",)),
                       st.one_of(st.none(), st.text(max_size=12), st.integers(), st.floats()), max_size=8))
def test_labels_read_back_the_same_on_both_sides(labels):
    assert tuple(collection.parse_labels(labels)) == tuple(service.parse_labels(labels))
