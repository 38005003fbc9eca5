# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Windows guest side of a single-use runner: the user-data script cloudbase-init runs.

Internal to the rum.pool collection; not a public API. Pure functions: they return text for a
NoCloud seed (``rum_seed_iso`` writes it; a Hyper-V VM gets it as its DVD, see ``hyperv_vm``).

What the guest does with it (cloudbase-init 1.1.9 reads the seed with its
``NoCloudConfigDriveService`` and runs a ``#ps1_sysnative`` user-data with the 64-bit Windows
PowerShell, once per instance-id, as its own administrator account):

* The script writes the runner's JIT config (or registration token) to
  ``C:\\ProgramData\\rum-runner\\credential``, a file created with an access list that lets only the
  runner's account read (and delete) it, and two small scripts beside it.
* It removes every other copy of the user-data it can find: its own file (cloudbase-init runs a
  temporary copy), the seed copy cloudbase-init keeps in a temporary directory until it has run all
  its plugins, and the file ``userdata_save_path`` names when the image's cloudbase-init.conf sets one.
* It registers two scheduled tasks under ``\\rum.pool\\`` and starts the supervisor, then returns, so
  cloudbase-init finishes (and deletes its own copy) while the runner works:
  ``rum-runner`` runs ``run-once.ps1`` as the runner's account (an S4U logon: no password is stored
  anywhere); ``rum-runner-supervisor`` runs as SYSTEM, starts ``rum-runner``, waits for it to end and
  then shuts the guest down, whatever happened, so the pool sees the VM off and replaces it.
* ``run-once.ps1`` reads the credential and deletes the file. A JIT config is decoded into the
  runner's own settings files (``.runner``, ``.credentials``, and ``.credentials_rsaparams``
  protected with DPAPI for the machine, exactly what ``run.cmd --jitconfig`` writes) and ``run.cmd``
  starts without arguments: the config never appears on a command line. A registration token goes
  to ``config.cmd --unattended --ephemeral --disableupdate --replace ...`` through the environment
  variable ``ACTIONS_RUNNER_INPUT_TOKEN`` (which the runner reads and clears), then ``run.cmd``.

The account is created, as an administrator like GitHub's hosted Windows runners, when the image
has none of that name. The seed DVD still holds the user-data until the VM is removed; the guest
shuts down after its one job. Logs: ``C:\\ProgramData\\rum-runner\\log\\rum-runner.log``.
"""

from __future__ import annotations

import hashlib
import re
import typing as t
from collections.abc import Mapping

from ansible_collections.rum.pool.plugins.module_utils import _runner_cache
from ansible_collections.rum.pool.plugins.module_utils import _runner_guest

STATE_DIR = "C:\\ProgramData\\rum-runner"
TASK_PATH = "\\rum.pool\\"
RUNNER_TASK = "rum-runner"
SUPERVISOR_TASK = "rum-runner-supervisor"
DEFAULT_RUNNER_DIR = "C:\\actions-runner"
DEFAULT_RUNNER_USER = "runner"
CLOUDBASE_INIT_CONF_DIR = "C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\conf"
# cloudbase-init's first-line test (plugins/common/userdatautils.py): '#ps1_sysnative' at byte 0,
# then white space; a byte-order mark in front and nothing runs.
SCRIPT_HEADER = "#ps1_sysnative\n"
# NetBIOS, and cloudbase-init's SetHostNamePlugin (utils/hostname.py), cut a computer name to 15.
HOST_NAME_MAX = 15

_WINDOWS_DIR = re.compile(r"[A-Za-z]:\\(?:[A-Za-z0-9 ._+-]+\\?)*\Z")
_WINDOWS_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,19}\Z")
_HOST_CHARS = re.compile(r"[^a-z0-9-]+")
_QUOTES = "'\u2018\u2019\u201a\u201b"

NAME = "runner_user_data_windows"


class WindowsGuestError(ValueError):
    """An input of the Windows runner bootstrap is invalid; the message names it (never the secret)."""


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted literal of ``value`` (every kind of single quote doubled)."""
    out = "".join(char * 2 if char in _QUOTES else char for char in value)
    return f"'{out}'"


def windows_host_name(name: t.Any) -> str:
    """A computer name for ``name`` that cloudbase-init sets unchanged.

    Lower case letters, digits and ``-``, at most 15 characters, no trailing ``-`` and not all
    digits. A name that fits is kept (lower-cased); a longer one becomes its first 8 usable characters,
    ``-`` and 6 characters of its SHA-256, so the slots of one pool, which share a long prefix, still
    get different names.
    """
    if not isinstance(name, str) or not name.strip():
        raise WindowsGuestError(f"windows_host_name: {name!r} is not a non-empty string")
    low = _HOST_CHARS.sub("-", name.strip().lower()).strip("-")
    if not low:
        raise WindowsGuestError(f"windows_host_name: {name!r} has no letters or digits")
    if len(low) <= HOST_NAME_MAX and not low.isdigit():
        return low
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]
    head = low[:HOST_NAME_MAX - 7].rstrip("-") or "w"
    return f"{head}-{digest}"


def _runner_dir(value: t.Any) -> str:
    if not isinstance(value, str) or not _WINDOWS_DIR.match(value):
        raise WindowsGuestError(f"{NAME}: runner_dir {value!r}: an absolute Windows path like C:\\actions-runner "
                                "(letters, digits, spaces and '._+-' in its folder names)")
    parts = value.rstrip("\\").split("\\")
    if len(parts) < 2 or any(part in (".", "..") or part != part.strip() for part in parts[1:]):
        raise WindowsGuestError(f"{NAME}: runner_dir {value!r}: must name a folder below the drive root, "
                                "without '.', '..' or folder names that start or end with a space")
    return value.rstrip("\\")


def _runner_user(value: t.Any) -> str:
    if not isinstance(value, str) or not _WINDOWS_USER.match(value):
        raise WindowsGuestError(f"{NAME}: runner_user {value!r}: a local account name of 1 to 20 letters, "
                                "digits and '._-'")
    return value


def _credential(credential: t.Any) -> tuple[str, _runner_guest.Registration | None]:
    """(secret, registration or None), checked by the Linux bootstrap's own validators."""
    try:
        if isinstance(credential, Mapping):
            registration = _runner_guest._registration(credential)  # pylint: disable=protected-access
            return registration.token, registration
        return _runner_guest._jit_config(credential), None  # pylint: disable=protected-access
    except _runner_guest.RunnerGuestError as exc:
        raise WindowsGuestError(str(exc).replace("runner_user_data:", f"{NAME}:", 1)) from None


def _settings(runner_dir: str, runner_user: str, registration: _runner_guest.Registration | None) -> list[str]:
    lines = [
        f"$RunnerDir = {ps_quote(runner_dir)}",
        f"$RunnerUser = {ps_quote(runner_user)}",
        f"$StateDir = {ps_quote(STATE_DIR)}",
        f"$TaskPath = {ps_quote(TASK_PATH)}",
        "$Log = Join-Path -Path $StateDir -ChildPath 'log\\rum-runner.log'",
        "$CredentialPath = Join-Path -Path $StateDir -ChildPath 'credential'",
    ]
    if registration is not None:
        lines += [
            f"$RunnerUrl = {ps_quote(registration.url)}",
            f"$RunnerName = {ps_quote(registration.name)}",
            f"$RunnerLabels = {ps_quote(','.join(registration.labels))}",
            f"$RunnerGroup = {ps_quote(registration.runner_group)}",
            f"$WorkFolder = {ps_quote(registration.work_folder)}",
        ]
    return lines


_WRITE_STEP = [
    "function Write-Step {",
    "    param([string]$Message)",
    "    $line = \"$([DateTime]::UtcNow.ToString('s'))Z rum-runner: $Message\"",
    "    Write-Host $line",
    "    try {",
    "        Add-Content -LiteralPath $Log -Value $line -Encoding UTF8",
    "    }",
    "    catch {",
    "        Write-Host \"rum-runner: cannot write to ${Log}: $($_.Exception.Message)\"",
    "    }",
    "}",
]

_PRIVATE_FILE = [
    "function Write-PrivateFile {",
    "    # Create the file with its access list already set: no moment when anyone else may read it.",
    "    param([string]$Path, [byte[]]$Bytes, [string]$Account, [string]$Rights)",
    "    $security = [System.Security.AccessControl.FileSecurity]::new()",
    "    $security.SetAccessRuleProtection($true, $false)",
    "    $rule = [System.Security.AccessControl.FileSystemAccessRule]::new($Account, $Rights, 'Allow')",
    "    $security.AddAccessRule($rule)",
    "    if (Test-Path -LiteralPath $Path) {",
    "        Remove-Item -LiteralPath $Path -Force",
    "    }",
    "    $stream = [System.IO.FileStream]::new($Path, [System.IO.FileMode]::CreateNew,",
    "        [System.Security.AccessControl.FileSystemRights]::Write, [System.IO.FileShare]::None, 4096,",
    "        [System.IO.FileOptions]::None, $security)",
    "    try {",
    "        $stream.Write($Bytes, 0, $Bytes.Length)",
    "    }",
    "    finally {",
    "        $stream.Dispose()",
    "    }",
    "}",
]


def run_once_script(runner_dir: str, runner_user: str, registration: _runner_guest.Registration | None) -> str:
    """``run-once.ps1``: runs as the runner's account; reads and deletes the credential, runs the runner."""
    what = "JIT config" if registration is None else "registration token"
    if registration is None:
        start = [
            "# What run.cmd --jitconfig would do, without the config on a command line: decode it into",
            "# the runner's settings files (the RSA key protected with DPAPI for this machine).",
            "Add-Type -AssemblyName System.Security",
            "$files = ConvertFrom-Json -InputObject ([System.Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($blob)))",
            "$blob = $null",
            "foreach ($file in $files.PSObject.Properties) {",
            "    if ($file.Name -notmatch '^\\.(runner|credentials|credentials_rsaparams)$') {",
            "        Write-Step \"skipping '$($file.Name)' in the JIT config: not a runner settings file\"",
            "        continue",
            "    }",
            "    $bytes = [Convert]::FromBase64String([string]$file.Value)",
            "    if ($file.Name -eq '.credentials_rsaparams') {",
            "        $scope = [System.Security.Cryptography.DataProtectionScope]::LocalMachine",
            "        $bytes = [System.Security.Cryptography.ProtectedData]::Protect($bytes, $null, $scope)",
            "    }",
            "    $target = Join-Path -Path $RunnerDir -ChildPath $file.Name",
            "    Write-PrivateFile -Path $target -Bytes $bytes -Account $RunnerUser -Rights 'FullControl'",
            "    [System.IO.File]::SetAttributes($target, [System.IO.FileAttributes]::Hidden)",
            "}",
            "$files = $null",
            "$ErrorActionPreference = 'Continue'",
            "Write-Step \"starting $RunnerDir\\run.cmd as $env:USERNAME\"",
            "& (Join-Path -Path $RunnerDir -ChildPath 'run.cmd') 2>&1 | Out-File -FilePath $Log -Append -Encoding utf8",
            "$status = $LASTEXITCODE",
        ]
    else:
        start = [
            "# config.cmd reads --token from ACTIONS_RUNNER_INPUT_TOKEN and clears it: never on a command line.",
            "$env:ACTIONS_RUNNER_INPUT_TOKEN = $blob",
            "$blob = $null",
            "$ErrorActionPreference = 'Continue'",
            "Write-Step \"registering runner $RunnerName at $RunnerUrl with a registration token\"",
            "& (Join-Path -Path $RunnerDir -ChildPath 'config.cmd') --unattended --ephemeral --disableupdate --replace"
            " --url $RunnerUrl --name $RunnerName --labels $RunnerLabels --runnergroup $RunnerGroup --work $WorkFolder"
            " 2>&1 | Out-File -FilePath $Log -Append -Encoding utf8",
            "$status = $LASTEXITCODE",
            "Remove-Item -LiteralPath 'Env:\\ACTIONS_RUNNER_INPUT_TOKEN' -ErrorAction SilentlyContinue",
            "if ($status -ne 0) {",
            "    Write-Step \"config.cmd failed with status $status\"",
            "    exit $status",
            "}",
            "Write-Step \"starting $RunnerDir\\run.cmd as $env:USERNAME\"",
            "& (Join-Path -Path $RunnerDir -ChildPath 'run.cmd') 2>&1 | Out-File -FilePath $Log -Append -Encoding utf8",
            "$status = $LASTEXITCODE",
        ]
    return "\n".join([
        f"# Written by rum.pool ({NAME}): runs as the runner's account, once. Reads the {what}",
        "# only this account may read, deletes it, and runs the GitHub Actions runner for one job.",
        "$ErrorActionPreference = 'Stop'",
        *_settings(runner_dir, runner_user, registration),
        "",
        *_WRITE_STEP,
        "",
        *_PRIVATE_FILE,
        "",
        "if (-not (Test-Path -LiteralPath $CredentialPath)) {",
        f"    Write-Step \"no {what} in ${{CredentialPath}}: this guest's runner has already been started once\"",
        "    exit 1",
        "}",
        "$blob = [System.IO.File]::ReadAllText($CredentialPath).Trim()",
        "Remove-Item -LiteralPath $CredentialPath -Force",
        f"Write-Step \"{what} read and removed from $CredentialPath\"",
        "Set-Location -LiteralPath $RunnerDir",
        "",
        *start,
        "Write-Step \"the runner exited with status $status\"",
        "exit $status",
        "",
    ])


def supervisor_script(poweroff: bool) -> str:
    """``supervise.ps1``: runs as SYSTEM; starts the runner task, waits for it, shuts the guest down."""
    ending = [
        "    if ($PowerOff) {",
        "        Write-Step 'the job is over: shutting the guest down'",
        "        Stop-Computer -Force",
        "    }",
    ]
    return "\n".join([
        f"# Written by rum.pool ({NAME}): runs as SYSTEM. Starts the runner's task, waits for it to end",
        "# and then shuts the guest down, whatever happened, so the pool replaces this VM.",
        "$ErrorActionPreference = 'Stop'",
        f"$StateDir = {ps_quote(STATE_DIR)}",
        f"$TaskPath = {ps_quote(TASK_PATH)}",
        "$Log = Join-Path -Path $StateDir -ChildPath 'log\\rum-runner.log'",
        f"$PowerOff = {'$true' if poweroff else '$false'}",
        "",
        *_WRITE_STEP,
        "",
        "try {",
        f"    Write-Step 'starting the {RUNNER_TASK} task'",
        f"    Start-ScheduledTask -TaskName {ps_quote(RUNNER_TASK)} -TaskPath $TaskPath",
        "    Start-Sleep -Seconds 5",
        "    while ($true) {",
        f"        $task = Get-ScheduledTask -TaskName {ps_quote(RUNNER_TASK)} -TaskPath $TaskPath",
        "        if (\"$($task.State)\" -ne 'Running' -and \"$($task.State)\" -ne 'Queued') {",
        "            break",
        "        }",
        "        Start-Sleep -Seconds 10",
        "    }",
        f"    $info = Get-ScheduledTaskInfo -TaskName {ps_quote(RUNNER_TASK)} -TaskPath $TaskPath",
        f"    Write-Step \"the {RUNNER_TASK} task ended (last result $($info.LastTaskResult))\"",
        "}",
        "catch {",
        "    Write-Step \"supervisor error: $($_.Exception.Message)\"",
        "}",
        "finally {",
        *ending,
        "}",
        "",
    ])


# The runner cache URL (_runner_cache.py, where the why is): the same patch as the Linux guest's
# Python, in Windows PowerShell 5.1 - the PE and CLI headers read to find the worker's #US heap, whole
# UTF-16LE entries equal to a name rewritten in place (the new names have the same length, so each
# entry keeps its length prefix and flag byte), every other byte kept, the file replaced at once;
# then the names set to the cache server in the runner's .env. Nothing is written when no name is
# found. Kept a line-for-line match of _runner_cache.us_heap, us_entries and apply.
_RUNNER_CACHE = [
    "function Get-UsHeap {",
    "    # (file offset, size) of the #US stream of a .NET PE file",
    "    param([byte[]]$Data)",
    "    if ($Data.Length -lt 64 -or $Data[0] -ne 0x4D -or $Data[1] -ne 0x5A) {",
    "        throw 'not a PE file (no MZ header)'",
    "    }",
    "    $pe = [BitConverter]::ToInt32($Data, 0x3C)",
    "    if ([BitConverter]::ToUInt32($Data, $pe) -ne 0x4550) {",
    "        throw 'not a PE file (no PE signature)'",
    "    }",
    "    $sections = [BitConverter]::ToUInt16($Data, $pe + 6)",
    "    $opt = $pe + 24",
    "    $table = $opt + [BitConverter]::ToUInt16($Data, $pe + 20)",
    "    $magic = [BitConverter]::ToUInt16($Data, $opt)",
    "    if ($magic -eq 0x10B) {",
    "        $dirs = $opt + 96",
    "    }",
    "    elseif ($magic -eq 0x20B) {",
    "        $dirs = $opt + 112",
    "    }",
    "    else {",
    "        throw \"unknown optional header magic $magic\"",
    "    }",
    "    $cliRva = 0",
    "    if ([BitConverter]::ToUInt32($Data, $dirs - 4) -gt 14) {",
    "        $cliRva = [BitConverter]::ToUInt32($Data, $dirs + 14 * 8)",
    "    }",
    "    if ($cliRva -eq 0) {",
    "        throw 'no CLI header: not a .NET assembly'",
    "    }",
    "    $toOffset = {",
    "        param([long]$Rva)",
    "        for ($i = 0; $i -lt $sections; $i++) {",
    "            $entry = $table + 40 * $i",
    "            $virtualSize = [BitConverter]::ToUInt32($Data, $entry + 8)",
    "            $virtualAddress = [BitConverter]::ToUInt32($Data, $entry + 12)",
    "            $rawSize = [BitConverter]::ToUInt32($Data, $entry + 16)",
    "            $raw = [BitConverter]::ToUInt32($Data, $entry + 20)",
    "            if ($Rva -ge $virtualAddress -and $Rva -lt $virtualAddress + [Math]::Max($virtualSize, $rawSize)) {",
    "                return $Rva - $virtualAddress + $raw",
    "            }",
    "        }",
    "        throw \"RVA $Rva is in no section\"",
    "    }",
    "    $root = & $toOffset ([BitConverter]::ToUInt32($Data, (& $toOffset $cliRva) + 8))",
    "    if ([BitConverter]::ToUInt32($Data, $root) -ne 0x424A5342) {",
    "        throw 'no metadata root (BSJB)'",
    "    }",
    "    $at = $root + 16 + [BitConverter]::ToUInt32($Data, $root + 12)",
    "    $count = [BitConverter]::ToUInt16($Data, $at + 2)",
    "    $at += 4",
    "    for ($i = 0; $i -lt $count; $i++) {",
    "        $streamOffset = [BitConverter]::ToUInt32($Data, $at)",
    "        $size = [BitConverter]::ToUInt32($Data, $at + 4)",
    "        $nameEnd = [Array]::IndexOf($Data, [byte]0, $at + 8)",
    "        $name = [System.Text.Encoding]::ASCII.GetString($Data, $at + 8, $nameEnd - $at - 8)",
    "        $at = $at + 8 + (($name.Length + 4) -band -4)",
    "        if ($name -ceq '#US') {",
    "            if ($root + $streamOffset + $size -gt $Data.Length) {",
    "                throw 'the #US stream runs past the end of the file'",
    "            }",
    "            return @(($root + $streamOffset), $size)",
    "        }",
    "    }",
    "    throw 'no #US stream: not a .NET assembly'",
    "}",
    "",
    "function Set-RunnerCache {",
    "    # The worker's names renamed in place (ACTIONS_RESULTS_URL and ACTIONS_CACHE_URL to ..._ORL), and",
    "    # both set to the cache server in the runner's .env, which the runner passes to every job.",
    "    param([string]$Folder, [string]$Url)",
    "    $dll = Join-Path -Path $Folder -ChildPath 'bin\\Runner.Worker.dll'",
    "    [byte[]]$data = [System.IO.File]::ReadAllBytes($dll)",
    "    $heap = Get-UsHeap -Data $data",
    "    $renames = [ordered]@{",
    *[f"        {ps_quote(old)} = {ps_quote(new)}" for old, new in _runner_cache.RENAMES],
    "    }",
    "    $renamed = 0",
    "    $patched = $false",
    "    $at = [long]$heap[0]",
    "    $end = [long]$heap[0] + $heap[1]",
    "    while ($at -lt $end) {",
    "        $first = [int]$data[$at]",
    "        if (($first -band 0x80) -eq 0) {",
    "            $length = $first",
    "            $head = 1",
    "        }",
    "        elseif (($first -band 0xC0) -eq 0x80) {",
    "            $length = (($first -band 0x3F) -shl 8) -bor $data[$at + 1]",
    "            $head = 2",
    "        }",
    "        elseif (($first -band 0xE0) -eq 0xC0) {",
    "            $length = (($first -band 0x1F) -shl 24) -bor ([int]$data[$at + 1] -shl 16) -bor ([int]$data[$at + 2] -shl 8) -bor $data[$at + 3]",
    "            $head = 4",
    "        }",
    "        else {",
    "            throw \"a malformed #US heap entry at offset $at\"",
    "        }",
    "        if ($at + $head + $length -gt $end) {",
    "            throw \"a #US heap entry at offset $at runs past the heap\"",
    "        }",
    "        if ($length -ge 1) {",
    "            $chars = $at + $head",
    "            $units = [Math]::Floor(($length - 1) / 2)",
    "            $text = [System.Text.Encoding]::Unicode.GetString($data, $chars, 2 * $units)",
    "            foreach ($old in $renames.Keys) {",
    "                if ($text -ceq $old) {",
    "                    $new = [System.Text.Encoding]::Unicode.GetBytes($renames[$old])",
    "                    [Array]::Copy($new, 0, $data, $chars, $new.Length)",
    "                    $renamed++",
    "                }",
    "                elseif ($text -ceq $renames[$old]) {",
    "                    $patched = $true",
    "                }",
    "            }",
    "        }",
    "        $at += $head + $length",
    "    }",
    "    if ($renamed -gt 0) {",
    "        $temp = \"$dll.rum-new\"",
    "        [System.IO.File]::WriteAllBytes($temp, $data)",
    "        [System.IO.File]::Replace($temp, $dll, [NullString]::Value)",
    "        Write-Step \"renamed $renamed name(s) in $dll\"",
    "    }",
    "    elseif ($patched) {",
    "        Write-Step \"$dll was already patched\"",
    "    }",
    "    else {",
    "        throw \"none of $($renames.Keys -join ', ') is a string of ${dll}: not a runner worker this patch knows; the DLL is left as it was\"",
    "    }",
    "    $envFile = Join-Path -Path $Folder -ChildPath '.env'",
    "    $lines = @()",
    "    if (Test-Path -LiteralPath $envFile -PathType Leaf) {",
    "        $lines = @([System.IO.File]::ReadAllLines($envFile) | Where-Object {",
    "            $renames.Keys -notcontains ($_ -split '=', 2)[0].Trim()",
    "        })",
    "    }",
    "    foreach ($name in $renames.Keys) {",
    "        $lines += \"$name=$Url\"",
    "    }",
    "    [System.IO.File]::WriteAllText($envFile, (($lines -join \"`n\") + \"`n\"), [System.Text.UTF8Encoding]::new($false))",
    "    Write-Step \"$($renames.Keys -join ', ') set in $envFile\"",
    "}",
]


def _here_string(text: str) -> list[str]:
    if "\n'@" in "\n" + text:
        raise WindowsGuestError(f"{NAME}: internal error: a script line starts with '@")
    return ["@'", text.rstrip("\n"), "'@"]


def bootstrap_scripts(credential: t.Any, *, runner_dir: t.Any = DEFAULT_RUNNER_DIR,
                      runner_user: t.Any = DEFAULT_RUNNER_USER, poweroff: t.Any = True,
                      cache_url: t.Any = None) -> dict[str, str]:
    """``{"user-data": ..., "run-once.ps1": ..., "supervise.ps1": ...}``; the user-data embeds the other two."""
    secret, registration = _credential(credential)
    directory = _runner_dir(runner_dir)
    user = _runner_user(runner_user)
    if not isinstance(poweroff, bool):
        raise WindowsGuestError(f"{NAME}: poweroff {poweroff!r}: must be true or false")
    if cache_url is not None:
        try:
            _runner_cache.check_url(cache_url, f"{NAME}: cache_url")
        except _runner_cache.CacheUrlError as exc:
            raise WindowsGuestError(str(exc)) from None
    what = "JIT config" if registration is None else "registration token"
    run_once = run_once_script(directory, user, registration)
    supervise = supervisor_script(poweroff)
    user_data = "\n".join([
        SCRIPT_HEADER.rstrip("\n"),
        f"# Written by rum.pool ({NAME}). cloudbase-init runs this once per instance: it hands the",
        f"# runner's {what} to the account below only, removes every other copy of it, and starts",
        "# the GitHub Actions runner for one job; when the job is over the guest shuts down.",
        "$ErrorActionPreference = 'Stop'",
        *_settings(directory, user, registration),
        f"$CloudbaseInitConf = {ps_quote(CLOUDBASE_INIT_CONF_DIR)}",
        f"$Secret = {ps_quote(secret)}",
        "$RunOnce = " + "\n".join(_here_string(run_once)),
        "$Supervise = " + "\n".join(_here_string(supervise)),
        "",
        *_WRITE_STEP,
        "",
        *_PRIVATE_FILE,
        "",
        *(_RUNNER_CACHE + [""] if cache_url is not None else []),
        "function Get-SecretCopy {",
        "    # Files that may hold this script: its own temporary copy, the seed files cloudbase-init",
        "    # copied to a temporary folder, and the file userdata_save_path names in its configuration.",
        "    $candidates = @()",
        "    if ($PSCommandPath) {",
        "        $candidates += $PSCommandPath",
        "    }",
        "    $temp = [System.IO.Path]::GetTempPath()",
        "    foreach ($folder in [System.IO.Directory]::GetDirectories($temp)) {",
        "        try {",
        "            $candidates += [System.IO.Directory]::GetFiles($folder)",
        "        }",
        "        catch {",
        "            Write-Step \"cannot list ${folder}: $($_.Exception.Message)\"",
        "        }",
        "    }",
        "    $confs = @()",
        "    if ([System.IO.Directory]::Exists($CloudbaseInitConf)) {",
        "        $confs = [System.IO.Directory]::GetFiles($CloudbaseInitConf, '*.conf')",
        "    }",
        "    foreach ($conf in $confs) {",
        "        foreach ($line in [System.IO.File]::ReadAllLines($conf)) {",
        "            if ($line -match '^\\s*userdata_save_path\\s*=\\s*(.+?)\\s*$') {",
        "                $candidates += [System.Environment]::ExpandEnvironmentVariables($Matches[1])",
        "            }",
        "        }",
        "    }",
        "    $found = @()",
        "    foreach ($candidate in $candidates) {",
        "        try {",
        "            if (-not (Test-Path -LiteralPath $candidate -PathType Leaf)) {",
        "                continue",
        "            }",
        "            if ((Get-Item -LiteralPath $candidate -Force).Length -gt 4194304) {",
        "                continue",
        "            }",
        "            if ([System.IO.File]::ReadAllText($candidate).Contains($Secret)) {",
        "                $found += $candidate",
        "            }",
        "        }",
        "        catch {",
        "            Write-Step \"cannot read ${candidate}: $($_.Exception.Message)\"",
        "        }",
        "    }",
        "    return , $found",
        "}",
        "",
        "try {",
        "    if (-not (Test-Path -LiteralPath (Join-Path -Path $RunnerDir -ChildPath 'run.cmd') -PathType Leaf)) {",
        "        throw \"no run.cmd in ${RunnerDir}: is the actions runner in the image?\"",
        "    }",
        "    foreach ($folder in @($StateDir, (Join-Path -Path $StateDir -ChildPath 'log'))) {",
        "        if (-not (Test-Path -LiteralPath $folder)) {",
        "            New-Item -Path $folder -ItemType Directory | Out-Null",
        "        }",
        "    }",
        "    if ($null -eq (Get-LocalUser -Name $RunnerUser -ErrorAction SilentlyContinue)) {",
        "        Write-Step \"creating the account $RunnerUser (an administrator, as on GitHub's hosted runners)\"",
        "        $random = [byte[]]::new(24)",
        "        [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($random)",
        "        $password = ConvertTo-SecureString -String ([Convert]::ToBase64String($random) + 'aA1!') -AsPlainText -Force",
        "        New-LocalUser -Name $RunnerUser -Password $password -PasswordNeverExpires -AccountNeverExpires"
        " -Description 'GitHub Actions runner (rum.pool)' | Out-Null",
        "        Add-LocalGroupMember -SID 'S-1-5-32-544' -Member $RunnerUser",
        "        $acl = Get-Acl -LiteralPath $RunnerDir",
        "        $acl.AddAccessRule([System.Security.AccessControl.FileSystemAccessRule]::new($RunnerUser, 'Modify',"
        " 'ContainerInherit, ObjectInherit', 'None', 'Allow'))",
        "        Set-Acl -LiteralPath $RunnerDir -AclObject $acl",
        "    }",
        "    # The state folder: SYSTEM and Administrators may change it, the runner's account only read it;",
        "    # the log folder below it is the runner's to write.",
        "    $acl = [System.Security.AccessControl.DirectorySecurity]::new()",
        "    $acl.SetAccessRuleProtection($true, $false)",
        "    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {",
        "        $owner = [System.Security.Principal.SecurityIdentifier]::new($sid)",
        "        $acl.AddAccessRule([System.Security.AccessControl.FileSystemAccessRule]::new($owner, 'FullControl',"
        " 'ContainerInherit, ObjectInherit', 'None', 'Allow'))",
        "    }",
        "    $acl.AddAccessRule([System.Security.AccessControl.FileSystemAccessRule]::new($RunnerUser, 'ReadAndExecute',"
        " 'ContainerInherit, ObjectInherit', 'None', 'Allow'))",
        "    Set-Acl -LiteralPath $StateDir -AclObject $acl",
        "    $acl = Get-Acl -LiteralPath (Join-Path -Path $StateDir -ChildPath 'log')",
        "    $acl.AddAccessRule([System.Security.AccessControl.FileSystemAccessRule]::new($RunnerUser, 'Modify',"
        " 'ContainerInherit, ObjectInherit', 'None', 'Allow'))",
        "    Set-Acl -LiteralPath (Join-Path -Path $StateDir -ChildPath 'log') -AclObject $acl",
        "",
        *([
            "    # The Actions cache: a self-hosted cache server instead of GitHub's (Set-RunnerCache).",
            "    try {",
            f"        Set-RunnerCache -Folder $RunnerDir -Url {ps_quote(cache_url)}",
            "    }",
            "    catch {",
            "        Write-Step \"the cache URL is not applied ($($_.Exception.Message)): the jobs use GitHub's cache service\"",
            "    }",
            "",
        ] if cache_url is not None else []),
        "    Write-PrivateFile -Path $CredentialPath -Bytes ([System.Text.Encoding]::ASCII.GetBytes($Secret))"
        " -Account $RunnerUser -Rights 'Read, Delete'",
        f"    Write-Step \"{what} written to $CredentialPath, readable by $RunnerUser only\"",
        "    $runScript = Join-Path -Path $StateDir -ChildPath 'run-once.ps1'",
        "    $superviseScript = Join-Path -Path $StateDir -ChildPath 'supervise.ps1'",
        "    Set-Content -LiteralPath $runScript -Value $RunOnce -Encoding UTF8",
        "    Set-Content -LiteralPath $superviseScript -Value $Supervise -Encoding UTF8",
        "",
        "    foreach ($copy in (Get-SecretCopy)) {",
        "        try {",
        "            Remove-Item -LiteralPath $copy -Force",
        f"            Write-Step \"removed a stored copy of the {what}: $copy\"",
        "        }",
        "        catch {",
        f"            Write-Step \"cannot remove a stored copy of the {what} at ${{copy}}: $($_.Exception.Message)\"",
        "        }",
        "    }",
        "    foreach ($copy in (Get-SecretCopy)) {",
        f"        Write-Step \"warning: a copy of the {what} is still stored at $copy\"",
        "    }",
        "    $Secret = $null",
        "",
        "    $powershell = Join-Path -Path $PSHOME -ChildPath 'powershell.exe'",
        "    $settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -AllowStartIfOnBatteries"
        " -DontStopIfGoingOnBatteries -MultipleInstances IgnoreNew",
        "    $arguments = '-NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"' + $runScript + '\"'",
        "    $action = New-ScheduledTaskAction -Execute $powershell -Argument $arguments -WorkingDirectory $RunnerDir",
        "    $principal = New-ScheduledTaskPrincipal -UserId $RunnerUser -LogonType S4U -RunLevel Highest",
        f"    Register-ScheduledTask -TaskName {ps_quote(RUNNER_TASK)} -TaskPath $TaskPath -Action $action"
        " -Principal $principal -Settings $settings -Force | Out-Null",
        "    $arguments = '-NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"' + $superviseScript + '\"'",
        "    $action = New-ScheduledTaskAction -Execute $powershell -Argument $arguments -WorkingDirectory $StateDir",
        "    $principal = New-ScheduledTaskPrincipal -UserId 'NT AUTHORITY\\SYSTEM' -LogonType ServiceAccount -RunLevel Highest",
        f"    Register-ScheduledTask -TaskName {ps_quote(SUPERVISOR_TASK)} -TaskPath $TaskPath -Action $action"
        " -Principal $principal -Settings $settings -Force | Out-Null",
        f"    Start-ScheduledTask -TaskName {ps_quote(SUPERVISOR_TASK)} -TaskPath $TaskPath",
        f"    Write-Step 'started the {SUPERVISOR_TASK} task; it runs the runner once and then shuts the guest down'",
        "}",
        "catch {",
        "    Write-Step \"bootstrap failed: $($_.Exception.Message)\"",
        *(["    Write-Step 'shutting the guest down so that the pool replaces it'", "    Stop-Computer -Force"]
          if poweroff else []),
        "    exit 1",
        "}",
        "exit 0",
        "",
    ])
    return {"user-data": user_data, "run-once.ps1": run_once, "supervise.ps1": supervise}


def runner_user_data_windows(credential: t.Any, *, runner_dir: t.Any = DEFAULT_RUNNER_DIR,
                             runner_user: t.Any = DEFAULT_RUNNER_USER, poweroff: t.Any = True,
                             cache_url: t.Any = None) -> str:
    """The ``#ps1_sysnative`` user-data (a string, for a NoCloud seed) that runs one runner once in a Windows guest.

    ``credential``: gh_runner_token's ``encoded_jit_config``, or a registration mapping (``token``,
    ``url``, ``name``, ``labels``, optional ``runner_group`` and ``work_folder``), checked exactly as
    the Linux bootstrap checks them. Raises WindowsGuestError naming the bad input, never the secret.
    """
    return bootstrap_scripts(credential, runner_dir=runner_dir, runner_user=runner_user,
                             poweroff=poweroff, cache_url=cache_url)["user-data"]
