# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guest side of a single-use runner: the cloud-config that starts it once.

Internal to the rum.pool collection; not a public API. A pure function: it builds a plain dict
that ``rum_vm`` merges on top of the cloud-config it generates (``user_data`` as a dict).

What the guest does with it:

* cloud-init writes the runner's just-in-time (JIT) config to a root-only file, a small wrapper
  script and ``rum-runner.service``, then starts that service once, without waiting for it
  (``--no-block``: the unit is ordered after ``cloud-final.service``, so it starts when cloud-init
  is done, and ``cloud-init status`` says ``done`` while the runner works).
* The wrapper reads the config, removes every stored copy of it (the file itself and cloud-init's
  copies of the user-data under ``/var/lib/cloud`` and ``/run/cloud-init``), creates the runner
  user if the image has none, writes the runner's settings files from it into the runner directory
  (``.runner``, ``.credentials``, ``.credentials_rsaparams``: owned by that user, mode 0600, what
  ``run.sh --jitconfig`` itself would write), runs ``<runner_dir>/run.sh`` with no argument as that
  user in the runner directory and, whatever the runner's exit status, powers the guest off. So
  the config is never on a command line (any process of the guest can read those) and, once the
  seed is ejected (rum_vm's ``seed_eject``), nowhere but in the runner's own files.

The JIT config is the only credential that enters the guest: it registers one runner for one job.
The guest powers off after the job.
The config is written into the YAML as a plain one-line scalar (no trailing newline), so each
stored copy contains it verbatim and the wrapper finds them with ``grep -F``.

Registration-token mode (for GitHub Enterprise Server versions without JIT configs): instead of a
JIT config the guest gets a registration token (valid one hour) in ``/etc/rum-runner/registration``,
scrubbed the same way, and the wrapper runs the runner's classic flow, ``config.sh --unattended
--ephemeral --disableupdate --replace --url ... --token ... --name ... --labels ... --runnergroup ...
--work ...`` then ``run.sh``. The token goes to ``config.sh`` in the environment variable
``ACTIONS_RUNNER_INPUT_TOKEN`` (which the runner reads as ``--token`` and clears), not on its
command line. A registration token can register any number of runners in its scope until it
expires, so it is a stronger credential than a JIT config: prefer JIT where the server has it.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
import shlex
import typing as t
from collections.abc import Mapping

from ansible_collections.rum.pool.plugins.module_utils import _names as names
from ansible_collections.rum.pool.plugins.module_utils import _runner_cache as runner_cache

CONFIG_DIR = "/etc/rum-runner"
JITCONFIG_PATH = CONFIG_DIR + "/jitconfig"
REGISTRATION_PATH = CONFIG_DIR + "/registration"
WRAPPER_PATH = "/usr/local/libexec/rum-runner"
SETTINGS_TOOL_PATH = "/usr/local/libexec/rum-runner-settings"
CACHE_TOOL_PATH = "/usr/local/libexec/rum-runner-cache"
UNIT_NAME = "rum-runner.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME
# Where cloud-init keeps copies of the user-data (and so of the JIT config).
CLOUD_INIT_COPIES = ("/var/lib/cloud/", "/run/cloud-init/")

DEFAULT_RUNNER_DIR = "/opt/actions-runner"
DEFAULT_RUNNER_USER = "runner"

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")
# Safe in a shell word, a systemd line and a path: no white space, quotes, globs or '$'.
_PATH = re.compile(r"/[A-Za-z0-9._+/-]*\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{8,200}\Z")
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]-]+(?:/[A-Za-z0-9._~%+-]+)+\Z")
_RUNNER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_LABEL = re.compile(r"[^\s,'\"\\]{1,256}\Z")
_GROUP = re.compile(r"[^\x00-\x1f'\"\\]{1,128}\Z")
_WORK = re.compile(r"[A-Za-z0-9._+/-]{1,256}\Z")


class RunnerGuestError(ValueError):
    """An input of the runner bootstrap is invalid; the message names it (never the secret)."""


def _jit_config(encoded_jit_config: t.Any) -> str:
    what = "runner_user_data: encoded_jit_config"
    if not isinstance(encoded_jit_config, str):
        raise RunnerGuestError(f"{what} must be a string (gh_runner_token's encoded_jit_config), "
                               f"got {type(encoded_jit_config).__name__}")
    blob = encoded_jit_config.strip()
    if not blob:
        raise RunnerGuestError(f"{what} is empty: was gh_runner_token run with kind=jit (and not in check mode)?")
    if len(blob) % 4 or not _BASE64.match(blob):
        raise RunnerGuestError(f"{what} is not standard base64 ({len(blob)} characters): pass "
                               "gh_runner_token's encoded_jit_config unchanged")
    try:
        files = json.loads(base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError):
        raise RunnerGuestError(f"{what} is base64 but not of a JSON object: not a JIT runner config") from None
    if not isinstance(files, dict) or not isinstance(files.get(".runner"), str):
        raise RunnerGuestError(f"{what} decodes to JSON without a '.runner' settings file: not a JIT "
                               "runner config")
    return blob


class Registration(t.NamedTuple):
    """What the classic ``config.sh`` flow needs; only ``token`` is secret."""

    token: str
    url: str
    name: str
    labels: tuple
    runner_group: str
    work_folder: str


def _registration(value: Mapping) -> Registration:
    what = "runner_user_data: registration"
    known = {"token", "url", "name", "labels", "runner_group", "work_folder"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise RunnerGuestError(f"{what}: unknown key(s) {', '.join(map(str, unknown))} "
                               f"(known: {', '.join(sorted(known))})")
    token = value.get("token")
    if not isinstance(token, str) or not token.strip():
        raise RunnerGuestError(f"{what}.token is missing or empty: pass gh_runner_token's token "
                               "(kind=registration, not in check mode)")
    if not _TOKEN.match(token.strip()):
        raise RunnerGuestError(f"{what}.token is not a registration token ({len(token)} characters; "
                               "letters, digits and '_.-' expected)")
    url = value.get("url")
    if not isinstance(url, str) or not _URL.match(url):
        raise RunnerGuestError(f"{what}.url {url!r}: must be the scope's web address, like "
                               "https://github.com/OWNER/REPO (gh_runner_token's runner_url)")
    name = value.get("name")
    if not isinstance(name, str) or not _RUNNER_NAME.match(name):
        raise RunnerGuestError(f"{what}.name {name!r}: a runner name of 1 to 64 letters, digits and '._-'")
    labels = value.get("labels")
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or not labels:
        raise RunnerGuestError(f"{what}.labels: must be a non-empty list of label names")
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not _LABEL.match(label):
            raise RunnerGuestError(f"{what}.labels[{index}] {label!r}: a label has no spaces, commas or quotes")
    group = value.get("runner_group", "Default")
    if not isinstance(group, str) or not _GROUP.match(group):
        raise RunnerGuestError(f"{what}.runner_group {group!r}: a runner group name (no quotes or control characters)")
    work = value.get("work_folder", "_work")
    if not isinstance(work, str) or not _WORK.match(work) or ".." in work.split("/"):
        raise RunnerGuestError(f"{what}.work_folder {work!r}: letters, digits and '._+-/', without '..'")
    return Registration(token.strip(), url, name, tuple(labels), group, work)


def _runner_dir(runner_dir: t.Any) -> str:
    what = "runner_user_data: runner_dir"
    if not isinstance(runner_dir, str) or not runner_dir.startswith("/"):
        raise RunnerGuestError(f"{what} {runner_dir!r}: must be an absolute path (where run.sh is)")
    if not _PATH.match(runner_dir):
        raise RunnerGuestError(f"{what} {runner_dir!r}: only letters, digits and '._+-/' are allowed")
    normal = posixpath.normpath(runner_dir)
    if normal == "/" or ".." in runner_dir.split("/"):
        raise RunnerGuestError(f"{what} {runner_dir!r}: must name a directory below /, without '..'")
    return normal


def _runner_user(runner_user: t.Any) -> str:
    what = "runner_user_data: runner_user"
    if not names.USER_NAME.ok(runner_user):
        raise RunnerGuestError(f"{what} {runner_user!r}: not a valid user name ({names.USER_NAME.hint})")
    if runner_user == "root":
        raise RunnerGuestError(f"{what} 'root': the runner refuses to run as root; give a normal user")
    return runner_user


def _start_lines(registration: Registration | None) -> list[str]:
    """The lines that start the runner with "$blob" (the JIT config or the registration token)."""
    if registration is None:
        return [
            "# What run.sh --jitconfig would write, without the config on any command line.",
            'uid=$(id -u "$runner_user") && gid=$(id -g "$runner_user") || exit 1',
            'if ! printf \'%s\' "$blob" | "$settings_tool" "$runner_dir" "$uid" "$gid"; then',
            '    say "cannot write the runner\'s settings files into $runner_dir"',
            "    exit 1",
            "fi",
            "blob=",
            'say "starting $runner_dir/run.sh as $runner_user (it reads its settings files)"',
            'runuser -u "$runner_user" -- ./run.sh',
            "status=$?",
        ]
    return [
        'if [ ! -x ./config.sh ]; then',
        '    say "no executable config.sh in $runner_dir: is the actions runner in the image?"',
        "    exit 1",
        "fi",
        'say "registering runner $runner_name at $runner_url with a registration token"',
        "# config.sh takes --token from ACTIONS_RUNNER_INPUT_TOKEN: never on a command line.",
        'ACTIONS_RUNNER_INPUT_TOKEN=$blob runuser -u "$runner_user" -- ./config.sh --unattended --ephemeral \\',
        '    --disableupdate --replace --url "$runner_url" --name "$runner_name" --labels "$runner_labels" \\',
        '    --runnergroup "$runner_group" --work "$work_folder"',
        "status=$?",
        "blob=",
        'if [ "$status" -ne 0 ]; then',
        '    say "config.sh failed with status $status"',
        '    exit "$status"',
        "fi",
        'say "starting $runner_dir/run.sh as $runner_user"',
        'runuser -u "$runner_user" -- ./run.sh',
        "status=$?",
    ]


def _cache_lines(cache_url: str | None) -> list[str]:
    """Before the runner starts: its worker patched and its .env pointed at the cache server
    (``_runner_cache``); when that is refused, the runner still runs, with GitHub's cache."""
    if cache_url is None:
        return []
    return [
        "# The Actions cache: a self-hosted cache server instead of GitHub's (rum-runner-cache).",
        f'if ! {CACHE_TOOL_PATH} "$runner_dir" "$runner_user" {shlex.quote(cache_url)}; then',
        '    say "the cache URL is not applied (see above): the jobs use GitHub\'s cache service"',
        "fi",
        "",
    ]


def wrapper_script(runner_dir: str, runner_user: str, poweroff: bool,
                   registration: Registration | None = None, cache_url: str | None = None) -> str:
    """The root script ``rum-runner.service`` runs (inputs already validated).

    Without ``registration`` it starts a JIT runner; with it, the classic config.sh + run.sh flow.
    """
    what = "JIT config" if registration is None else "registration token"
    settings = [
        f"runner_dir={shlex.quote(runner_dir)}",
        f"runner_user={shlex.quote(runner_user)}",
        f"config={shlex.quote(JITCONFIG_PATH if registration is None else REGISTRATION_PATH)}",
        f"copies={shlex.quote(' '.join(CLOUD_INIT_COPIES))}",
    ]
    if registration is None:
        settings.append(f"settings_tool={shlex.quote(SETTINGS_TOOL_PATH)}")
    if registration is not None:
        settings += [
            f"runner_url={shlex.quote(registration.url)}",
            f"runner_name={shlex.quote(registration.name)}",
            f"runner_labels={shlex.quote(','.join(registration.labels))}",
            f"runner_group={shlex.quote(registration.runner_group)}",
            f"work_folder={shlex.quote(registration.work_folder)}",
        ]
    if poweroff:
        # Whatever way this script ends, the VM's one job is over.
        ending = ["trap 'status=$?; say \"powering off (exit status $status)\"; systemctl poweroff' EXIT"]
    else:
        ending = []
    how = "just-in-time config" if registration is None else "registration token (config.sh, then run.sh)"
    return "\n".join([
        "#!/bin/sh",
        f"# Written by rum.pool (cloud-init): run the GitHub Actions runner once with its {how},",
        "# after removing every stored copy of that credential, then power the guest off.",
        "set -u -f",
        *settings,
        "",
        'say() { echo "rum-runner: $*"; }',
        "",
        *ending,
        "",
        'if [ ! -s "$config" ]; then',
        f'    say "no {what} in $config: this guest\'s runner has already been started once"',
        "    exit 1",
        "fi",
        "umask 077",
        'blob=$(cat "$config") || exit 1',
        "",
        f"# cloud-init keeps the user-data, and with it the {what}, in its instance data.",
        "# shellcheck disable=SC2086  # two fixed directories, no spaces",
        'found=$(grep -rlF -f "$config" $copies 2>/dev/null)',
        "for copy in $found; do",
        f'    rm -f -- "$copy" && say "removed a stored copy of the {what}: $copy"',
        "done",
        "# shellcheck disable=SC2086",
        'if grep -rqF -f "$config" $copies 2>/dev/null; then',
        f'    say "warning: a copy of the {what} is still stored under $copies"',
        "fi",
        'rm -f -- "$config" || exit 1',
        f'say "{what} read and removed from $config"',
        "",
        'if ! id -u "$runner_user" >/dev/null 2>&1; then',
        '    say "creating user $runner_user"',
        '    useradd --create-home --user-group --shell /bin/bash "$runner_user" || exit 1',
        "    # A user made now owns nothing yet: give it the runner directory (the runner writes there).",
        '    if [ -d "$runner_dir" ]; then chown -R "$runner_user:" "$runner_dir" || exit 1; fi',
        "fi",
        'cd "$runner_dir" || { say "runner directory $runner_dir is missing from the image"; exit 1; }',
        'if [ ! -x ./run.sh ]; then',
        '    say "no executable run.sh in $runner_dir: is the actions runner in the image?"',
        "    exit 1",
        "fi",
        "",
        *_cache_lines(cache_url),
        *_start_lines(registration),
        'say "the runner exited with status $status"',
        'exit "$status"',
        "",
    ])


SETTINGS_TOOL = """#!/usr/bin/python3
# Written by rum.pool (cloud-init): the GitHub Actions runner's settings files from its JIT config,
# read from stdin, exactly what run.sh --jitconfig writes (each file base64 in the config's JSON),
# owned by the runner's user and readable by it alone. Usage: rum-runner-settings DIR UID GID
import base64
import binascii
import json
import os
import sys

NAMES = (".runner", ".credentials", ".credentials_rsaparams")


def main():
    folder, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        files = json.loads(base64.b64decode(sys.stdin.read().strip(), validate=True))
    except (binascii.Error, ValueError):
        files = None
    if not isinstance(files, dict) or ".runner" not in files:
        print("rum-runner-settings: the JIT config is not base64 of a JSON object with a .runner file")
        return 1
    written = []
    for name in NAMES:
        if name not in files:
            continue
        try:
            content = base64.b64decode(files[name], validate=True)
        except (binascii.Error, TypeError, ValueError):
            print("rum-runner-settings: the JIT config's " + name + " is not base64")
            return 1
        path = os.path.join(folder, name)
        new = path + ".rum-new"
        if os.path.lexists(new):
            os.unlink(new)
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o600)
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(new, path)
        written.append(name)
    other = sorted(set(files) - set(NAMES))
    print("rum-runner-settings: wrote " + ", ".join(written) + " in " + folder
          + (" (skipped " + ", ".join(other) + ": not runner settings files)" if other else ""))
    return 0


sys.exit(main())
"""


def unit_file() -> str:
    """``rum-runner.service``: started once by cloud-init's runcmd, never restarted, no [Install]."""
    return "\n".join([
        "# Written by rum.pool (cloud-init): started once, after cloud-init is done.",
        "[Unit]",
        "Description=GitHub Actions runner for one job (rum.pool)",
        "Wants=network-online.target",
        "After=network-online.target cloud-final.service",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={WRAPPER_PATH}",
        "Restart=no",
        # The serial console shows what the runner did.
        "StandardOutput=journal+console",
        "StandardError=journal+console",
        "",
    ])


def runner_user_data(credential: t.Any, *, runner_dir: t.Any = DEFAULT_RUNNER_DIR,
                     runner_user: t.Any = DEFAULT_RUNNER_USER, poweroff: t.Any = True,
                     cache_url: t.Any = None) -> dict:
    """The cloud-config fragment (``write_files`` and ``runcmd``) that runs one runner once.

    ``credential``: gh_runner_token's ``encoded_jit_config`` (base64 JSON, checked), or a mapping
    for registration-token mode: ``token`` (gh_runner_token kind=registration), ``url`` (its
    ``runner_url``), ``name``, ``labels``, ``runner_group`` (default ``Default``) and
    ``work_folder`` (default ``_work``).
    ``runner_dir``: where the image has the actions runner (``run.sh``, and ``config.sh`` for a
    registration token); ``runner_user``: the user it runs as (created at boot if the image has
    none); ``poweroff``: power the guest off when the runner exits; ``cache_url``: a self-hosted
    Actions cache server for the runner's jobs (see ``_runner_cache``). Raises RunnerGuestError
    naming the bad input (never the secret).
    """
    if isinstance(credential, Mapping):
        registration: Registration | None = _registration(credential)
        secret, path = registration.token, REGISTRATION_PATH
    else:
        registration = None
        secret, path = _jit_config(credential), JITCONFIG_PATH
    directory = _runner_dir(runner_dir)
    user = _runner_user(runner_user)
    if not isinstance(poweroff, bool):
        raise RunnerGuestError(f"runner_user_data: poweroff {poweroff!r}: must be true or false")
    tools = [] if registration is not None else [
        {"path": SETTINGS_TOOL_PATH, "owner": "root:root", "permissions": "0755", "content": SETTINGS_TOOL}]
    if cache_url is not None:
        try:
            runner_cache.check_url(cache_url, "runner_user_data: cache_url")
        except runner_cache.CacheUrlError as exc:
            raise RunnerGuestError(str(exc)) from None
        tools.append({"path": CACHE_TOOL_PATH, "owner": "root:root", "permissions": "0755",
                      "content": runner_cache.guest_script()})
    return {
        "write_files": [
            # No trailing newline: a plain one-line YAML scalar, stored verbatim in every copy.
            {"path": path, "owner": "root:root", "permissions": "0600", "content": secret},
            {"path": WRAPPER_PATH, "owner": "root:root", "permissions": "0755",
             "content": wrapper_script(directory, user, poweroff, registration, cache_url)},
            {"path": UNIT_PATH, "owner": "root:root", "permissions": "0644", "content": unit_file()},
        ] + tools,
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "start", "--no-block", UNIT_NAME],
        ],
    }
