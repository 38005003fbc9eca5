# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The slot contract, exactly where `make mutate` found it untested (issue 14): the words of every
refusal, the length bound met (not passed), the staged and retired VM names of a slot's other
generations, and the staged and config labels."""

from __future__ import annotations

import random

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _slot as slot
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

RUNNER = "ci-hv1-1-0abcde"


def refusal(func, *args, **kwargs):
    with pytest.raises(SlotError) as err:
        func(*args, **kwargs)
    return str(err.value)


# -- the words of every refusal ---------------------------------------------------------------------
@pytest.mark.parametrize("value, words", [
    (True, "count must be an integer, got True"),
    ("x", "count must be an integer, got 'x'"),
    (7.5, "count must be a whole number, got 7.5"),
    (-1, "count must be at least 0, got -1"),
])
def test_as_int_refusals(value, words):
    assert refusal(slot.as_int, value, "count") == words


def test_as_int_takes_whole_floats_and_padded_digit_strings():
    assert slot.as_int(3.0, "count") == 3 and slot.as_int(" 4 ", "count") == 4
    assert refusal(slot.as_int, 0, "slot index", 1) == "slot index must be at least 1, got 0"


@pytest.mark.parametrize("value, words", [
    (False, "wait must be a number of seconds, got False"),
    ("soon", "wait must be a number of seconds, got 'soon'"),
    (-1, "wait must be a non-negative number of seconds, got -1"),
])
def test_as_seconds_refusals(value, words):
    assert refusal(slot.as_seconds, value, "wait") == words


def test_name_refusals():
    assert refusal(slot.validate_pool_name, "") == "runner pool name must be a non-empty string, got ''"
    assert refusal(slot.validate_pool_name, "-ci") == (
        "runner pool name '-ci' is invalid: use 1 to 20 characters of a-z, 0-9 and '-', "
        "starting with a letter or a digit")
    assert refusal(slot.host_short_name, " ") == "host name must be a non-empty string, got ' '"
    assert refusal(slot.host_short_name, "_.example.com") == (
        "host name '_.example.com' has no usable first label: the slot names need at least one letter or "
        "digit before the first '.'")
    assert refusal(slot.slot_name, "ci", "hv1", "x") == "slot index must be an integer, got 'x'"
    assert refusal(slot.slot_name, "ci", "hv1", 0) == "slot index must be at least 1, got 0"
    assert refusal(slot.slot_names, "ci", "hv1", "x") == "pool size must be an integer, got 'x'"
    assert refusal(slot.runner_name, "nope", 0) == (
        "slot name must look like <pool>-<host>-<index> (e.g. ci-hv1-1), got 'nope'")
    assert refusal(slot.runner_name, "ci-hv1-1", -5) == (
        "now (epoch seconds) must be a non-negative number of seconds, got -5")
    assert refusal(slot.minted_at, RUNNER, -5) == "now (epoch seconds) must be a non-negative number of seconds, got -5"


# -- the length bound: at the bound, not past it ----------------------------------------------------
def test_a_slot_name_of_exactly_the_bound_is_allowed_and_one_more_is_not():
    host = "h" * (slot.MAX_SLOT_LEN - len("ci--1"))
    longest = slot.slot_name("ci", host, 1)
    assert len(longest) == slot.MAX_SLOT_LEN
    assert len(slot.runner_name(longest, 0, random.Random(1))) == slot.MAX_RUNNER_NAME_LEN
    too_long = "ci-%s-10" % host
    assert refusal(slot.slot_name, "ci", host, 10) == (
        "slot name %r is %d characters long; runner names (%s-xxxxxx) must fit in 63 characters "
        "(a hostname label): use a shorter pool or host name" % (too_long, len(too_long), too_long))
    assert refusal(slot.runner_name, too_long, 0) == (
        "slot name %r is too long for runner names of at most 63 characters" % too_long)


# -- a slot's staged and retired VMs ----------------------------------------------------------------
def test_staged_name():
    assert slot.staged_name(RUNNER) == "ci-hv1-1.0abcde"
    assert slot.staged_name("ci-big-hv1-12-zz0000") == "ci-big-hv1-12.zz0000"


@pytest.mark.parametrize("name", [None, 5, "", "ci-hv1-1", "ci-hv1-1-0abcd", "ci-hv1-1-0ABCDE", "ci-hv1-x-0abcde",
                                  "ci-hv1-1-0abcde1"])
def test_a_runner_name_that_is_none_has_no_staged_name(name):
    assert refusal(slot.staged_name, name) == (
        "runner name must look like <slot>-<6 characters of a-z and 0-9>, got %r" % (name,))


def test_retired_name_of_a_generation():
    assert slot.retired_name("ci-hv1-1", RUNNER) == "ci-hv1-1_0abcde"


@pytest.mark.parametrize("runner", [None, "garbage"])
def test_retired_name_without_a_generation_gets_a_random_suffix(runner):
    rand = random.Random(7)
    expected = random.Random(7).randrange(36 ** 6)
    name = slot.retired_name("ci-hv1-1", runner, rand)
    suffix = name[len("ci-hv1-1_"):]
    assert name.startswith("ci-hv1-1_") and len(suffix) == 6 and int(suffix, 36) == expected
    other = slot.retired_name("ci-hv1-1", runner)  # the system's random source
    assert other.startswith("ci-hv1-1_") and len(other) == len(name)


def test_retired_suffixes_cover_all_six_base36_places():
    class Top(random.Random):
        def randrange(self, *args):  # pylint: disable=arguments-differ
            return args[0] - 1
    assert slot.retired_name("ci-hv1-1", None, Top()) == "ci-hv1-1_zzzzzz"


def test_retired_name_refusals():
    assert refusal(slot.retired_name, "nope", RUNNER) == (
        "slot name must look like <pool>-<host>-<index> (e.g. ci-hv1-1), got 'nope'")
    assert refusal(slot.retired_name, "ci-hv1-2", RUNNER) == (
        "runner name %r is not a generation of slot 'ci-hv1-2'" % RUNNER)


@pytest.mark.parametrize("name, found", [
    ("ci-hv1-1", (("ci", "hv1", 1), "slot", None)),
    ("ci-hv1-1.0abcde", (("ci", "hv1", 1), "staged", "0abcde")),
    ("ci-hv1-1_0abcde", (("ci", "hv1", 1), "retired", "0abcde")),
    ("ci-gpu-h.v-2.0abcde", None),
    ("ci-hv1-1.0abcd", None),
    ("ci-hv1-1_0abcde1", None),
    ("ci-hv1-1.0abcde.0abcde", None),
    ("other-hv1-1.0abcde", None),
    ("other-hv1-1", None),
    ("ci-hv1-1-0abcde", None),
    (None, None),
    (7, None),
])
def test_parse_vm_name(name, found):
    parsed = slot.parse_vm_name(name, ["ci"])
    if found is None:
        assert parsed is None
    else:
        assert parsed == slot.VmName(slot.SlotName(*found[0]), found[1], found[2])
        assert (parsed.kind, parsed.suffix, parsed.slot.name) == (found[1], found[2], "ci-hv1-1")


def test_parse_vm_name_takes_the_longest_pool_and_any_iterable_of_pools():
    assert slot.parse_vm_name("ci-gpu-h-3.abc123", ["ci", "ci-gpu"]) == slot.VmName(
        slot.SlotName("ci-gpu", "h", 3), "staged", "abc123")
    assert slot.parse_vm_name("ci-a-3_abc123", ("ci",)) == slot.VmName(slot.SlotName("ci", "a", 3), "retired", "abc123")
    assert slot.parse_vm_name("ci-a-3", "ci") == slot.VmName(slot.SlotName("ci", "a", 3), "slot", None)


# -- the staged and config labels -------------------------------------------------------------------
BASE = {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "backend": "libvirt", "created_at": 5}


def test_build_labels_with_staged_and_config():
    labels = slot.build_labels(**BASE, runner_name=RUNNER, staged=True, config="abc123")
    assert labels == {"pool": "ci", "host": "hv1", "slot": "ci-hv1-1", "backend": "libvirt", "runner_name": RUNNER,
                      "created_at": "5", "staged": "yes", "config": "abc123"}
    assert "staged" not in slot.build_labels(**BASE) and "config" not in slot.build_labels(**BASE, config="")


def labels_with(**changes):
    """build_labels() of BASE with some of its arguments changed."""
    arguments = dict(BASE)
    arguments.update(changes)
    return slot.build_labels(**arguments)


def test_build_labels_refusals():
    assert refusal(labels_with, slot="ci-hv2-1") == "slot 'ci-hv2-1' is not a slot of pool 'ci' on host 'hv1'"
    assert refusal(labels_with, runner_name="ci-hv1-2-0abcde") == (
        "runner name 'ci-hv1-2-0abcde' is not a generation of slot 'ci-hv1-1'")
    assert refusal(labels_with, backend="") == "backend must be a non-empty string, got ''"
    assert refusal(labels_with, created_at=-1) == (
        "created_at (epoch seconds) must be a non-negative number of seconds, got -1")


def test_parse_labels_reads_staged_and_config():
    labels = slot.parse_labels({"pool": "ci", "staged": "yes", "config": " abc123 "})
    assert (labels.staged, labels.config) == (True, "abc123")
    assert slot.parse_labels({"staged": "no"}).staged is False
    assert slot.parse_labels({"staged": "YES"}).staged is False
    assert slot.parse_labels({}).config is None
    assert slot.parse_labels(slot.build_labels(**BASE, staged=True, config="h1")) == slot.SlotLabels(
        "ci", "hv1", "ci-hv1-1", "libvirt", None, None, 5, True, "h1")


# -- the generation check's refusals and the stage action -------------------------------------------
def check(**kwargs):
    return slot.check_generation(**dict({"slot": "ci-hv1-1", "pool": "ci", "host": "hv1"}, **kwargs))


def test_check_generation_refusals():
    assert refusal(check, action="make") == "action must be one of create, recreate, remove, stage, got 'make'"
    assert refusal(check, action="create", slot="ci-hv2-1") == (
        "slot 'ci-hv2-1' is not a slot of pool 'ci' on host 'hv1' (names are <pool>-<host>-<index>)")
    assert refusal(check, action="remove", runner_name=5) == "runner_name must be a runner name or null, got 5"
    assert refusal(check, action="create", runner_name=RUNNER) == (
        "create makes a new generation in an empty slot: it takes no runner_name (got %r)" % RUNNER)
    assert refusal(check, action="stage") == "stage prepares the generation after runner_name: it needs one"


def test_stage_acts_while_the_slot_holds_the_generation():
    vm = {"name": "ci-hv1-1", "state": "running",
          "labels": slot.build_labels(**BASE, runner_name=RUNNER)}
    assert check(action="stage", runner_name=RUNNER, vm=vm) == {
        "act": True, "outcome": "staged", "vm": True, "runner_name": RUNNER, "reason": "it held runner " + RUNNER}
    other = check(action="stage", runner_name="ci-hv1-1-111111", vm=vm)
    assert (other["act"], other["reason"]) == (False, "it now holds runner %s, not runner ci-hv1-1-111111" % RUNNER)
