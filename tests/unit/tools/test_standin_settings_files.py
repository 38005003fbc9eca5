"""The runner's credential reaches it through files only it can read, never its command line.

The guest bootstrap's settings tool (``rum-runner-settings``, from ``rum.pool.runner_user_data``)
writes the JIT config's files into the runner directory; the test image's stand-in runner then
starts from them with ``run.sh`` and no argument, as the real runner does. ``run.sh --jitconfig``
writes the same files itself first. ``config.sh`` takes the registration token from
``ACTIONS_RUNNER_INPUT_TOKEN``. Run on the host against an in-process fake GitHub.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _runner_guest as rg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RUNNER_DIR = os.path.join(ROOT, "tests", "tools", "testimage", "rootfs", "opt", "actions-runner")
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

REPO = "acme/files"
HEADERS = {"Authorization": "Bearer ghp_files", "User-Agent": "test", "Content-Type": "application/json"}
FAST = {"RUNNER_ALLOW_RUNASROOT": "1", "RUM_STANDIN_POLL_SECONDS": "0.2", "RUM_STANDIN_JOB_SECONDS": "0.2",
        "RUM_STANDIN_IDLE_TIMEOUT": "20"}
NAMES = (".runner", ".credentials", ".credentials_rsaparams")


@pytest.fixture
def fake():
    server = FakeGitHub()
    server.start()
    server.admin("POST", "/pats", {"token": "ghp_files"})
    yield server
    server.stop()


@pytest.fixture
def runner_dir(tmp_path):
    directory = tmp_path / "actions-runner"
    shutil.copytree(RUNNER_DIR, directory)
    return directory


@pytest.fixture
def tool(tmp_path):
    path = tmp_path / "rum-runner-settings"
    path.write_text(rg.SETTINGS_TOOL)
    path.chmod(0o755)
    return str(path)


def api(fake, path, body):
    request = urllib.request.Request(f"{fake.url}/repos/{REPO}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers=HEADERS)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def jit(fake, name):
    return api(fake, "/actions/runners/generate-jitconfig",
               {"name": name, "runner_group_id": 1, "labels": ["self-hosted", "linux"]})["encoded_jit_config"]


def run(argv, *, stdin=None, env=None):
    full = dict(FAST, PATH=os.environ.get("PATH", "/usr/bin:/bin"), **(env or {}))
    return subprocess.run(argv, input=stdin, env=full, capture_output=True, text=True, timeout=60, check=False)


def assert_settings_files(directory, blob):
    files = json.loads(base64.b64decode(blob))
    for name in NAMES:
        path = directory / name
        assert path.read_bytes() == base64.b64decode(files[name]), name
        assert path.stat().st_mode & 0o777 == 0o600, name


def test_bootstrap_writes_the_files_and_run_sh_without_arguments_takes_the_job(fake, runner_dir, tool):
    blob = jit(fake, "files-1-aaaaaa")
    fake.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["linux"], "job_id": 61})
    written = run([tool, str(runner_dir), str(os.getuid()), str(os.getgid())], stdin=blob)
    assert written.returncode == 0, written.stdout + written.stderr
    assert blob not in written.stdout + written.stderr
    assert_settings_files(runner_dir, blob)

    proc = run(["sh", str(runner_dir / "run.sh")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "running job 61" in proc.stdout
    assert fake.admin("GET", "/jobs/61")["runner_name"] == "files-1-aaaaaa"


def test_run_sh_jitconfig_writes_the_files_as_the_real_runner_does(fake, runner_dir):
    blob = jit(fake, "files-2-bbbbbb")
    fake.admin("POST", "/jobs", {"scope": f"repo:{REPO}", "labels": ["self-hosted"], "job_id": 62})
    proc = run(["sh", str(runner_dir / "run.sh"), "--jitconfig", blob])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_settings_files(runner_dir, blob)
    assert blob not in proc.stdout + proc.stderr


def test_a_runner_without_its_credentials_is_refused(fake, runner_dir, tool):
    blob = jit(fake, "files-3-cccccc")
    assert run([tool, str(runner_dir), str(os.getuid()), str(os.getgid())], stdin=blob).returncode == 0
    (runner_dir / ".credentials").unlink()
    proc = run(["sh", str(runner_dir / "run.sh")])
    # a terminated error of the listener; run.sh, as the real one, then exits 0
    assert proc.returncode == 0 and "terminated error" in proc.stdout and "no credentials:" in proc.stderr
    assert fake.admin("GET", "/runners?name=files-3-cccccc")["runners"][0]["status"] == "offline"


@pytest.mark.parametrize("stdin, message", [
    ("not base64!", "is not base64 of a JSON object with a .runner file"),
    (base64.b64encode(b'{"x": "eA=="}').decode(), "with a .runner file"),
    (base64.b64encode(b'{".runner": "!!"}').decode(), "the JIT config's .runner is not base64"),
])
def test_the_settings_tool_refuses_what_is_no_jit_config(tmp_path, tool, stdin, message):
    proc = run([tool, str(tmp_path), str(os.getuid()), str(os.getgid())], stdin=stdin)
    assert proc.returncode == 1 and message in proc.stdout
    assert stdin not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob(".runner*"))


def test_the_settings_tool_replaces_old_files_and_never_follows_a_link(tmp_path, tool):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / ".runner").write_text("old")
    (tmp_path / ".runner.rum-new").symlink_to(target)
    files = {".runner": base64.b64encode(b'{"AgentId": "1"}').decode(), "extra": "eA=="}
    blob = base64.b64encode(json.dumps(files).encode()).decode()
    proc = run([tool, str(tmp_path), str(os.getuid()), str(os.getgid())], stdin=blob)
    assert proc.returncode == 0, proc.stdout
    assert (tmp_path / ".runner").read_text() == '{"AgentId": "1"}' and target.read_text() == "keep"
    assert "skipped extra: not runner settings files" in proc.stdout
    assert not (tmp_path / "extra").exists()


def test_config_sh_takes_the_token_from_the_environment(fake, runner_dir):
    token = api(fake, "/actions/runners/registration-token", {})["token"]
    args = ["sh", str(runner_dir / "config.sh"), "--unattended", "--ephemeral", "--url", f"{fake.url}/{REPO}",
            "--name", "files-4-dddddd", "--labels", "linux"]
    missing = run(args)
    assert missing.returncode == 2 and "--token is required" in missing.stderr
    proc = run(args, env={"ACTIONS_RUNNER_INPUT_TOKEN": token})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert fake.admin("GET", "/runners?name=files-4-dddddd")["runners"][0]["ephemeral"] is True
    # the command line wins over the environment, as with the real runner
    for name in NAMES:
        (runner_dir / name).unlink()
    again = run(args[:-4] + ["--name", "files-5-eeeeee", "--token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
                env={"ACTIONS_RUNNER_INPUT_TOKEN": token})
    assert again.returncode == 1 and "registration token refused" in again.stderr
