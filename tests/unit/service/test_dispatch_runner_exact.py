# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ansible-runner dispatcher exactly, and fast: every line it logs, every handle it records,
every message it returns, the files it leaves and their modes.

Most tests drive ``AnsibleRunnerDispatcher`` with ``Launcher``, a stand-in for ``spawn_process``
that does the launcher's work in this process with ``runner_job.execute`` itself (so the files it
writes are the ones the real launcher writes), and a clock that only moves when the run does.
The launcher's own process (``spawn_process``, ``_Launched``) and a run followed after a restart
(``_Adopted``) are checked on real processes. The real playbook runs stay in
test_dispatch_runner.py.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import types

import pytest

from rum_pool_webhook import dispatch_runner, runner_job
from rum_pool_webhook.dispatch import DispatchError
from rum_pool_webhook.dispatch_runner import (AnsibleRunnerDispatcher, collection_roots, pid_alive,
                                              resolve_playbook, spawn_process)
from rum_pool_webhook.runner_job import JOB, PROGRESS, RESULT, RUN_MARKER, read_json, write_json
from rum_pool_webhook.tasks import RECONCILE, STAGE, Result
from tests.unit.service.conftest import FakeClock
from tests.unit.service.helpers import RUNNER, SLOT, Lines, task
from tests.unit.service.test_dispatch_runner import Records, StubRunner, private_tree_problems

NOW = 1_700_000_000.0
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
# The service's environment in these tests: a PATH without the venv, and one of its secrets.
ENVIRON = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "RUM_POOL_WEBHOOK_SECRET": "hook-secret-1"}
# What the playbook's process gets: the same without the secret, and the run's marker.
PLAY_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
EVENTS = (
    {"event": "playbook_on_task_start", "event_data": {"task": "Boot", "role": "runner_slot"}},
    {"event": "runner_on_ok", "event_data": {"task": "Boot", "role": "runner_slot", "host": "hv1",
                                             "res": {"changed": True}}},
)
_tail = AnsibleRunnerDispatcher._tail  # pylint: disable=protected-access


class Ticks(FakeClock):
    """The dispatcher's clock; ``hooks[n]`` runs at its n-th reading (what happens meanwhile).

    A dispatcher that keeps polling past ``limit`` readings fails the test instead of hanging it.
    """

    def __init__(self, limit: int = 400) -> None:
        super().__init__(NOW)
        self.readings = 0
        self.limit = limit
        self.hooks: dict = {}

    def __call__(self) -> float:
        self.readings += 1
        if self.readings > self.limit:
            raise AssertionError(f"the dispatcher polled {self.limit} times")
        hook = self.hooks.pop(self.readings, None)
        if hook:
            hook()
        return super().__call__()


class Launcher:
    """Stands in for ``spawn_process``: the launcher's work, done in this process by runner_job.

    As ``python -m rum_pool_webhook.runner_job RUN_DIR`` does, it reads the ``job.json`` the
    dispatcher wrote and runs ``runner_job.execute`` on it with a stand-in ansible_runner:
    progress lines, ``env/`` and ``job.json`` deleted, ``result.json`` written last. Until it ends
    it has what a starting ansible-runner leaves (``env/extravars``, a stdout at the umask's
    mode). The dispatcher looks at it once per poll (``alive``); each look moves ``clock`` on by
    ``tick`` seconds, and the run ends at look ``ends_at`` (0: before ``spawn`` returns; with
    ``race`` the process is gone at that same look). SIGTERM cancels the run unless
    ``ignore_term``; SIGKILL ends it at once, leaving no result.
    """

    pid = 4321

    def __init__(self, runner=None, clock=None, ends_at=0, tick=1.0, ignore_term=False,
                 race=False, records=None):
        self.runner = runner or StubRunner()
        self.clock, self.ends_at, self.tick = clock, ends_at, tick
        self.ignore_term, self.race, self.records = ignore_term, race, records
        self.looks = 0
        self.over = False
        self.signals: list = []
        self.spawned: list = []
        self.records_then = None
        self.run_dir = self.job = self.job_mode = None

    def __call__(self, run_dir, env):
        self.spawned.append((run_dir, dict(env)))
        self.run_dir = run_dir
        path = os.path.join(run_dir, JOB)
        self.job_mode = stat.S_IMODE(os.stat(path).st_mode)
        self.job = read_json(path)
        self.records_then = list(self.records) if self.records is not None else None
        if not self.ends_at:
            self.finish()
        else:
            with open(os.path.join(run_dir, PROGRESS), "a", encoding="utf-8"):
                pass  # runner_job opens it first
            os.mkdir(os.path.join(run_dir, "env"), 0o700)
            write_json(os.path.join(run_dir, "env", "extravars"), self.job["extravars"])
            artifacts = os.path.join(run_dir, "artifacts", self.job["ident"])
            os.makedirs(artifacts)
            with open(os.path.join(artifacts, "stdout"), "w", encoding="utf-8") as handle:
                handle.write("PLAY [all]\n")
            os.chmod(os.path.join(artifacts, "stdout"), 0o644)
        return self

    def finish(self, runner=None):
        for name in ("env", "artifacts"):  # the stand-in library makes them again
            dispatch_runner.shutil.rmtree(os.path.join(self.run_dir, name), ignore_errors=True)
        runner_job.execute(self.run_dir, self.job, runner or self.runner)
        self.over = True

    def alive(self):
        if self.over:
            return False
        self.looks += 1
        if self.clock is not None:
            self.clock.advance(self.tick)
        if self.looks == self.ends_at:
            self.finish()
            return not self.race
        return True

    def signal(self, signum):
        self.signals.append((signum, self.clock() if self.clock is not None else None))
        if self.over:
            return
        if signum == signal.SIGKILL:
            self.over = True
        elif signum == signal.SIGTERM and not self.ignore_term:
            self.finish(StubRunner(status="canceled", rc=254))


def layout(tmp_path):
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir(exist_ok=True)
    for name in ("recreate.yml", "pool.yml"):
        (pbdir / name).write_text("[]\n")
    (tmp_path / "inventory").write_text("localhost\n")
    return str(pbdir / "recreate.yml"), str(tmp_path / "inventory")


def make(tmp_path, launcher=None, clock=None, **kwargs):
    playbook, inventory = layout(tmp_path)
    settings = {"playbook": playbook, "inventory": inventory, "state_dir": str(tmp_path / "state"),
                "runner_module": StubRunner(), "spawn": launcher, "clock": clock or Ticks(),
                "environ": ENVIRON, "poll_seconds": 0,
                "reconcile_playbook": str(tmp_path / "playbooks" / "pool.yml")}
    settings.update(kwargs)
    return AnsibleRunnerDispatcher(**settings)


def marker_of(name, at=NOW):
    return f"{os.getpid()}-{name}-{int(at * 1000)}"


def intent(tmp_path, name="1-1", at=NOW, **more):
    """The handle a dispatcher records for run ``name`` before it starts it."""
    return dict({"kind": "ansible-runner", "ident": name,
                 "run_dir": str(tmp_path / "state" / "runs" / name), "marker": marker_of(name, at),
                 "started_at": at, "playbook": str(tmp_path / "playbooks" / "recreate.yml")}, **more)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    """Each test works in an empty directory of its own: nothing depends on (or lands in) the cwd."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


@pytest.fixture(name="fake_time")
def fake_time_fixture(monkeypatch):
    """dispatch_runner's ``time``: each sleep is recorded (and runs ``on_sleep``), none waits."""
    fake = types.SimpleNamespace(sleeps=[], on_sleep=[])

    def sleep(seconds):
        fake.sleeps.append(seconds)
        if fake.on_sleep:
            fake.on_sleep.pop(0)()

    fake.sleep = sleep
    monkeypatch.setattr(dispatch_runner, "time", fake)
    return fake


def marked_process(marker, seconds=60):
    """A real process of the run: it carries the run's marker in its environment."""
    return subprocess.Popen(["sleep", str(seconds)], env={"PATH": os.defpath, RUN_MARKER: marker})


def wait_gone(proc):
    try:
        return proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "still running"


# --------------------------------------------------------------------------------------------
# A run launched: the handle first, then the launch, progress and the result
# --------------------------------------------------------------------------------------------

def test_a_run_is_recorded_before_it_starts_then_followed_line_by_line(tmp_path):
    clock = Ticks()
    records = Records()
    launcher = Launcher(StubRunner(events=EVENTS), clock, ends_at=3, records=records)
    disp = make(tmp_path, launcher, clock, extravars={"greeting": "hi", "slot": "x", "runner": "y"},
                envvars={"PLAY_TOKEN": 7}, timeout=600)
    lines = Lines()
    result = disp.run(task(task_id=3, attempts=1), lines, records)

    run_dir = str(tmp_path / "state" / "runs" / "3-2")
    handle = intent(tmp_path, "3-2")
    assert records == [handle, dict(handle, pid=4321, launched=True)]
    assert launcher.records_then == [handle]  # on record before anything ran
    assert launcher.job == {
        "ident": "3-2", "playbook": handle["playbook"], "inventory": str(tmp_path / "inventory"),
        "extravars": {"greeting": "hi", "slot": SLOT, "runner_name": RUNNER},
        "envvars": {"PLAY_TOKEN": "7", "RUM_POOL_WEBHOOK_SECRET": "", RUN_MARKER: handle["marker"],
                    "PATH": f"{VENV_BIN}:/usr/bin:/bin"},
        "timeout": 600, "project_dir": None}
    assert launcher.job_mode == 0o600
    assert launcher.spawned == [(run_dir, dict(PLAY_ENV, **{RUN_MARKER: handle["marker"]}))]
    assert lines == [f"slot {SLOT}: recreate.yml starting (task 3, attempt 2)",
                     f"slot {SLOT}: TASK [runner_slot : Boot]",
                     f"slot {SLOT}: TASK [runner_slot : Boot] hv1: changed",
                     f"slot {SLOT}: recreate.yml rc=0 (successful) after 3 s"]
    assert result == Result(ok=True, message="recreate.yml rc=0 (successful)", rc=0,
                            ref=os.path.join(run_dir, "artifacts", "3-2"))
    assert result.outcome is None and result.detached is False
    # The run dir: 0700 under a 0700 runs dir, inputs gone, nothing open to group or others.
    assert mode(tmp_path / "state" / "runs") == 0o700 and mode(run_dir) == 0o700
    assert sorted(os.listdir(run_dir)) == ["artifacts", PROGRESS, RESULT]
    assert private_tree_problems(run_dir) == []


def test_the_polls_wait_poll_seconds_and_a_run_gone_with_its_result_is_read(tmp_path, fake_time):
    clock = Ticks()
    launcher = Launcher(StubRunner(events=EVENTS), clock, ends_at=2, race=True)
    disp = make(tmp_path, launcher, clock, poll_seconds=0.2)
    lines = Lines()
    result = disp.run(task(), lines)
    # The launcher wrote its result and went between two looks: the result counts, not the exit.
    assert result.ok and result.message == "recreate.yml rc=0 (successful)"
    assert lines[1:] == [f"slot {SLOT}: TASK [runner_slot : Boot]",
                         f"slot {SLOT}: TASK [runner_slot : Boot] hv1: changed",
                         f"slot {SLOT}: recreate.yml rc=0 (successful) after 2 s"]
    assert fake_time.sleeps == [0.2]


def test_defaults_of_a_dispatcher(tmp_path):
    playbook, inventory = layout(tmp_path)
    disp = AnsibleRunnerDispatcher(playbook="recreate.yml", inventory=inventory, runner_module=StubRunner(),
                                   project_dir=str(tmp_path))
    assert disp.kind == "ansible-runner"
    assert disp.runs_dir == "/var/lib/rum-pool-webhook/runs"
    assert (disp.keep_runs, disp.timeout, disp.poll_seconds) == (50, 1800, 0.2)
    assert disp.playbook == playbook and disp.playbook_name == "recreate.yml"
    assert disp.project_dir == str(tmp_path)
    assert disp.reconcile_playbook == str(tmp_path / "playbooks" / "pool.yml")
    assert disp.extravars == {}


def test_settings_are_normalised(tmp_path, monkeypatch):
    layout(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    disp = make(tmp_path, inventory="~/inventory", state_dir="state", keep_runs="-3", timeout=9.2,
                envvars={7: True, "PATH": "/opt/bin"},
                environ={"PATH": "/usr/bin", "RUM_POOL_AWX_TOKEN": "t", "RUM_POOL_GITHUB_TOKEN": "",
                         "RUM_POOL_WEBHOOK_SECRET": "s"})
    assert disp.inventory == str(tmp_path / "inventory")
    assert disp.runs_dir == str(tmp_path / "state" / "runs")
    assert (disp.keep_runs, disp.timeout) == (0, 10)
    # Secrets the service holds are blanked for the playbook; PATH given is kept as it is.
    assert disp.envvars == {"7": "True", "PATH": "/opt/bin", "RUM_POOL_AWX_TOKEN": "",
                            "RUM_POOL_WEBHOOK_SECRET": ""}
    assert make(tmp_path, keep_runs=7, timeout=0).keep_runs == 7
    assert make(tmp_path, timeout=0).timeout is None
    assert make(tmp_path, timeout=None).timeout is None
    # A secret the playbook is meant to get stays.
    given = make(tmp_path, envvars={"RUM_POOL_GITHUB_TOKEN": "for-the-play"},
                 environ={"RUM_POOL_GITHUB_TOKEN": "service", "PATH": "/usr/bin"})
    assert given.envvars == {"RUM_POOL_GITHUB_TOKEN": "for-the-play", "PATH": f"{VENV_BIN}:/usr/bin"}


def test_the_playbooks_are_looked_up_with_the_given_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATH", raising=False)
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATHS", raising=False)
    coll = tmp_path / "colls" / "ansible_collections" / "rum" / "pool"
    (coll / "playbooks").mkdir(parents=True)
    for name in ("recreate.yml", "pool.yml"):
        (coll / "playbooks" / name).write_text("[]\n")
    disp = make(tmp_path, playbook="recreate.yml", reconcile_playbook="pool.yml",
                environ={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "colls"), "PATH": "/usr/bin"})
    assert (disp.playbook, disp.project_dir) == (str(coll / "playbooks" / "recreate.yml"), str(coll))
    assert disp.reconcile_playbook == str(coll / "playbooks" / "pool.yml")
    # An absolute playbook outside the collection: pool.yml is still looked up there.
    disp = make(tmp_path, reconcile_playbook="pool.yml",
                environ={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "colls"), "PATH": "/usr/bin"})
    assert (disp.playbook, disp.project_dir) == (str(tmp_path / "playbooks" / "recreate.yml"), None)
    assert disp.reconcile_playbook == str(coll / "playbooks" / "pool.yml")


def test_setup_errors_name_what_is_wrong(tmp_path, monkeypatch):
    with pytest.raises(DispatchError) as err:
        make(tmp_path, inventory=str(tmp_path / "nope"))
    assert str(err.value) == f"dispatcher.inventory {tmp_path / 'nope'}: no such file or directory"
    monkeypatch.setitem(sys.modules, "ansible_runner", None)
    with pytest.raises(DispatchError) as err:
        make(tmp_path, runner_module=None)
    assert str(err.value) == (
        "dispatcher.kind 'ansible-runner': the ansible-runner library is not installed (import of "
        "ansible_runner halted; None in sys.modules); pip install 'rum-pool-webhook[ansible-runner]', "
        "or use kind 'awx'")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_the_default_spawn_is_the_launcher_process(tmp_path, monkeypatch):
    started = []

    def fake_spawn(run_dir, env):
        started.append(run_dir)
        raise OSError(7, "no launcher here")

    monkeypatch.setattr(dispatch_runner, "spawn_process", fake_spawn)
    result = make(tmp_path, runner_module=None).run(task(), Lines())
    assert started == [str(tmp_path / "state" / "runs" / "1-1")]
    assert result.message == "recreate.yml could not start: OSError: [Errno 7] no launcher here"


def test_a_reconcile_runs_pool_yml_without_slot_variables(tmp_path):
    launcher = Launcher()
    disp = make(tmp_path, launcher, extravars={"pool_hosts": "hv", "slot": "s", "runner_name": "r"})
    lines = Lines()
    result = disp.run(task(slot="(reconcile)", runner=None, kind=RECONCILE), lines)
    assert launcher.job["playbook"] == str(tmp_path / "playbooks" / "pool.yml")
    assert launcher.job["extravars"] == {"pool_hosts": "hv"}
    assert lines[0] == "slot (reconcile): pool.yml starting (task 1, attempt 1)"
    assert result.message == "pool.yml rc=0 (successful)"
    # No runner: no runner_name for recreate.yml either.
    disp.run(task(task_id=2, runner=None), Lines())
    assert launcher.job["extravars"] == {"pool_hosts": "hv", "slot": SLOT}


def test_a_stage_runs_recreate_yml_with_stage_true_and_only_then(tmp_path):
    launcher = Launcher()
    disp = make(tmp_path, launcher, extravars={"stage": "from-config", "runner": "r", "pool_hosts": "hv"})
    assert disp.run(task(kind=STAGE), Lines()).ok
    assert launcher.job["playbook"] == str(tmp_path / "playbooks" / "recreate.yml")
    assert launcher.job["extravars"] == {"pool_hosts": "hv", "slot": SLOT, "runner_name": RUNNER, "stage": True}
    disp.run(task(task_id=2), Lines())
    assert launcher.job["extravars"] == {"pool_hosts": "hv", "slot": SLOT, "runner_name": RUNNER}
    disp.run(task(task_id=3, slot="(reconcile)", runner=None, kind=RECONCILE), Lines())
    assert launcher.job["extravars"] == {"pool_hosts": "hv"}


def test_a_reconcile_without_its_playbook_fails_before_anything_is_made(tmp_path):
    launcher = Launcher()
    disp = make(tmp_path, launcher, reconcile_playbook="absent.yml", keep_runs=0)
    old = tmp_path / "state" / "runs" / "1-1"
    old.mkdir(parents=True)
    assert disp.reconcile_playbook is None
    lines = Lines()
    result = disp.run(task(task_id=5, slot="(reconcile)", runner=None, kind=RECONCILE), lines)
    assert result == Result(False, "reconcile.playbook 'absent.yml': not found next to "
                                   f"{tmp_path / 'playbooks' / 'recreate.yml'}")
    assert lines == [] and launcher.spawned == []
    assert os.listdir(tmp_path / "state" / "runs") == []  # pruned all the same


def test_a_missing_reconcile_playbook_is_named_in_up_to_400_characters(tmp_path):
    playbook = str(tmp_path / "playbooks" / "recreate.yml")
    fixed = len("reconcile.playbook '': not found next to ") + len(playbook)
    name = "p" * (401 - fixed)
    disp = make(tmp_path, Launcher(), reconcile_playbook=name)
    result = disp.run(task(slot="(reconcile)", runner=None, kind=RECONCILE), Lines())
    whole = f"reconcile.playbook '{name}': not found next to {playbook}"
    assert len(whole) == 401 and result.message == whole[:397] + "..."
    disp = make(tmp_path, Launcher(), reconcile_playbook=name[:-1])
    result = disp.run(task(slot="(reconcile)", runner=None, kind=RECONCILE), Lines())
    assert result.message == f"reconcile.playbook '{name[:-1]}': not found next to {playbook}"


def test_a_recreate_runs_without_the_reconcile_playbook(tmp_path):
    disp = make(tmp_path, Launcher(), reconcile_playbook="absent.yml")
    assert disp.run(task(), Lines()).ok


def test_a_run_dir_that_cannot_be_made_fails_the_attempt(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "runs").write_text("a file where the runs go")
    launcher = Launcher()
    records = Records()
    lines = Lines()
    result = make(tmp_path, launcher).run(task(), lines, records)
    assert result == Result(False, "recreate.yml: cannot create the run directory under "
                                   f"{tmp_path / 'state' / 'runs'}: File exists")
    assert records == [] and lines == [] and launcher.spawned == []


def test_a_launcher_that_cannot_start_fails_the_attempt_and_leaves_it_private(tmp_path):
    records = Records()

    def spawn(run_dir, _env):
        with open(os.path.join(run_dir, "launcher.log"), "ab"):
            pass  # opened at the umask's mode, as spawn_process does, before the launch fails
        os.chmod(os.path.join(run_dir, "launcher.log"), 0o644)
        raise FileNotFoundError(2, "No such file or directory:\n  'python3'")

    lines = Lines()
    result = make(tmp_path, spawn).run(task(), lines, records)
    run_dir = str(tmp_path / "state" / "runs" / "1-1")
    assert result == Result(False, "recreate.yml could not start: FileNotFoundError: [Errno 2] "
                                   "No such file or directory: 'python3'", ref=run_dir)
    assert records == [intent(tmp_path)]  # never counted as launched
    assert lines == [f"slot {SLOT}: recreate.yml starting (task 1, attempt 1)"]
    assert private_tree_problems(run_dir) == []


def test_a_leftover_run_dir_is_replaced_at_0700(tmp_path):
    runs = tmp_path / "state" / "runs"
    (runs / "1-1" / "env").mkdir(parents=True)
    (runs / "1-1" / "env" / "extravars").write_text('{"slot": "old"}')
    os.chmod(runs, 0o755)
    os.chmod(runs / "1-1", 0o755)
    seen = {}

    def during():
        seen["modes"] = (mode(runs), mode(runs / "1-1"))
        seen["env"] = sorted(os.listdir(runs / "1-1" / "env"))

    launcher = Launcher(StubRunner(during=during))
    assert make(tmp_path, launcher).run(task(), Lines()).ok
    assert seen == {"modes": (0o700, 0o700), "env": []}  # the old extravars did not reach the run
    assert launcher.job["extravars"]["slot"] == SLOT


def test_a_symlink_in_place_of_the_run_dir_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    (tmp_path / "state" / "runs").mkdir(parents=True)
    (tmp_path / "state" / "runs" / "1-1").symlink_to(elsewhere)
    result = make(tmp_path, Launcher()).run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith("recreate.yml: cannot create the run directory under ")
    assert os.listdir(elsewhere) == ["keep"]


def test_a_broken_log_does_not_stop_the_run(tmp_path):
    def log(_line):
        raise RuntimeError("log sink gone")

    assert make(tmp_path, Launcher(StubRunner(events=EVENTS))).run(task(), log).ok


# --------------------------------------------------------------------------------------------
# The result, word for word
# --------------------------------------------------------------------------------------------

def result_of(tmp_path, runner, **kwargs):
    lines = Lines()
    result = make(tmp_path, Launcher(runner), **kwargs).run(task(), lines)
    assert lines[-1] == f"slot {SLOT}: {result.message} after 0 s"
    return result


ARTIFACTS = os.path.join("state", "runs", "1-1", "artifacts", "1-1")


def test_a_failed_run_names_its_first_failed_task(tmp_path):
    events = [{"event": "runner_on_failed",
               "event_data": {"task": "Disk", "host": "hv1", "res": {"msg": "full\n  of " + "x" * 400}}}]
    result = result_of(tmp_path, StubRunner(status="failed", rc=2, events=events))
    detail = f"TASK [Disk] hv1: full of {'x' * 400}"[:297].rstrip() + "..."
    assert result == Result(False, f"recreate.yml rc=2 (failed): {detail}", 2,
                            str(tmp_path / ARTIFACTS))


def test_a_run_that_failed_before_any_task_names_the_error_line(tmp_path):
    result = result_of(tmp_path, StubRunner(status="failed", rc=4))
    assert result == Result(False, "recreate.yml rc=4 (failed): ERROR! the playbook could not be parsed",
                            4, str(tmp_path / ARTIFACTS))


def test_timeout_cancel_and_unknown_endings(tmp_path):
    result = result_of(tmp_path, StubRunner(status="timeout", rc=254), timeout=9.2)
    assert result.message == "recreate.yml rc=254 (timeout): timed out after 10 s"
    result = result_of(tmp_path, StubRunner(status="canceled", rc=254))
    assert result.message == "recreate.yml rc=254 (canceled): cancelled"
    # successful needs rc 0 too
    result = result_of(tmp_path, StubRunner(status="successful", rc=1))
    assert result.message == "recreate.yml rc=1 (successful): ERROR! the playbook could not be parsed"
    assert result.ok is False


def test_a_runner_that_raises_is_a_launch_failure(tmp_path):
    class Broken:
        @staticmethod
        def run(**_kwargs):
            raise RuntimeError("ansible-playbook:\n not found")

    result = result_of(tmp_path, Broken)
    assert result == Result(False, "recreate.yml could not start: RuntimeError: ansible-playbook: not found",
                            None, str(tmp_path / ARTIFACTS))


def skipped_stats(reason):
    return {"rum_pool_outcome": {SLOT: {"outcome": "skipped", "reason": reason}}}


def message_of(tmp_path, result, **kwargs):
    disp = make(tmp_path, **kwargs)
    return disp._message(task(), result, "recreate.yml", "/r/1-1", "1-1")  # pylint: disable=protected-access


def test_messages_from_result_json(tmp_path):
    assert message_of(tmp_path, None) == Result(
        False, "recreate.yml: run 1-1 ended without a result (the process was killed?); see /r/1-1",
        ref="/r/1-1")
    assert message_of(tmp_path, {"error": "OSError: x\ny"}) == Result(
        False, "recreate.yml could not start: OSError: x y", ref="/r/1-1/artifacts/1-1")
    ok = {"status": "successful", "rc": 0, "artifact_dir": "/a/1-1"}
    assert message_of(tmp_path, ok) == Result(True, "recreate.yml rc=0 (successful)", 0, "/a/1-1")
    assert message_of(tmp_path, dict(ok, stats=skipped_stats("the slot holds\n runner b"))) == Result(
        True, "recreate.yml rc=0 (successful): skipped: the slot holds runner b", 0, "/a/1-1", "skipped")
    assert message_of(tmp_path, dict(ok, stats=skipped_stats(""))).message == (
        "recreate.yml rc=0 (successful): skipped: the slot no longer holds this runner")
    recreated = {"rum_pool_outcome": {SLOT: {"outcome": "recreated"}}}
    assert message_of(tmp_path, dict(ok, stats=recreated)) == Result(
        True, "recreate.yml rc=0 (successful)", 0, "/a/1-1", "recreated")
    staged = {"rum_pool_outcome": {SLOT: {"outcome": "recreated", "reason": "ended\n started its staged generation"}}}
    assert message_of(tmp_path, dict(ok, stats=staged)) == Result(
        True, "recreate.yml rc=0 (successful): recreated: ended started its staged generation", 0, "/a/1-1",
        "recreated")
    # A failed run has no outcome, whatever it published.
    failed = {"status": "failed", "rc": 2, "first_failure": "TASK [x] h: no", "stats": skipped_stats("r")}
    assert message_of(tmp_path, failed) == Result(False, "recreate.yml rc=2 (failed): TASK [x] h: no", 2,
                                                  "/r/1-1/artifacts/1-1")
    assert message_of(tmp_path, {}) == Result(
        False, "recreate.yml rc=None (unknown): see /r/1-1/artifacts/1-1/stdout", None, "/r/1-1/artifacts/1-1")
    assert message_of(tmp_path, {"status": "timeout", "rc": 254}, timeout=None).message == (
        "recreate.yml rc=254 (timeout): timed out after None s")


# --------------------------------------------------------------------------------------------
# Deadlines: stop at the deadline, kill what is left after the grace
# --------------------------------------------------------------------------------------------

def test_past_its_deadline_a_run_is_cancelled(tmp_path):
    clock = Ticks()
    launcher = Launcher(clock=clock, ends_at=1000)
    lines = Lines()
    result = make(tmp_path, launcher, clock, timeout=10).run(task(), lines)
    # timeout 10 s and a grace of 30 s: SIGTERM once, at the 40th second
    assert launcher.signals == [(signal.SIGTERM, NOW + 40)]
    assert lines == [f"slot {SLOT}: recreate.yml starting (task 1, attempt 1)",
                     f"slot {SLOT}: recreate.yml: run 1-1 is past its deadline; stopping it",
                     f"slot {SLOT}: recreate.yml rc=254 (canceled): cancelled after 40 s"]
    assert result.message == "recreate.yml rc=254 (canceled): cancelled"


def test_a_run_that_ignores_the_stop_is_killed_with_what_it_left(tmp_path):
    clock = Ticks()
    state = {}

    class Stubborn(Launcher):
        def __call__(self, run_dir, env):
            state["leftover"] = marked_process(env[RUN_MARKER])
            return super().__call__(run_dir, env)

        def signal(self, signum):
            super().signal(signum)
            if signum == signal.SIGKILL:
                state["killed"] = state["leftover"].poll()

        def alive(self):
            if self.over and "at_kill" not in state:  # killed: was what it left killed too?
                state["at_kill"] = wait_gone(state["leftover"])
            return super().alive()

    launcher = Stubborn(clock=clock, ends_at=1000, ignore_term=True)
    lines = Lines()
    result = make(tmp_path, launcher, clock, timeout=10).run(task(), lines)
    assert launcher.signals == [(signal.SIGTERM, NOW + 40), (signal.SIGKILL, NOW + 70)]
    assert state["killed"] is None and state["at_kill"] == -signal.SIGKILL
    run_dir = str(tmp_path / "state" / "runs" / "1-1")
    assert lines == [f"slot {SLOT}: recreate.yml starting (task 1, attempt 1)",
                     f"slot {SLOT}: recreate.yml: run 1-1 is past its deadline; stopping it",
                     f"slot {SLOT}: recreate.yml: run 1-1 ended without a result (the process was "
                     f"killed?); see {run_dir} after 70 s"]
    assert result == Result(False, f"recreate.yml: run 1-1 ended without a result (the process was "
                                   f"killed?); see {run_dir}", ref=run_dir)
    # The killed launcher's inputs are gone all the same, and nothing is left open.
    assert not os.path.exists(os.path.join(run_dir, "env"))
    assert private_tree_problems(run_dir) == []


def test_without_a_timeout_there_is_no_deadline(tmp_path):
    clock = Ticks()
    launcher = Launcher(clock=clock, ends_at=300, tick=60)
    lines = Lines()
    result = make(tmp_path, launcher, clock, timeout=None).run(task(), lines)
    assert launcher.signals == [] and launcher.job["timeout"] is None
    assert result.ok and lines[-1] == f"slot {SLOT}: recreate.yml rc=0 (successful) after 18000 s"


def test_processes_the_run_left_are_killed_and_named(tmp_path):
    clock = Ticks()
    state = {}

    class Leaving(Launcher):
        def __call__(self, run_dir, env):
            state["leftovers"] = [marked_process(env[RUN_MARKER]) for _unused in range(2)]
            return super().__call__(run_dir, env)

    launcher = Leaving(StubRunner(during=lambda: None), clock)
    lines = Lines()
    result = make(tmp_path, launcher, clock).run(task(), lines)
    # runner_job killed them at its end and said so in result.json; the dispatcher logs them.
    pids = sorted(proc.pid for proc in state["leftovers"])
    assert [wait_gone(proc) for proc in state["leftovers"]] == [-signal.SIGKILL] * 2
    said = [f"{pid} (sleep: sleep 60)" for pid in pids]  # which processes: a log line that says what they were
    assert read_json(os.path.join(launcher.run_dir, RESULT))["stray"] == pids
    assert read_json(os.path.join(launcher.run_dir, RESULT))["stray_said"] == said
    assert lines[-2:] == [f"slot {SLOT}: killed 2 process(es) left over from the run: {said[0]}, {said[1]}",
                          f"slot {SLOT}: recreate.yml rc=0 (successful) after 0 s"]
    assert result.ok


class RealLauncher(Launcher):
    """The run ends before spawn returns (its result written); the launcher is a real process of the
    run, started by ``command`` (with the run's marker), that the dispatcher looks at and signals."""

    command = ["sleep", "0.3"]

    def __call__(self, run_dir, env):
        super().__call__(run_dir, env)
        self.proc = subprocess.Popen(self.command, env={"PATH": os.defpath, RUN_MARKER: env[RUN_MARKER]})
        self.pid = self.proc.pid
        return self

    def alive(self):
        return self.proc.poll() is None

    def signal(self, signum):
        super().signal(signum)
        self.proc.send_signal(signum)


def test_the_launcher_exiting_after_its_result_is_not_killed_as_a_leftover(tmp_path):
    """runner_job writes result.json last and exits a moment later: the dispatcher waits for that
    moment instead of killing the launcher as a process its own run left (as it did, logging
    "killed 1 process(es) left over from the run: <pid> (python: ... runner_job ...)")."""
    clock = Ticks()
    launcher = RealLauncher(StubRunner(during=lambda: None), clock)
    lines = Lines()
    result = make(tmp_path, launcher, clock).run(task(), lines)
    assert result.ok and launcher.signals == []
    assert launcher.proc.wait(5) == 0, "it exited by itself"
    assert not any("left over" in line for line in lines), lines


def test_a_launcher_still_there_after_the_grace_is_killed_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch_runner, "EXIT_GRACE", 0.1)
    clock = Ticks()
    launcher = RealLauncher(StubRunner(during=lambda: None), clock)
    launcher.command = ["sleep", "60"]
    lines = Lines()
    assert make(tmp_path, launcher, clock).run(task(), lines).ok
    assert wait_gone(launcher.proc) == -signal.SIGKILL
    assert launcher.signals == [(signal.SIGKILL, clock())]
    assert f"slot {SLOT}: killed 1 process(es) left over from the run: {launcher.pid} (sleep: sleep 60)" in lines


# --------------------------------------------------------------------------------------------
# Detached by a stopping service, followed after its restart, never launched twice
# --------------------------------------------------------------------------------------------

def detached_run(tmp_path, **launcher_args):
    """A run the service left when it stopped: (its launcher, the handles recorded)."""
    clock = Ticks()
    launcher = Launcher(StubRunner(events=EVENTS), clock, ends_at=1000, **launcher_args)
    disp = make(tmp_path, launcher, clock)
    disp.detach_all()
    records = Records()
    lines = Lines()
    result = disp.run(task(), lines, records)
    assert result == Result(False, "recreate.yml: run 1-1 left running; the service follows it "
                                   "again at its next start", detached=True)
    assert lines == [f"slot {SLOT}: recreate.yml starting (task 1, attempt 1)"]
    run_dir = str(tmp_path / "state" / "runs" / "1-1")
    # Nothing of the run is touched: it goes on.
    assert sorted(os.listdir(run_dir)) == ["artifacts", "env", JOB, PROGRESS]
    return launcher, records


def test_a_stopping_service_leaves_the_run_and_a_restart_reads_its_result(tmp_path):
    first, records = detached_run(tmp_path)
    assert records == [intent(tmp_path), dict(intent(tmp_path), pid=4321, launched=True)]
    first.finish()  # the run ends while the service is down
    clock = Ticks()
    clock.advance(100)
    launcher = Launcher()
    lines = Lines()
    more = Records()
    result = make(tmp_path, launcher, clock).run(task(handle=records[-1]), lines, more)
    assert launcher.spawned == [] and more == []
    # What the run logged while the service was down is in its artifacts, not logged again.
    assert lines == [f"slot {SLOT}: recreate.yml: following run 1-1 started before the restart",
                     f"slot {SLOT}: recreate.yml rc=0 (successful) after 100 s"]
    assert result == Result(True, "recreate.yml rc=0 (successful)", 0,
                            str(tmp_path / "state" / "runs" / "1-1" / "artifacts" / "1-1"))


def test_a_run_followed_after_a_restart_is_tailed_from_where_it_was(tmp_path):
    _first, records = detached_run(tmp_path)
    handle = records[-1]
    run_dir = handle["run_dir"]
    with open(os.path.join(run_dir, PROGRESS), "w", encoding="utf-8") as progress:
        progress.write("TASK [before the restart]\n")
    proc = marked_process(handle["marker"])  # the run's process, alive
    clock = Ticks()

    def meanwhile():
        with open(os.path.join(run_dir, PROGRESS), "a", encoding="utf-8") as more:
            more.write("TASK [after the restart]\nTASK [half a li")
        write_json(os.path.join(run_dir, RESULT), {"ident": "1-1", "status": "successful", "rc": 0,
                                                   "artifact_dir": None, "first_failure": None,
                                                   "stats": {}, "stray": []})

    clock.hooks[1] = meanwhile
    lines = Lines()
    result = make(tmp_path, Launcher(), clock).run(task(handle=dict(handle, pid=proc.pid)), lines)
    assert lines == [f"slot {SLOT}: recreate.yml: following run 1-1 started before the restart",
                     f"slot {SLOT}: TASK [after the restart]",
                     f"slot {SLOT}: killed 1 process(es) left over from the run: {proc.pid} (sleep: sleep 60)",
                     f"slot {SLOT}: recreate.yml rc=0 (successful) after 0 s"]
    assert wait_gone(proc) == -signal.SIGKILL
    assert result.ok and result.ref == os.path.join(run_dir, "artifacts", "1-1")


def test_a_run_without_progress_yet_is_tailed_from_its_start(tmp_path):
    _first, records = detached_run(tmp_path)
    handle = records[-1]
    run_dir = handle["run_dir"]
    os.unlink(os.path.join(run_dir, PROGRESS))
    proc = marked_process(handle["marker"])
    clock = Ticks()

    def meanwhile():
        with open(os.path.join(run_dir, PROGRESS), "a", encoding="utf-8") as more:
            more.write("TASK [first]\n")
        proc.kill()
        proc.wait()

    clock.hooks[1] = meanwhile
    lines = Lines()
    make(tmp_path, Launcher(), clock).run(task(handle=dict(handle, pid=proc.pid)), lines)
    assert lines[1] == f"slot {SLOT}: TASK [first]"


def test_a_run_followed_after_a_restart_keeps_its_deadline(tmp_path):
    _first, records = detached_run(tmp_path)
    handle = dict(records[-1], started_at=NOW - 100)
    proc = marked_process(handle["marker"])
    handle["pid"] = proc.pid
    clock = Ticks(limit=50)
    state = {}

    def stopped():  # the look after the deadline: the run's process was told to stop
        state["code"] = wait_gone(proc)
        assert state["code"] == -signal.SIGTERM

    clock.hooks[2] = stopped
    lines = Lines()
    result = make(tmp_path, Launcher(), clock, timeout=10, poll_seconds=0.001).run(task(handle=handle), lines)
    assert wait_gone(proc) == -signal.SIGTERM
    run_dir = handle["run_dir"]
    assert lines == [f"slot {SLOT}: recreate.yml: following run 1-1 started before the restart",
                     f"slot {SLOT}: recreate.yml: run 1-1 is past its deadline; stopping it",
                     f"slot {SLOT}: recreate.yml: run 1-1 ended without a result (the process was "
                     f"killed?); see {run_dir} after 100 s"]
    assert result.ok is False


def test_the_result_names_the_playbook_the_run_was_started_with(tmp_path):
    first, records = detached_run(tmp_path)
    first.finish()
    lines = Lines()
    make(tmp_path, Launcher()).run(task(handle=dict(records[-1], playbook="/old/site/recreate-v1.yml")), lines)
    assert lines == [f"slot {SLOT}: recreate.yml: following run 1-1 started before the restart",
                     f"slot {SLOT}: recreate-v1.yml rc=0 (successful) after 0 s"]
    handle = dict(records[-1])
    del handle["playbook"]
    lines = Lines()
    make(tmp_path, Launcher()).run(task(handle=handle), lines)
    assert lines[-1] == f"slot {SLOT}: recreate.yml rc=0 (successful) after 0 s"


def test_a_handle_without_a_start_time_is_timed_from_now(tmp_path):
    first, records = detached_run(tmp_path)
    first.finish()
    handle = dict(records[-1])
    del handle["started_at"]
    clock = Ticks()
    clock.advance(500)
    lines = Lines()
    make(tmp_path, Launcher(), clock, timeout=10).run(task(handle=handle), lines)
    assert lines[-1] == f"slot {SLOT}: recreate.yml rc=0 (successful) after 0 s"


def test_a_run_recorded_but_not_counted_is_counted_once_when_it_did_start(tmp_path, fake_time):
    _first, records = detached_run(tmp_path)
    handle = records[0]  # the service died between the two records: not counted as launched
    assert "launched" not in handle
    lines = Lines()
    more = Records()
    result = make(tmp_path, Launcher(), Ticks()).run(task(handle=handle), lines, more)
    # ansible-runner had made its artifact dir: it started (and then died without a result)
    assert more == [dict(handle, launched=True)]
    assert fake_time.sleeps == []
    assert lines[0] == f"slot {SLOT}: recreate.yml: following run 1-1 started before the restart"
    assert result.message.startswith("recreate.yml: run 1-1 ended without a result")


def test_a_run_that_shows_life_during_the_start_grace_is_followed(tmp_path, fake_time):
    first, records = detached_run(tmp_path)
    handle = records[0]
    run_dir = handle["run_dir"]
    dispatch_runner.shutil.rmtree(os.path.join(run_dir, "artifacts"))
    fake_time.on_sleep.append(lambda: first.finish(StubRunner()))  # it ends during the grace
    launcher = Launcher()
    lines = Lines()
    more = Records()
    result = make(tmp_path, launcher, Ticks()).run(task(handle=handle), lines, more)
    assert fake_time.sleeps == [3.0]
    assert launcher.spawned == [] and more == [dict(handle, launched=True)]
    assert lines[0] == f"slot {SLOT}: recreate.yml: following run 1-1 started before the restart"
    assert result.ok


def test_a_run_recorded_but_not_counted_that_has_ended_is_read_at_once(tmp_path, fake_time):
    first, records = detached_run(tmp_path)
    first.finish()
    handle = records[0]
    dispatch_runner.shutil.rmtree(os.path.join(handle["run_dir"], "artifacts"))
    more = Records()
    result = make(tmp_path, Launcher(), Ticks()).run(task(handle=handle), Lines(), more)
    assert fake_time.sleeps == [] and more == [dict(handle, launched=True)]
    assert result.ok


def test_artifacts_of_another_run_are_no_sign_of_life(tmp_path, fake_time):
    _first, records = detached_run(tmp_path)
    handle = records[0]
    artifacts = os.path.join(handle["run_dir"], "artifacts")
    os.rename(os.path.join(artifacts, "1-1"), os.path.join(artifacts, "0-1"))
    launcher = Launcher()
    lines = Lines()
    make(tmp_path, launcher, Ticks()).run(task(handle=handle), lines)
    assert fake_time.sleeps == [3.0]
    assert lines[0] == f"slot {SLOT}: the run recorded before the restart never started; starting it"
    assert [run_dir for run_dir, _env in launcher.spawned] == [handle["run_dir"]]


def test_a_handle_names_its_run_whatever_the_task_s_attempts(tmp_path, fake_time):
    (tmp_path / "state" / "runs" / "7-3").mkdir(parents=True)
    handle = intent(tmp_path, "7-3")
    launcher = Launcher()
    records = Records()
    lines = Lines()
    make(tmp_path, launcher, Ticks()).run(task(task_id=7, attempts=0, handle=handle), lines, records)
    assert fake_time.sleeps == [3.0]
    assert [h["ident"] for h in records] == ["7-3", "7-3"]
    assert launcher.spawned[0][0] == str(tmp_path / "state" / "runs" / "7-3")
    assert lines[1] == f"slot {SLOT}: recreate.yml starting (task 7, attempt 1)"


def test_a_live_process_of_the_run_counts_as_started(tmp_path, fake_time):
    _first, records = detached_run(tmp_path)
    handle = records[0]
    dispatch_runner.shutil.rmtree(os.path.join(handle["run_dir"], "artifacts"))
    proc = marked_process(handle["marker"])
    try:
        disp = make(tmp_path, Launcher(), Ticks())
        disp.detach_all()
        more = Records()
        result = disp.run(task(handle=handle), Lines(), more)
    finally:
        proc.kill()
        proc.wait()
    assert fake_time.sleeps == [] and more == [dict(handle, launched=True)]
    assert result.detached


def test_a_run_that_never_started_is_launched_then_once(tmp_path, fake_time):
    _first, records = detached_run(tmp_path)
    handle = records[0]
    run_dir = handle["run_dir"]
    dispatch_runner.shutil.rmtree(os.path.join(run_dir, "artifacts"))
    clock = Ticks()
    clock.advance(5)
    launcher = Launcher(StubRunner(events=EVENTS))
    lines = Lines()
    more = Records()
    result = make(tmp_path, launcher, clock).run(task(handle=handle), lines, more)
    assert fake_time.sleeps == [3.0]
    again = intent(tmp_path, at=NOW + 5)
    assert more == [again, dict(again, pid=4321, launched=True)]
    assert launcher.job["extravars"] == {"slot": SLOT, "runner_name": RUNNER}
    assert lines == [f"slot {SLOT}: the run recorded before the restart never started; starting it",
                     f"slot {SLOT}: recreate.yml starting (task 1, attempt 1)",
                     f"slot {SLOT}: TASK [runner_slot : Boot]",
                     f"slot {SLOT}: TASK [runner_slot : Boot] hv1: changed",
                     f"slot {SLOT}: recreate.yml rc=0 (successful) after 0 s"]
    assert result.ok
    assert "env" not in os.listdir(run_dir)  # the old attempt's inputs did not reach the run


def test_a_launched_run_that_left_nothing_is_a_failed_attempt_not_a_new_launch(tmp_path, fake_time):
    run_dir = tmp_path / "state" / "runs" / "1-1"
    run_dir.mkdir(parents=True)
    handle = intent(tmp_path, pid=999999, launched=True, marker="gone-1")
    launcher = Launcher()
    more = Records()
    lines = Lines()
    result = make(tmp_path, launcher, Ticks()).run(task(handle=handle), lines, more)
    assert launcher.spawned == [] and more == [] and fake_time.sleeps == []
    assert result.message == (f"recreate.yml: run 1-1 ended without a result (the process was killed?); "
                              f"see {run_dir}")


def test_a_handle_of_another_dispatcher_is_not_followed(tmp_path):
    launcher = Launcher()
    records = Records()
    result = make(tmp_path, launcher).run(
        task(task_id=4, attempts=2, handle={"kind": "awx", "ident": "9-9", "job": 7}), Lines(), records)
    assert result.ok and [h["ident"] for h in records] == ["4-3", "4-3"]


# --------------------------------------------------------------------------------------------
# Pruning: the newest keep_runs, never a running one, never one still holding its job
# --------------------------------------------------------------------------------------------

def test_prune_keeps_the_newest_in_numeric_order(tmp_path):
    disp = make(tmp_path, keep_runs=2)
    runs = tmp_path / "state" / "runs"
    for name in ("1-1", "2-1", "03-1", "9-9", "9-10", "10-1", "2-2", "notes", "4-x", "5-1.old"):
        (runs / name).mkdir(parents=True)
    (runs / "2-2" / JOB).write_text("{}")  # its launcher has not finished
    assert disp.prune() == ["1-1", "2-1", "03-1", "9-9"]
    assert sorted(os.listdir(runs)) == ["10-1", "2-2", "4-x", "5-1.old", "9-10", "notes"]
    assert disp.prune() == []


def test_prune_goes_on_past_what_it_cannot_remove(tmp_path):
    disp = make(tmp_path, keep_runs=0)
    runs = tmp_path / "state" / "runs"
    for name in ("1-1", "3-1"):
        (runs / name).mkdir(parents=True)
    (runs / "2-1").write_text("not a run directory")
    assert disp.prune() == ["1-1", "2-1", "3-1"]
    assert os.listdir(runs) == ["2-1"]


def test_prune_with_keep_runs_zero_and_without_runs(tmp_path):
    disp = make(tmp_path, keep_runs=0)
    assert disp.prune() == []  # no runs dir yet
    runs = tmp_path / "state" / "runs"
    for name in ("1-1", "2-1"):
        (runs / name).mkdir(parents=True)
    assert disp.prune() == ["1-1", "2-1"]


def test_a_running_task_is_never_pruned(tmp_path):
    seen = {}
    holder = {}

    def log(line):
        if line.endswith("hv1: changed"):  # the run has ended, the task has not
            seen["pruned"] = holder["disp"].prune()
            seen["left"] = sorted(os.listdir(tmp_path / "state" / "runs"))

    holder["disp"] = make(tmp_path, Launcher(StubRunner(events=EVENTS)), keep_runs=0)
    (tmp_path / "state" / "runs" / "0-1").mkdir(parents=True)
    assert holder["disp"].run(task(), log).ok
    assert seen == {"pruned": ["0-1"], "left": ["1-1"]}
    assert os.listdir(tmp_path / "state" / "runs") == []  # pruned once the task is over


# --------------------------------------------------------------------------------------------
# Finding the playbook and ansible-playbook
# --------------------------------------------------------------------------------------------

def test_collection_roots_in_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/svc")
    monkeypatch.setattr(sys, "path", ["", "/usr/lib/python3/dist-packages", "/x/lib", "/v/site-packages"])
    env = {"ANSIBLE_COLLECTIONS_PATH": "/a::~/b/ansible_collections:/a",
           "ANSIBLE_COLLECTIONS_PATHS": "/ignored"}
    assert collection_roots(env, "/checkout") == [
        "/a/ansible_collections/rum/pool", "/home/svc/b/ansible_collections/rum/pool",
        "/home/svc/.ansible/collections/ansible_collections/rum/pool",
        "/usr/share/ansible/collections/ansible_collections/rum/pool",
        "/usr/lib/python3/dist-packages/ansible_collections/rum/pool",
        "/v/site-packages/ansible_collections/rum/pool", "/checkout"]
    assert collection_roots({"ANSIBLE_COLLECTIONS_PATHS": "/old/ansible_collections/"})[:2] == [
        "/old/ansible_collections/rum/pool", "/home/svc/.ansible/collections/ansible_collections/rum/pool"]
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", "/from/env")
    assert collection_roots()[0] == "/from/env/ansible_collections/rum/pool"
    assert len(collection_roots({})) == 4


def test_resolve_playbook_answers_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    coll = tmp_path / "colls" / "ansible_collections" / "rum" / "pool"
    (coll / "playbooks").mkdir(parents=True)
    (coll / "playbooks" / "recreate.yml").write_text("[]\n")
    env = {"ANSIBLE_COLLECTIONS_PATH": f"{tmp_path / 'none'}:{tmp_path / 'colls'}"}
    assert resolve_playbook("recreate.yml", environ=env, checkout=None) == (
        str(coll / "playbooks" / "recreate.yml"), str(coll))
    absolute = str(coll / "playbooks" / "recreate.yml")
    assert resolve_playbook(absolute, project_dir="/p") == (absolute, "/p")
    assert resolve_playbook(absolute) == (absolute, None)
    with pytest.raises(DispatchError) as err:
        resolve_playbook(str(tmp_path / "absent.yml"))
    assert str(err.value) == f"dispatcher.playbook {tmp_path / 'absent.yml'}: no such file"
    with pytest.raises(DispatchError) as err:
        resolve_playbook(str(coll / "playbooks"))  # a directory is no playbook
    monkeypatch.chdir(tmp_path / "colls")
    assert resolve_playbook("recreate.yml", project_dir="ansible_collections/rum/pool") == (
        str(coll / "playbooks" / "recreate.yml"), str(coll))
    with pytest.raises(DispatchError) as err:
        resolve_playbook("playbooks", project_dir=str(coll / ".."))
    with pytest.raises(DispatchError) as err:
        resolve_playbook("teardown.yml", project_dir=str(coll))
    assert str(err.value) == (
        f"dispatcher.playbook 'teardown.yml': not found as {coll / 'playbooks' / 'teardown.yml'} "
        "(dispatcher.project_dir should be the collection's directory, the one with playbooks/)")
    with pytest.raises(DispatchError) as err:
        resolve_playbook("nope.yml", environ=env, checkout="/ck")
    looked = [f"{tmp_path / 'none'}/ansible_collections/rum/pool/playbooks",
              f"{tmp_path / 'colls'}/ansible_collections/rum/pool/playbooks",
              f"{tmp_path / 'home'}/.ansible/collections/ansible_collections/rum/pool/playbooks",
              "/usr/share/ansible/collections/ansible_collections/rum/pool/playbooks", "/ck/playbooks"]
    assert str(err.value) == ("dispatcher.playbook 'nope.yml': not found in the rum.pool collection; "
                              f"looked in {', '.join(looked)} (install the collection, set "
                              "dispatcher.project_dir, or give an absolute path)")
    (coll / "playbooks" / "playbooks").mkdir()
    with pytest.raises(DispatchError):
        resolve_playbook("playbooks", environ=env, checkout=None)  # a directory again


def fake_checkout(tmp_path, monkeypatch, galaxy):
    """This module as if it ran from a checkout at tmp_path/ck with that galaxy.yml."""
    root = tmp_path / "ck"
    (root / "service" / "rum_pool_webhook").mkdir(parents=True)
    if galaxy is not None:
        (root / "galaxy.yml").write_text(galaxy, encoding="utf-8")
    monkeypatch.setattr(dispatch_runner, "__file__",
                        str(root / "service" / "rum_pool_webhook" / "dispatch_runner.py"))
    return str(root)


@pytest.mark.parametrize("galaxy, found", [
    ("namespace: rum\nname: pool\nversion: 1.0.0\n", True),
    ("version: 1.0.0\nname: pool  \nnamespace:   rum\n", True),
    ("namespace: rum\nname: pools\n", False),
    ("namespace: rumx\nname: pool\n", False),
    ("namespace: rum\n", False),
    ("name: pool\n", False),
    (" namespace: rum\nname: pool\n", False),
    (None, False),
])
def test_a_checkout_is_known_by_its_galaxy_yml(tmp_path, monkeypatch, galaxy, found):
    root = fake_checkout(tmp_path, monkeypatch, galaxy)
    assert dispatch_runner._checkout_root() == (root if found else None)  # pylint: disable=protected-access


def test_the_checkout_s_playbooks_are_found_last(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = fake_checkout(tmp_path, monkeypatch, "namespace: rum\nname: pool\n")
    (tmp_path / "ck" / "playbooks").mkdir()
    (tmp_path / "ck" / "playbooks" / "pool.yml").write_text("[]\n")
    env = {"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "none")}
    assert resolve_playbook("pool.yml", environ=env) == (os.path.join(root, "playbooks", "pool.yml"), root)
    with pytest.raises(DispatchError):
        resolve_playbook("pool.yml", environ=env, checkout=None)


def fake_python(tmp_path, monkeypatch, mode_bits=0o755):
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "ansible-playbook").write_text("#!/bin/sh\n")
    os.chmod(bindir / "ansible-playbook", mode_bits)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    return str(bindir)


def test_path_with_the_ansible_beside_this_python(tmp_path, monkeypatch):
    path_with_ansible = dispatch_runner._path_with_ansible  # pylint: disable=protected-access
    bindir = fake_python(tmp_path, monkeypatch)
    assert path_with_ansible({"PATH": "/usr/bin:/bin"}) == f"{bindir}:/usr/bin:/bin"
    assert path_with_ansible({"PATH": ""}) == bindir
    assert path_with_ansible({}) == f"{bindir}:{os.defpath}"
    assert path_with_ansible({"PATH": f"/usr/bin:{bindir}"}) is None  # found already
    other = tmp_path / "other"
    other.mkdir()
    (other / "ansible-playbook").symlink_to(os.path.join(bindir, "ansible-playbook"))
    assert path_with_ansible({"PATH": str(other)}) is None  # the same one, through a link
    (other / "ansible-playbook").unlink()
    (other / "ansible-playbook").write_text("#!/bin/sh\n")
    os.chmod(other / "ansible-playbook", 0o755)
    assert path_with_ansible({"PATH": str(other)}) == f"{bindir}:{other}"


def test_no_path_change_without_an_ansible_playbook_beside_this_python(tmp_path, monkeypatch):
    path_with_ansible = dispatch_runner._path_with_ansible  # pylint: disable=protected-access
    fake_python(tmp_path, monkeypatch, 0o644)
    assert path_with_ansible({"PATH": "/usr/bin"}) is None
    os.unlink(tmp_path / "venv" / "bin" / "ansible-playbook")
    os.mkdir(tmp_path / "venv" / "bin" / "ansible-playbook")
    assert path_with_ansible({"PATH": "/usr/bin"}) is None


# --------------------------------------------------------------------------------------------
# Small parts: the error line, progress tail, pids
# --------------------------------------------------------------------------------------------

def test_first_error_line(tmp_path):
    first_error_line = dispatch_runner._first_error_line  # pylint: disable=protected-access
    assert first_error_line(str(tmp_path)) is None
    (tmp_path / "stdout").write_bytes(b"PLAY [x]\n  \x1b[0;31mERROR! bad \xff yaml\x1b[0m  \nERROR! second\n")
    assert first_error_line(str(tmp_path)) == "ERROR! bad \ufffd yaml"
    (tmp_path / "stdout").write_text("ok\n\x1b[1m[ERROR]: the role was not found\x1b[0m\nERROR! later\n")
    assert first_error_line(str(tmp_path)) == "[ERROR]: the role was not found"
    (tmp_path / "stdout").write_text("an ERROR! inside\n[WARNING]: x\n")
    assert first_error_line(str(tmp_path)) is None


def ascii_locale(monkeypatch):
    """dispatch_runner's open() as under an ASCII locale: what it reads without naming a codec."""
    def opener(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
        if "b" not in mode and encoding is None:
            encoding = "ascii"
        return io.open(file, mode, buffering, encoding, errors, newline)

    monkeypatch.setattr(dispatch_runner, "open", opener, raising=False)


def test_files_are_read_as_utf_8_whatever_the_locale(tmp_path, monkeypatch):
    ascii_locale(monkeypatch)
    (tmp_path / "stdout").write_text("ERROR! caf\u00e9 not found\n", encoding="utf-8")
    first_error_line = dispatch_runner._first_error_line  # pylint: disable=protected-access
    assert first_error_line(str(tmp_path)) == "ERROR! caf\u00e9 not found"
    root = fake_checkout(tmp_path, monkeypatch, "namespace: rum\nname: pool\nauthors:\n  - Jos\u00e9\n")
    assert dispatch_runner._checkout_root() == root  # pylint: disable=protected-access


def test_tail_logs_whole_new_lines(tmp_path):
    path = tmp_path / "progress"
    lines = Lines()
    assert _tail(str(path), 7, "p: ", lines) == 7 and lines == []
    path.write_bytes(b"one\n\ntwo \xff\nthr")
    assert _tail(str(path), 0, "p: ", lines) == 11
    assert lines == ["p: one", "p: two \ufffd"]
    assert _tail(str(path), 11, "p: ", lines) == 11
    with open(path, "ab") as handle:
        handle.write(b"ee\nfour\n")
    assert _tail(str(path), 11, "p: ", lines) == 22
    assert lines[2:] == ["p: three", "p: four"]
    assert _tail(str(path), 4, "", lines) == 22 and lines[4:] == ["two \ufffd", "three", "four"]


def test_pid_alive_needs_the_run_s_marker(tmp_path):
    proc = tmp_path / "proc"
    for pid, env in (("1", b"RUM_POOL_WEBHOOK_RUN=m1\0"), ("7", b"X=1\0RUM_POOL_WEBHOOK_RUN=m2\0")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "environ").write_bytes(env)
    assert pid_alive(1, "m1", str(proc)) is True
    assert pid_alive("7", "m2", str(proc)) is True
    assert pid_alive(7, "m1", str(proc)) is False
    assert pid_alive(None, "m1", str(proc)) is False
    assert pid_alive(0, "m1", str(proc)) is False
    live = marked_process("m-alive-check")
    try:
        assert pid_alive(live.pid, "m-alive-check") is True
    finally:
        live.kill()
        live.wait()


def test_a_run_left_by_an_earlier_service_is_known_by_pid_and_marker():
    adopted_cls = dispatch_runner._Adopted  # pylint: disable=protected-access
    marker = f"adopted-{os.getpid()}"
    proc = marked_process(marker)
    helper = marked_process(marker)
    try:
        assert adopted_cls(proc.pid, marker).alive() is True
        assert adopted_cls(None, marker).alive() is True
        wrong = adopted_cls(proc.pid, "some-other-run")
        assert wrong.alive() is False
        wrong.signal(signal.SIGTERM)  # a pid now used by another process is not signalled
        assert proc.poll() is None
        adopted = adopted_cls(proc.pid, marker)
        assert (adopted.pid, adopted.marker) == (proc.pid, marker)
        adopted.signal(signal.SIGTERM)
        assert wait_gone(proc) == -signal.SIGTERM
        adopted.signal(signal.SIGTERM)  # gone: nothing to signal, no error
        # The launcher is gone, another process of the run is not: the run is alive.
        assert adopted.alive() is True
        helper.kill()
        helper.wait()
        assert adopted.alive() is False
        assert adopted_cls(None, marker).alive() is False
    finally:
        for each in (proc, helper):
            each.kill()
            each.wait()


def test_a_run_in_a_thread_for_a_stand_in_library(tmp_path):
    seen = {}

    class Waiting:
        @staticmethod
        def run(**kwargs):
            seen["thread"] = (threading.current_thread().name, threading.current_thread().daemon)
            seen["cancelled_at_start"] = kwargs["cancel_callback"]()
            started.set()
            while not kwargs["cancel_callback"]():
                release.wait(0.01)
            return types.SimpleNamespace(status="canceled", rc=254, config=None)

    started = threading.Event()
    release = threading.Event()
    run_dir = str(tmp_path)
    spec = {"ident": "1-1", "playbook": "p.yml", "inventory": "i", "envvars": {}}
    in_thread = dispatch_runner._InThread(run_dir, spec, Waiting)  # pylint: disable=protected-access
    for _unused in range(3000):  # until the run is under way, or the thread is gone
        if started.wait(0.01) or not in_thread._thread.is_alive():  # pylint: disable=protected-access
            break
    assert started.is_set()
    assert in_thread.pid == os.getpid() and in_thread.alive() is True
    assert seen == {"thread": ("rum-pool-run", True), "cancelled_at_start": False}
    in_thread.signal(signal.SIGTERM)
    in_thread._thread.join(30)  # pylint: disable=protected-access
    assert in_thread.alive() is False
    assert read_json(os.path.join(run_dir, RESULT))["status"] == "canceled"


def test_the_stand_in_library_runs_through_the_launcher_s_code(tmp_path):
    records = Records()
    disp = make(tmp_path, runner_module=StubRunner(events=EVENTS), spawn=None)
    lines = Lines()
    result = disp.run(task(), lines, records)
    assert records[1]["pid"] == os.getpid()
    assert result.ok and lines[1:3] == [f"slot {SLOT}: TASK [runner_slot : Boot]",
                                        f"slot {SLOT}: TASK [runner_slot : Boot] hv1: changed"]


# --------------------------------------------------------------------------------------------
# The launcher's process, for real (a stand-in ansible_runner on its PYTHONPATH)
# --------------------------------------------------------------------------------------------

WAITING_RUNNER = """\
import time


def run(**kwargs):
    while not kwargs["cancel_callback"]():
        time.sleep(0.01)
    return type("R", (), {"status": "canceled", "rc": 254, "config": None})()
"""


def test_the_launcher_runs_in_a_session_of_its_own_with_only_the_run_s_environment(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "ansible_runner.py").write_text(WAITING_RUNNER)
    run_dir = tmp_path / "runs" / "1-1"
    run_dir.mkdir(parents=True)
    write_json(str(run_dir / JOB), {"ident": "1-1", "playbook": "p.yml", "inventory": "i"})
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(lib), RUN_MARKER: "m-launch-1"}
    inherited_r, inherited_w = os.pipe()
    os.set_inheritable(inherited_w, True)
    stdin_r, stdin_w = os.pipe()
    saved_stdin = os.dup(0)
    os.dup2(stdin_r, 0)  # a stdin that is not /dev/null, to see the launcher does not get it
    try:
        launched = spawn_process(str(run_dir), env)
    finally:
        os.dup2(saved_stdin, 0)
        for fd in (saved_stdin, stdin_r, stdin_w, inherited_w):
            os.close(fd)
    pid = launched.pid
    try:
        assert launched.marker == "m-launch-1" and launched.popen.pid == pid
        assert os.getsid(pid) == pid  # a session of its own: it outlives the service
        for _unused in range(3000):  # the launcher is running the stand-in once progress exists
            if (run_dir / PROGRESS).exists():
                break
            assert launched.alive(), (run_dir / "launcher.log").read_text()
            time.sleep(0.01)
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            assert handle.read().split(b"\0")[:-1] == [
                sys.executable.encode(), b"-m", b"rum_pool_webhook.runner_job", str(run_dir).encode()]
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = dict(item.split("=", 1) for item in handle.read().decode().split("\0") if item)
        assert environ == env
        assert os.readlink(f"/proc/{pid}/cwd") == str(run_dir)
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        log = str(run_dir / "launcher.log")
        assert os.readlink(f"/proc/{pid}/fd/1") == log and os.readlink(f"/proc/{pid}/fd/2") == log
        assert not [fd for fd in os.listdir(f"/proc/{pid}/fd")
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"pipe:[{os.fstat(inherited_r).st_ino}]"]
        assert launched.alive() is True
        launched.signal(signal.SIGTERM)  # asks the run to cancel
        assert launched.popen.wait(30) == 1
        assert launched.alive() is False
        launched.signal(signal.SIGTERM)  # reaped: nothing to signal, no error
    finally:
        os.close(inherited_r)
        if launched.popen.poll() is None:
            launched.popen.kill()
            launched.popen.wait()
    assert read_json(str(run_dir / RESULT))["status"] == "canceled"
    assert mode(run_dir / "launcher.log") & 0o200


def test_a_launcher_that_cannot_be_signalled_is_left_alone(tmp_path):
    launched = dispatch_runner._Launched(  # pylint: disable=protected-access
        subprocess.Popen(["sleep", "60"]), "m-x")
    try:
        launched.signal(999)  # no such signal: the error is swallowed
        assert launched.alive() is True
    finally:
        launched.popen.kill()
        launched.popen.wait()


def test_a_run_that_never_started_or_was_killed_leaves_no_inputs_and_is_pruned(tmp_path, monkeypatch):
    def no_launcher(_run_dir, _env):
        raise OSError(7, "no launcher here")

    monkeypatch.setattr(dispatch_runner, "spawn_process", no_launcher)
    disp = make(tmp_path, runner_module=None, keep_runs=0)
    result = disp.run(task(), Lines())
    assert result.message == "recreate.yml could not start: OSError: [Errno 7] no launcher here"
    run_dir = tmp_path / "state" / "runs" / "1-1"
    assert not (run_dir / "job.json").exists(), "the run's inputs (extravars, envvars) are not kept"
    assert not run_dir.exists(), "and its directory is pruned like any other"
