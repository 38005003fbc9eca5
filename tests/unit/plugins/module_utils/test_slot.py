# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The slot contract: names (build and parse), labels, the generation check, and its service copy."""

from __future__ import annotations

import filecmp
import os
import random
import re

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _slot as slot
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

NOW = 1_750_000_000.0
RUNNER_RE = re.compile(r"^ci-hv1-1-[0-9a-z]{6}$")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def rname(name, at=NOW - 3600, seed=0):
    return slot.runner_name(name, at, random.Random(seed))


def slot_of(name, pool, host):
    """The slot of runner ``name`` if it is exactly ``<pool>-<host>-<index>-<suffix>``."""
    found = slot.parse_runner_name(name, [pool])
    return found.slot if found and found.host == slot.host_short_name(host) else None


def test_the_service_carries_an_identical_copy():
    collection = os.path.join(ROOT, "plugins", "module_utils", "_slot.py")
    service = os.path.join(ROOT, "service", "rum_pool_webhook", "slot.py")
    assert filecmp.cmp(collection, service, shallow=False), (
        "service/rum_pool_webhook/slot.py must be a byte-for-byte copy of plugins/module_utils/_slot.py: "
        "cp plugins/module_utils/_slot.py service/rum_pool_webhook/slot.py")


# --- names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ci", "a", "0", "ci-big", "x" * 20, "pool-1"])
def test_pool_name_valid(name):
    assert slot.validate_pool_name(name) == name


@pytest.mark.parametrize("name", ["", "CI", "-ci", "ci_big", "ci.big", "x" * 21, "ci big", None, 5])
def test_pool_name_invalid(name):
    with pytest.raises(SlotError, match="pool name"):
        slot.validate_pool_name(name)


def test_pool_name_error_says_what_is_allowed():
    with pytest.raises(SlotError) as err:
        slot.validate_pool_name("CI")
    assert "'CI'" in str(err.value) and "a-z, 0-9 and '-'" in str(err.value) and "20" in str(err.value)


@pytest.mark.parametrize("given, short", [
    ("hv1.example.com", "hv1"),
    ("localhost", "localhost"),
    ("HV1.Example.COM", "hv1"),
    ("Web_2.lan", "web-2"),
    ("hv1.", "hv1"),
    ("hv1:2222", "hv1-2222"),
    ("10.0.0.5", "10-0-0-5"),
    ("fe80::1", "fe80--1"),
    ("  hv1 ", "hv1"),
])
def test_host_short_name(given, short):
    assert slot.host_short_name(given) == short
    assert slot.host_short_name(short) == short  # idempotent: filters may shorten twice


def test_ip_hosts_of_one_subnet_stay_apart():
    assert slot.host_short_name("10.0.0.5") != slot.host_short_name("10.0.0.6")


@pytest.mark.parametrize("given", ["", "   ", ".example.com", "___", None, 7])
def test_host_short_name_invalid(given):
    with pytest.raises(SlotError, match="host name"):
        slot.host_short_name(given)


def test_slot_names():
    assert slot.slot_names("ci", "hv1", 2) == ["ci-hv1-1", "ci-hv1-2"]
    assert slot.slot_names("ci", "hv1.example.com", "3") == ["ci-hv1-1", "ci-hv1-2", "ci-hv1-3"]
    assert slot.slot_names("ci", "hv1", 0) == []
    assert len(slot.slot_names("ci", "hv1", 100)) == 100
    assert slot.slot_names("ci", "hv1", 12)[-1] == "ci-hv1-12"


@pytest.mark.parametrize("size", [-1, "two", True, 1.5, None, "1e3"])
def test_slot_names_bad_size(size):
    with pytest.raises(SlotError, match="pool size"):
        slot.slot_names("ci", "hv1", size)


def test_slot_names_bad_pool():
    with pytest.raises(SlotError, match="pool name 'Ci'"):
        slot.slot_names("Ci", "hv1", 1)


def test_slot_names_too_long_for_a_hostname():
    host = "h" * 40
    assert len(slot.runner_name(slot.slot_names("p" * 10, host, 1)[0], NOW)) <= 63
    with pytest.raises(SlotError, match="63 characters"):
        slot.slot_names("p" * 20, host, 1)


def test_runner_name_format():
    name = slot.runner_name("ci-hv1-1", NOW, random.Random(1))
    assert RUNNER_RE.match(name), name
    assert slot_of(name, "ci", "hv1") == "ci-hv1-1"


def test_runner_name_is_deterministic_given_clock_and_randomness():
    assert rname("ci-hv1-1", NOW, 7) == rname("ci-hv1-1", NOW, 7)
    assert rname("ci-hv1-1", NOW, 7) != rname("ci-hv1-1", NOW + 1, 7)


def test_runner_name_default_randomness():
    names = {slot.runner_name("ci-hv1-1", NOW) for _draw in range(50)}
    assert len(names) > 1
    assert all(RUNNER_RE.match(n) for n in names)


def test_runner_name_same_second_differs_by_randomness():
    rand = random.Random(3)
    names = [slot.runner_name("ci-hv1-1", NOW, rand) for _draw in range(20)]
    assert len(set(names)) > 15  # 1296 random values per second


def test_runner_name_unique_over_10000_generations():
    """10 000 generations of one slot, each at least a second after the last, spanning ~2 weeks."""
    rand = random.Random(42)
    clock = NOW
    names = []
    for _draw in range(10_000):
        clock += rand.uniform(1, 240)
        names.append(slot.runner_name("ci-hv1-1", clock))
    assert clock - NOW < 19 * 86400
    assert len(set(names)) == 10_000
    assert all(RUNNER_RE.match(n) for n in names)


def test_runner_name_unique_over_10000_draws_same_randomness():
    """Uniqueness comes from the clock, not from luck: even a constant random source cannot collide."""

    class Constant(random.Random):
        def randrange(self, *args, **kwargs):  # pylint: disable=arguments-differ,unused-argument
            return 5

    names = {slot.runner_name("ci-hv1-1", NOW + i, Constant()) for i in range(10_000)}
    assert len(names) == 10_000


def test_runner_names_of_different_slots_never_collide():
    rand = random.Random(1)
    names = {slot.runner_name(f"ci-hv1-{i % 50 + 1}", NOW + i // 50, rand) for i in range(10_000)}
    assert len(names) == 10_000


@pytest.mark.parametrize("bad", ["", "ci", "ci-hv1", "ci-hv1-0", "CI-hv1-1", "ci-hv1-1-abcdef-x", None, 3])
def test_runner_name_bad_slot(bad):
    with pytest.raises(SlotError, match="slot name"):
        slot.runner_name(bad, NOW)


@pytest.mark.parametrize("now", [-1, "soon", None, float("nan"), True])
def test_runner_name_bad_clock(now):
    with pytest.raises(SlotError, match="now"):
        slot.runner_name("ci-hv1-1", now)


def test_minted_at_round_trip():
    for at in (NOW, NOW - 1, NOW - 599, NOW - 86400 * 10):
        assert slot.minted_at(rname("ci-hv1-1", at), NOW) == int(at)
    assert slot.minted_at("ci-hv1-1", NOW) is None
    assert slot.minted_at(None, NOW) is None


def test_minted_at_wraps_after_about_19_days():
    period = 36 ** 4
    assert slot.minted_at(rname("ci-hv1-1", NOW - period), NOW) == int(NOW)
    assert slot.minted_at(rname("ci-hv1-1", NOW - period - 10), NOW) == int(NOW) - 10


def test_slot_of():
    assert slot_of("ci-hv1-1-k3x9qa", "ci", "hv1") == "ci-hv1-1"
    assert slot_of("ci-hv1-12-k3x9qa", "ci", "hv1.example.com") == "ci-hv1-12"


@pytest.mark.parametrize("name, pool_name, host", [
    ("ci-hv10-1-k3x9qa", "ci", "hv1"),        # host hv10 is not hv1
    ("ci-hv1-1-k3x9qa", "ci", "hv10"),
    ("ci-big-hv1-1-k3x9qa", "ci", "hv1"),     # pool ci-big is not ci
    ("ci-hv1-1-k3x9qa", "ci-big", "hv1"),
    ("ci-hv-2-1-k3x9qa", "ci", "hv"),         # host hv-2's runner, not host hv's
    ("ci-hv1-1-k3x9q", "ci", "hv1"),          # suffix too short
    ("ci-hv1-1-k3x9qaa", "ci", "hv1"),        # too long
    ("ci-hv1-1-K3X9QA", "ci", "hv1"),         # not lowercase base36
    ("ci-hv1-0-k3x9qa", "ci", "hv1"),         # no slot 0
    ("ci-hv1-01-k3x9qa", "ci", "hv1"),
    ("ci-hv1-1", "ci", "hv1"),                # a slot, not a runner
    ("ci-hv1--k3x9qa", "ci", "hv1"),
    ("other", "ci", "hv1"),
    (None, "ci", "hv1"),
])
def test_slot_of_refuses_lookalikes(name, pool_name, host):
    assert slot_of(name, pool_name, host) is None


def test_slot_of_host_with_dash_is_still_found():
    assert slot_of("ci-hv-2-1-k3x9qa", "ci", "hv-2") == "ci-hv-2-1"


# --- names: parse ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, pools, expected", [
    ("ci-hv1-1", ["ci"], ("ci", "hv1", 1)),
    ("ci-hv1-12", ["ci"], ("ci", "hv1", 12)),
    ("ci-rack-2-hv-3", ["ci"], ("ci", "rack-2-hv", 3)),         # the index is the last part
    ("ci-10-0-0-5-2", ["ci"], ("ci", "10-0-0-5", 2)),            # an IP address host
    ("ci-gpu-hv1-1", ["ci", "ci-gpu"], ("ci-gpu", "hv1", 1)),    # the longer pool wins
    ("ci-gpu-hv1-1", ["ci"], ("ci", "gpu-hv1", 1)),
    ("ci--x-1", ["ci"], ("ci", "-x", 1)),                        # host '_x' shortens to '-x'
    ("ci-hv1-0", ["ci"], None),                                  # no slot 0
    ("ci-hv1-01", ["ci"], None),                                 # no leading zero
    ("ci-hv1", ["ci"], None),
    ("ci--1", ["ci"], None),                                     # no host
    ("ci---1", ["ci"], None),                                    # a host without a letter or digit
    ("CI-hv1-1", ["ci"], None),
    ("gpu-hv1-1", ["ci"], None),
    ("cix-hv1-1", ["ci"], None),
    ("ci-hv1-1-k3x9qa", ["ci"], None),                           # a runner name is not a slot
    (None, ["ci"], None),
])
def test_parse_slot(name, pools, expected):
    found = slot.parse_slot(name, pools)
    assert (tuple(found) if found else None) == expected
    if found:
        assert found.name == name
        assert slot.is_slot_name(name)


@pytest.mark.parametrize("name", ["ci-1", "-ci-hv1-1", "ci-hv1-0", "ci-hv1-1-abcdef", "a" * 21 + "-h-1", "", 5, None])
def test_is_slot_name_refuses(name):
    assert not slot.is_slot_name(name)


@pytest.mark.parametrize("name", ["ci-hv1-1", "a" * 20 + "-h-1", "ci-big-hv1-10", "0-0-1"])
def test_is_slot_name(name):
    assert slot.is_slot_name(name)


def test_parse_runner_name():
    found = slot.parse_runner_name("ci-rack-2-hv-3-k3x9qa", "ci")
    assert tuple(found) == ("ci", "rack-2-hv", 3, "k3x9qa")
    assert (found.slot, found.name) == ("ci-rack-2-hv-3", "ci-rack-2-hv-3-k3x9qa")
    assert slot.parse_runner_name("ci-hv1-1-k3x9qa", ["ci", "ci-hv1"]).pool == "ci"  # 'ci-hv1' leaves no host


def test_parse_refuses_invalid_pools():
    with pytest.raises(SlotError, match="pool name 'CI'"):
        slot.parse_slot("CI-hv1-1", ["CI"])
    with pytest.raises(SlotError, match="pool name"):
        slot.parse_runner_name("x" * 21 + "-hv1-1-k3x9qa", ["x" * 21])


def test_parse_is_quick_on_long_hostile_names():
    hostile = "ci-" + "-1" * 20000 + "-x"
    assert slot.parse_runner_name(hostile, ["ci"]) is None
    assert slot.parse_slot(hostile, ["ci"]) is None
    assert not slot.is_slot_name(hostile)


# --- labels ---------------------------------------------------------------------------------------

def test_build_labels():
    name = rname("ci-hv1-1")
    labels = slot.build_labels(pool="ci", host="hv1.example.com", slot="ci-hv1-1", backend="libvirt",
                               runner_name=name, runner_id=42, created_at=NOW + 0.7)
    assert labels == {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "backend": "libvirt", "runner_name": name,
                      "runner_id": "42", "created_at": str(int(NOW))}
    assert all(isinstance(value, str) for value in labels.values())
    back = slot.parse_labels(labels)
    assert back == slot.SlotLabels("ci", "hv1", "ci-hv1-1", "libvirt", name, 42, int(NOW))
    assert isinstance(back.created_at, int)


def test_build_labels_leaves_out_what_is_not_known():
    labels = slot.build_labels(pool="ci", host="hv1", slot="ci-hv1-1", backend="libvirt", created_at=NOW)
    assert set(labels) == {"pool", "host", "slot", "backend", "created_at"}
    assert slot.parse_labels(labels).runner_id is None and slot.parse_labels(labels).runner_name is None


@pytest.mark.parametrize("kwargs, match", [
    ({"slot": "ci-hv2-1"}, "not a slot of pool 'ci' on host 'hv1'"),
    ({"slot": "other-hv1-1"}, "not a slot of pool"),
    ({"runner_name": "ci-hv1-2-k3x9qa"}, "not a generation of slot 'ci-hv1-1'"),
    ({"runner_name": "ci-hv1-1"}, "not a generation"),
    ({"runner_id": "x"}, "runner id must be an integer"),
    ({"runner_id": 0}, "runner id must be at least 1"),
    ({"created_at": "soon"}, "created_at"),
    ({"backend": ""}, "backend must be a non-empty string"),
])
def test_build_labels_refuses(kwargs, match):
    args = dict(pool="ci", host="hv1", slot="ci-hv1-1", backend="libvirt", created_at=NOW)
    args.update(kwargs)
    with pytest.raises(SlotError, match=match):
        slot.build_labels(**args)


@pytest.mark.parametrize("labels, expected", [
    (None, slot.SlotLabels(None, None, None, None, None, None, None)),
    ("not a mapping", slot.SlotLabels(None, None, None, None, None, None, None)),
    ({"pool": " ci ", "runner_name": "", "runner_id": "", "created_at": ""},
     slot.SlotLabels("ci", None, None, None, None, None, None)),
    ({"runner_id": " 7 ", "created_at": "1750000000.5"}, slot.SlotLabels(None, None, None, None, None, 7, 1750000000.5)),
    ({"runner_id": "4.0", "created_at": "nan"}, slot.SlotLabels(None, None, None, None, None, None, None)),
    ({"runner_id": 9, "created_at": 12}, slot.SlotLabels(None, None, None, None, None, 9, 12)),
    ({"created_at": "inf"}, slot.SlotLabels(None, None, None, None, None, None, None)),
])
def test_parse_labels_never_raises(labels, expected):
    assert slot.parse_labels(labels) == expected


def test_labels_match():
    labels = slot.parse_labels({"pool": "ci", "host": "HV1.example.com"})
    assert slot.labels_match(labels, "ci", "hv1")
    assert not slot.labels_match(labels, "ci", "hv10")
    assert not slot.labels_match(labels, "cx", "hv1")
    assert not slot.labels_match(slot.parse_labels({"pool": "ci", "host": "..."}), "ci", "hv1")


# --- the generation check -------------------------------------------------------------------------

OLD = "ci-hv1-1-aaaaaa"
NEW = "ci-hv1-1-bbbbbb"


def vm(runner=OLD, **labels):
    base = {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "runner_name": runner}
    base.update(labels)
    return {"name": "ci-hv1-1", "state": "running", "labels": {k: v for k, v in base.items() if v is not None}}


def check(action, current, runner_name=None, **kwargs):
    args = dict(action=action, slot="ci-hv1-1", pool="ci", host="hv1", vm=current, runner_name=runner_name)
    args.update(kwargs)
    return slot.check_generation(**args)


@pytest.mark.parametrize("action, current, runner_name, outcome, reason", [
    ("create", None, None, "created", "it held no VM"),
    ("create", vm(), None, "skipped", "it already holds runner " + OLD),
    ("create", vm(runner=None), None, "skipped", "it already holds a VM without a runner name"),
    ("recreate", vm(), None, "recreated", "it held runner " + OLD),
    ("recreate", vm(), OLD, "recreated", "it held runner " + OLD),
    ("recreate", vm(NEW), OLD, "skipped", f"it now holds runner {NEW}, not runner {OLD}"),
    ("recreate", vm(runner=None), OLD, "skipped", f"it now holds a VM without a runner name, not runner {OLD}"),
    ("recreate", None, OLD, "skipped", f"it now holds no VM, not runner {OLD}"),
    ("recreate", None, None, "recreated", "it held no VM"),
    ("remove", vm(), OLD, "removed", "it held runner " + OLD),
    ("remove", vm(NEW), OLD, "skipped", f"it now holds runner {NEW}, not runner {OLD}"),
    ("remove", None, None, "removed", "it held no VM"),
    ("recreate", vm(pool="other"), None, "skipped", "its VM is not this pool's slot"),
    ("remove", vm(host="hv2"), OLD, "skipped", "its VM is not this pool's slot"),
    ("recreate", vm(slot="ci-hv1-2"), None, "skipped", "its VM is not this pool's slot"),
    ("remove", {"name": "ci-hv1-1", "state": "running", "labels": {}}, None, "skipped",
     "its VM is not this pool's slot (labels pool=None host=None slot=None): left alone"),
])
def test_check_generation(action, current, runner_name, outcome, reason):
    result = check(action, current, runner_name)
    assert result["outcome"] == outcome
    assert result["act"] is (outcome != "skipped")
    assert result["reason"].startswith(reason), result["reason"]
    assert result["vm"] is (current is not None)
    assert result["runner_name"] == (slot.parse_labels((current or {}).get("labels")).runner_name)


def test_check_generation_reads_a_full_host_name():
    assert check("recreate", vm(host="hv1.example.com"), OLD, host="hv1.example.com")["act"]


@pytest.mark.parametrize("kwargs, match", [
    ({"action": "keep"}, "action must be one of create, recreate, remove"),
    ({"slot": "ci-hv2-1"}, "'ci-hv2-1' is not a slot of pool 'ci' on host 'hv1'"),
    ({"slot": "nonsense"}, "is not a slot of pool"),
    ({"pool": "CI"}, "pool name 'CI'"),
    ({"runner_name": 5}, "runner_name must be a runner name or null"),
    ({"action": "create", "runner_name": OLD}, "create makes a new generation in an empty slot"),
])
def test_check_generation_refuses_bad_requests(kwargs, match):
    args = dict(action="recreate", slot="ci-hv1-1", pool="ci", host="hv1", vm=None, runner_name=None)
    args.update(kwargs)
    with pytest.raises(SlotError, match=match):
        slot.check_generation(**args)
