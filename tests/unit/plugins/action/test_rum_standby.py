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
