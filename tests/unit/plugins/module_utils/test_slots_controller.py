# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller side of rum_slots: the fake GitHub over HTTP, the host side in process (libvirt's test driver)."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _github_options as github_options
from ansible_collections.rum.pool.plugins.module_utils import _lock as locks
from ansible_collections.rum.pool.plugins.module_utils import _slot as contract
from ansible_collections.rum.pool.plugins.module_utils import _slots as slots
from ansible_collections.rum.pool.plugins.module_utils import _slots_controller as controller
from tests.unit.plugins.module_utils.test_slots import Clock, KeepOpen, domains, pool_settings, RUNNING, SHUTOFF
from tests import needs

libvirt = needs.module("libvirt", "pip install libvirt-python (requirements-dev.txt)")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

PAT = "ghp_slotscontroller000000000000000000000"
REPO = "acme/slots"


@pytest.fixture
def github():
    fake = FakeGitHub()
    fake.url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    yield fake
    fake.stop()


@pytest.fixture
def env(tmp_path, github):
    import subprocess

    from ansible_collections.rum.pool.plugins.module_utils import _image as image

    conn = libvirt.open("test:///default")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    image.ImageCache(str(tmp_path / "cache")).ensure(f"file://{base}", None)
    yield {"tmp": tmp_path, "conn": KeepOpen(conn), "base": f"file://{base}", "cache": str(tmp_path / "cache"),
           "storage": str(tmp_path / "vms"), "locks": str(tmp_path / "locks"), "clock": Clock(), "github": github}
    conn.close()


def settings(env, **more):
    out = pool_settings(env, **more)
    out["github"] = {"api_url": env["github"].url, "repository": REPO, "token": PAT}
    out.setdefault("lock_timeout", 30)
    return out


def batch(env, check_mode=False, alive=lambda holder: None, warnings=None, sleep=None, **more):
    pool = settings(env, **more)

    def call(phase, **args):
        assert "github" not in args["pool"], "the GitHub credentials never reach the host"
        for given in (args.get("credentials") or {}).values():
            # Ansible masks every value of a no_log option in all the module's output: secrets only
            assert set(given) <= set(controller.SECRETS) and all(isinstance(v, (str, bool)) for v in given.values())
        host_args = {k: v for k, v in args.items() if k != "pool"}
        return slots.run_phase(args["pool"], phase=phase, check_mode=check_mode, connect=lambda uri: env["conn"],
                               lock_dir=env["locks"], clock=env["clock"], watcher=lambda *a: False, **host_args)

    api = github_options.connect(dict(pool["github"], timeout=10, max_retries=0, max_wait=0))
    return controller.Batch(pool, call=call, api=api, holder={"controller": "unit", "pid": 1}, check_mode=check_mode,
                            alive=alive, warn=(warnings.append if warnings is not None else lambda msg: None),
                            sleep=sleep or (lambda seconds: pytest.fail(f"the batch waited {seconds} s")))


def runners(env):
    return {r["name"]: r for r in env["github"].admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}


def calls(env, path):
    found = env["github"].admin("GET", f"/calls?path={path}")
    return found.get("calls", found) if isinstance(found, dict) else found


def test_converge_mints_boots_and_a_rerun_changes_nothing(env):
    done = batch(env).run("converge")
    assert done["changed"] and not done.get("failed")
    found = domains(env)
    known = runners(env)
    assert sorted(found) == ["ci-hv1-1", "ci-hv1-2"]
    for info in found.values():
        name = info["labels"]["runner_name"]
        assert known[name]["jit"] and str(known[name]["id"]) == info["labels"]["runner_id"]
    assert "done: 2 created" in done["table"] and "ci-hv1-1" in done["table"]
    assert all("token" not in job for job in done["slots"])

    env["github"].admin("DELETE", "/calls")
    again = batch(env).run("converge")
    assert not again["changed"] and "done: nothing" in again["table"]
    assert [c["method"] for c in calls(env, ".*")] == ["GET"], "one runner listing, nothing written at GitHub"


def test_stage_then_recreate_uses_no_github_before_the_start(env):
    batch(env).run("converge")
    slot_runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    env["github"].admin("POST", f"/runners/{slot_runner}/status", {"status": "online", "busy": True})
    staged = batch(env).run("stage", "ci-hv1-1", slot_runner)
    assert staged["outcome"]["outcome"] == "staged"
    [staged_runner] = [n for n in runners(env) if n not in (slot_runner,) and n.startswith("ci-hv1-1-")]
    assert domains(env)[contract.staged_name(staged_runner)]["state"] == SHUTOFF

    # the job completes: GitHub removes the ephemeral runner; the recreate mints nothing
    env["github"].admin("POST", f"/runners/{slot_runner}/status", {"status": "offline", "busy": False})
    env["github"].admin("DELETE", "/calls")
    done = batch(env).run("recreate", "ci-hv1-1", slot_runner)
    assert done["outcome"]["outcome"] == "recreated" and "started its staged generation" in done["outcome"]["reason"]
    assert not calls(env, "generate-jitconfig"), "no runner minted for the swap"
    assert domains(env)["ci-hv1-1"]["labels"]["runner_name"] == staged_runner
    assert slot_runner not in runners(env) and slot_runner in done["deleted_runners"]
    assert done["timings"]["prepare"] >= 0 and "act" not in done["timings"]


def test_a_recreate_for_another_hosts_slot_does_nothing(env):
    done = batch(env).run("recreate", "ci-hv2-1", None)
    assert done == {"changed": False, "owned": False, "slots": [], "msg": "slot ci-hv2-1 is not a slot of this host (hv1)"}
    beyond = batch(env).run("recreate", "ci-hv1-3", None)
    assert beyond["owned"] is False, "a slot beyond the pool's size is nobody's to recreate"
    with pytest.raises(controller.BatchError, match="mode=recreate needs slot=<pool>-<host>-<index>"):
        batch(env).run("recreate", "nope", None)


def test_wait_online_waits_for_the_runners_it_started_and_fails_naming_the_late_ones(env):
    naps = []

    def runners_come_online(seconds):
        """GitHub's view changes while the batch sleeps: the guests' runners connect."""
        naps.append(seconds)
        for name in runners(env):
            env["github"].admin("POST", f"/runners/{name}/status", {"status": "online"})

    done = batch(env, wait_online=True, sleep=runners_come_online).run("converge")
    assert not done.get("failed"), done.get("msg")
    started = {job["slot"]: job["started"] for job in done["slots"]}
    assert started == {slot: info["labels"]["runner_name"] for slot, info in domains(env).items()}
    assert naps == [controller.ONLINE_POLL], "one look, one nap, one look"
    assert "github_online" in done["timings"]

    # a runner that does not come online in time fails the task, naming its slot; the other one waited
    # for is not named, and a slot left alone is not waited for
    late = domains(env)["ci-hv1-2"]["labels"]["runner_name"]
    env["github"].admin("POST", f"/runners/{late}/status", {"status": "offline"})
    gone = env["conn"].lookupByName("ci-hv1-2")
    gone.destroy()
    gone.undefine()
    env["clock"].now += 30
    done = batch(env, wait_online=True, online_timeout=0).run("converge")
    [new] = [job["started"] for job in done["slots"] if job["slot"] == "ci-hv1-2"]
    assert done["failed"] and done["msg"] == (f"rum_slots: slot ci-hv1-2: its runner {new} was not online at GitHub "
                                              "within 0 s (runner_pool_online_timeout)")
    assert [job["slot"] for job in done["slots"]] == ["ci-hv1-2"]


def test_without_wait_online_nothing_is_waited_for(env):
    done = batch(env).run("converge")
    assert not done.get("failed") and "github_online" not in done["timings"]


def test_orphans_are_pruned_and_staged_runners_kept(env):
    batch(env).run("converge")
    slot_runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    env["github"].admin("POST", f"/runners/{slot_runner}/status", {"status": "online", "busy": True})
    batch(env).run("stage", "ci-hv1-1", slot_runner)
    env["clock"].now += 7200  # the staged runner is old enough to be judged
    orphan = contract.runner_name("ci-hv1-7", env["clock"].now - 9000)
    env["github"].admin("POST", "/runners", {"scope": f"repo:{REPO}", "name": orphan, "status": "offline"})
    done = batch(env).run("converge")
    assert orphan in done["deleted_runners"] and orphan not in runners(env)
    staged = [n for n in domains(env) if "." in n]
    assert len(staged) == 1 and contract.parse_vm_name(staged[0], ["ci"]).kind == "staged"
    assert domains(env)[staged[0]]["labels"]["runner_name"] in runners(env)


def test_teardown_removes_every_vm_and_runner(env):
    batch(env).run("converge")
    slot_runner = domains(env)["ci-hv1-2"]["labels"]["runner_name"]
    env["github"].admin("POST", f"/runners/{slot_runner}/status", {"status": "online"})
    done = batch(env).run("absent")
    assert domains(env) == {} and runners(env) == {}
    assert sorted(job["outcome"] for job in done["slots"]) == ["removed", "removed"]


def test_a_busy_runner_is_left_to_drain_on_teardown(env):
    batch(env).run("converge")
    slot_runner = domains(env)["ci-hv1-2"]["labels"]["runner_name"]
    env["github"].admin("POST", f"/runners/{slot_runner}/status", {"status": "online", "busy": True})
    done = batch(env).run("absent")
    assert sorted(domains(env)) == ["ci-hv1-2"] and list(runners(env)) == [slot_runner]
    row = next(r for r in done["plan"]["slots"] if r["slot"] == "ci-hv1-2")
    assert row["action"] == "keep" and row["reason"] == "draining: busy"


def test_check_mode_reports_and_changes_nothing(env):
    done = batch(env, check_mode=True).run("converge")
    assert done["changed"] and "would do: 2 created" in done["table"]
    assert domains(env) == {} and runners(env) == {}


def test_registration_token_pools_boot_with_one_token(env):
    done = batch(env, registration="token", stage=False).run("converge")
    assert not done.get("failed") and sorted(domains(env)) == ["ci-hv1-1", "ci-hv1-2"]
    assert len(calls(env, "registration-token")) == 1 and not calls(env, "generate-jitconfig")
    assert runners(env) == {}, "a token runner registers itself from its guest"


def test_a_github_failure_fails_the_slot_and_leaves_nothing_half_made(env):
    env["github"].admin("POST", "/faults", {"method": "POST", "path": "generate-jitconfig", "status": 422, "times": 1})
    done = batch(env).run("converge")
    assert done["failed"] and "a JIT runner" in done["msg"] and "no runner credential" in done["msg"]
    assert len(domains(env)) == 1 and len(runners(env)) == 1
    assert not os.listdir(env["locks"]), "the failed slot's lock is released"


def test_a_lock_held_by_a_dead_run_of_this_controller_is_taken_over(env):
    batch(env).run("converge")
    slot_runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    dead = {"controller": "unit", "pid": 999999, "boot_id": "b", "started": 5}
    locks.LockDir(env["locks"]).acquire("ci-hv1-1", owner="a killed recreate", holder=dead)
    warnings = []
    done = batch(env, alive=lambda holder: False if holder == dead else None, warnings=warnings).run(
        "recreate", "ci-hv1-1", slot_runner)
    assert done["outcome"]["outcome"] == "recreated", done
    assert any("took over the lock" in change for job in done["slots"] for change in job["changes"])
    assert any("took over the lock of a killed recreate" in w for w in warnings), warnings


def test_a_lock_held_by_a_live_run_fails_a_recreate_after_the_timeout_and_warns_in_a_converge(env):
    batch(env).run("converge")
    slot_runner = domains(env)["ci-hv1-1"]["labels"]["runner_name"]
    locks.LockDir(env["locks"]).acquire("ci-hv1-1", owner="a live run")
    done = batch(env, lock_timeout=0).run("recreate", "ci-hv1-1", slot_runner)
    assert done["failed"] and "its lock is held" in done["msg"] and "a live run" in done["msg"]
    env["github"].admin("POST", f"/runners/{slot_runner}/status", {"status": "online", "busy": True})
    warnings = []
    converged = batch(env, lock_timeout=0, warnings=warnings).run("converge")
    assert not converged.get("failed") and any("ci-hv1-1 left alone" in w for w in warnings)


def test_the_pool_must_be_the_settings_mapping(env):
    with pytest.raises(controller.BatchError, match="it lacks github"):
        controller.Batch({"name": "ci", "host": "hv1", "backend": "libvirt"}, call=None, api=None)
    with pytest.raises(controller.BatchError, match="mode must be one of"):
        batch(env).run("grow")


def test_done_line():
    reports = [{"outcome": "recreated", "reason": "it held runner x; started its staged generation y"},
               {"outcome": "created", "reason": "no VM"}, {"outcome": "skipped", "reason": "z"}]
    assert controller.done_line(reports) == "done: 1 created, 1 recreated, 1 skipped; 1 started a staged generation"
    assert controller.done_line([], check_mode=True) == "would do: nothing"
    assert RUNNING != SHUTOFF


def test_two_batches_at_once_wait_for_each_other_without_deadlock_and_change_nothing_twice(env):
    import threading

    barrier = threading.Barrier(2)
    results = []

    def one():
        work = batch(env, size=6, concurrency=3)
        barrier.wait()
        results.append(work.run("converge"))

    threads = [threading.Thread(target=one, daemon=True) for _thread in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "the two batches deadlocked"
    assert len(results) == 2 and not any(done.get("failed") for done in results), results
    found = domains(env)
    assert sorted(found) == [f"ci-hv1-{i}" for i in range(1, 7)], "one VM per slot, no staged or retired left"
    outcomes = [job["outcome"] for done in results for job in done["slots"]]
    assert outcomes.count("created") == 6, outcomes
    assert sorted(runners(env)) == sorted(info["labels"]["runner_name"] for info in found.values()), \
        "no runner minted twice for a slot"
