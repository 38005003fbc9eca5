"""The runner bootstrap cloud-config: content, file modes, cloud-init's schema, errors, and what
the wrapper script does (run with /bin/sh against stand-ins for the guest's commands)."""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import subprocess

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _cloudinit as ci
from ansible_collections.rum.pool.plugins.module_utils import _runner_cache as rc
from ansible_collections.rum.pool.plugins.module_utils import _runner_guest as rg
from ansible_collections.rum.pool.plugins.module_utils import _seed
from tests import needs

CLOUD_INIT = "/usr/bin/cloud-init"


def _b64json(data) -> str:
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def make_blob(agent_id: str = "7") -> str:
    """An encoded JIT config shaped like GitHub's (base64 JSON of base64 JSON files)."""
    runner = {"AgentId": agent_id, "AgentName": "ci-hv1-1-k3x9qa", "ServerUrl": "https://pipelines.example/x/"}
    credentials = {"Scheme": "OAuth", "Data": {"clientId": "c0ffee"}}
    return _b64json({".runner": _b64json(runner), ".credentials": _b64json(credentials),
                     ".credentials_rsaparams": _b64json({"d": "AAAA" * 60})})


BLOB = make_blob()


def _files(config: dict) -> dict:
    return {item["path"]: item for item in config["write_files"]}


def _require_cloud_init() -> None:
    if not os.path.exists(CLOUD_INIT):
        pytest.fail(f"{CLOUD_INIT} is missing: apt-get install cloud-init "
                    "(needed to validate the runner user-data against cloud-init's schema)")


def _schema(tmp_path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "user-data"
    path.write_text(_seed.render_user_data(config))
    return subprocess.run([CLOUD_INIT, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, check=False)


# ------------------------------------------------------------------------------------ content


def test_files_owners_modes_and_runcmd():
    config = rg.runner_user_data(BLOB)
    assert set(config) == {"write_files", "runcmd"}
    files = _files(config)
    assert list(files) == [rg.JITCONFIG_PATH, rg.WRAPPER_PATH, rg.UNIT_PATH, rg.SETTINGS_TOOL_PATH]
    assert files[rg.SETTINGS_TOOL_PATH]["permissions"] == "0755" and BLOB not in files[rg.SETTINGS_TOOL_PATH]["content"]
    assert rg.JITCONFIG_PATH == "/etc/rum-runner/jitconfig"
    secret = files[rg.JITCONFIG_PATH]
    assert secret == {"path": "/etc/rum-runner/jitconfig", "owner": "root:root", "permissions": "0600",
                      "content": BLOB}
    assert files[rg.WRAPPER_PATH]["permissions"] == "0755" and files[rg.WRAPPER_PATH]["owner"] == "root:root"
    assert files[rg.UNIT_PATH]["permissions"] == "0644"
    assert config["runcmd"] == [["systemctl", "daemon-reload"],
                                ["systemctl", "start", "--no-block", "rum-runner.service"]]


def test_the_secret_is_only_in_the_root_only_file():
    config = rg.runner_user_data(BLOB)
    holders = [f["path"] for f in config["write_files"] if BLOB in f["content"]]
    assert holders == [rg.JITCONFIG_PATH]
    assert BLOB not in json.dumps(config["runcmd"])


def test_surrounding_white_space_of_the_config_is_dropped():
    assert _files(rg.runner_user_data(f"  {BLOB}\n"))[rg.JITCONFIG_PATH]["content"] == BLOB


def test_the_config_is_one_verbatim_line_of_the_rendered_user_data():
    """The wrapper finds cloud-init's stored copies with grep -F: the YAML must not fold or escape it."""
    text = _seed.render_user_data(ci.vm_user_data(hostname="ci-hv1-1-k3x9qa", extra=rg.runner_user_data(BLOB)))
    lines = [line for line in text.splitlines() if BLOB in line]
    assert len(lines) == 1 and lines[0].strip() == f"content: {BLOB}"
    assert yaml.safe_load(text)["write_files"][-4]["content"] == BLOB


def test_unit_is_simple_never_restarted_after_cloud_init_and_logs_to_the_console():
    unit = _files(rg.runner_user_data(BLOB))[rg.UNIT_PATH]["content"]
    lines = unit.splitlines()
    assert "Type=simple" in lines and "Restart=no" in lines
    assert f"ExecStart={rg.WRAPPER_PATH}" in lines
    assert "After=network-online.target cloud-final.service" in lines
    assert "Wants=network-online.target" in lines
    assert "StandardOutput=journal+console" in lines
    assert "[Install]" not in unit  # started once by runcmd, never enabled


def test_wrapper_settings_and_run_line():
    script = _files(rg.runner_user_data(BLOB, runner_dir="/srv/gha/runner/", runner_user="gha"))[rg.WRAPPER_PATH]["content"]
    assert script.startswith("#!/bin/sh\n")
    assert "runner_dir=/srv/gha/runner\n" in script and "runner_user=gha\n" in script
    assert 'runuser -u "$runner_user" -- ./run.sh\n' in script
    assert "--jitconfig" not in script.replace("run.sh --jitconfig would write", "")  # never on a command line
    assert "systemctl poweroff" in script


def test_no_poweroff_leaves_the_guest_running():
    script = _files(rg.runner_user_data(BLOB, poweroff=False))[rg.WRAPPER_PATH]["content"]
    assert "poweroff" not in script and "trap" not in script


def test_merges_into_rum_vm_user_data_after_its_own_items():
    base = ci.vm_user_data(hostname="ci-hv1-1-k3x9qa", provision_script="echo hi\n")
    merged = ci.deep_merge(base, rg.runner_user_data(BLOB))
    assert merged["runcmd"][-2:] == rg.runner_user_data(BLOB)["runcmd"]
    assert [f["path"] for f in merged["write_files"]][-4:] == [
        rg.JITCONFIG_PATH, rg.WRAPPER_PATH, rg.UNIT_PATH, rg.SETTINGS_TOOL_PATH]
    assert merged["users"] == base["users"]


# ------------------------------------------------------------------------------------ schema


@pytest.mark.parametrize("merged", [False, True], ids=["alone", "merged-with-rum_vm"])
@pytest.mark.parametrize("poweroff", [True, False])
def test_passes_cloud_init_schema(tmp_path, merged, poweroff):
    _require_cloud_init()
    config = rg.runner_user_data(BLOB, runner_dir="/opt/actions-runner", runner_user="runner", poweroff=poweroff)
    if merged:
        config = ci.vm_user_data(hostname="ci-hv1-1-k3x9qa", ssh_authorized_keys=[], extra=config)
    proc = _schema(tmp_path, config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout + proc.stderr


def test_schema_check_catches_a_broken_fragment(tmp_path):
    """Control: the same check fails when the fragment is wrong."""
    _require_cloud_init()
    config = rg.runner_user_data(BLOB)
    config["write_files"][0]["permissions"] = ["0600"]
    config["runcmd"] = "systemctl start rum-runner.service"
    assert _schema(tmp_path, config).returncode != 0


@pytest.mark.parametrize("poweroff", [True, False])
def test_wrapper_is_shellcheck_clean(tmp_path, poweroff):
    needs.command("shellcheck", "shellcheck")
    path = tmp_path / "rum-runner"
    cache_url = "http://cache.internal:3000/t0k/" if poweroff else None
    path.write_text(_files(rg.runner_user_data(BLOB, poweroff=poweroff, cache_url=cache_url))[rg.WRAPPER_PATH]["content"])
    proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("value, message", [
    (None, "must be a string"),
    (b"eyJ9", "must be a string"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("not base64!", "not standard base64"),
    ("abc", "not standard base64"),
    ("bm90IGpzb24=", "not of a JSON object"),
    (_b64json([1, 2]), "without a '.runner'"),
    (_b64json({".credentials": "eA=="}), "without a '.runner'"),
])
def test_bad_jit_config(value, message):
    with pytest.raises(rg.RunnerGuestError, match=re.escape(message)) as info:
        rg.runner_user_data(value)
    assert "encoded_jit_config" in str(info.value)


def test_errors_never_show_the_config():
    almost = BLOB[:-4] + "!!!!"
    with pytest.raises(rg.RunnerGuestError) as info:
        rg.runner_user_data(almost)
    assert BLOB[:40] not in str(info.value) and BLOB[-40:-4] not in str(info.value)


@pytest.mark.parametrize("runner_dir, message", [
    ("opt/actions-runner", "must be an absolute path"),
    ("", "must be an absolute path"),
    (None, "must be an absolute path"),
    ("/opt/actions runner", "only letters"),
    ("/opt/$HOME", "only letters"),
    ("/opt/'x'", "only letters"),
    ("/", "below /"),
    ("/opt/../", "without '..'"),
    ("/opt/../../etc", "without '..'"),
])
def test_bad_runner_dir(runner_dir, message):
    with pytest.raises(rg.RunnerGuestError, match=re.escape(message)) as info:
        rg.runner_user_data(BLOB, runner_dir=runner_dir)
    assert "runner_dir" in str(info.value)


@pytest.mark.parametrize("user, message", [
    ("root", "refuses to run as root"),
    ("Runner", "not a valid user name"),
    ("1runner", "not a valid user name"),
    ("run ner", "not a valid user name"),
    ("r" * 33, "not a valid user name"),
    ("", "not a valid user name"),
    (5, "not a valid user name"),
])
def test_bad_runner_user(user, message):
    with pytest.raises(rg.RunnerGuestError, match=re.escape(message)):
        rg.runner_user_data(BLOB, runner_user=user)


def test_bad_poweroff():
    with pytest.raises(rg.RunnerGuestError, match="poweroff 'yes': must be true or false"):
        rg.runner_user_data(BLOB, poweroff="yes")


def test_runner_dir_is_normalised():
    script = _files(rg.runner_user_data(BLOB, runner_dir="/opt//actions-runner/./"))[rg.WRAPPER_PATH]["content"]
    assert "runner_dir=/opt/actions-runner\n" in script


# ------------------------------------------------------------------------------------ the wrapper, run


STUB = """#!/bin/sh
echo "{name} $*" >> "{log}"
{body}
"""


class Guest:
    """A scratch "guest": the wrapper's paths moved under tmp_path, its commands replaced by stubs."""

    def __init__(self, tmp_path, *, user_exists=True, run_sh_exit=0, poweroff=True, registration=None,
                 config_sh_exit=0, cache_url=None):
        self.root = tmp_path
        secret = BLOB if registration is None else registration["token"]
        self.log = tmp_path / "calls.log"
        self.log.write_text("")
        self.config = tmp_path / "etc" / "rum-runner" / ("jitconfig" if registration is None else "registration")
        self.cloud = tmp_path / "var" / "lib" / "cloud"
        self.run_cloud = tmp_path / "run" / "cloud-init"
        self.runner_dir = tmp_path / "opt" / "actions-runner"
        for folder in (self.config.parent, self.cloud / "instances" / "i-1", self.run_cloud, self.runner_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.cloud / "instance").symlink_to("instances/i-1")
        self.config.write_text(secret)
        self.config.chmod(0o600)
        inst = self.cloud / "instances" / "i-1"
        (inst / "user-data.txt").write_text(f"#cloud-config\nwrite_files:\n- content: {secret}\n")
        (inst / "obj.pkl").write_bytes(b"\x80\x04junk" + secret.encode() + b"more")
        (inst / "vendor-data.txt").write_text("#cloud-config\n{}\n")
        (self.run_cloud / "instance-data.json").write_text("{}")
        run_sh = self.runner_dir / "run.sh"
        run_sh.write_text(f'#!/bin/sh\necho "run.sh cwd=$(pwd) user=$USER_STUB args=$*" >> "{self.log}"\n'
                          f"exit {run_sh_exit}\n")
        run_sh.chmod(0o755)
        config_sh = self.runner_dir / "config.sh"
        config_sh.write_text(f'#!/bin/sh\necho "config.sh cwd=$(pwd) user=$USER_STUB args=$*" >> "{self.log}"\n'
                             f'echo "config.sh token from the environment: $ACTIONS_RUNNER_INPUT_TOKEN" >> "{self.log}"\n'
                             f"exit {config_sh_exit}\n")
        config_sh.chmod(0o755)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        stubs = {
            "systemctl": "exit 0",
            # id -u/-g USER: this test's own ids (the settings files are chowned to them); a user
            # the image lacks exists once useradd ran
            "id": (f'[ -e "{tmp_path}/user-added" ] || {"true" if user_exists else "exit 1"}\n'
                   'case "$1" in -u|-g) exec /usr/bin/id "$1";; esac\nexit 0'),
            "useradd": f'touch "{tmp_path}/user-added"',
            "chown": "exit 0",
            # runuser -u USER -- CMD...: run CMD, telling it who it runs as.
            "runuser": 'user=$2; shift 3; USER_STUB=$user exec "$@"',
        }
        for name, body in stubs.items():
            path = bin_dir / name
            path.write_text(STUB.format(name=name, log=self.log, body=body))
            path.chmod(0o755)
        reg = rg._registration(registration) if registration is not None else None  # pylint: disable=protected-access
        script = rg.wrapper_script(str(self.runner_dir), "runner", poweroff, reg, cache_url)
        cache_tool = tmp_path / "rum-runner-cache"
        cache_tool.write_text(rc.guest_script())
        cache_tool.chmod(0o755)
        # the tool runs as root in a guest: here as this test's user, who owns everything
        script = script.replace(f'{rg.CACHE_TOOL_PATH} "$runner_dir" "$runner_user"',
                                f'{cache_tool} "$runner_dir" "{pwd.getpwuid(os.getuid()).pw_name}"')
        script = re.sub(r"^config=.*$", f"config={self.config}", script, count=1, flags=re.M)
        script = re.sub(r"^copies=.*$", f"copies='{self.cloud}/ {self.run_cloud}/'", script, count=1, flags=re.M)
        tool = tmp_path / "rum-runner-settings"
        tool.write_text(rg.SETTINGS_TOOL)
        tool.chmod(0o755)
        script = re.sub(r"^settings_tool=.*$", f"settings_tool={tool}", script, count=1, flags=re.M)
        self.script = tmp_path / "rum-runner"
        self.script.write_text(script)
        self.path = f"{bin_dir}:/usr/bin:/bin"

    def run(self) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", str(self.script)], env={"PATH": self.path}, capture_output=True,
                              text=True, timeout=30, check=False)

    def calls(self) -> list:
        return self.log.read_text().splitlines()


def test_wrapper_removes_every_copy_runs_the_runner_and_powers_off(tmp_path):
    guest = Guest(tmp_path)
    proc = guest.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inst = guest.cloud / "instances" / "i-1"
    assert not guest.config.exists()
    assert not (inst / "user-data.txt").exists() and not (inst / "obj.pkl").exists()
    assert (inst / "vendor-data.txt").exists() and (guest.run_cloud / "instance-data.json").exists()
    calls = guest.calls()
    assert calls[-2:] == [f"run.sh cwd={guest.runner_dir} user=runner args=", "systemctl poweroff"]
    # the runner's settings files, as run.sh --jitconfig writes them: the runner's alone
    files = json.loads(base64.b64decode(BLOB))
    for name, content in files.items():
        path = guest.runner_dir / name
        assert path.read_bytes() == base64.b64decode(content)
        st = path.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, os.getuid(), os.getgid())
    assert "wrote .runner, .credentials, .credentials_rsaparams in" in proc.stdout
    assert not any(c.startswith(("useradd", "chown")) for c in calls)
    assert "removed a stored copy of the JIT config" in proc.stdout
    assert "the runner exited with status 0" in proc.stdout and "powering off (exit status 0)" in proc.stdout
    assert BLOB not in proc.stdout + proc.stderr


def test_wrapper_powers_off_after_a_failed_runner_and_keeps_its_status(tmp_path):
    guest = Guest(tmp_path, run_sh_exit=3)
    proc = guest.run()
    assert proc.returncode == 3
    assert guest.calls()[-1] == "systemctl poweroff"
    assert "powering off (exit status 3)" in proc.stdout


def test_wrapper_without_a_config_powers_off_without_running(tmp_path):
    guest = Guest(tmp_path)
    guest.config.unlink()
    proc = guest.run()
    assert proc.returncode == 1 and "already been started once" in proc.stdout
    assert guest.calls() == ["systemctl poweroff"]


def test_wrapper_creates_a_missing_user_and_gives_it_the_runner_dir(tmp_path):
    guest = Guest(tmp_path, user_exists=False)
    proc = guest.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = guest.calls()
    assert "useradd --create-home --user-group --shell /bin/bash runner" in calls
    assert f"chown -R runner: {guest.runner_dir}" in calls
    assert calls.index(f"chown -R runner: {guest.runner_dir}") < len(calls) - 2


def test_wrapper_without_run_sh_says_so(tmp_path):
    guest = Guest(tmp_path)
    (guest.runner_dir / "run.sh").unlink()
    proc = guest.run()
    assert proc.returncode == 1 and "no executable run.sh" in proc.stdout
    assert guest.calls()[-1] == "systemctl poweroff"


def test_wrapper_without_poweroff_only_runs(tmp_path):
    guest = Guest(tmp_path, poweroff=False)
    proc = guest.run()
    assert proc.returncode == 0
    assert not any(c.startswith("systemctl") for c in guest.calls())


# ------------------------------------------------------------------------------------ registration-token mode

TOKEN = "AABF3JGZDX3P5PMEXLND6TS6FCWO6"
REG = {"token": TOKEN, "url": "https://ghes.example.com/acme/widgets", "name": "ci-hv1-1-k3x9qa",
       "labels": ["self-hosted", "linux", "x64", "gpu"], "runner_group": "CI pool"}


def test_registration_mode_files_and_secret():
    config = rg.runner_user_data(dict(REG), runner_dir="/opt/actions-runner")
    files = _files(config)
    assert files[rg.REGISTRATION_PATH]["content"] == TOKEN
    assert files[rg.REGISTRATION_PATH]["permissions"] == "0600" and files[rg.REGISTRATION_PATH]["owner"] == "root:root"
    assert rg.JITCONFIG_PATH not in files
    wrapper = files[rg.WRAPPER_PATH]["content"]
    assert TOKEN not in wrapper and f"config={rg.REGISTRATION_PATH}" in wrapper
    assert "runner_url=https://ghes.example.com/acme/widgets" in wrapper
    assert "runner_labels=self-hosted,linux,x64,gpu" in wrapper and "runner_group='CI pool'" in wrapper
    assert "work_folder=_work" in wrapper


@pytest.mark.parametrize("poweroff", [True, False])
def test_registration_user_data_passes_cloud_init_schema(tmp_path, poweroff):
    _require_cloud_init()
    proc = _schema(tmp_path, rg.runner_user_data(dict(REG), poweroff=poweroff))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_registration_wrapper_is_shellcheck_clean(tmp_path):
    path = tmp_path / "rum-runner"
    path.write_text(rg.wrapper_script("/opt/actions-runner", "runner", True, rg._registration(REG)))  # pylint: disable=protected-access
    proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("change,message", [
    ({"token": ""}, r"registration\.token is missing or empty"),
    ({"token": "has space in it"}, r"registration\.token is not a registration token \(15 characters"),
    ({"url": "github.com/acme"}, r"registration\.url 'github\.com/acme': must be the scope's web address"),
    ({"url": "https://github.com/acme'; reboot"}, r"registration\.url .*must be the scope's web address"),
    ({"name": "a b"}, r"registration\.name 'a b'"),
    ({"labels": "x64"}, r"registration\.labels: must be a non-empty list"),
    ({"labels": []}, r"registration\.labels: must be a non-empty list"),
    ({"labels": ["ok", "a,b"]}, r"registration\.labels\[1\] 'a,b'"),
    ({"runner_group": "x'y"}, r"registration\.runner_group"),
    ({"work_folder": "../up"}, r"registration\.work_folder '\.\./up'"),
    ({"color": "red"}, r"registration: unknown key\(s\) color"),
])
def test_bad_registration(change, message):
    with pytest.raises(rg.RunnerGuestError, match=message) as info:
        rg.runner_user_data(dict(REG, **change))
    if change.get("token") != "has space in it":
        assert TOKEN not in str(info.value)


def test_registration_wrapper_configures_then_runs_and_scrubs_the_token(tmp_path):
    guest = Guest(tmp_path, registration=REG)
    proc = guest.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inst = guest.cloud / "instances" / "i-1"
    assert not guest.config.exists() and not (inst / "user-data.txt").exists() and not (inst / "obj.pkl").exists()
    calls = [c for c in guest.calls() if not c.startswith("runuser ")]
    assert calls[-4:] == [
        f"config.sh cwd={guest.runner_dir} user=runner args=--unattended --ephemeral --disableupdate --replace "
        "--url https://ghes.example.com/acme/widgets --name ci-hv1-1-k3x9qa "
        "--labels self-hosted,linux,x64,gpu --runnergroup CI pool --work _work",
        f"config.sh token from the environment: {TOKEN}",
        f"run.sh cwd={guest.runner_dir} user=runner args=",
        "systemctl poweroff"]
    assert "removed a stored copy of the registration token" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr


def test_registration_wrapper_stops_when_config_sh_fails(tmp_path):
    guest = Guest(tmp_path, registration=REG, config_sh_exit=4)
    proc = guest.run()
    assert proc.returncode == 4 and "config.sh failed with status 4" in proc.stdout
    assert not any(c.startswith("run.sh") for c in guest.calls())
    assert guest.calls()[-1] == "systemctl poweroff"


def test_registration_wrapper_without_config_sh_says_so(tmp_path):
    guest = Guest(tmp_path, registration=REG)
    (guest.runner_dir / "config.sh").unlink()
    proc = guest.run()
    assert proc.returncode == 1 and "no executable config.sh" in proc.stdout


# ------------------------------------------------------------------------ the runner cache URL


def test_cache_url_is_applied_before_the_runner_starts(tmp_path):
    from test_runner_cache import NAMES, standin_dll  # pylint: disable=import-outside-toplevel

    guest = Guest(tmp_path, cache_url="http://cache.internal:3000/t0k/")
    (guest.runner_dir / "bin").mkdir()
    dll = guest.runner_dir / "bin" / "Runner.Worker.dll"
    dll.write_bytes(standin_dll(NAMES))
    before = dll.read_bytes()
    proc = guest.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rum-runner-cache: renamed ACTIONS_RESULTS_URL (1x), ACTIONS_CACHE_URL (1x)" in proc.stdout
    assert sum(a != b for a, b in zip(before, dll.read_bytes())) == 2
    assert (guest.runner_dir / ".env").read_text() == (
        "ACTIONS_RESULTS_URL=http://cache.internal:3000/t0k/\nACTIONS_CACHE_URL=http://cache.internal:3000/t0k/\n")
    assert guest.calls()[-2].startswith("run.sh ")


def test_a_refused_cache_patch_still_runs_the_runner(tmp_path):
    guest = Guest(tmp_path, cache_url="http://cache.internal:3000/t0k/")
    proc = guest.run()  # no worker DLL in this runner directory
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Runner.Worker.dll: No such file or directory" in proc.stderr
    assert "the cache URL is not applied (see above): the jobs use GitHub's cache service" in proc.stdout
    assert guest.calls()[-2].startswith("run.sh ") and not (guest.runner_dir / ".env").exists()


def test_cache_url_files_and_checks():
    files = _files(rg.runner_user_data(BLOB, cache_url="https://cache.example/"))
    tool = files[rg.CACHE_TOOL_PATH]
    assert tool["permissions"] == "0755" and tool["content"] == rc.guest_script()
    assert f'{rg.CACHE_TOOL_PATH} "$runner_dir" "$runner_user" https://cache.example/;' in files[rg.WRAPPER_PATH]["content"]
    assert rg.CACHE_TOOL_PATH not in _files(rg.runner_user_data(BLOB))
    with pytest.raises(rg.RunnerGuestError, match="runner_user_data: cache_url 'https://cache.example': .*ending with '/'"):
        rg.runner_user_data(BLOB, cache_url="https://cache.example")
