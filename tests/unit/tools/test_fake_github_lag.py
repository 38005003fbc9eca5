# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fake GitHub as unkind as GitHub: status lag, expiry of never-connected runners, the prune
race and 404 for what a token cannot see; and the pool planner and prune, through the collection's
own GitHub client over HTTP, taking the paths that only such a GitHub makes them take.

No guest is booted: the VMs are rum_vm_info entries as the planner gets them; the runners are made
and moved as a runner in a guest makes and moves them (JIT config, online with a job, done).
"""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_runners as ghr
from ansible_collections.rum.pool.plugins.module_utils import _pool as pool
from ansible_collections.rum.pool.plugins.module_utils import _slot as slot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

REPO = "acme/app"
KEY = "repo:acme/app"
LABELS = ["self-hosted", "linux"]
TIMEOUT = 600


class Clock:
    def __init__(self):
        self.now = 1_750_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def fake(clock):
    server = FakeGitHub(clock=clock)
    server.start()
    server.admin("POST", "/pats", {"token": "ghp_lag"})
    yield server
    server.stop()


@pytest.fixture
def api(fake):
    client = gh.GitHubClient(fake.url, auth=gh.TokenAuth("ghp_lag"),
                             policy=gh.RetryPolicy(max_retries=0, max_wait=0))
    return ghr.RunnerAPI(client, gh.Scope("repository", REPO))


def lag(fake, seconds):
    fake.admin("POST", "/settings", {"status_lag": seconds})


def slot_vm(clock, index, state, runner, age=3600):
    """A slot VM as rum_vm_info lists it, labelled as the pool labels it."""
    labels = slot.build_labels(pool="ci", host="hv1", slot=f"ci-hv1-{index}", backend="libvirt",
                               runner_name=runner.name,
                               runner_id=runner.id, created_at=int(clock.now - age))
    return {"name": f"ci-hv1-{index}", "state": state, "labels": labels}


def plan(clock, api, *vms):
    runners = [r.as_dict() for r in api.list_runners()]
    return pool.plan(pool="ci", host="hv1", size=len(vms) or 1, vms=list(vms), runners=runners,
                     now=clock.now, online_timeout=TIMEOUT)["slots"]


def jit_runner(api, clock, index=1):
    runner, _config = api.generate_jit_config(slot.runner_name(f"ci-hv1-{index}", clock.now - 60), LABELS, 1)
    return runner


def run_one_job(fake, runner, clock, job_id=1, takes=60):
    """The runner takes a job, works ``takes`` seconds and finishes."""
    fake.admin("POST", f"/runners/{runner.id}/job", {"job_id": job_id})
    clock.now += takes
    return fake.admin("POST", f"/runners/{runner.id}/done", {"conclusion": "success"})


# ---------------------------------------------------------------- lag
def test_a_finished_ephemeral_runner_stays_listed_busy_while_github_lags(fake, api, clock):
    lag(fake, 30)
    runner = jit_runner(api, clock)
    done = run_one_job(fake, runner, clock)
    assert done["removed"] is True
    shown = api.get_runner(runner.id)
    assert (shown.status, shown.busy) == ("online", True)  # as it was before its job ended
    # The guest powered off after its one job, but GitHub still shows the runner working: wait.
    row = plan(clock, api, slot_vm(clock, 1, "shutoff", runner))[0]
    assert row["action"] == "keep"
    assert row["reason"] == ("VM shut off (its job finished or the guest powered off), but GitHub still "
                             "shows its runner busy: waiting")
    # Its record is gone already: deleting it is a 404, which the client reads as "already gone".
    assert api.delete_runner(runner.id) is False
    clock.now += 31
    assert api.list_runners() == []
    assert api.get_runner(runner.id) is None
    row = plan(clock, api, slot_vm(clock, 1, "shutoff", runner))[0]
    assert (row["action"], row["runner_status"]) == ("recreate", "missing")


def test_online_and_busy_flags_lag_behind_the_runner(fake, api, clock):
    lag(fake, 20)
    runner = jit_runner(api, clock)
    fake.admin("POST", f"/runners/{runner.id}/status", {"status": "online"})
    assert api.get_runner(runner.id).status == "offline"  # not yet shown
    clock.now += 21
    assert api.get_runner(runner.id).status == "online"
    fake.admin("POST", f"/runners/{runner.id}/status", {"status": "offline"})
    # The VM crashed and its runner went offline, but GitHub still shows it online: wait.
    row = plan(clock, api, slot_vm(clock, 1, "crashed", runner))[0]
    assert row["action"] == "keep" and "GitHub still shows its runner online" in row["reason"]
    clock.now += 21
    row = plan(clock, api, slot_vm(clock, 1, "crashed", runner))[0]
    assert (row["action"], row["reason"]) == ("recreate", "VM crashed")


def test_without_lag_a_finished_ephemeral_runner_is_gone_at_once(fake, api, clock):
    runner = jit_runner(api, clock)
    run_one_job(fake, runner, clock)
    assert api.list_runners() == [] and api.get_runner(runner.id) is None


# ---------------------------------------------------------------- expiry
def test_a_never_connected_jit_runner_expires_after_a_day(fake, api, clock):
    runner = jit_runner(api, clock)
    other = jit_runner(api, clock, index=2)
    fake.admin("POST", f"/runners/{other.id}/status", {"status": "online"})
    fake.admin("POST", f"/runners/{other.id}/status", {"status": "offline"})
    clock.now += 86399
    assert {r.name for r in api.list_runners()} == {runner.name, other.name}
    clock.now += 1
    assert [r.name for r in api.list_runners()] == [other.name]  # it connected once: kept
    assert api.get_runner(runner.id) is None
    # The slot's VM still runs (its runner never came up): the record is gone, so it is recreated.
    row = plan(clock, api, slot_vm(clock, 1, "running", runner, age=86400))[0]
    assert row["action"] == "recreate"
    assert row["reason"].startswith("runner record gone 86400s after creation while the VM runs")


def test_the_expiry_is_a_setting(fake, api, clock):
    fake.admin("POST", "/settings", {"unused_ephemeral_ttl": 120})
    runner = jit_runner(api, clock)
    clock.now += 119
    assert api.get_runner(runner.id) is not None
    clock.now += 1
    assert api.get_runner(runner.id) is None


# ---------------------------------------------------------------- the prune race
def classic_runner(fake, name):
    made = fake.admin("POST", "/runners", {"scope": KEY, "name": name, "labels": LABELS,
                                           "status": "offline"})
    return made["id"]


def test_prune_skips_a_runner_that_took_a_job_between_list_and_delete(fake, api, clock):
    lag(fake, 30)
    ident = classic_runner(fake, "ci-hv1-9-orphan")
    prune = ghr.plan_prune(api.list_runners(), "ci-hv1-")
    assert [r.id for r in prune.delete] == [ident]
    fake.admin("POST", f"/runners/{ident}/job", {"job_id": 5})  # it wakes up and takes a job
    # GitHub still lists it offline and idle (lag), so the re-check passes, and GitHub refuses
    # the delete with 422: the prune skips it instead of failing.
    deleted, skipped = ghr.prune_runners(api, prune)
    assert deleted == []
    assert [(r.id, why) for r, why in skipped] == [
        (ident, 'GitHub refused: Bad request - Runner "ci-hv1-9-orphan" is still running a job"')]
    assert fake.admin("GET", f"/runners/{ident}")["busy"] is True


def test_prune_skips_a_runner_gone_between_list_and_delete(fake, api, clock):
    ident = classic_runner(fake, "ci-hv1-9-orphan")
    prune = ghr.plan_prune(api.list_runners(), "ci-hv1-")
    fake.admin("DELETE", f"/runners/{ident}")  # someone else removed it meanwhile
    deleted, skipped = ghr.prune_runners(api, prune)
    assert deleted == [] and [(r.id, why) for r, why in skipped] == [(ident, "already gone")]


def test_prune_deletes_an_idle_offline_orphan(fake, api, clock):
    ident = classic_runner(fake, "ci-hv1-9-orphan")
    deleted, skipped = ghr.prune_runners(api, ghr.plan_prune(api.list_runners(), "ci-hv1-"))
    assert [r.id for r in deleted] == [ident] and skipped == []
    assert api.list_runners() == []


def test_deleting_a_busy_runner_is_refused_with_422(fake, api):
    ident = classic_runner(fake, "ci-hv1-3-busy")
    fake.admin("POST", f"/runners/{ident}/job", {"job_id": 7})
    with pytest.raises(gh.GitHubValidationError, match="is still running a job"):
        api.delete_runner(ident)


# ---------------------------------------------------------------- what a token cannot see
def test_a_repository_the_token_cannot_see_is_404_and_one_it_only_reads_is_403(fake):
    fake.admin("POST", "/pats", {"token": "github_pat_narrow", "scopes": ["repo:acme/app"],
                                 "visible": ["acme/docs"]})
    client = gh.GitHubClient(fake.url, auth=gh.TokenAuth("github_pat_narrow"),
                             policy=gh.RetryPolicy(max_retries=0, max_wait=0))
    assert ghr.RunnerAPI(client, gh.Scope("repository", "acme/app")).list_runners() == []
    with pytest.raises(gh.GitHubNotFound, match="it does not exist or the credentials cannot see it"):
        ghr.RunnerAPI(client, gh.Scope("repository", "acme/secret")).list_runners()
    with pytest.raises(gh.GitHubAuthError, match="HTTP 403 Must have admin rights to Repository"):
        ghr.RunnerAPI(client, gh.Scope("repository", "acme/docs")).list_runners()
