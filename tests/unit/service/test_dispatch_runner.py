# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ansible-runner dispatcher: for real on tiny local playbooks, and with a stand-in library.

The real runs go through the detached launcher (``runner_job`` in a process of its own); the
stand-in runs ``runner_job.execute`` in a thread. Both record their handle before they count as
launched, and a second dispatcher (a restarted service) follows a run the first one left.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading
import time

import pytest

from rum_pool_webhook import dispatch, dispatch_runner, runner_job
from rum_pool_webhook.dispatch import DispatchError
from rum_pool_webhook.dispatch_runner import AnsibleRunnerDispatcher, resolve_playbook
from rum_pool_webhook import runner_job
from rum_pool_webhook.runner_job import RUN_MARKER, describe_process, kill_leftovers
from rum_pool_webhook.tasks import RECONCILE, Result
from tests.unit.service.helpers import RUNNER, SLOT, Lines, task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class Records(list):
    """A ``record`` callable that keeps the handles, as the store would."""

    def __call__(self, handle):
        self.append(dict(handle))

    @property
    def launched(self):
        return [h for h in self if h.get("launched")]


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
          runner={{ runner_name | default('NONE') }}
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
    records = Records()
    result = disp.run(task(task_id=3, attempts=1), lines, records)

    run_dir = state / "runs" / "3-2"
    assert result == Result(ok=True, message="ok.yml rc=0 (successful)", rc=0,
                            ref=str(run_dir / "artifacts" / "3-2"))
    # The handle was on record before the run started, and the launch once it had.
    assert [h.get("launched", False) for h in records] == [False, True]
    assert records[0]["ident"] == "3-2" and records[0]["run_dir"] == str(run_dir)
    assert records[1]["pid"] != os.getpid()  # the playbook runs in a process of its own
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
    (proc / "105").mkdir()  # the seed watcher a run started: it outlives the run on purpose
    (proc / "105" / "environ").write_bytes(b"RUM_POOL_WEBHOOK_RUN=m1\0")
    (proc / "105" / "comm").write_bytes(b"rum-seed-watch\n")
    (proc / "101" / "comm").write_bytes(b"python3\n")
    killed = []
    assert kill_leftovers("m1", str(proc), kill=lambda pid, sig: killed.append((pid, sig))) == [101, 103]
    assert killed == [(101, 9), (103, 9)]
    said = []
    kill_leftovers("m1", str(proc), kill=lambda pid, sig: None, said=said)
    (proc / "101" / "cmdline").write_bytes(b"/usr/bin/python3\0-m\0thing\0")
    assert said == ["101 (python3)", "103"]  # 103 has no comm: only its pid
    assert describe_process(101, str(proc)) == "101 (python3: /usr/bin/python3 -m thing)"
    assert describe_process(101, str(proc), limit=12) == "101 (python3: /usr/bin/...)"
    assert describe_process(999, str(proc)) == "999"


def test_the_seed_watcher_is_the_helper_spared_by_name():
    from ansible_collections.rum.pool.plugins.module_utils._seed_eject import WATCHER_NAME  # pylint: disable=import-outside-toplevel
    assert WATCHER_NAME in runner_job.DETACHED_ON_PURPOSE and len(WATCHER_NAME) <= 15  # the kernel's comm limit


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
                                   extravars={"a": 1, "slot": "bogus", "runner": "bogus", "runner_name": "bogus"},
                                   envvars={"K": 5}, state_dir=str(tmp_path / "s"), timeout=1.5,
                                   runner_module=stub)
    result = disp.run(task(task_id=4, runner=None), Lines())
    call = stub.calls[0]
    assert call["extravars"] == {"a": 1, "slot": SLOT}  # no runner when the task has none
    path = call["envvars"].pop("PATH", None)
    marker = call["envvars"].pop(RUN_MARKER)
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
    assert stub.calls[1]["extravars"] == {"a": 1, "slot": SLOT, "runner_name": RUNNER}


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
    assert dispatch_runner._checkout_root() == ROOT  # pylint: disable=protected-access
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
# Exactly once across a restart: the handle is followed, never launched twice
# --------------------------------------------------------------------------------------------

COUNTING_PLAYBOOK = """\
- name: Counts its runs
  hosts: all
  gather_facts: false
  tasks:
    - name: Count this run
      ansible.builtin.shell: "echo {{ slot }} >> {{ count_file }}"
      changed_when: true
    - name: Take a while
      ansible.builtin.pause:
        seconds: "{{ pause | default(0) | int }}"
"""

OUTCOME_PLAYBOOK = """\
- name: Publishes what it did, as recreate.yml does
  hosts: all
  gather_facts: false
  tasks:
    - name: Say the slot was left alone
      ansible.builtin.set_stats:
        data:
          rum_pool_outcome: "{{ {slot: {'outcome': 'skipped', 'reason': 'the slot holds runner ' ~ slot ~ '-zzzzzz now'}} }}"
"""


def counting(tmp_path, inventory, pause=0, **kwargs):
    pbdir = tmp_path / "counting"
    pbdir.mkdir(exist_ok=True)
    (pbdir / "count.yml").write_text(COUNTING_PLAYBOOK)
    count = tmp_path / "count.txt"
    disp = AnsibleRunnerDispatcher(playbook=str(pbdir / "count.yml"), inventory=inventory,
                                   extravars={"count_file": str(count), "pause": pause},
                                   state_dir=str(tmp_path / "state"), timeout=120,
                                   poll_seconds=0.05, **kwargs)
    return disp, count


def runs_counted(path):
    return path.read_text().split() if path.exists() else []


def test_a_restarted_service_follows_the_run_it_left_and_does_not_launch_again(tmp_path, inventory):
    first, count = counting(tmp_path, inventory, pause=3)
    records = Records()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(r=first.run(task(), Lines(), records)))
    thread.start()
    deadline = time.monotonic() + 60
    while not runs_counted(count) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.detach_all()  # the service stops while the playbook runs
    thread.join(30)
    assert outcome["r"].detached and not outcome["r"].ok
    handle = records[-1]
    assert handle["launched"] and runner_job.RESULT not in os.listdir(handle["run_dir"])

    second, _count = counting(tmp_path, inventory, pause=3)  # the next start of the service
    lines = Lines()
    more = Records()
    result = second.run(task(handle=handle), lines, more)
    assert result.ok, result
    assert runs_counted(count) == [SLOT]  # one run of the playbook, not two
    assert more == []  # nothing new was launched or counted
    assert f"slot {SLOT}: count.yml: following run 1-1 started before the restart" in lines
    assert lines[-1].startswith(f"slot {SLOT}: count.yml rc=0 (successful)")


def test_a_run_that_finished_while_the_service_was_down_is_read_not_run(tmp_path, inventory):
    first, count = counting(tmp_path, inventory, pause=1)
    records = Records()
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(r=first.run(task(), Lines(), records)))
    thread.start()
    while not records.launched:
        time.sleep(0.02)
    first.detach_all()
    thread.join(30)
    handle = records.launched[-1]
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(handle["run_dir"], runner_job.RESULT)):
        assert time.monotonic() < deadline, "the run never finished on its own"
        time.sleep(0.05)
    second, _count = counting(tmp_path, inventory)
    result = second.run(task(handle=handle), Lines(), Records())
    assert result.ok and runs_counted(count) == [SLOT]


def test_a_handle_recorded_before_a_launch_that_never_happened_launches_once(
        tmp_path, inventory, monkeypatch):
    monkeypatch.setattr(dispatch_runner, "START_GRACE", 0.2)
    disp, count = counting(tmp_path, inventory)
    run_dir = tmp_path / "state" / "runs" / "1-1"
    run_dir.mkdir(parents=True)
    intent = {"kind": "ansible-runner", "ident": "1-1", "run_dir": str(run_dir),
              "marker": "never-started-1", "started_at": time.time(), "playbook": disp.playbook}
    lines = Lines()
    records = Records()
    result = disp.run(task(handle=intent), lines, records)
    assert result.ok and runs_counted(count) == [SLOT]
    assert f"slot {SLOT}: the run recorded before the restart never started; starting it" in lines
    assert [h["ident"] for h in records.launched] == ["1-1"]


def test_a_launched_run_that_left_no_result_is_a_failed_attempt(tmp_path, inventory):
    disp, count = counting(tmp_path, inventory)
    run_dir = tmp_path / "state" / "runs" / "1-1"
    run_dir.mkdir(parents=True)
    handle = {"kind": "ansible-runner", "ident": "1-1", "run_dir": str(run_dir), "marker": "gone-1",
              "started_at": time.time(), "playbook": disp.playbook, "pid": 999999, "launched": True}
    result = disp.run(task(handle=handle), Lines(), Records())
    assert result.ok is False and "ended without a result" in result.message
    assert runs_counted(count) == []


def test_the_outcome_the_playbook_publishes_is_reported(tmp_path, inventory):
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "outcome.yml").write_text(OUTCOME_PLAYBOOK)
    disp = AnsibleRunnerDispatcher(playbook=str(pbdir / "outcome.yml"), inventory=inventory,
                                   state_dir=str(tmp_path / "state"), timeout=120)
    result = disp.run(task(), Lines())
    assert result.ok and result.outcome == "skipped"
    assert result.message == (f"outcome.yml rc=0 (successful): skipped: the slot holds runner "
                              f"{SLOT}-zzzzzz now")


def test_a_reconcile_runs_the_pool_playbook_without_slot_variables(tmp_path, inventory, playbooks):
    stub = StubRunner()
    (playbooks / "pool.yml").write_text("[]\n")
    disp = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                   extravars={"pool_hosts": "hv"}, state_dir=str(tmp_path / "s"),
                                   runner_module=stub, reconcile_playbook=str(playbooks / "pool.yml"))
    assert disp.reconcile_playbook == str(playbooks / "pool.yml")
    result = disp.run(task(slot="(reconcile)", runner=None, kind=RECONCILE), Lines())
    assert result.ok
    assert stub.calls[0]["playbook"] == str(playbooks / "pool.yml")
    assert stub.calls[0]["extravars"] == {"pool_hosts": "hv"}
    missing = AnsibleRunnerDispatcher(playbook=str(playbooks / "ok.yml"), inventory=inventory,
                                      state_dir=str(tmp_path / "s"), runner_module=stub,
                                      reconcile_playbook=str(tmp_path / "absent.yml"))
    result = missing.run(task(slot="(reconcile)", runner=None, kind=RECONCILE), Lines())
    assert result.ok is False and "reconcile.playbook" in result.message
