"""The fake GitHub's job queue for runners: listing queued jobs and claiming one atomically."""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def fake():
    server = FakeGitHub()
    server.start()
    yield server
    server.stop()


def admin(fake, method, path, body=None):
    """(status, body) of an admin call over HTTP."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fake.url + "/_fake" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_jobs_are_listed_by_status_and_scope(fake):
    fake.admin("POST", "/jobs", {"scope": "repo:acme/app", "labels": ["self-hosted"], "job_id": 3})
    fake.admin("POST", "/jobs", {"scope": "Org:Acme", "labels": ["self-hosted", "linux"], "job_id": 1})
    fake.admin("POST", "/jobs", {"scope": "repo:acme/app", "labels": ["gpu"], "job_id": 2})
    runner = fake.admin("POST", "/runners", {"scope": "repo:acme/app", "name": "r1", "labels": ["gpu"]})
    fake.admin("POST", f"/runners/{runner['id']}/job", {"job_id": 2})

    status, body = admin(fake, "GET", "/jobs")
    assert status == 200 and [j["id"] for j in body["jobs"]] == [1, 2, 3]
    queued = admin(fake, "GET", "/jobs?status=queued")[1]["jobs"]
    assert [j["id"] for j in queued] == [1, 3]
    in_repo = admin(fake, "GET", "/jobs?status=queued&scope=repo:ACME/app")[1]["jobs"]
    assert [(j["id"], j["labels"], j["scope"]) for j in in_repo] == [(3, ["self-hosted"], "repo:acme/app")]
    assert admin(fake, "GET", "/jobs?status=in_progress")[1]["jobs"][0]["runner_name"] == "r1"


def test_one_job_by_id(fake):
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["x"], "job_id": 12, "name": "build"})
    status, job = admin(fake, "GET", "/jobs/12")
    assert status == 200 and job["name"] == "build" and job["status"] == "queued" and job["runner_name"] is None
    status, body = admin(fake, "GET", "/jobs/13")
    assert status == 404 and "13" in body["error"]


def test_queueing_a_known_job_id_again_is_a_409(fake):
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["x"], "job_id": 21})
    status, body = admin(fake, "POST", "/jobs", {"scope": "org:acme", "labels": ["x"], "job_id": 21})
    assert status == 409 and "job 21 exists already (queued)" in body["error"]
    status, job = admin(fake, "POST", "/jobs", {"scope": "org:acme", "labels": ["x"]})
    assert status == 201 and job["id"] == 22


def test_claiming_a_job_someone_else_took_is_a_409(fake):
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["self-hosted"], "job_id": 8})
    first = fake.admin("POST", "/runners", {"scope": "org:acme", "name": "first"})
    second = fake.admin("POST", "/runners", {"scope": "org:acme", "name": "second"})
    assert admin(fake, "POST", f"/runners/{first['id']}/job", {"job_id": 8})[0] == 200
    status, body = admin(fake, "POST", f"/runners/{second['id']}/job", {"job_id": 8})
    assert status == 409 and "job 8 is already in_progress by runner first" == body["error"]
    assert fake.admin("GET", "/runners/second")["busy"] is False
    # a finished job cannot be taken again either
    fake.admin("POST", f"/runners/{first['id']}/done", {"conclusion": "success"})
    status, body = admin(fake, "POST", f"/runners/{second['id']}/job", {"job_id": 8})
    assert status == 409 and "completed" in body["error"]
    assert fake.admin("GET", "/jobs/8")["runner_name"] == "first"


def test_claims_without_a_queued_job_keep_working(fake):
    """A claim naming no job, or a job not queued yet, still makes one (as the tests before did)."""
    runner = fake.admin("POST", "/runners", {"scope": "org:acme", "name": "r", "labels": ["a"]})
    view = fake.admin("POST", f"/runners/{runner['id']}/job", {})
    assert view["busy"] and view["job"]["id"] >= 1
    fake.admin("POST", f"/runners/{runner['id']}/done", {})
    view = fake.admin("POST", f"/runners/{runner['id']}/job", {"job_id": 77})
    assert view["job"]["id"] == 77 and fake.admin("GET", "/jobs/77")["status"] == "in_progress"


def test_racing_claims_give_exactly_one_winner(fake):
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["self-hosted"], "job_id": 50})
    ids = [fake.admin("POST", "/runners", {"scope": "org:acme", "name": f"r{i}"})["id"] for i in range(8)]
    barrier = threading.Barrier(len(ids))
    results = {}

    def claim(runner_id):
        barrier.wait()
        results[runner_id] = admin(fake, "POST", f"/runners/{runner_id}/job", {"job_id": 50})[0]

    threads = [threading.Thread(target=claim, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [200] + [409] * (len(ids) - 1)
    winner = [i for i, code in results.items() if code == 200][0]
    assert fake.admin("GET", "/jobs/50")["runner_id"] == winner
    assert [r["name"] for r in fake.admin("GET", "/runners")["runners"] if r["busy"]] == [f"r{ids.index(winner)}"]


def test_a_job_carries_the_run_seconds_it_was_queued_with_and_bad_ones_are_refused(fake):
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["x"], "job_id": 21, "run_seconds": 30})
    assert admin(fake, "GET", "/jobs/21")[1]["run_seconds"] == 30
    fake.admin("POST", "/jobs", {"scope": "org:acme", "labels": ["x"], "job_id": 22})
    assert "run_seconds" not in admin(fake, "GET", "/jobs/22")[1]
    for bad in (-1, "30", True):
        status, body = admin(fake, "POST", "/jobs", {"scope": "org:acme", "labels": ["x"], "run_seconds": bad})
        assert status == 400 and "run_seconds" in body["error"], (bad, body)
    assert [j["id"] for j in admin(fake, "GET", "/jobs")[1]["jobs"]] == [21, 22]
