# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Windows runner bootstrap (module_utils/_windows_guest.py and its filters).

The scripts it renders parse and call their cmdlets correctly (test_ps_parse.py, test_ps_cmdlets.py);
cloudbase-init itself reads them from a seed (test_cloudbase_init_seed.py). Here: what they say.
"""

from __future__ import annotations

import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.rum.pool.plugins.filter import runner_user_data_windows as filters
from ansible_collections.rum.pool.plugins.module_utils import _windows_guest as guest
from tests.unit.windows import samples
from tests.windows import pscheck


def _scripts(credential=samples.JIT_CONFIG, **kwargs) -> dict[str, str]:
    return guest.bootstrap_scripts(credential, **kwargs)


def _code(script: str) -> str:
    """The script without comment lines."""
    return "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))


def test_user_data_starts_with_the_cloudbase_init_header_at_byte_zero() -> None:
    data = guest.runner_user_data_windows(samples.JIT_CONFIG).encode("utf-8")
    assert data.startswith(b"#ps1_sysnative\n")
    assert not data.startswith(b"\xef\xbb\xbf")
    # cloudbase-init's own test (plugins/common/userdatautils.py): '^#(ps1|ps1_sysnative)\s' on the bytes.
    assert re.compile(br"^#(ps1|ps1_sysnative)\s").search(data)
    assert data.isascii(), "plain ASCII: no encoding question on the Windows side"


def test_the_secret_is_written_to_the_private_file_and_nowhere_on_a_command_line() -> None:
    scripts = _scripts()
    user_data = scripts["user-data"]
    assert user_data.count(samples.JIT_CONFIG) == 1
    assert f"$Secret = '{samples.JIT_CONFIG}'" in user_data
    assert "Write-PrivateFile -Path $CredentialPath" in user_data and "-Account $RunnerUser -Rights 'Read, Delete'" in user_data
    for name in ("run-once.ps1", "supervise.ps1"):
        assert samples.JIT_CONFIG not in scripts[name]
    run_once = _code(scripts["run-once.ps1"])
    assert "--jitconfig" not in run_once
    assert "run.cmd') 2>&1" in run_once, "run.cmd starts without arguments"
    assert "'^\\.(runner|credentials|credentials_rsaparams)$'" in run_once, "only the runner's settings files"
    assert "DataProtectionScope]::LocalMachine" in run_once, "the RSA key is protected as the runner itself does"
    assert run_once.index("Remove-Item -LiteralPath $CredentialPath") < run_once.index("run.cmd')")


def test_every_copy_is_looked_for_and_removed() -> None:
    user_data = _code(_scripts()["user-data"])
    assert "$PSCommandPath" in user_data, "cloudbase-init runs a temporary copy of the user-data"
    assert "[System.IO.Path]::GetTempPath()" in user_data, "cloudbase-init copies the seed to a temporary folder"
    assert "userdata_save_path" in user_data, "and to userdata_save_path when its configuration sets one"
    assert "Cloudbase Solutions\\Cloudbase-Init\\conf" in user_data
    assert user_data.count("Get-SecretCopy") == 3, "defined, used to remove, used to verify"
    assert user_data.index("Get-SecretCopy)) {\n        try {\n            Remove-Item") < user_data.index("$Secret = $null")


def test_the_runner_runs_once_as_its_account_and_the_guest_shuts_down() -> None:
    scripts = _scripts()
    user_data = _code(scripts["user-data"])
    assert "New-ScheduledTaskPrincipal -UserId $RunnerUser -LogonType S4U" in user_data
    assert "-UserId 'NT AUTHORITY\\SYSTEM' -LogonType ServiceAccount" in user_data
    assert "-ExecutionTimeLimit ([TimeSpan]::Zero)" in user_data, "the default 72-hour limit would kill a long job"
    assert "Start-ScheduledTask -TaskName 'rum-runner-supervisor'" in user_data
    supervise = _code(scripts["supervise.ps1"])
    assert "Start-ScheduledTask -TaskName 'rum-runner'" in supervise
    assert supervise.index("finally") < supervise.index("Stop-Computer -Force"), "shut down whatever happened"
    assert "$PowerOff = $true" in supervise


def test_poweroff_false_never_shuts_down() -> None:
    scripts = _scripts(poweroff=False)
    assert "$PowerOff = $false" in scripts["supervise.ps1"]
    assert "Stop-Computer" not in scripts["user-data"].split("$Supervise = @'", maxsplit=1)[0]
    assert "Stop-Computer" not in scripts["user-data"].rsplit("'@\n", maxsplit=1)[-1]


def test_the_embedded_scripts_are_the_checked_ones() -> None:
    """The user-data writes run-once.ps1 and supervise.ps1 from here-strings: exactly the scripts checked alone."""
    scripts = _scripts()
    tree = pscheck.parse(scripts["user-data"].encode())
    here = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "verbatim_here_string_characters":
            here.append(node.text.decode()[2:-2].strip("\n"))
        stack.extend(node.children)
    assert sorted(here) == sorted([scripts["run-once.ps1"].rstrip("\n"), scripts["supervise.ps1"].rstrip("\n")])


def test_registration_token_goes_through_the_environment() -> None:
    scripts = _scripts(samples.REGISTRATION)
    run_once = _code(scripts["run-once.ps1"])
    assert samples.REGISTRATION["token"] in scripts["user-data"]
    assert samples.REGISTRATION["token"] not in scripts["run-once.ps1"]
    assert "$env:ACTIONS_RUNNER_INPUT_TOKEN = $blob" in run_once
    assert "--token" not in run_once
    assert "--unattended --ephemeral --disableupdate --replace" in run_once
    assert "$RunnerGroup = 'Build farm'" in run_once
    assert "$RunnerLabels = 'self-hosted,windows,x64'" in run_once
    assert run_once.index("Remove-Item -LiteralPath 'Env:\\ACTIONS_RUNNER_INPUT_TOKEN'") < run_once.index("'run.cmd')")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"runner_dir": "actions-runner"}, "runner_dir 'actions-runner': an absolute Windows path"),
    ({"runner_dir": "C:\\"}, "must name a folder below the drive root"),
    ({"runner_dir": "C:\\a\\..\\b"}, "without '.', '..'"),
    ({"runner_dir": "C:\\it's"}, "an absolute Windows path"),
    ({"runner_user": "run ner"}, "runner_user 'run ner'"),
    ({"runner_user": "a" * 21}, "1 to 20"),
    ({"poweroff": "yes"}, "poweroff 'yes': must be true or false"),
])
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(guest.WindowsGuestError, match=re.escape(message)):
        guest.bootstrap_scripts(samples.JIT_CONFIG, **kwargs)


@pytest.mark.parametrize(("credential", "message"), [
    ("not base64!", "runner_user_data_windows: encoded_jit_config is not standard base64"),
    ("", "runner_user_data_windows: encoded_jit_config is empty"),
    ({**samples.REGISTRATION, "token": "x y"}, "runner_user_data_windows: registration.token is not a registration token"),
    ({**samples.REGISTRATION, "labels": ["a,b"]}, "registration.labels[0]"),
])
def test_bad_credentials_are_refused_without_showing_them(credential: object, message: str) -> None:
    with pytest.raises(guest.WindowsGuestError) as caught:
        guest.runner_user_data_windows(credential)
    assert message in str(caught.value)
    if isinstance(credential, dict):
        assert credential["token"] not in str(caught.value)


def test_quotes_in_values_are_doubled_for_powershell() -> None:
    assert guest.ps_quote("a'b\u2019c") == "'a''b\u2019\u2019c'"
    scripts = _scripts({**samples.REGISTRATION, "runner_group": "Ops\u2019 farm"})
    assert "$RunnerGroup = 'Ops\u2019\u2019 farm'" in scripts["run-once.ps1"]
    assert pscheck.syntax_errors(scripts["run-once.ps1"].encode()) == []


@pytest.mark.parametrize(("name", "expected"), [
    ("ci-hv1-1-k3x9qa", "ci-hv1-1-k3x9qa"),
    ("CI_HV1-1", "ci-hv1-1"),
    ("web1.example.com", "web1-exa-"),
    ("123456", "123456-8d969e"),
])
def test_host_names(name: str, expected: str) -> None:
    got = guest.windows_host_name(name)
    if expected.endswith("-"):
        assert got.startswith(expected) and len(got) == guest.HOST_NAME_MAX, got
    else:
        assert got == expected


def test_long_names_get_distinct_15_character_host_names() -> None:
    names = [f"ci-hyperv-host-01-{index}-k3x9qa" for index in range(1, 201)]
    hosts = [guest.windows_host_name(name) for name in names]
    assert len(set(hosts)) == len(hosts)
    for host in hosts:
        assert len(host) <= guest.HOST_NAME_MAX
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", host)
        assert not host.isdigit()
    assert guest.windows_host_name(names[0]) == guest.windows_host_name(names[0]), "deterministic"
    assert guest.windows_host_name("1234567890123456").startswith("12345678-")


@pytest.mark.parametrize("bad", ["", "  ", "---", None, 5])
def test_host_name_refuses_nothing(bad: object) -> None:
    with pytest.raises(guest.WindowsGuestError):
        guest.windows_host_name(bad)


def test_filters_wrap_errors() -> None:
    plugins = filters.FilterModule().filters()
    assert plugins["runner_user_data_windows"](samples.JIT_CONFIG).startswith("#ps1_sysnative\n")
    assert plugins["windows_host_name"]("CI-1") == "ci-1"
    with pytest.raises(AnsibleFilterError, match="runner_dir"):
        plugins["runner_user_data_windows"](samples.JIT_CONFIG, runner_dir="relative")
    with pytest.raises(AnsibleFilterError, match="windows_host_name"):
        plugins["windows_host_name"]("")


def test_cache_url_is_set_before_the_tasks_are_registered() -> None:
    """The runner cache patch runs as the bootstrap's administrator, after the runner's account and
    folders are ready and before the runner's task exists; a refusal is logged, never fatal."""
    script = guest.runner_user_data_windows(samples.JIT_CONFIG, cache_url="http://cache.internal:3000/t0k/")
    call = script.index("Set-RunnerCache -Folder $RunnerDir -Url 'http://cache.internal:3000/t0k/'")
    assert script.index("function Set-RunnerCache {") < call
    assert "Join-Path -Path $Folder -ChildPath 'bin\\Runner.Worker.dll'" in script
    assert script.index("Set-Acl -LiteralPath (Join-Path -Path $StateDir -ChildPath 'log')") < call
    assert call < script.index("Register-ScheduledTask")
    assert "the jobs use GitHub's cache service" in script[call:script.index("Register-ScheduledTask")]
    for old, new in guest._runner_cache.RENAMES:  # pylint: disable=protected-access
        assert f"'{old}' = '{new}'" in script
    assert "Set-RunnerCache" not in guest.runner_user_data_windows(samples.JIT_CONFIG)


def test_a_bad_cache_url_is_refused() -> None:
    with pytest.raises(guest.WindowsGuestError, match="runner_user_data_windows: cache_url 'http://cache': .*ending with '/'"):
        guest.runner_user_data_windows(samples.JIT_CONFIG, cache_url="http://cache")
