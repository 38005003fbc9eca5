"""The rum.pool.rum_toml filter: its doc file, its errors, and a real ansible run that templates it."""

from __future__ import annotations

import inspect
import json
import os
import subprocess

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.filter import rum_toml as plugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
MINIMAL = '[image]\nbase = "https://example.test/i.qcow2"\n[resources]\ncpus = 1\nmemory_mb = 512\n'


def test_doc_file_matches_the_function():
    with open(os.path.join(os.path.dirname(plugin.__file__), "rum_toml.yml"), encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    assert set(doc) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    documentation = doc["DOCUMENTATION"]
    assert documentation["name"] == "rum_toml" and str(documentation["version_added"]) == "0.1.0"
    assert list(documentation["options"]) == ["_input"] + list(inspect.signature(plugin.rum_toml).parameters)[1:]
    assert "rum.pool.rum_toml" in doc["EXAMPLES"] and yaml.safe_load(doc["EXAMPLES"])
    assert plugin.FilterModule().filters() == {"rum_toml": plugin.rum_toml}


def test_errors_are_filter_errors(tmp_path):
    path = tmp_path / "dev.rum.toml"
    path.write_text(MINIMAL.replace("512", "128"))
    with pytest.raises(AnsibleFilterError, match="^dev.rum.toml: resources.memory_mb: must be at least 256, got 128"):
        plugin.rum_toml(str(path))
    for bad in (None, "", 5):
        with pytest.raises(AnsibleFilterError, match="give the path of a rum.toml file"):
            plugin.rum_toml(bad)


def test_through_ansible_templating(tmp_path):
    """A relative path is relative to where ansible runs, as `rum up` was to where rum ran."""
    (tmp_path / "web.rum.toml").write_text(MINIMAL)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), PYTHONPATH=os.path.join(ROOT, ".collections"))
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible"), "localhost", "-m", "ansible.builtin.debug",
                           "-a", "msg={{ 'web.rum.toml' | rum.pool.rum_toml | to_json }}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result, _end = json.JSONDecoder().raw_decode(proc.stdout.split("=> ", 1)[1])
    options = json.loads(result["msg"]) if isinstance(result["msg"], str) else result["msg"]
    assert options["name"] == "web" and options["origin"] == str(tmp_path / "web.rum.toml")
    (tmp_path / "bad.rum.toml").write_text(MINIMAL.replace('base = "https://example.test/i.qcow2"', ""))
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible"), "localhost", "-m", "ansible.builtin.debug",
                           "-a", "msg={{ 'bad.rum.toml' | rum.pool.rum_toml }}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "bad.rum.toml: image.base: is required" in proc.stdout + proc.stderr
