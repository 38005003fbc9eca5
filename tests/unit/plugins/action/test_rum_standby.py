# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum_standby: a warm standby run waits for its request file, checked, and says it is waiting."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.rum.pool.plugins.action import rum_standby as plugin


def test_a_request_written_while_waiting_is_read_and_the_ready_file_goes(tmp_path):
    path = str(tmp_path / "request.json")
    seen = []

    def write_later():
        # the ready file says a standby waits, with its process id
        while not os.path.exists(path + ".ready"):
            time.sleep(0.001)
        with open(path + ".ready", encoding="utf-8") as handle:
            seen.append(handle.read())
        assert oct(os.stat(path + ".ready").st_mode & 0o777) == "0o600"
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({"slot": "ci-hv1-1", "runner_name": "ci-hv1-1-abc123", "stage": True}, handle)
        os.rename(path + ".tmp", path)

    writer = threading.Thread(target=write_later)
    writer.start()
    request, waited = plugin.wait(path, timeout=30, poll=0.001)
    writer.join()
    assert request == {"slot": "ci-hv1-1", "runner_name": "ci-hv1-1-abc123", "stage": True}
    assert seen == [str(os.getpid())] and waited < 30
    assert not os.path.exists(path + ".ready")


def test_the_timeout_ends_the_wait_without_a_request(tmp_path):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    request, waited = plugin.wait(str(tmp_path / "r.json"), timeout=5, poll=1, clock=lambda: now[0], sleep=sleep)
    assert request is None and waited == 5
    assert not os.path.exists(str(tmp_path / "r.json.ready"))


@pytest.mark.parametrize("content,error", [
    ("{", "not a JSON request"),
    ("[]", "must be an object with a slot"),
    ('{"slot": 3}', "must be an object with a slot"),
    ('{"slot": "ci-hv1-1", "runner_name": 5}', "runner_name must be a string or null"),
])
def test_a_bad_request_is_an_error_naming_the_file(tmp_path, content, error):
    path = tmp_path / "request.json"
    path.write_text(content)
    with pytest.raises(AnsibleActionFail, match=error) as caught:
        plugin.read_request(str(path))
    assert str(path) in str(caught.value)


def test_stage_is_only_a_literal_true(tmp_path):
    path = tmp_path / "request.json"
    path.write_text('{"slot": "ci-hv1-1", "runner_name": "", "stage": "yes"}')
    assert plugin.read_request(str(path)) == {"slot": "ci-hv1-1", "runner_name": None, "stage": False}


WARM_PLAYBOOK = """\
- name: A standby that builds modules before it waits
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Wait
      rum.pool.rum_standby:
        path: "{{ request }}"
        timeout: 5
        warm: "{{ warm }}"
      register: waited
    - name: Keep what it said
      ansible.builtin.copy:
        content: "{{ waited | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def run_warm(tmp_path, warm):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    (tmp_path / "play.yml").write_text(WARM_PLAYBOOK)
    request, out = tmp_path / "request.json", tmp_path / "out.json"
    request.write_text(json.dumps({"slot": "ci-hv1-1", "runner_name": None}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(root, ".collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml"),
                           "-e", json.dumps({"request": str(request), "out": str(out), "warm": warm})],
                          capture_output=True, text=True, env=env, check=False)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_warm_builds_the_named_modules_before_the_wait(tmp_path):
    proc, said = run_warm(tmp_path, ["rum.pool.rum_slots", "ansible.builtin.ping"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert said["request"] == {"slot": "ci-hv1-1", "runner_name": None, "stage": False}
    assert sorted(said["warmed"]) == ["ansible.builtin.ping", "rum.pool.rum_slots"]
    assert all(isinstance(seconds, float) for seconds in said["warmed"].values())


def test_warm_names_a_module_it_cannot_build(tmp_path):
    proc, said = run_warm(tmp_path, ["rum.pool.no_such_module"])
    assert proc.returncode != 0 and said is None
    assert "rum_standby: warm: cannot build rum.pool.no_such_module: " in proc.stdout, proc.stdout
