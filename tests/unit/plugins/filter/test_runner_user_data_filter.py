"""The rum.pool.runner_user_data filter: same result as the core, errors as filter errors, docs
that match the function, and the filter as Ansible's templating finds it."""

from __future__ import annotations

import base64
import inspect
import json
import os
import subprocess

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.filter import runner_user_data as plugin
from ansible_collections.rum.pool.plugins.module_utils import _runner_guest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
FILTER = plugin.FilterModule().filters()["runner_user_data"]


def _b64json(data) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


BLOB = _b64json({".runner": _b64json({"AgentId": "1", "AgentName": "ci-hv1-1-aaaaaa", "ServerUrl": "http://x/"})})


def test_the_filter_is_the_core_function():
    assert plugin.FilterModule().filters() == {"runner_user_data": plugin.runner_user_data}
    assert FILTER(BLOB, runner_dir="/srv/r", runner_user="gha", poweroff=False) == \
        _runner_guest.runner_user_data(BLOB, runner_dir="/srv/r", runner_user="gha", poweroff=False)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "encoded_jit_config must be a string"),
    ({"runner_dir": "relative"}, "must be an absolute path"),
    ({"runner_user": "root"}, "refuses to run as root"),
])
def test_errors_become_filter_errors(kwargs, message):
    value = None if not kwargs else BLOB
    with pytest.raises(AnsibleFilterError, match=message):
        FILTER(value, **kwargs)


def test_doc_file_matches_the_function():
    with open(os.path.join(os.path.dirname(plugin.__file__), "runner_user_data.yml"), encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    assert set(doc) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    documentation = doc["DOCUMENTATION"]
    assert documentation["name"] == "runner_user_data" and str(documentation["version_added"]) == "0.1.0"
    params = inspect.signature(plugin.runner_user_data).parameters
    options = documentation["options"]
    assert list(options) == ["_input"] + list(params)[1:]
    for name in list(params)[1:]:
        assert options[name].get("default") == params[name].default, name
    assert "rum.pool.runner_user_data" in doc["EXAMPLES"]
    assert yaml.safe_load(doc["EXAMPLES"])  # the examples are YAML


def test_through_ansible_templating():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PYTHONPATH=os.path.join(ROOT, ".collections"))
    expr = "{{ blob | rum.pool.runner_user_data(runner_dir='/srv/r', runner_user='gha') | to_json }}"
    proc = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "ansible"), "localhost", "-m", "ansible.builtin.debug",
         "-a", f"msg={expr}", "-e", json.dumps({"blob": BLOB}), "-o"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/etc/rum-runner/jitconfig" in proc.stdout and "runner_dir=/srv/r" in proc.stdout
