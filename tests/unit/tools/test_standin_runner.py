"""The test image's stand-in runner, run on the host against an in-process fake GitHub.

It is just a program: ``run.sh --jitconfig <blob>`` (the same file the image carries) talks to the
fake's admin API at the config's ServerUrl; ``config.sh --unattended --url ... --token ...`` (the
classic flow, run in a copy of the runner directory) registers through the fake's GitHub API and
writes ``.runner`` for ``run.sh`` without arguments. These tests run it as a subprocess for the whole
life cycle and its command line, and drive its functions directly for timing (races, a late server).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RUNNER_DIR = os.path.join(ROOT, "tests", "tools", "testimage", "rootfs", "opt", "actions-runner")
RUN_SH = os.path.join(RUNNER_DIR, "run.sh")
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position
from tests import needs

REPO = "acme/app"
SCOPE = f"repo:{REPO}"
PAT = {"Authorization": "Bearer ghp_standin", "User-Agent": "test", "Content-Type": "application/json"}
FAST = {"RUNNER_ALLOW_RUNASROOT": "1", "RUM_STANDIN_POLL_SECONDS": "0.2", "RUM_STANDIN_JOB_SECONDS": "0.2",
        "RUM_STANDIN_IDLE_TIMEOUT": "20"}


def _load_standin():
    spec = importlib.util.spec_from_file_location("standin_runner", os.path.join(RUNNER_DIR, "bin", "standin_runner.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standin = _load_standin()


@pytest.fixture
def fake():
    server = FakeGitHub()
    server.start()
    server.admin("POST", "/pats", {"token": "ghp_standin"})
    yield server
    server.stop()


def jit(fake, name, labels=("self-hosted", "linux", "x64")):
    """A JIT runner made through the GitHub API, as gh_runner_token makes it: (runner id, blob)."""
    body = json.dumps({"name": name, "runner_group_id": 1, "labels": list(labels)}).encode()
    request = urllib.request.Request(f"{fake.url}/repos/{REPO}/actions/runners/generate-jitconfig", data=body,
                                     method="POST", headers=PAT)
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    return answer["runner"]["id"], answer["encoded_jit_config"]


@pytest.fixture(autouse=True)
def _a_runner_directory_of_its_own(tmp_path, monkeypatch):
    """run.sh --jitconfig writes the runner's settings files into its directory, as the real runner
    does: each test runs a copy, never the image recipe's own directory."""
    copy = tmp_path / "image-runner"
    shutil.copytree(RUNNER_DIR, copy)
    monkeypatch.setattr(sys.modules[__name__], "RUN_SH", str(copy / "run.sh"))


TERMINATED = "Runner listener exit with terminated error, stop the service, no retry needed."


def run_sh(*args, env=None, timeout=60):
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    full.update(FAST if env is None else env)
    return subprocess.run(["sh", RUN_SH, *args], env=full, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_online_claims_a_matching_job_reports_done_and_exits_0(fake):
    runner_id, blob = jit(fake, "pool-h1-1-aaaaaa")
    # An earlier job it must not take (a label it lacks), then one it can (labels differ in case only).
    gpu = fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted", "gpu"], "job_id": 100})
    mine = fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted", "Linux"], "job_id": 4242})
    assert fake.admin("GET", f"/runners/{runner_id}")["status"] == "offline"

    proc = run_sh("--jitconfig", blob)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "online" in proc.stdout and "running job 4242" in proc.stdout and "job 4242 finished" in proc.stdout
    done = fake.admin("GET", f"/jobs/{mine['id']}")
    assert done["status"] == "completed" and done["conclusion"] == "success"
    assert done["runner_name"] == "pool-h1-1-aaaaaa" and done["runner_id"] == runner_id
    assert fake.admin("GET", f"/jobs/{gpu['id']}")["status"] == "queued"
    # ephemeral: GitHub (the fake) drops the runner record after its one job
    assert fake.admin("GET", "/runners")["runners"] == []
    assert blob not in proc.stdout + proc.stderr


def test_waits_for_a_job_queued_later(fake):
    _unused, blob = jit(fake, "pool-h1-2-bbbbbb")
    proc = subprocess.Popen(["sh", RUN_SH, "--jitconfig", blob], env=dict(FAST, PATH=os.environ["PATH"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "is online" in first, first
        assert fake.admin("GET", "/runners?name=pool-h1-2-bbbbbb")["runners"][0]["status"] == "online"
        fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["x64"], "job_id": 7})
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert fake.admin("GET", "/jobs/7")["status"] == "completed"


def test_a_job_in_progress_on_another_runner_is_not_taken(fake):
    other = fake.admin("POST", "/runners", {"scope": SCOPE, "name": "other-1", "labels": ["self-hosted", "linux"]})
    fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": 5})
    fake.admin("POST", f"/runners/{other['id']}/job", {"job_id": 5})
    runner_id, blob = jit(fake, "pool-h1-3-cccccc")

    proc = run_sh("--jitconfig", blob, env=dict(FAST, RUM_STANDIN_IDLE_TIMEOUT="1.5"))

    # the listener ends with a terminated error; run.sh, as the real one, then exits 0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no job" in proc.stderr and TERMINATED in proc.stdout and "Exiting runner..." in proc.stdout
    job = fake.admin("GET", "/jobs/5")
    assert job["status"] == "in_progress" and job["runner_name"] == "other-1"
    assert fake.admin("GET", f"/runners/{runner_id}")["busy"] is False


def test_two_runners_race_for_one_job_and_only_one_gets_it(fake):
    blobs = [jit(fake, f"pool-h1-{i}-dddddd")[1] for i in (4, 5)]
    fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted", "linux"], "job_id": 99})
    env = dict(FAST, RUM_STANDIN_IDLE_TIMEOUT="3", PATH=os.environ["PATH"])
    homes = []  # two runners, two runner directories (each writes its settings files)
    for index in range(2):
        homes.append(os.path.join(os.path.dirname(os.path.dirname(RUN_SH)), f"runner-{index}"))
        shutil.copytree(os.path.dirname(RUN_SH), homes[-1])
    procs = [subprocess.Popen(["sh", os.path.join(home, "run.sh"), "--jitconfig", b], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for home, b in zip(homes, blobs)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results  # run.sh exits 0 either way, as the real one
    losers = [r for r in results if "no job for runner" in r[1]]
    winners = [r for r in results if "no job for runner" not in r[1]]
    assert len(losers) == 1 and len(winners) == 1, results
    job = fake.admin("GET", "/jobs/99")
    winner = winners[0]
    assert job["status"] == "completed" and job["runner_name"] in winner[0]


def test_a_lost_claim_409_is_skipped_and_polling_goes_on(fake):
    """Exact timing: the job is listed as queued, but another runner takes it before our claim."""
    runner_id, blob = jit(fake, "pool-h1-6-eeeeee")
    thief = fake.admin("POST", "/runners", {"scope": SCOPE, "name": "thief", "labels": ["self-hosted"]})
    fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": 1})
    agent_id, name, server_url = standin.runner_settings(standin.decode_jit_config(blob))
    assert agent_id == runner_id and server_url == fake.url + "/_fake/"
    server = standin.Server(server_url)
    real_call = server.call
    claims = []

    def racing_call(method, path, body=None, attempts=0):
        if path.endswith("/job"):
            claims.append(body["job_id"])
            if body["job_id"] == 1:  # the other runner wins the race for job 1
                fake.admin("POST", f"/runners/{thief['id']}/job", {"job_id": 1})
                fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": 2})
        return real_call(method, path, body, attempts)

    server.call = racing_call
    runner = standin.StandInRunner(agent_id, name, server, poll=0.05, job_seconds=0, idle_timeout=10)
    assert runner.run() == 0
    assert claims == [1, 2]
    assert fake.admin("GET", "/jobs/1")["runner_name"] == "thief"
    assert fake.admin("GET", "/jobs/2")["runner_name"] == name


def test_exits_1_when_its_runner_record_is_deleted_while_waiting(fake):
    runner_id, blob = jit(fake, "pool-h1-7-ffffff")
    agent_id, name, server_url = standin.runner_settings(standin.decode_jit_config(blob))
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        fake.admin("DELETE", f"/runners/{runner_id}")

    runner = standin.StandInRunner(agent_id, name, standin.Server(server_url), poll=1, idle_timeout=0, sleep=sleep)
    with pytest.raises(standin.RunnerFailure, match="no longer registered"):
        runner.run()
    assert sleeps == [1]


@pytest.mark.parametrize("args, message", [
    ((), "not configured"),
    (("--jitconfig",), "needs one value"),
    (("--jitconfig", "a", "b"), "needs one value"),
    (("--once",), "unsupported arguments"),
    (("--startuptype", "service"), "unsupported arguments"),
])
def test_other_command_lines_are_refused_with_usage(args, message):
    proc = run_sh(*args)
    assert proc.returncode == 0 and TERMINATED in proc.stdout
    assert message in proc.stderr and "usage: run.sh --jitconfig" in proc.stderr


@pytest.mark.parametrize("blob", ["not base64!", "bm90IGpzb24=", "WzEsIDJd"])
def test_a_value_that_is_no_jit_config_fails_clearly(blob):
    proc = run_sh("--jitconfig", blob)
    assert proc.returncode == 0 and TERMINATED in proc.stdout
    assert "not an encoded JIT config" in proc.stderr


def test_a_config_without_server_url_fails_clearly():
    runner = standin.base64.b64encode(json.dumps({"AgentId": "3", "AgentName": "x"}).encode()).decode()
    blob = standin.base64.b64encode(json.dumps({".runner": runner}).encode()).decode()
    proc = run_sh("--jitconfig", blob)
    assert proc.returncode == 0 and TERMINATED in proc.stdout and "lacks ServerUrl" in proc.stderr


def test_refuses_root_unless_allowed(fake):
    needs.root("the runner's root check")
    _unused, blob = jit(fake, "pool-h1-8-gggggg")
    env = {k: v for k, v in FAST.items() if k != "RUNNER_ALLOW_RUNASROOT"}
    proc = run_sh("--jitconfig", blob, env=env)
    # run.sh refuses before its listener starts, and exits 0 as the real one does
    assert proc.returncode == 0 and "Must not run interactively with sudo" in proc.stdout
    assert TERMINATED in proc.stdout and "Exiting runner..." in proc.stdout
    assert fake.admin("GET", "/runners?name=pool-h1-8-gggggg")["runners"][0]["status"] == "offline"


def test_bad_knob_values_are_refused(fake):
    _unused, blob = jit(fake, "pool-h1-9-hhhhhh")
    proc = run_sh("--jitconfig", blob, env=dict(FAST, RUM_STANDIN_POLL_SECONDS="soon"))
    assert proc.returncode == 0 and TERMINATED in proc.stdout and "RUM_STANDIN_POLL_SECONDS" in proc.stderr


# ---------------------------------------------------------------------- the classic flow: config.sh, then run.sh
@pytest.fixture
def runner_dir(tmp_path):
    """A copy of the image's runner directory (config.sh writes its settings files there)."""
    directory = tmp_path / "actions-runner"
    (directory / "bin").mkdir(parents=True)
    for name in ("run.sh", "config.sh", os.path.join("bin", "standin_runner.py")):
        shutil.copy2(os.path.join(RUNNER_DIR, name), directory / name)
    return directory


def registration_token(fake, scope_path=f"/repos/{REPO}"):
    request = urllib.request.Request(f"{fake.url}{scope_path}/actions/runners/registration-token", data=b"",
                                     method="POST", headers=PAT)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())["token"]


def config_sh(runner_dir, *args, env=None, timeout=60):
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    full.update(FAST if env is None else env)
    return subprocess.run(["sh", str(runner_dir / "config.sh"), *args], env=full, capture_output=True, text=True,
                          timeout=timeout, check=False)


def classic_args(fake, token, name="pool-h1-1-cccccc", labels="pool-a,Linux,gpu", *extra):
    return ("--unattended", "--ephemeral", "--disableupdate", "--url", f"{fake.url}/{REPO}", "--token", token,
            "--name", name, "--labels", labels, "--runnergroup", "Default", "--work", "_work", "--replace", *extra)


def test_config_sh_registers_and_run_sh_without_arguments_takes_one_job(fake, runner_dir):
    token = registration_token(fake)
    proc = config_sh(runner_dir, *classic_args(fake, token))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert "added" in proc.stdout and "settings saved" in proc.stdout

    for name in (".runner", ".credentials", ".credentials_rsaparams"):
        path = runner_dir / name
        assert oct(path.stat().st_mode & 0o777) == "0o600", name
        assert path.stat().st_uid == os.geteuid()
    settings = json.loads((runner_dir / ".runner").read_text())
    assert settings["AgentName"] == "pool-h1-1-cccccc" and settings["ServerUrl"] == fake.url + "/_fake/"
    assert settings["GitHubUrl"] == f"{fake.url}/{REPO}" and settings["PoolName"] == "Default"
    assert settings["Ephemeral"] == "True" and settings["DisableUpdate"] == "True"
    assert sorted(p for p in os.listdir(runner_dir) if p.startswith(".")) == [  # no temporary files left
        ".credentials", ".credentials_rsaparams", ".runner"]

    # registered through GitHub's flow: the public API lists it with the defaults + its labels
    request = urllib.request.Request(f"{fake.url}/repos/{REPO}/actions/runners", headers=PAT)
    with urllib.request.urlopen(request, timeout=10) as resp:
        listed = json.loads(resp.read())["runners"]
    assert len(listed) == 1 and str(listed[0]["id"]) == settings["AgentId"]
    assert [label["name"] for label in listed[0]["labels"]][:2] == ["self-hosted", "Linux"]
    assert {label["name"] for label in listed[0]["labels"]} >= {"pool-a", "gpu"}
    assert len(listed[0]["labels"]) == 5  # self-hosted, Linux, the arch, pool-a, gpu ("Linux" given twice)
    assert listed[0]["ephemeral"] is True and listed[0]["runner_group_id"] == 1

    fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted", "gpu"], "job_id": 314})
    proc = subprocess.run(["sh", str(runner_dir / "run.sh")], env=dict(FAST, PATH=os.environ["PATH"]),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "running job 314" in proc.stdout
    job = fake.admin("GET", "/jobs/314")
    assert job["status"] == "completed" and job["runner_name"] == "pool-h1-1-cccccc"
    assert fake.admin("GET", "/runners")["runners"] == []  # ephemeral: gone after its one job


def test_config_sh_replaces_a_runner_of_the_same_name_only_with_replace(fake, runner_dir, tmp_path):
    old = fake.admin("POST", "/runners", {"scope": SCOPE, "name": "pool-h1-2-dddddd", "status": "offline"})
    token = registration_token(fake)
    args = [a for a in classic_args(fake, token, "pool-h1-2-dddddd") if a != "--replace"]
    proc = config_sh(runner_dir, *args)
    assert proc.returncode == 1
    assert "HTTP 409" in proc.stderr and "same name" in proc.stderr and token not in proc.stderr
    assert not (runner_dir / ".runner").exists()

    proc = config_sh(runner_dir, *classic_args(fake, token, "pool-h1-2-dddddd"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runners = fake.admin("GET", "/runners")["runners"]
    assert len(runners) == 1 and runners[0]["id"] != old["id"] and runners[0]["name"] == "pool-h1-2-dddddd"

    again = config_sh(runner_dir, *classic_args(fake, token, "pool-h1-2-dddddd"))
    assert again.returncode == 1 and "already configured" in again.stderr


@pytest.mark.parametrize("case", ["bad-token", "other-scope", "no-group"])
def test_config_sh_refusals_name_the_status_and_never_the_token(fake, runner_dir, case):
    token = registration_token(fake)
    args = list(classic_args(fake, token))
    if case == "bad-token":
        args[args.index(token)] = "AXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    elif case == "other-scope":
        args[args.index(f"{fake.url}/{REPO}")] = f"{fake.url}/acme/other"
    else:
        args[args.index("Default")] = "gpu-group"
    proc = config_sh(runner_dir, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    expected = {"bad-token": "HTTP 404 Not Found", "other-scope": "HTTP 404 Not Found", "no-group": "HTTP 404"}[case]
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert token not in proc.stdout + proc.stderr and "AXXXX" not in proc.stdout + proc.stderr
    assert not (runner_dir / ".runner").exists() and fake.admin("GET", "/runners")["runners"] == []


@pytest.mark.parametrize("args, message", [
    ((), "--unattended is required"),
    (("--url", "http://h/o/r", "--token", "SECRETTOKEN"), "--unattended is required"),
    (("--unattended", "--token", "SECRETTOKEN"), "--url is required"),
    (("--unattended", "--url", "http://h/o/r"), "--token is required"),
    (("--unattended", "--url", "http://h/o/r", "--token"), "--token needs a value"),
    (("--unattended", "--url", "http://h/o/r", "--token", "SECRETTOKEN", "--once"), "unknown option '--once'"),
    (("--unattended", "--url", "http://h/o/r", "--token=SECRETTOKEN"), "unknown option '--token'"),
    (("--unattended", "--unattended", "--url", "http://h/o/r", "--token", "SECRETTOKEN"), "more than once"),
    (("--unattended", "--url", "http://h/o/r", "SECRETTOKEN"), "unexpected argument number 4"),
    (("--unattended", "--url", "http://h/o/r", "--token", "SECRETTOKEN", "--no-default-labels"),
     "--no-default-labels needs --labels"),
    (("--unattended", "--url", "http://h/o/r", "--token", "SECRETTOKEN", "--name", ""), "--name must not be empty"),
    (("--unattended", "--url", "http://h/", "--token", "SECRETTOKEN"), "must name a repository"),
    (("--unattended", "--url", "http://h/a/b/c", "--token", "SECRETTOKEN"), "must name a repository"),
    (("--unattended", "--url", "ftp://h/o/r", "--token", "SECRETTOKEN"), "must be an http(s) URL"),
])
def test_config_sh_argument_errors_exit_2_with_usage(runner_dir, args, message):
    proc = config_sh(runner_dir, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "usage: config.sh --unattended" in proc.stderr
    assert "SECRETTOKEN" not in proc.stdout + proc.stderr
    assert not (runner_dir / ".runner").exists()


def test_config_sh_refuses_root_unless_allowed(fake, runner_dir):
    needs.root("config.sh's root check")
    token = registration_token(fake)
    env = {k: v for k, v in FAST.items() if k != "RUNNER_ALLOW_RUNASROOT"}
    proc = config_sh(runner_dir, *classic_args(fake, token), env=env)
    assert proc.returncode == 1 and "must not run as root" in proc.stderr
    assert fake.admin("GET", "/runners")["runners"] == [] and not (runner_dir / ".runner").exists()
    assert fake.admin("GET", "/calls")["calls"][-1]["path"].endswith("/registration-token")


def test_run_sh_without_arguments_and_no_runner_file_is_not_configured(runner_dir):
    proc = subprocess.run(["sh", str(runner_dir / "run.sh")], env=dict(FAST, PATH=os.environ["PATH"]),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and TERMINATED in proc.stdout
    assert "not configured" in proc.stderr and str(runner_dir / ".runner") in proc.stderr


def test_run_sh_with_a_broken_runner_file_fails_clearly(runner_dir):
    (runner_dir / ".runner").write_text('{"AgentId": "3"}')
    proc = subprocess.run(["sh", str(runner_dir / "run.sh")], env=dict(FAST, PATH=os.environ["PATH"]),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and TERMINATED in proc.stdout and "lacks AgentName, ServerUrl" in proc.stderr


@pytest.mark.parametrize("url, api", [
    ("https://github.com/acme/app", "https://api.github.com"),
    ("https://www.github.com/acme", "https://api.github.com"),
    ("https://GitHub.com/enterprises/big", "https://api.github.com"),
    ("https://acme.ghe.com/acme/app", "https://api.acme.ghe.com"),
    ("https://ghes.example.com/acme/app", "https://ghes.example.com/api/v3"),
    ("http://192.168.122.1:18080/acme/widgets", "http://192.168.122.1:18080/api/v3"),
])
def test_api_url_is_derived_like_the_real_runner(url, api):
    assert standin.api_url(url) == api


def test_configure_waits_for_a_server_that_comes_up_late(tmp_path):
    """The guest's network may come late: unreachable is retried (here the fake starts on the first wait)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    late = FakeGitHub(port=port)
    late.admin("POST", "/pats", {"token": "ghp_standin"})  # the model answers before it has a socket
    token = late.model.handle("POST", f"/repos/{REPO}/actions/runners/registration-token",
                              {"Authorization": "Bearer ghp_standin", "User-Agent": "t"}).json()["token"]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            late.start()

    options = standin.parse_config_args(["--unattended", "--url", f"http://127.0.0.1:{port}/{REPO}",
                                         "--token", token, "--name", "late-1", "--ephemeral"])
    try:
        assert standin.configure(options, str(tmp_path), sleep=sleep) == 0
        assert waits == [1, 2]
        runners = late.admin("GET", "/runners")["runners"]
        assert [r["name"] for r in runners] == ["late-1"] and runners[0]["ephemeral"] is True
        assert json.loads((tmp_path / ".runner").read_text())["AgentName"] == "late-1"
    finally:
        late.stop()


# ---------------------------------------------------------------------- run.sh as the real one: restarts and Ephemeral
def test_run_sh_restarts_the_listener_after_a_retryable_exit_only(tmp_path):
    """The real run.sh starts its listener again after exit 2 (retryable) or 3/4 (update), and
    exits 0 after anything else; a stand-in listener shows the loop."""
    count = tmp_path / "starts"
    listener = tmp_path / "listener.py"
    listener.write_text("import pathlib, sys\n"
                        f"p = pathlib.Path({str(count)!r})\n"
                        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
                        "p.write_text(str(n))\n"
                        "sys.exit({1: 2, 2: 3, 3: 4}.get(n, 7))\n")
    env = dict(FAST, RUM_STANDIN_LISTENER=str(listener), RUM_STANDIN_RESTART_SECONDS="0")
    proc = run_sh("--jitconfig", "x", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert count.read_text() == "4"
    assert proc.stdout.count("Restarting runner...") == 3
    assert "re-launch runner in 0 seconds" in proc.stdout and "because of updating" in proc.stdout
    assert "Exiting with unknown error code: 7" in proc.stdout
    assert proc.stdout.rstrip().endswith("Exiting runner...")


def test_a_runner_that_is_not_ephemeral_takes_job_after_job(fake, runner_dir):
    token = registration_token(fake)
    args = [a for a in classic_args(fake, token, "pool-h1-7-nonephm") if a != "--ephemeral"]
    assert config_sh(runner_dir, *args).returncode == 0
    assert json.loads((runner_dir / ".runner").read_text(encoding="utf-8-sig"))["Ephemeral"] == "False"
    for job_id in (31, 32):
        fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": job_id})
    env = dict(FAST, PATH=os.environ["PATH"], RUM_STANDIN_IDLE_TIMEOUT="1.5")
    proc = subprocess.run(["sh", str(runner_dir / "run.sh")], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "job 31 finished" in proc.stdout and "job 32 finished" in proc.stdout
    assert "not ephemeral: waiting for its next job" in proc.stdout and "no job" in proc.stderr
    assert [fake.admin("GET", f"/jobs/{j}")["status"] for j in (31, 32)] == ["completed", "completed"]
    # still registered: GitHub removes only ephemeral runners after a job
    assert [r["name"] for r in fake.admin("GET", "/runners")["runners"]] == ["pool-h1-7-nonephm"]


def test_an_ephemeral_runner_stops_after_one_job_with_more_queued(fake):
    _unused, blob = jit(fake, "pool-h1-6-ephmrl")
    for job_id in (41, 42):
        fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": job_id})
    proc = run_sh("--jitconfig", blob)
    assert proc.returncode == 0 and "done after its one job (removed: True)" in proc.stdout
    assert [fake.admin("GET", f"/jobs/{j}")["status"] for j in (41, 42)] == ["completed", "queued"]


def test_a_job_queued_with_run_seconds_lasts_that_long(fake):
    """The fake's ``run_seconds`` for a job decides how long the stand-in sleeps on it (a test needs a job
    that is still running while it stages the slot's next generation); without it, the runner's own."""
    fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": 7, "run_seconds": 42.5})
    for name, job_id, expected in (("pool-h1-1-cccccc", 7, [42.5]), ("pool-h1-2-dddddd", 8, [1.5])):
        if job_id == 8:
            fake.admin("POST", "/jobs", {"scope": SCOPE, "labels": ["self-hosted"], "job_id": 8})
        runner_id, blob = jit(fake, name)
        _agent, _name, server_url = standin.runner_settings(standin.decode_jit_config(blob))
        slept: list = []
        runner = standin.StandInRunner(runner_id, name, standin.Server(server_url), poll=0.05, job_seconds=1.5,
                                       idle_timeout=10, sleep=slept.append)
        assert runner.run() == 0
        assert slept == expected, (name, slept)
        assert fake.admin("GET", f"/jobs/{job_id}")["status"] == "completed"


@pytest.mark.parametrize("value, expected", [(0, 0.0), (3, 3.0), (-1, 9.0), (True, 9.0), ("5", 9.0), (None, 9.0)])
def test_job_seconds_takes_only_a_number_not_below_zero(value, expected):
    assert standin.job_seconds({"run_seconds": value}, 9.0) == expected
    assert standin.job_seconds({}, 9.0) == 9.0
