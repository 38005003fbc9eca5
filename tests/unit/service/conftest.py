# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared fakes for the webhook service's unit tests: a clock, a dispatcher, example payloads."""

from __future__ import annotations

import copy
import json
import os
import threading
from typing import Any, Callable, Dict, List, Optional

import pytest

from rum_pool_webhook.tasks import Result

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EXAMPLES_INDEX = os.path.join(ROOT, ".cache", "npm", "node_modules", "@octokit",
                              "webhooks-examples", "api.github.com", "index.json")


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class FakeDispatcher:
    """Records every task it is given; results come from a list (an exception is raised).

    With ``gate`` set, ``run`` blocks until the event is set, so tests can look at the
    service while a task is running.
    """

    kind = "fake"

    def __init__(self, results: Optional[List[Any]] = None,
                 gate: Optional[threading.Event] = None) -> None:
        self.results = list(results or [])
        self.gate = gate
        self.calls: List[Any] = []
        self.running: Dict[str, int] = {}
        self.max_running_per_slot = 0
        self.max_running = 0
        self.started = threading.Semaphore(0)
        self._lock = threading.Lock()

    def run(self, task: Any, log: Callable[[str], None], record: Any = None) -> Result:
        with self._lock:
            self.calls.append(copy.copy(task))
            self.running[task.slot] = self.running.get(task.slot, 0) + 1
            self.max_running_per_slot = max(self.max_running_per_slot, self.running[task.slot])
            self.max_running = max(self.max_running, sum(self.running.values()))
            result = self.results.pop(0) if self.results else Result(True, "recreated", rc=0)
        self.started.release()
        try:
            log("slot %s: TASK [rum.pool.runner_slot : Boot] ok" % task.slot)
            if self.gate is not None:
                assert self.gate.wait(20), "test gate never opened"
            if isinstance(result, BaseException):
                raise result
            return result
        finally:
            with self._lock:
                self.running[task.slot] -= 1


class Lines:
    """A log sink that keeps lines."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)


def _load_examples() -> List[Dict[str, Any]]:
    if not os.path.exists(EXAMPLES_INDEX):
        pytest.fail("%s is missing: run `bash tools/fetch-test-data.sh` first" % EXAMPLES_INDEX)
    with open(EXAMPLES_INDEX, encoding="utf-8") as handle:
        index = json.load(handle)
    for entry in index:
        if entry.get("name") == "workflow_job":
            return entry["examples"]
    pytest.fail("no workflow_job examples in %s" % EXAMPLES_INDEX)
    return []


@pytest.fixture(scope="session")
def workflow_job_examples() -> List[Dict[str, Any]]:
    """GitHub's real workflow_job payloads from @octokit/webhooks-examples (deep copies)."""
    examples = _load_examples()
    assert len(examples) >= 4
    return examples


@pytest.fixture()
def example(workflow_job_examples):
    """``example(action, runner_name=...)``: a copy of a real payload, optionally re-targeted."""

    def pick(action: str, runner_name: Any = "keep", status: Optional[str] = None) -> Dict[str, Any]:
        for payload in workflow_job_examples:
            job = payload["workflow_job"]
            if payload["action"] == action and (status is None or job["status"] == status):
                out = copy.deepcopy(payload)
                if runner_name != "keep":
                    out["workflow_job"]["runner_name"] = runner_name
                return out
        raise AssertionError("no workflow_job example with action %r status %r" % (action, status))

    return pick


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def fake_dispatcher_cls():
    return FakeDispatcher


@pytest.fixture()
def lines() -> Lines:
    return Lines()
