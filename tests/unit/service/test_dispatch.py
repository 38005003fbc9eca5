# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dispatchers: ansible-runner for real on tiny local playbooks, AWX against the fake AWX."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from rum_pool_webhook import dispatch
from rum_pool_webhook.dispatch import (
    AnsibleRunnerDispatcher, AwxDispatcher, DispatchError, Result, Task, kill_leftovers, make_dispatcher,
    resolve_playbook,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_awx import FakeAwx  # noqa: E402  pylint: disable=wrong-import-position

SLOT = "ci-hv1-1"
RUNNER = "ci-hv1-1-k3x9qa"


def task(task_id=1, attempts=0, runner=RUNNER, slot=SLOT):
    return Task(id=task_id, slot=slot, runner=runner, delivery="d-1", attempts=attempts, created_at=0.0)


class Lines(list):
    """A ``log`` callable that keeps the lines."""

    def __call__(self, line):
        self.append(line)


def private_tree_problems(top):
    """Paths under ``top`` (itself included) that group or others can access."""
    bad = []
    for root, dirs, files in os.walk(top):
        for name in [""] + dirs + files:
            path = os.path.join(root, name) if name else root
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                bad.append((path, oct(stat.S_IMODE(st.st_mode))))
    return bad


def files_containing(top, needle):
    hits = []
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                if needle.encode() in handle.read():
                    hits.append(path)
    return hits


# --------------------------------------------------------------------------------------------
# ansible-runner, for real
# --------------------------------------------------------------------------------------------

OK_PLAYBOOK = """\
- name: Tiny recreate
  hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.debug:
        msg: "{{ greeting }} {{ slot }}"
    - name: Never runs
      ansible.builtin.debug:
        msg: skipped
      when: false
    - name: Record what arrived
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: |
          slot={{ slot }}
          runner={{ runner | default('NONE') }}
          greeting={{ greeting }}
          env_token={{ lookup('ansible.builtin.env', 'RUM_TEST_ENV_TOKEN') }}
          service_secret={{ lookup('ansible.builtin.env', 'RUM_POOL_WEBHOOK_SECRET') }}
"""

FAIL_PLAYBOOK = """\
- name: Failing recreate
  hosts: all
  gather_facts: false
  tasks:
    - name: A failure that is ignored
      ansible.builtin.fail:
        msg: ignore me
      ignore_errors: true
    - name: Check the disk
      ansible.builtin.fail:
        msg: "{{ 'disk on fire ' * 60 }}"
    - name: Not reached
      ansible.builtin.debug:
        msg: never
"""

SECRET_PLAYBOOK = """\
- name: Secret failure
  hosts: all
  gather_facts: false
  tasks:
    - name: Use the token
      ansible.builtin.fail:
        msg: "the token {{ api_token }} was refused"
      no_log: true
"""

SLOW_PLAYBOOK = """\
- name: Slow
  hosts: all
  gather_facts: false
  tasks:
    - name: Wait a long time
      ansible.builtin.pause:
        seconds: 60
"""


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory"
    path.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    return str(path)


@pytest.fixture
def playbooks(tmp_path):
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    for name, text in (("ok.yml", OK_PLAYBOOK), ("fail.yml", FAIL_PLAYBOOK),
                       ("secret.yml", SECRET_PLAYBOOK), ("slow.yml", SLOW_PLAYBOOK)):
        (pbdir / name).write_text(text)
    return pbdir


def test_successful_run_reports_progress_and_passes_vars(tmp_path, inventory, playbooks, monkeypatch):
    monkeypatch.setenv("RUM_POOL_WEBHOOK_SECRET", "service-webhook-secret-77")
    out = tmp_path / "out.txt"
    state = tmp_path / "state"
    disp = AnsibleRunnerDispatcher(
        playbook=str(playbooks / "ok.yml"), inventory=inventory,
        extravars={"greeting": "hi-there", "out": str(out), "runner": "from-config"},
        envvars={"RUM_TEST_ENV_TOKEN": "env-token-4242"}, state_dir=str(state), keep_runs=5,
        timeout=120)
    lines = Lines()
    result = disp.run(task(task_id=3, attempts=1), lines)

    run_dir = state / "runs" / "3-2"
    assert result == Result(ok=True, message="ok.yml rc=0 (successful)", rc=0,
                            ref=str(run_dir / "artifacts" / "3-2"))
    assert f"slot {SLOT}: TASK [Say hello]" in lines
    assert f"slot {SLOT}: TASK [Say hello] localhost: ok" in lines
    assert f"slot {SLOT}: TASK [Never runs] localhost: skipping" in lines
    assert f"slot {SLOT}: TASK [Record what arrived] localhost: changed" in lines
    assert lines[-1].startswith(f"slot {SLOT}: ok.yml rc=0 (successful) after ")
    # Results are never echoed: the debug message is not in any line.
    assert not [line for line in lines if "hi-there" in line]

    got = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert got == {"slot": SLOT, "runner": RUNNER, "greeting": "hi-there",
                   "env_token": "env-token-4242", "service_secret": ""}

    # The run dir: 0700, inputs (env/) gone, nothing readable by group or others.
    assert stat.S_IMODE(os.stat(state / "runs").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert not (run_dir / "env").exists()
    assert private_tree_problems(str(state / "runs")) == []
    assert (run_dir / "artifacts" / "3-2" / "stdout").is_file()
    # envvars reached ansible-runner's command record (0600), the service's secret did not.
    assert files_containing(str(run_dir), "env-token-4242")
    assert files_containing(str(run_dir), "service-webhook-secret-77") == []


def test_failed_run_names_the_first_failed_task(tmp_path, inventory, playbooks):
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "fail.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "state"), timeout=120)
    lines = Lines()
    result = disp.run(task(runner=None), lines)

    assert result.ok is False
    assert result.rc == 2
    assert result.message.startswith("fail.yml rc=2 (failed): TASK [Check the disk] localhost: disk on fire")
    assert len(result.message) <= len("fail.yml rc=2 (failed): ") + dispatch.MESSAGE_DETAIL_MAX
    assert result.message.endswith("...")
    assert "\n" not in result.message
    assert f"slot {SLOT}: TASK [A failure that is ignored] localhost: failed (ignored)" in lines
    assert f"slot {SLOT}: TASK [Check the disk] localhost: failed" in lines
    assert not [line for line in lines if "Not reached" in line]


def test_no_log_failure_keeps_the_secret_out_of_message_and_logs(tmp_path, inventory, playbooks):
    secret = "tok-SECRET-9d8e7f"
    state = tmp_path / "state"
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "secret.yml"), inventory=inventory,
                                   extravars={"api_token": secret}, state_dir=str(state), timeout=120)
    lines = Lines()
    result = disp.run(task(), lines)

    assert result.ok is False
    assert result.message == "secret.yml rc=2 (failed): TASK [Use the token] localhost: output hidden (no_log)"
    assert secret not in result.message
    assert not [line for line in lines if secret in line]
    assert f"slot {SLOT}: TASK [Use the token] localhost: failed" in lines
    # ansible-core prints a no_log task's error text into stdout and the event files anyway;
    # whatever holds the secret is private to the service's user.
    holders = files_containing(str(state), secret)
    for path in holders:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    assert private_tree_problems(str(state / "runs")) == []


def test_timeout_stops_the_playbook(tmp_path, inventory, playbooks):
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "slow.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "state"), timeout=2)
    lines = Lines()
    result = disp.run(task(), lines)
    assert result.ok is False
    assert "(timeout): timed out after 2 s" in result.message
    assert f"slot {SLOT}: TASK [Wait a long time]" in lines

    # ansible-core runs the task's worker in a session of its own: killing the playbook's process
    # group leaves it running unless the dispatcher finds it by its run marker
    def leftovers():
        return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if _cmdline(pid).endswith("slow.yml") and str(tmp_path) in _cmdline(pid)]

    for _unused in range(50):  # SIGKILL is delivered at once; the process may take a moment to go
        if not leftovers():
            break
        time.sleep(0.1)
    assert leftovers() == [], "processes of the timed-out run are still there"
    assert any("left over from the run" in line for line in lines), lines


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def test_leftover_processes_are_found_by_their_marker(tmp_path):
    proc = tmp_path / "proc"
    for pid, env in (("101", b"A=1\0RUM_POOL_WEBHOOK_RUN=m1\0"), ("102", b"RUM_POOL_WEBHOOK_RUN=m10\0"),
                     ("103", b"RUM_POOL_WEBHOOK_RUN=m1"), ("self", b"RUM_POOL_WEBHOOK_RUN=m1\0")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "environ").write_bytes(env)
    (proc / "104").mkdir()  # no environ: gone or not readable
    killed = []
    assert kill_leftovers("m1", str(proc), kill=lambda pid, sig: killed.append((pid, sig))) == [101, 103]
    assert killed == [(101, 9), (103, 9)]


def test_old_runs_are_pruned_beyond_keep_runs(tmp_path, inventory, playbooks):
    runs = tmp_path / "state" / "runs"
    for name in ("2-1", "9-1", "9-2", "10-1", "notes"):
        (runs / name).mkdir(parents=True)
    disp = AnsibleRunnerDispatcher(
        playbook=str(playbooks / "ok.yml"), inventory=inventory,
        extravars={"greeting": "x", "out": str(tmp_path / "o.txt")},
        state_dir=str(tmp_path / "state"), keep_runs=2, timeout=120)
    result = disp.run(task(task_id=11), Lines())
    assert result.ok
    # Numeric order (10 after 9), newest two kept, a foreign directory left alone.
    assert sorted(os.listdir(runs)) == ["10-1", "11-1", "notes"]
    assert os.path.isdir(result.ref)


# --------------------------------------------------------------------------------------------
# ansible-runner, stubbed: what is passed, pruning around running tasks, setup errors
# --------------------------------------------------------------------------------------------

class StubRunner:
    """Stands in for the ansible_runner module; ``during`` runs inside ``run``."""

    def __init__(self, status="successful", rc=0, events=(), during=None):
        self.calls = []
        self.status, self.rc, self.events, self.during = status, rc, events, during

    def run(self, **kwargs):
        self.calls.append(kwargs)
        pdd = kwargs["private_data_dir"]
        self.mode = stat.S_IMODE(os.stat(pdd).st_mode)
        os.makedirs(os.path.join(pdd, "env"))
        artifact_dir = os.path.join(pdd, "artifacts", kwargs["ident"])
        os.makedirs(artifact_dir)
        with open(os.path.join(artifact_dir, "stdout"), "w", encoding="utf-8") as handle:
            handle.write("ERROR! the playbook could not be parsed\n")
        os.chmod(os.path.join(artifact_dir, "stdout"), 0o644)
        for event in self.events:
            assert kwargs["event_handler"](event) is True
        if self.during:
            self.during()
        return type("R", (), {"status": self.status, "rc": self.rc,
                              "config": type("C", (), {"artifact_dir": artifact_dir})()})()


def test_runner_arguments_and_extravars_merge(tmp_path, inventory, playbooks, monkeypatch):
    monkeypatch.setenv("RUM_POOL_AWX_TOKEN", "x")
    stub = StubRunner()
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   extravars={"a": 1, "slot": "bogus", "runner": "bogus"},
                                   envvars={"K": 5}, state_dir=str(tmp_path / "s"), timeout=1.5,
                                   runner_module=stub)
    result = disp.run(task(task_id=4, runner=None), Lines())
    call = stub.calls[0]
    assert call["extravars"] == {"a": 1, "slot": SLOT}  # no runner when the task has none
    path = call["envvars"].pop("PATH", None)
    marker = call["envvars"].pop(dispatch.RUN_MARKER)
    assert "-4-1-" in marker, marker  # task 4, attempt 1: unique per run
    assert call["envvars"] == {"K": "5", "RUM_POOL_AWX_TOKEN": ""}
    # ansible-playbook beside this Python comes first on the playbook's PATH.
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    search = path if path is not None else os.environ.get("PATH", "")
    assert os.path.realpath(shutil.which("ansible-playbook", path=search)) == \
        os.path.realpath(os.path.join(venv_bin, "ansible-playbook"))
    assert call["quiet"] is True and call["timeout"] == 2 and call["ident"] == "4-1"
    assert call["playbook"] == str(playbooks / "ok.yml") and call["inventory"] == inventory
    assert call["private_data_dir"] == str(tmp_path / "s" / "runs" / "4-1")
    assert call["cancel_callback"]() is False
    assert "project_dir" not in call  # an absolute playbook outside a collection
    assert stub.mode == 0o700
    assert result.ok and result.rc == 0
    assert private_tree_problems(call["private_data_dir"]) == []
    assert not os.path.exists(os.path.join(call["private_data_dir"], "env"))

    disp.run(task(task_id=4, attempts=1), Lines())
    assert stub.calls[1]["extravars"] == {"a": 1, "slot": SLOT, "runner": RUNNER}
    disp.cancel_all()
    assert stub.calls[1]["cancel_callback"] is not None
    assert stub.calls[1]["cancel_callback"]() is True


def test_failure_before_any_task_reports_the_error_line(tmp_path, inventory, playbooks):
    stub = StubRunner(status="failed", rc=4)
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "s"), runner_module=stub)
    result = disp.run(task(), Lines())
    assert result == Result(False, "ok.yml rc=4 (failed): ERROR! the playbook could not be parsed", 4,
                            str(tmp_path / "s" / "runs" / "1-1" / "artifacts" / "1-1"))


def test_unreachable_host_and_role_task_names(tmp_path, inventory, playbooks):
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Boot", "role": "runner_slot"}},
        {"event": "runner_on_unreachable",
         "event_data": {"task": "Boot", "role": "runner_slot", "host": "hv1",
                        "res": {"msg": "ssh: connect to host hv1 port 22: No route", "unreachable": True}}},
    ]
    lines = Lines()
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "s"),
                                   runner_module=StubRunner(status="failed", rc=4, events=events))
    result = disp.run(task(), lines)
    assert lines[1:3] == [f"slot {SLOT}: TASK [runner_slot : Boot]",
                          f"slot {SLOT}: TASK [runner_slot : Boot] hv1: unreachable"]
    assert result.message == ("ok.yml rc=4 (failed): TASK [runner_slot : Boot] hv1 unreachable: "
                              "ssh: connect to host hv1 port 22: No route")


def test_prune_never_removes_a_running_task(tmp_path, inventory, playbooks):
    runs = tmp_path / "s" / "runs"
    holder = {}

    def during():
        # Another worker finishes meanwhile and prunes: this (older-numbered) run must stay.
        holder["removed"] = holder["disp"].prune()
        holder["left"] = sorted(os.listdir(runs))

    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "s"), keep_runs=1,
                                   runner_module=StubRunner(during=during))
    holder["disp"] = disp
    for name in ("5-1", "8-1"):
        (runs / name).mkdir(parents=True)
    result = disp.run(task(task_id=1), Lines())
    assert holder["removed"] == ["5-1"]
    assert holder["left"] == ["1-1", "8-1"]
    # After the run, keep_runs=1 keeps only the newest.
    assert sorted(os.listdir(runs)) == ["8-1"]
    assert result.ok


def test_leftover_run_dir_is_replaced(tmp_path, inventory, playbooks):
    stale = tmp_path / "s" / "runs" / "1-1" / "env"
    stale.mkdir(parents=True)
    (stale / "extravars").write_text('{"slot": "old"}')
    stub = StubRunner()
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "s"), runner_module=stub)
    assert disp.run(task(), Lines()).ok
    assert not stale.exists()


def test_runner_exception_is_a_failed_result(tmp_path, inventory, playbooks):
    class Broken:
        @staticmethod
        def run(**_kwargs):
            raise RuntimeError("ansible-playbook: not found")

    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "s"), runner_module=Broken)
    result = disp.run(task(), Lines())
    assert result.ok is False
    assert result.message == "ok.yml could not start: RuntimeError: ansible-playbook: not found"


def test_missing_inventory_and_library(tmp_path, playbooks, monkeypatch):
    with pytest.raises(DispatchError, match=r"dispatcher.inventory .*/nope: no such file"):
        AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=str(tmp_path / "nope"),
                                state_dir=str(tmp_path), runner_module=StubRunner())
    monkeypatch.setitem(sys.modules, "ansible_runner", None)
    with pytest.raises(DispatchError, match="ansible-runner library is not installed"):
        AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=str(playbooks / "ok.yml"),
                                state_dir=str(tmp_path))


def test_playbook_resolution(tmp_path):
    coll = tmp_path / "colls" / "ansible_collections" / "rum" / "pool"
    (coll / "playbooks").mkdir(parents=True)
    (coll / "playbooks" / "recreate.yml").write_text("[]\n")
    env = {"ANSIBLE_COLLECTIONS_PATH": f"{tmp_path / 'elsewhere'}:{tmp_path / 'colls'}"}
    assert resolve_playbook("recreate.yml", environ=env) == (str(coll / "playbooks" / "recreate.yml"), str(coll))
    # The ansible_collections directory itself is accepted too.
    env2 = {"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "colls" / "ansible_collections")}
    assert resolve_playbook("recreate.yml", environ=env2, checkout=None)[1] == str(coll)
    # project_dir wins and is checked.
    assert resolve_playbook("recreate.yml", project_dir=str(coll))[0] == str(coll / "playbooks" / "recreate.yml")
    with pytest.raises(DispatchError, match=r"'teardown.yml': not found as .*/playbooks/teardown.yml"):
        resolve_playbook("teardown.yml", project_dir=str(coll))
    with pytest.raises(DispatchError) as err:
        resolve_playbook("nope.yml", environ=env, checkout=None)
    assert str(tmp_path / "colls" / "ansible_collections" / "rum" / "pool" / "playbooks") in str(err.value)
    assert "dispatcher.project_dir" in str(err.value)
    with pytest.raises(DispatchError, match="no such file"):
        resolve_playbook(str(tmp_path / "absent.yml"))
    # Running from this checkout, the repository's own playbooks are found last.
    assert dispatch._checkout_root() == ROOT  # pylint: disable=protected-access
    path, root = resolve_playbook("recreate.yml", environ={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "x")})
    assert (path, root) == (os.path.join(ROOT, "playbooks", "recreate.yml"), ROOT)


def test_collection_playbook_runs_in_its_project_dir(tmp_path, inventory):
    coll = tmp_path / "ansible_collections" / "rum" / "pool"
    (coll / "playbooks").mkdir(parents=True)
    (coll / "playbooks" / "recreate.yml").write_text("[]\n")
    stub = StubRunner()
    disp = AnsibleRunnerDispatcher(playbook="recreate.yml", inventory=inventory,
                                   project_dir=str(coll), state_dir=str(tmp_path / "s"),
                                   runner_module=stub)
    disp.run(task(), Lines())
    assert stub.calls[0]["project_dir"] == str(coll)
    assert stub.calls[0]["playbook"] == str(coll / "playbooks" / "recreate.yml")


# --------------------------------------------------------------------------------------------
# AWX against the fake AWX, over HTTP on 127.0.0.1
# --------------------------------------------------------------------------------------------

TOKEN = "awx-tok-51f0c2"


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def awx():
    fake = FakeAwx(token=TOKEN, read_token="awx-readonly-77")
    fake.start()
    yield fake
    fake.stop()


def awx_dispatcher(fake, template, clock, token=TOKEN, **kwargs):
    kwargs.setdefault("poll_seconds", 5)
    kwargs.setdefault("timeout", 60)
    return AwxDispatcher(fake.url, token, template, clock=clock, sleep=clock.sleep, **kwargs)


def test_awx_launch_by_id_and_follow(awx):
    template = awx.add_template("rum.pool recreate slot")
    clock = Clock()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock).run(task(), lines)
    assert result == Result(True, "AWX job 100 successful", None, f"{awx.url}/#/jobs/playbook/100/output")
    assert lines == [
        f"slot {SLOT}: AWX job 100 launched from job template {template}: {awx.url}/#/jobs/playbook/100/output",
        f"slot {SLOT}: AWX job 100 pending",
        f"slot {SLOT}: AWX job 100 running",
        f"slot {SLOT}: AWX job 100 successful",
    ]
    assert clock.sleeps == [5]
    assert awx.launches()[0]["extra_vars"] == {"slot": SLOT, "runner": RUNNER}
    requests = awx.requests
    assert [(r["method"], r["path"]) for r in requests] == [
        ("POST", f"/api/v2/job_templates/{template}/launch/"),
        ("GET", "/api/v2/jobs/100/"), ("GET", "/api/v2/jobs/100/")]
    assert {r["auth"] for r in requests} == {"execute"}
    assert requests[0]["body"] == {"extra_vars": {"slot": SLOT, "runner": RUNNER}}


def test_awx_template_by_name_is_resolved_once(awx):
    awx.add_template("other")
    template = awx.add_template("recreate slot")
    disp = awx_dispatcher(awx, "recreate slot", Clock())
    assert disp.run(task(task_id=1, runner=None), Lines()).ok
    assert disp.run(task(task_id=2), Lines()).ok
    lookups = [r for r in awx.requests if r["path"] == "/api/v2/job_templates/"]
    assert len(lookups) == 1 and lookups[0]["query"] == "name=recreate+slot"
    launches = awx.launches()
    assert [j["job_template"] for j in launches] == [template, template]
    assert launches[0]["extra_vars"] == {"slot": SLOT}  # no runner when the task has none


def test_awx_unknown_template_name(awx):
    disp = awx_dispatcher(awx, "no such template", Clock())
    with pytest.raises(DispatchError, match="AWX job template 'no such template': not found"):
        disp.resolve_template()
    lines = Lines()
    result = disp.run(task(), lines)
    assert result.ok is False and "'no such template': not found" in result.message
    assert lines == [f"slot {SLOT}: {result.message}"]


def test_awx_template_without_prompt_on_launch(awx):
    template = awx.add_template("recreate", ask_variables_on_launch=False)
    result = awx_dispatcher(awx, template, Clock()).run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith(
        f"job template {template} does not prompt for variables on launch; "
        "enable 'Prompt on launch' for Variables")
    assert result.ref == f"{awx.url}/#/jobs/playbook/100/output"
    job = awx.launches()[0]
    assert job["status"] == "canceled" and job["extra_vars"] == {}


def test_awx_failed_job(awx):
    template = awx.add_template("recreate", script=("pending", "waiting", "running", "failed"),
                                job_explanation="Previous Task Failed: {\"job_type\": \"project_update\"}")
    clock = Clock()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock).run(task(), lines)
    assert result.ok is False
    assert result.message == 'AWX job 100 failed: Previous Task Failed: {"job_type": "project_update"}'
    assert [line.rsplit(" ", 1)[-1] for line in lines[1:]] == ["pending", "waiting", "running", "failed"]
    assert clock.sleeps == [5, 5]


def test_awx_timeout_cancels_the_job(awx):
    template = awx.add_template("recreate", script=("pending", "running"))
    clock = Clock()
    lines = Lines()
    result = awx_dispatcher(awx, template, clock, timeout=30, poll_seconds=10).run(task(), lines)
    assert result.ok is False
    assert result.message == "AWX job 100 timed out after 30 s (last status running); cancel requested"
    assert clock.sleeps == [10, 10, 10]
    assert awx.launches()[0]["status"] == "canceled"
    assert ("POST", "/api/v2/jobs/100/cancel/") in [(r["method"], r["path"]) for r in awx.requests]
    assert f"slot {SLOT}: AWX job 100: cancel requested" in lines


def test_awx_job_moved_by_admin_call(awx):
    template = awx.add_template("recreate", auto_advance=False)
    clock = Clock()

    def sleep(seconds):
        clock.sleep(seconds)
        if len(clock.sleeps) == 3:  # someone finishes the job in AWX
            body = json.dumps({"status": "successful"}).encode()
            req = urllib.request.Request(f"{awx.url}/_fake/jobs/100/status", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert json.loads(resp.read())["status"] == "successful"

    disp = AwxDispatcher(awx.url, TOKEN, template, poll_seconds=2, timeout=60, clock=clock, sleep=sleep)
    result = disp.run(task(), Lines())
    assert result.ok and clock.sleeps == [2, 2, 2]


def test_awx_bad_token_is_an_auth_error_without_the_token(awx):
    template = awx.add_template("recreate")
    result = awx_dispatcher(awx, template, Clock(), token="wrong-token-e9a1").run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith(f"AWX POST /api/v2/job_templates/{template}/launch/: HTTP 401: ")
    assert "token" in result.message and "wrong-token-e9a1" not in result.message
    assert awx.requests[0]["auth"] == "bad"
    assert awx.launches() == []


def test_awx_read_only_token_is_forbidden(awx):
    template = awx.add_template("recreate")
    result = awx_dispatcher(awx, template, Clock(), token="awx-readonly-77").run(task(), Lines())
    assert result.ok is False
    assert "HTTP 403" in result.message and "Execute permission" in result.message
    assert "awx-readonly-77" not in result.message


def test_awx_http_errors_name_method_path_and_status(awx):
    result = awx_dispatcher(awx, 999, Clock()).run(task(), Lines())
    assert result == Result(False, "AWX POST /api/v2/job_templates/999/launch/: HTTP 404: Not found.")


def test_awx_unreachable_server():
    with FakeAwx() as fake:
        url = fake.url
    disp = AwxDispatcher(url, TOKEN, 7, clock=Clock(), sleep=lambda s: None)
    result = disp.run(task(), Lines())
    assert result.ok is False
    assert result.message.startswith("AWX POST /api/v2/job_templates/7/launch/: cannot connect: ")


def test_awx_url_with_api_root_and_repr(awx):
    template = awx.add_template("recreate")
    disp = AwxDispatcher(awx.url + "/api/v2/", TOKEN, template, clock=Clock(), sleep=lambda s: None)
    result = disp.run(task(), Lines())
    assert result.ok and result.ref == f"{awx.url}/#/jobs/playbook/100/output"
    assert TOKEN not in repr(disp)


def test_awx_redirect_is_not_followed():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    seen = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("Authorization"))
            self.send_response(301)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = AwxDispatcher(url, TOKEN, 7, clock=Clock(), sleep=lambda s: None).run(task(), Lines())
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 1
    assert result.message == ("AWX POST /api/v2/job_templates/7/launch/: HTTP 301 redirect to "
                              "http://127.0.0.1:9/elsewhere; set dispatcher.url to the address the API answers on")


# --------------------------------------------------------------------------------------------
# make_dispatcher and the fake AWX itself
# --------------------------------------------------------------------------------------------

def test_make_dispatcher(tmp_path, inventory, playbooks, awx):
    runner = make_dispatcher({"kind": "ansible-runner", "playbook": str(playbooks / "ok.yml"),
                              "project_dir": None, "inventory": inventory, "extravars": {"a": 1},
                              "envvars": {}, "timeout": 10.0},
                             str(tmp_path / "state"), 7, runner_module=StubRunner())
    assert isinstance(runner, AnsibleRunnerDispatcher) and runner.kind == "ansible-runner"
    assert runner.keep_runs == 7 and runner.timeout == 10
    assert runner.runs_dir == str(tmp_path / "state" / "runs")

    template = awx.add_template("recreate")
    conf = {"kind": "awx", "url": awx.url, "token": TOKEN, "token_file": None, "job_template": "recreate",
            "validate_certs": False, "poll_seconds": 1.0, "timeout": 5.0}
    clock = Clock()
    awx_disp = make_dispatcher(conf, str(tmp_path), 3, clock=clock, sleep=clock.sleep)
    assert isinstance(awx_disp, AwxDispatcher) and awx_disp.kind == "awx"
    assert awx_disp.run(task(), Lines()).ok
    assert awx.launches()[0]["job_template"] == template

    with pytest.raises(DispatchError, match="no AWX token"):
        make_dispatcher(dict(conf, token=""), str(tmp_path), 3)
    with pytest.raises(DispatchError, match="must be 'ansible-runner' or 'awx', got 'shell'"):
        make_dispatcher({"kind": "shell"}, str(tmp_path), 3)


def _http(url, method="GET", body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_fake_awx_basics(awx):
    template = awx.add_template("recreate", script=("pending", "successful"))
    assert _http(f"{awx.url}/api/v2/job_templates/") == (
        401, {"detail": "Authentication credentials were not provided."})
    assert _http(f"{awx.url}/api/v2/job_templates/", token="nope")[0] == 401
    status, data = _http(f"{awx.url}/api/v2/job_templates/?name=recreate", token=TOKEN)
    assert status == 200 and data["count"] == 1 and data["results"][0]["id"] == template
    assert _http(f"{awx.url}/api/v2/job_templates/?name=other", token=TOKEN)[1]["count"] == 0
    status, data = _http(f"{awx.url}/api/v2/job_templates/{template}/launch/", "POST",
                         {"extra_vars": json.dumps({"slot": "a-b-1"})}, token=TOKEN)
    assert status == 201 and data["job"] == 100 and data["ignored_fields"] == {}
    assert _http(f"{awx.url}/api/v2/jobs/100/", token=TOKEN)[1]["status"] == "successful"
    assert _http(f"{awx.url}/api/v2/jobs/100/cancel/", "POST", token=TOKEN)[0] == 405
    assert _http(f"{awx.url}/api/v2/jobs/999/", token=TOKEN)[0] == 404
    status, data = _http(f"{awx.url}/_fake/requests")
    assert status == 200 and [r["auth"] for r in data["requests"]] == [
        "missing", "bad", "execute", "execute", "execute", "execute", "execute", "execute"]
    assert all("nope" not in json.dumps(r) and TOKEN not in json.dumps(r) for r in data["requests"])


def test_fake_awx_command_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "tools", "fake_awx", "server.py"), "--port", "0",
         "--token", "cli-tok", "--template", "recreate:noprompt"],
        stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, data = _http(f"{url}/api/v2/job_templates/?name=recreate", token="cli-tok")
        assert status == 200 and data["results"][0]["ask_variables_on_launch"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_task_and_result_types():
    assert Result(True, "m") == Result(ok=True, message="m", rc=None, ref=None)
    t = task()
    assert (t.id, t.slot, t.runner, t.delivery, t.attempts) == (1, SLOT, RUNNER, "d-1", 0)
    assert AnsibleRunnerDispatcher.kind == "ansible-runner" and AwxDispatcher.kind == "awx"
