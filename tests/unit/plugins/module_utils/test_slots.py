# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The batch core (rum_slots on the host): staging, the swap, locks, crashes - against libvirt's test driver.

The driver keeps its domains only while its connection is open, so one connection serves the whole
test (as the module's two calls and the controller between them would see one libvirtd).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _image as image
from ansible_collections.rum.pool.plugins.module_utils import _lock as locks
from ansible_collections.rum.pool.plugins.module_utils import _slot as contract
from ansible_collections.rum.pool.plugins.module_utils import _slots as slots
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")

URI = "test:///default"


class KeepOpen:
    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def close(self):
        return 0


class Clock:
    def __init__(self, now=1_750_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def conn():
    c = libvirt.open(URI)
    yield KeepOpen(c)
    c.close()


@pytest.fixture
def env(tmp_path, conn):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    cache = image.ImageCache(str(tmp_path / "cache"))
    cache.ensure(f"file://{base}", None)
    return {"tmp": tmp_path, "conn": conn, "base": f"file://{base}", "cache": str(tmp_path / "cache"),
            "storage": str(tmp_path / "vms"), "locks": str(tmp_path / "locks"), "clock": Clock()}


def pool_settings(env, **more):
    out = {"name": "ci", "host": "hv1", "size": 2, "backend": "libvirt", "labels": ["self-hosted", "linux"],
           "runner_group": "Default", "runner_group_id": None, "registration": "jit", "image": {"url": env["base"]},
           "vm": {"uri": URI, "domain_type": "qemu", "memory_mb": 256, "vcpus": 1, "storage_dir": env["storage"],
                  "image_cache_dir": env["cache"]},
           "isolation": {"enabled": False}, "runner_dir": "/opt/actions-runner", "runner_user": "runner",
           "cache_url": None, "online_timeout": 600, "stage": True, "concurrency": 4}
    out.update(more)
    return out


def host(env, **more):
    return slots.SlotHost(pool_settings(env, **more), connect=lambda uri: env["conn"], lock_dir=env["locks"],
                          clock=env["clock"], watcher=lambda *a: False)


def jit(name):
    return base64.b64encode(json.dumps({".runner": json.dumps({"agentName": name})}).encode()).decode()


MINTED = []


def credentials(jobs, runner_id=500):
    """What the controller hands act: a JIT config per slot that needs one (recorded in MINTED)."""
    out = {}
    for index, job in enumerate(jobs):
        if job.step in ("boot", "stage"):
            MINTED.append(job.new_runner)
            job.runner_id = runner_id + index  # the controller hands the id with the job, the secret apart
            out[job.slot] = {"jit_config": jit(job.new_runner)}
        elif job.step == "remove":
            out[job.slot] = {"deregistered": True}
    return out


def run(env, jobs, lock_timeout=0, first=None, **more):
    """prepare, then act on what prepare handed back (as the action plugin does), in two SlotHosts
    (``first``: the one that planned, as in one module run)."""
    first = first or host(env, **more)
    done = first.prepare(jobs, lock_timeout=lock_timeout)
    left = [slots.Job.from_report(job.report()) for job in done if job.step]
    if left:
        host(env, **more).act(left, credentials(left))
    by_slot = {job.slot: job for job in done}
    by_slot.update({job.slot: job for job in left})
    return by_slot


def converge(env, runners=(), absent=False, **more):
    h = host(env, **more)
    plan = h.plan(h.look(), list(runners), absent=absent)
    jobs = h.jobs_from_plan(plan)
    return plan, run(env, jobs + (h.swept(jobs) if absent else []), first=h, **more)


def domains(env):
    out = {}
    for dom in env["conn"].listAllDomains(0):
        if dom.name().startswith("ci-"):
            meta = vm.read_meta(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            out[dom.name()] = {"state": dom.info()[0], "uuid": dom.UUIDString(), "labels": meta.get("labels") or {},
                               "dir": (meta.get("paths") or {}).get("dir")}
    return out


RUNNING, SHUTOFF = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_SHUTOFF


def busy(name, busy_=True):
    return {"id": 1, "name": name, "status": "online", "busy": busy_}


# --- converge, stage, swap ------------------------------------------------------------------------

def test_a_converge_from_empty_boots_every_slot_as_a_promoted_generation(env):
    plan, jobs = converge(env)
    assert plan["by_action"]["create"] == ["ci-hv1-1", "ci-hv1-2"]
    found = domains(env)
    assert sorted(found) == ["ci-hv1-1", "ci-hv1-2"]
    for slot, info in found.items():
        labels = info["labels"]
        assert info["state"] == RUNNING and "staged" not in labels and labels["config"] == slots.generation_config(
            pool_settings(env))
        runner = labels["runner_name"]
        assert jobs[slot].outcome == "created" and jobs[slot].new_runner == runner and runner in MINTED
        # each generation keeps the directory it was made in: <slot>.<suffix>, and <slot> links to it
        assert info["dir"] == os.path.join(env["storage"], contract.staged_name(runner))
        assert os.readlink(os.path.join(env["storage"], slot)) == contract.staged_name(runner)
        assert labels["created_at"] == str(int(env["clock"].now))
    assert sorted(os.listdir(env["locks"])) == [], "every slot lock is released"


def test_a_busy_slot_is_staged_and_its_job_end_starts_the_staged_generation(env):
    converge(env)
    first = domains(env)["ci-hv1-1"]
    old_runner = first["labels"]["runner_name"]
    env["clock"].now += 60

    # the job starts: the slot's next generation is defined and never started
    staged = run(env, [slots.Job("ci-hv1-1", "stage", old_runner)])["ci-hv1-1"]
    assert staged.outcome == "staged" and staged.step is None
    name = contract.staged_name(staged.new_runner)
    found = domains(env)
    assert found[name]["state"] == SHUTOFF and found[name]["labels"]["staged"] == "yes"
    assert found["ci-hv1-1"]["uuid"] == first["uuid"], "the slot's VM is untouched"
    # a second in_progress (a redelivery) stages nothing more
    again = run(env, [slots.Job("ci-hv1-1", "stage", old_runner)])["ci-hv1-1"]
    assert again.outcome == "skipped" and "already has a staged generation" in again.reason
    assert len([n for n in domains(env) if n.startswith("ci-hv1-1.")]) == 1

    # the job completes: one module call, no new runner, the staged VM runs under the slot's name
    env["clock"].now += 3600
    MINTED.clear()
    done = host(env).prepare([slots.Job("ci-hv1-1", "recreate", old_runner)])[0]
    assert done.outcome == "recreated" and done.step is None and "started its staged generation" in done.reason
    assert MINTED == [] and done.new_runner is None
    after = domains(env)
    assert after["ci-hv1-1"]["uuid"] == found[name]["uuid"] and after["ci-hv1-1"]["state"] == RUNNING
    assert "staged" not in after["ci-hv1-1"]["labels"] and after["ci-hv1-1"]["labels"]["created_at"] == str(
        int(env["clock"].now)), "a promoted generation's age starts at its start"
    assert sorted(after) == ["ci-hv1-1", "ci-hv1-2"], "the old generation is gone (retired, then removed)"
    assert not os.path.exists(first["dir"]), "with its directory"
    assert os.readlink(os.path.join(env["storage"], "ci-hv1-1")) == name, "the slot's link follows its VM"
    assert {"name": old_runner, "id": int(first["labels"]["runner_id"])} in done.delete
    assert set(done.timings) >= {"destroy", "start", "remove"}

    # a repeat of that completed event does nothing: the slot holds the new generation
    repeat = host(env).prepare([slots.Job("ci-hv1-1", "recreate", old_runner)])[0]
    assert repeat.outcome == "skipped" and f"it now holds runner {staged.new_runner}" in repeat.reason
    assert domains(env)["ci-hv1-1"]["uuid"] == found[name]["uuid"]


def test_without_a_staged_generation_a_recreate_boots_a_new_one(env):
    converge(env)
    old = domains(env)["ci-hv1-2"]
    jobs = run(env, [slots.Job("ci-hv1-2", "recreate", old["labels"]["runner_name"])])
    job = jobs["ci-hv1-2"]
    assert job.outcome == "recreated" and job.new_runner in MINTED
    now = domains(env)["ci-hv1-2"]
    assert now["uuid"] != old["uuid"] and now["labels"]["runner_name"] == job.new_runner and now["state"] == RUNNING
    assert not os.path.exists(old["dir"]) and sorted(domains(env)) == ["ci-hv1-1", "ci-hv1-2"]


def test_a_converge_stages_busy_slots_and_keeps_their_staged_runners(env):
    converge(env)
    runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    plan, jobs = converge(env, [busy(runner)])
    assert plan["by_action"]["stage"] == ["ci-hv1-1"] and jobs["ci-hv1-1"].outcome == "staged"
    staged_runner = jobs["ci-hv1-1"].new_runner
    # the next converge keeps it, and spares its runner record from the orphan prune
    plan, _jobs = converge(env, [busy(runner), {"id": 7, "name": staged_runner, "status": "offline", "busy": False}])
    row = next(r for r in plan["slots"] if r["slot"] == "ci-hv1-1")
    assert row["action"] == "keep" and row["staged"] == staged_runner
    assert staged_runner in plan["keep_runners"] and plan["orphans"] == [] and plan["summary"]["changes"] == 0


@pytest.mark.parametrize("change", [{"labels": ["self-hosted", "linux", "gpu"]},
                                    {"image": {"url": "file:///other.qcow2", "checksum": "sha256:" + "1" * 64}}])
def test_a_staged_generation_is_replaced_when_the_pools_image_or_labels_change(env, change):
    converge(env)
    runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    staged = run(env, [slots.Job("ci-hv1-1", "stage", runner)])["ci-hv1-1"].new_runner
    h = host(env, **change)
    plan = h.plan(h.look(), [busy(runner), {"id": 9, "name": staged, "status": "offline", "busy": False}])
    assert [d["vm"] for d in plan["discard"]] == [contract.staged_name(staged)]
    assert "made with other pool settings" in plan["discard"][0]["reason"]
    assert plan["by_action"]["stage"] == ["ci-hv1-1"]
    if "image" in change:
        return  # staging again needs the new image: the planner's verdict is what this case shows
    jobs = run(env, h.jobs_from_plan(plan), **change)
    fresh = jobs["ci-hv1-1"].new_runner
    assert fresh != staged and contract.staged_name(staged) not in domains(env)
    assert domains(env)[contract.staged_name(fresh)]["labels"]["config"] == slots.generation_config(
        pool_settings(env, **change))
    # and a job end with the old settings' staged generation gone starts the new one, never the old
    done = host(env, **change).prepare([slots.Job("ci-hv1-1", "recreate", runner)])[0]
    assert done.step is None and domains(env)["ci-hv1-1"]["labels"]["runner_name"] == fresh


def test_a_staged_generation_never_survives_its_slots_removal_or_a_teardown(env):
    converge(env)
    runners = {slot: info["labels"]["runner_name"] for slot, info in domains(env).items()}
    for slot, runner in runners.items():
        run(env, [slots.Job(slot, "stage", runner)])
    assert len(domains(env)) == 4
    # shrink to one slot: slot 2 goes with its staged generation
    plan, jobs = converge(env, [busy(runners["ci-hv1-1"]), busy(runners["ci-hv1-2"], False)], size=1)
    assert jobs["ci-hv1-2"].outcome == "removed"
    assert sorted(n.split(".")[0] for n in domains(env)) == ["ci-hv1-1", "ci-hv1-1"]
    # teardown: nothing of the pool is left, and every runner record it had is handed to the controller
    assert not os.path.lexists(os.path.join(env["storage"], "ci-hv1-2")), "a removed slot keeps no link"
    plan, jobs = converge(env, [busy(runners["ci-hv1-1"], False)], absent=True)
    assert domains(env) == {}
    assert [os.path.basename(p) for p in os.listdir(env["storage"]) if not p.startswith(".")] == []
    deleted = {r["name"] for job in jobs.values() for r in job.delete}
    assert runners["ci-hv1-1"] in deleted


def test_a_teardown_removes_the_directory_of_a_generation_deleted_behind_the_pools_back(env):
    converge(env)
    lost = domains(env)["ci-hv1-2"]["labels"]["runner_name"]
    gone = env["conn"].lookupByName("ci-hv1-2")
    gone.destroy()
    gone.undefine()  # the VM deleted by hand: its directory stays
    os.makedirs(os.path.join(env["storage"], "ci-hv2-1.abcdef"))  # another host's: never touched
    assert contract.staged_name(lost) in os.listdir(env["storage"])
    plan, jobs = converge(env, absent=True)
    assert (jobs["ci-hv1-2"].action, jobs["ci-hv1-2"].outcome) == ("sweep", "cleaned")
    assert any("its VM is gone" in change for change in jobs["ci-hv1-2"].changes)
    assert not os.listdir(env["locks"]), "the slot was swept under its lock, released"
    assert sorted(p for p in os.listdir(env["storage"]) if not p.startswith(".")) == ["ci-hv2-1.abcdef"]


class Filter:
    def __init__(self, store, name):
        self.store, self._name = store, name

    def name(self):
        return self._name

    def undefine(self):
        self.store.pop(self._name)
        return 0


class WithFilters(KeepOpen):
    """The test driver has no network filter driver: the filter calls the sweep makes, kept in a dict."""

    def __init__(self, conn, names):
        super().__init__(conn)
        self.filters = dict.fromkeys(names, True)

    def listAllNWFilters(self, flags=0):  # noqa: N802 - libvirt's names
        return [Filter(self.filters, name) for name in self.filters]

    def nwfilterLookupByName(self, name):  # noqa: N802
        if name not in self.filters:
            raise libvirt.libvirtError("no nwfilter with matching name")  # an error code the lookup reads as "none"
        return Filter(self.filters, name)


def nic_with_filter(conn, name, filter_name):
    """A domain of someone else's whose NIC names ``filter_name`` (a filter in use is never swept)."""
    conn.defineXML(f"<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os>"
                   f"<devices><interface type='network'><source network='default'/>"
                   f"<mac address='52:54:00:11:22:33'/><filterref filter='{filter_name}'/></interface></devices></domain>")


@pytest.fixture
def filters(env, monkeypatch):
    monkeypatch.setattr(slots.nwfilter, "lookup", lambda conn, name: conn.filters and (
        Filter(conn.filters, name) if name in conn.filters else None))
    kept = WithFilters(env["conn"]._conn, [
        "rum-vm-ci-hv1-2.abcdef",   # slot 2's generation, its VM gone: swept
        "rum-vm-ci-hv1-3",          # slot 3 (slot-by-slot path), its VM gone: swept at teardown
        "rum-vm-ci-hv1-1.inuse",    # named by a domain: kept
        "rum-vm-ci-hv2-1.abcdef",   # another host's: never touched
        "rum-vm-other-hv1-1.abcdef",  # another pool's
        "clean-traffic",            # libvirt's own
    ])
    env["conn"] = kept
    nic_with_filter(kept, "someone-elses", "rum-vm-ci-hv1-1.inuse")
    yield kept
    kept.lookupByName("someone-elses").undefine()


def test_a_vm_deleted_by_hand_takes_its_runner_record_along_even_a_young_one(env):
    """Under the slot's lock a record none of the slot's VMs holds is a leftover, however young (the
    plan's orphan prune spares young ones: it does not hold the slot's lock); the slot-by-slot
    path prunes the same. Records are deleted after act, so they survive prepare's hand-over."""
    converge(env)
    lost = domains(env)["ci-hv1-2"]["labels"]["runner_name"]
    kept = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    gone = env["conn"].lookupByName("ci-hv1-2")
    gone.destroy()
    gone.undefine()
    env["clock"].now += 30  # moments later: far within online_timeout
    runners = [{"id": 7, "name": lost, "status": "offline", "busy": False},
               {"id": 8, "name": "ci-hv1-2-zzzzzz", "status": "online", "busy": False},
               {"id": 9, "name": kept, "status": "offline", "busy": False},
               {"id": 10, "name": "ci-hv2-2-abcdef", "status": "offline", "busy": False}]
    plan, jobs = converge(env, runners)
    assert [orphan["name"] for orphan in plan["orphans"]] == [], "young: the plan's prune spares it"
    assert jobs["ci-hv1-2"].outcome == "created" and jobs["ci-hv1-2"].step is None
    assert jobs["ci-hv1-2"].delete == [{"name": lost, "id": 7}], "online, another slot's or host's: never"
    assert f"deregister runner {lost} (no VM of the slot holds it)" in jobs["ci-hv1-2"].changes
    assert "ci-hv1-1" not in jobs


def test_a_converge_removes_the_filter_a_vm_deleted_behind_the_pools_back_left(env, filters):
    _plan, jobs = converge(env)
    # slot 2 had no VM: the filter left by an earlier one went before its new VM was made
    assert "remove network filter rum-vm-ci-hv1-2.abcdef (its VM is gone)" in jobs["ci-hv1-2"].changes
    assert jobs["ci-hv1-2"].changes.index("remove network filter rum-vm-ci-hv1-2.abcdef (its VM is gone)") < \
        next(i for i, change in enumerate(jobs["ci-hv1-2"].changes) if change.startswith("define "))
    lost = contract.staged_name(domains(env)["ci-hv1-2"]["labels"]["runner_name"])
    filters.filters["rum-vm-" + lost] = True  # what an isolated generation has (isolation is off here)
    gone = env["conn"].lookupByName("ci-hv1-2")
    gone.destroy()
    gone.undefine()
    _plan, jobs = converge(env)
    assert jobs["ci-hv1-2"].outcome == "created"
    assert f"remove network filter rum-vm-{lost} (its VM is gone)" in jobs["ci-hv1-2"].changes
    assert sorted(filters.filters) == ["clean-traffic", "rum-vm-ci-hv1-1.inuse", "rum-vm-ci-hv1-3",
                                       "rum-vm-ci-hv2-1.abcdef", "rum-vm-other-hv1-1.abcdef"]
    assert "ci-hv1-1" not in jobs, "slot 1 had nothing to do"
    assert domains(env).keys() == {"ci-hv1-1", "ci-hv1-2"}


def test_a_teardown_sweeps_the_filters_left_without_their_vms_and_only_those(env, filters):
    converge(env)
    _plan, jobs = converge(env, absent=True)
    assert domains(env) == {}
    assert sorted(filters.filters) == ["clean-traffic", "rum-vm-ci-hv1-1.inuse", "rum-vm-ci-hv2-1.abcdef",
                                       "rum-vm-other-hv1-1.abcdef"]
    assert jobs["ci-hv1-3"].action == "sweep" and jobs["ci-hv1-3"].outcome == "cleaned"
    assert jobs["ci-hv1-3"].changes == ["remove network filter rum-vm-ci-hv1-3 (its VM is gone)"]
    assert not any("inuse" in change for job in jobs.values() for change in job.changes)


def test_the_sweep_in_check_mode_only_says_what_it_would_remove(env, filters):
    converge(env)
    h = slots.SlotHost(pool_settings(env), connect=lambda uri: env["conn"], lock_dir=env["locks"],
                       clock=env["clock"], watcher=lambda *a: False, check_mode=True)
    filters.filters["rum-vm-ci-hv1-4.abcdef"] = True
    jobs = h.swept([slots.Job("ci-hv1-1", "remove"), slots.Job("ci-hv1-2", "remove")])
    assert [(job.slot, job.reason) for job in jobs] == [
        ("ci-hv1-3", "a generation's network filter was left without its VM"),
        ("ci-hv1-4", "a generation's network filter was left without its VM")]
    h.prepare(jobs)
    assert [job.changes for job in jobs] == [["remove network filter rum-vm-ci-hv1-3 (its VM is gone)"],
                                             ["remove network filter rum-vm-ci-hv1-4.abcdef (its VM is gone)"]]
    assert len(filters.filters) == 6, "check mode removes nothing"


def test_a_host_without_the_filter_driver_has_no_filters_to_sweep(env):
    assert slots.nwfilter.names(env["conn"]) == []


def test_a_staged_vm_found_running_is_never_started_or_used(env):
    converge(env)
    runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    staged = run(env, [slots.Job("ci-hv1-1", "stage", runner)])["ci-hv1-1"].new_runner
    env["conn"].lookupByName(contract.staged_name(staged)).create()  # someone started it by hand
    done = run(env, [slots.Job("ci-hv1-1", "recreate", runner)])["ci-hv1-1"]
    assert done.new_runner is not None and done.new_runner != staged, "a new generation was booted instead"
    assert contract.staged_name(staged) not in domains(env)
    assert domains(env)["ci-hv1-1"]["labels"]["runner_name"] == done.new_runner


# --- crashes ---------------------------------------------------------------------------------------

def crash_after_retire(env, slot="ci-hv1-1"):
    """A swap killed after "destroy old, rename it away" and before "start staged"."""
    old = domains(env)[slot]
    runner = old["labels"]["runner_name"]
    staged = run(env, [slots.Job(slot, "stage", runner)])[slot].new_runner
    dom = env["conn"].lookupByName(slot)
    dom.destroy()
    dom.rename(contract.retired_name(slot, runner), 0)
    return runner, staged


def test_a_crash_between_destroy_and_start_is_healed_by_the_next_converge(env):
    converge(env)
    old_runner, staged = crash_after_retire(env)
    assert "ci-hv1-1" not in domains(env)
    plan, jobs = converge(env, [{"id": 3, "name": staged, "status": "offline", "busy": False}])
    row = next(r for r in plan["slots"] if r["slot"] == "ci-hv1-1")
    assert (row["action"], row["staged"]) == ("create", staged)
    assert jobs["ci-hv1-1"].outcome == "created" and jobs["ci-hv1-1"].new_runner is None
    found = domains(env)
    assert found["ci-hv1-1"]["labels"]["runner_name"] == staged and found["ci-hv1-1"]["state"] == RUNNING
    assert sorted(found) == ["ci-hv1-1", "ci-hv1-2"], "the retired generation was removed"
    assert old_runner in {r["name"] for r in jobs["ci-hv1-1"].delete}


def test_a_retried_recreate_finishes_an_interrupted_swap(env):
    converge(env)
    old_runner, staged = crash_after_retire(env)
    done = host(env).prepare([slots.Job("ci-hv1-1", "recreate", old_runner)])[0]
    assert done.outcome == "recreated" and "was interrupted" in done.reason
    assert domains(env)["ci-hv1-1"]["labels"]["runner_name"] == staged


def test_a_promoted_generation_that_never_started_is_started_once(env):
    """Killed after "rename the staged VM to the slot" and before its start: it carries the staged label."""
    converge(env)
    old = domains(env)["ci-hv1-1"]
    runner = old["labels"]["runner_name"]
    staged = run(env, [slots.Job("ci-hv1-1", "stage", runner)])["ci-hv1-1"].new_runner
    dom = env["conn"].lookupByName("ci-hv1-1")
    dom.destroy()
    dom.rename(contract.retired_name("ci-hv1-1", runner), 0)
    env["conn"].lookupByName(contract.staged_name(staged)).rename("ci-hv1-1", 0)
    assert domains(env)["ci-hv1-1"]["labels"]["staged"] == "yes"
    plan, jobs = converge(env)
    row = next(r for r in plan["slots"] if r["slot"] == "ci-hv1-1")
    assert row["action"] == "recreate" and "never started" in row["reason"]
    found = domains(env)["ci-hv1-1"]
    assert found["state"] == RUNNING and found["labels"]["runner_name"] == staged and "staged" not in found["labels"]
    assert jobs["ci-hv1-1"].new_runner is None
    # started once: a VM without the staged label that is off again (its job done) is never started again
    env["conn"].lookupByName("ci-hv1-1").destroy()
    plan, jobs = converge(env)
    assert jobs["ci-hv1-1"].new_runner not in (None, staged)
    assert domains(env)["ci-hv1-1"]["labels"]["runner_name"] == jobs["ci-hv1-1"].new_runner


# --- locks --------------------------------------------------------------------------------------------

def test_two_converges_at_once_change_nothing_twice(env):
    barrier = threading.Barrier(2)
    results = []

    def one():
        h = host(env, size=4)
        plan = h.plan(h.look(), [])
        barrier.wait()
        results.append(run(env, h.jobs_from_plan(plan), lock_timeout=60, size=4))

    threads = [threading.Thread(target=one), threading.Thread(target=one)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = domains(env)
    assert sorted(found) == [f"ci-hv1-{i}" for i in range(1, 5)], "one VM per slot, no staged or retired left"
    outcomes = sorted(job.outcome for jobs in results for job in jobs.values())
    assert outcomes.count("created") == 4 and outcomes.count("skipped") == 4
    skipped = [job for jobs in results for job in jobs.values() if job.outcome == "skipped"]
    assert all("it already holds runner" in job.reason for job in skipped)
    made = {job.new_runner for jobs in results for job in jobs.values() if job.outcome == "created"}
    assert {info["labels"]["runner_name"] for info in found.values()} == made


def test_a_slot_whose_lock_is_held_is_left_and_the_others_done(env):
    converge(env)
    held = locks.LockDir(env["locks"]).acquire("ci-hv1-1", owner="someone else")
    runners = {s: i["labels"]["runner_name"] for s, i in domains(env).items()}
    jobs = host(env).prepare([slots.Job(s, "recreate", r) for s, r in sorted(runners.items())])
    first, second = jobs
    assert first.outcome == "skipped" and first.held_by["owner"] == "someone else" and first.token is None
    assert "its lock is held" in first.reason
    assert second.step == "boot" and second.token, "prepared, its lock kept for act"
    assert locks.LockDir(env["locks"]).holder("ci-hv1-1")["token"] == held["token"], "the other's lock is untouched"


# --- remove, check mode, failures ------------------------------------------------------------------------

def test_an_online_runners_vm_waits_for_its_deregistration(env):
    converge(env)
    info = domains(env)["ci-hv1-2"]
    runner = {"id": int(info["labels"]["runner_id"]), "name": info["labels"]["runner_name"], "status": "online",
              "busy": False}
    h = host(env, size=1)
    plan = h.plan(h.look(), [runner])
    [job] = [j for j in h.prepare(h.jobs_from_plan(plan)) if j.slot == "ci-hv1-2"]
    assert job.step == "remove" and job.deregister == {"name": runner["name"], "id": runner["id"]}
    assert "ci-hv1-2" in domains(env), "nothing removed before GitHub forgets the runner"
    again = slots.Job.from_report(job.report())
    host(env, size=1).act([again], {"ci-hv1-2": {"deregistered": False}})
    assert again.outcome == "skipped" and "draining" in again.reason and "ci-hv1-2" in domains(env)
    assert not os.listdir(env["locks"])


def test_check_mode_changes_nothing(env):
    converge(env)
    before = domains(env)
    h = slots.SlotHost(pool_settings(env, size=3), connect=lambda uri: env["conn"], lock_dir=env["locks"],
                       clock=env["clock"], watcher=lambda *a: False, check_mode=True)
    plan = h.plan(h.look(), [])
    jobs = h.prepare(h.jobs_from_plan(plan))
    assert [(j.slot, j.step) for j in jobs if j.step] == [("ci-hv1-3", "boot")]
    assert domains(env) == before and not os.listdir(env["locks"])


def test_one_slots_failure_leaves_the_others_and_its_lock(env):
    h = host(env)
    jobs = h.prepare(h.jobs_from_plan(h.plan(h.look(), [])))
    left = [slots.Job.from_report(job.report()) for job in jobs]
    given = credentials(left)
    given["ci-hv1-1"] = {"jit_config": "not base64!"}
    host(env).act(left, given)
    bad, good = left
    assert bad.outcome == "failed" and "encoded_jit_config is not standard base64" in bad.reason
    assert good.outcome == "created" and sorted(domains(env)) == ["ci-hv1-2"]
    assert not os.listdir(env["locks"])


def test_only_libvirt_pools(env):
    with pytest.raises(slots.SlotsError, match="rum_slots works on libvirt hosts; this pool's backend is 'hyperv'"):
        slots.SlotHost(pool_settings(env, backend="hyperv"))


def test_the_config_hash_follows_what_shapes_a_generation(env):
    one = pool_settings(env)
    assert slots.generation_config(one) == slots.generation_config(dict(one, size=9, online_timeout=1))
    assert slots.generation_config(one) != slots.generation_config(dict(one, runner_user="other"))


def test_the_sweep_prunes_stray_taps_once_per_run_and_goes_on_when_it_cannot(env, monkeypatch):
    from ansible_collections.rum.pool.plugins.module_utils import _nftables as nftables  # pylint: disable=import-outside-toplevel
    calls = []
    monkeypatch.setattr(nftables, "prune", lambda conn, check_mode=False: calls.append(check_mode) or ["rum0123456789ab"])
    h = host(env)
    first, second = slots.Job("ci-hv1-1", "sweep"), slots.Job("ci-hv1-2", "sweep")
    h._prune_taps(first, False)  # pylint: disable=protected-access
    h._prune_taps(second, False)  # pylint: disable=protected-access
    assert calls == [False]
    assert first.changes == ["release rum0123456789ab from the nftables ruleset (no VM has them)"] and not second.changes

    def refused(conn, check_mode=False):
        raise nftables.NftError("nft cannot list set bound of table bridge rum_isolation: Operation not permitted")
    monkeypatch.setattr(nftables, "prune", refused)
    job = slots.Job("ci-hv1-1", "sweep")
    host(env)._prune_taps(job, False)  # pylint: disable=protected-access
    assert job.changes == ["could not prune the nftables ruleset: nft cannot list set bound of table bridge "
                           "rum_isolation: Operation not permitted"]
