# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ``check-config`` proves beyond a well-formed file: that the ansible-runner dispatcher
can really run its playbook as the user, and with the environment, this process has.

The ``webhook_service`` role runs ``check-config`` as the service's user with the service's own
PATH and HOME, so a pass here means the service's runs find what they need:

- the playbook (and the collection it comes from) is readable;
- ``ansible-playbook`` is on the PATH the playbook runs with, and runs (``--version``);
- every file of the inventory is readable, and a vault-encrypted one has a password source;
- each vault password file the environment or ``ansible.cfg`` names is readable (a prompt
  cannot be answered by a service), and so is the SSH private key they name, if any;
- ``ansible-inventory --list`` loads the inventory with that ``ansible-playbook``'s Ansible,
  which decrypts the vault: the password is not only readable but right.

Each check gives ``Finding`` lines; a problem names what (a key, a file) and where it came from.
The output of Ansible is never echoed beyond its error line: inventories hold secrets.
"""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

RUN_TIMEOUT = 120
INVENTORY_FILES_MAX = 5000
VAULT_MARKERS = (b"$ANSIBLE_VAULT;", b"!vault")
PROMPTS = ("prompt", "prompt_ask_vault_pass")

AccessFn = Callable[[str, int], bool]
RunFn = Callable[..., Any]


@dataclass(frozen=True)
class Finding:
    """One line of the check: ``ok`` or a problem, ``what`` it is about, and the detail."""

    ok: bool
    what: str
    detail: str

    def line(self) -> str:
        return f"{self.what}: {self.detail}"


def who(uid: int | None = None) -> str:
    """``user NAME (uid N)`` for messages: permission problems depend on who asks."""
    uid = os.getuid() if uid is None else uid
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "?"
    return f"user {name} (uid {uid})"


def run_environment(envvars: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ansible-runner gives ``ansible-playbook``: this process's, plus envvars."""
    env = dict(os.environ if environ is None else environ)
    env.update({str(k): str(v) for k, v in envvars.items()})
    return env


def _unreadable(path: str, access: AccessFn, directory: bool) -> bool:
    mode = os.R_OK | os.X_OK if directory else os.R_OK
    return not access(path, mode)


def _parents_blocking(path: str, access: AccessFn) -> str | None:
    """The first directory above ``path`` this user cannot enter, or None."""
    parts = os.path.abspath(path).split(os.sep)
    current = os.sep
    for part in parts[1:-1]:
        current = os.path.join(current, part)
        if not access(current, os.X_OK):
            return current
    return None


def check_readable(what: str, path: str, access: AccessFn = os.access, user: str = "") -> Finding:
    """A file (or directory) this user can read, naming the directory in the way if not."""
    user = user or who()
    blocked = _parents_blocking(path, access)
    if blocked:
        return Finding(False, what, f"{path}: {user} cannot enter {blocked} (permission denied)")
    if not os.path.exists(path):
        return Finding(False, what, f"{path}: no such file or directory")
    if _unreadable(path, access, os.path.isdir(path)):
        return Finding(False, what, f"{path}: not readable by {user} (permission denied)")
    return Finding(True, what, f"{path}: readable")


def check_home(env: Mapping[str, str], access: AccessFn = os.access, user: str = "") -> Finding:
    """Ansible keeps its temporary files under ``$ANSIBLE_HOME`` (default ``~/.ansible``): the
    first of those that exists, or the directory it would be made in, must be writable."""
    user = user or who()
    home = env.get("HOME") or ""
    target = env.get("ANSIBLE_HOME") or (os.path.join(home, ".ansible") if home else "")
    what = "ANSIBLE_HOME" if env.get("ANSIBLE_HOME") else "HOME"
    if not target:
        return Finding(False, what, "not set; Ansible keeps its temporary files in ~/.ansible")
    target = os.path.expanduser(target)
    probe = target
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not access(probe, os.W_OK | os.X_OK):
        return Finding(False, what, f"{probe}: not writable by {user}; Ansible keeps its temporary "
                                    f"files in {target}")
    return Finding(True, what, f"{target}: writable")


# --------------------------------------------------------------------------------------------
# ansible-playbook
# --------------------------------------------------------------------------------------------

def _first_error(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("ERROR", "[ERROR]")):
            return line[:limit]
    return (lines[-1] if lines else "no output")[:limit]


def check_ansible_playbook(env: Mapping[str, str], run: RunFn = subprocess.run, cwd: str | None = None,
                           user: str = "") -> tuple[Finding, str | None]:
    """Find ``ansible-playbook`` on the run's PATH and run ``--version``; return its path too."""
    user = user or who()
    path = env.get("PATH") or os.defpath
    found = shutil.which("ansible-playbook", path=path)
    if not found:
        return Finding(False, "ansible-playbook",
                       f"not found on the PATH the playbook runs with ({path}); install ansible-core "
                       "into the service's virtualenv (the webhook_service role does), or set "
                       "dispatcher.envvars.PATH"), None
    try:
        proc = run([found, "--version"], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                   capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return Finding(False, "ansible-playbook", f"{found}: {user} cannot run it: {reason}"), None
    if proc.returncode != 0:
        return Finding(False, "ansible-playbook",
                       f"{found} --version exited {proc.returncode} as {user}: "
                       f"{_first_error(proc.stderr or proc.stdout or '')}"), None
    first = (proc.stdout or "").splitlines()[0].strip() if proc.stdout else "?"
    return Finding(True, "ansible-playbook", f"{found} ({first})"), found


def check_inventory_loads(ansible_playbook: str, inventory: str, env: Mapping[str, str],
                          run: RunFn = subprocess.run, cwd: str | None = None, user: str = "") -> Finding:
    """``ansible-inventory --list`` beside ``ansible_playbook``: parses the inventory and
    decrypts its vault with the run's settings. Its output (every variable) is thrown away."""
    user = user or who()
    command = os.path.join(os.path.dirname(ansible_playbook), "ansible-inventory")
    if not os.path.isfile(command):
        command = shutil.which("ansible-inventory", path=env.get("PATH") or os.defpath) or command
    try:
        proc = run([command, "-i", inventory, "--list"], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT,
                   check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return Finding(False, "dispatcher.inventory", f"{command}: {user} cannot run it: {reason}")
    if proc.returncode != 0:
        return Finding(False, "dispatcher.inventory",
                       f"{inventory}: ansible-inventory --list failed as {user}: {_first_error(proc.stderr or '')}")
    return Finding(True, "dispatcher.inventory", f"{inventory}: loads (ansible-inventory --list)")


# --------------------------------------------------------------------------------------------
# Inventory files
# --------------------------------------------------------------------------------------------

def _walk(root: str, listdir: Callable[[str], list[str]]) -> Iterable[tuple[str, bool]]:
    """(path, is_dir) below ``root`` without following symlinked directories; hidden entries skipped."""
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            names = sorted(listdir(current))
        except OSError:
            continue  # reported by the readability check of ``current``
        for name in names:
            if name.startswith("."):
                continue
            full = os.path.join(current, name)
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            yield full, is_dir
            if is_dir:
                stack.append(full)


def _is_vaulted(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError:
        return False
    return head.startswith(VAULT_MARKERS[0]) or VAULT_MARKERS[1] in head


def check_inventory_files(inventory: str, access: AccessFn = os.access,
                          listdir: Callable[[str], list[str]] = os.listdir,
                          user: str = "") -> tuple[list[Finding], list[str]]:
    """Every file of the inventory readable by this user; return problems and vaulted files."""
    user = user or who()
    top = check_readable("dispatcher.inventory", inventory, access, user)
    if not top.ok:
        return [top], []
    problems: list[Finding] = []
    vaulted: list[str] = []
    entries = [(inventory, os.path.isdir(inventory))]
    if entries[0][1]:
        entries += list(_walk(inventory, listdir))
    for count, (path, is_dir) in enumerate(entries):
        if count > INVENTORY_FILES_MAX:
            break
        if _unreadable(path, access, is_dir):
            problems.append(Finding(False, "dispatcher.inventory",
                                    f"{path}: not readable by {user} (permission denied)"))
        elif not is_dir and _is_vaulted(path):
            vaulted.append(path)
    return problems, vaulted


# --------------------------------------------------------------------------------------------
# Vault passwords (and ansible.cfg)
# --------------------------------------------------------------------------------------------

def find_ansible_cfg(env: Mapping[str, str], cwd: str | None) -> str | None:
    """The ansible.cfg Ansible would read: $ANSIBLE_CONFIG, ./ansible.cfg (not in a world-writable
    directory), ~/.ansible.cfg ($HOME), /etc/ansible/ansible.cfg."""
    named = env.get("ANSIBLE_CONFIG")
    if named:
        named = os.path.expanduser(named)
        if os.path.isdir(named):
            named = os.path.join(named, "ansible.cfg")
        return named if os.path.exists(named) else None
    candidates = []
    if cwd:
        try:
            if not os.stat(cwd).st_mode & stat.S_IWOTH:
                candidates.append(os.path.join(cwd, "ansible.cfg"))
        except OSError:
            pass
    home = env.get("HOME")
    if home:
        candidates.append(os.path.join(home, ".ansible.cfg"))
    candidates.append("/etc/ansible/ansible.cfg")
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


def _cfg_defaults(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error, UnicodeDecodeError):
        return {}
    return dict(parser["defaults"]) if parser.has_section("defaults") else {}


def _resolve(value: str, base: str | None) -> str:
    value = os.path.expanduser(value.strip())
    if base and not os.path.isabs(value):
        value = os.path.join(base, value)
    return os.path.normpath(value)


def _origin(name: str, envvars: Mapping[str, Any]) -> str:
    return f"dispatcher.envvars.{name}" if name in envvars else f"the environment's {name}"


def private_key_source(env: Mapping[str, str], envvars: Mapping[str, Any],
                       cfg: str | None) -> tuple[str, str] | None:
    """(path, where it was named) of the SSH key Ansible would use, if one is named."""
    if env.get("ANSIBLE_PRIVATE_KEY_FILE"):
        return _resolve(env["ANSIBLE_PRIVATE_KEY_FILE"], None), _origin("ANSIBLE_PRIVATE_KEY_FILE", envvars)
    value = _cfg_defaults(cfg).get("private_key_file") if cfg else None
    return (_resolve(value, os.path.dirname(cfg)), f"private_key_file in {cfg}") if value else None


def vault_sources(env: Mapping[str, str], envvars: Mapping[str, Any], cfg: str | None) -> list[tuple[str, str]]:
    """(source, where it was named) for every vault password Ansible would use.

    A source is a file path, or a prompt. The environment wins over ansible.cfg, key by key."""
    def origin(name: str) -> str:
        return _origin(name, envvars)

    defaults = _cfg_defaults(cfg) if cfg else {}
    base = os.path.dirname(cfg) if cfg else None
    found: list[tuple[str, str]] = []
    if env.get("ANSIBLE_VAULT_PASSWORD_FILE"):
        found.append((_resolve(env["ANSIBLE_VAULT_PASSWORD_FILE"], None), origin("ANSIBLE_VAULT_PASSWORD_FILE")))
    elif defaults.get("vault_password_file"):
        found.append((_resolve(defaults["vault_password_file"], base), f"vault_password_file in {cfg}"))
    if env.get("ANSIBLE_VAULT_IDENTITY_LIST"):
        raw, where, rel = env["ANSIBLE_VAULT_IDENTITY_LIST"], origin("ANSIBLE_VAULT_IDENTITY_LIST"), None
    else:
        raw, where, rel = defaults.get("vault_identity_list", ""), f"vault_identity_list in {cfg}", base
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        source = entry.split("@", 1)[1] if "@" in entry else entry
        found.append((source if source in PROMPTS else _resolve(source, rel), where))
    return found


def check_vault(sources: list[tuple[str, str]], vaulted: list[str], access: AccessFn = os.access,
                user: str = "") -> list[Finding]:
    """Each named password source usable by a service; a vaulted inventory needs one."""
    user = user or who()
    findings: list[Finding] = []
    for source, where in sources:
        what = f"vault password ({where})"
        if source in PROMPTS:
            findings.append(Finding(False, what, f"{source!r} asks on a terminal, which a service has not; "
                                                 "name a password file instead"))
            continue
        found = check_readable(what, source, access, user)
        if found.ok and os.path.isfile(source) and os.stat(source).st_mode & 0o111 \
                and not access(source, os.X_OK):
            found = Finding(False, what, f"{source}: executable (a script), but {user} may not run it")
        findings.append(found)
    if vaulted and not sources:
        findings.append(Finding(False, "dispatcher.inventory",
                                f"{vaulted[0]} is vault-encrypted, but no vault password file is named; "
                                "set dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE"))
    return findings


# --------------------------------------------------------------------------------------------
# All together
# --------------------------------------------------------------------------------------------

def _dispatcher_value(dispatcher: Any, config: Mapping[str, Any], name: str) -> Any:
    value = getattr(dispatcher, name, None)
    return value if value is not None else config.get(name)


def check_ansible_runner(config: Mapping[str, Any], dispatcher: Any, environ: Mapping[str, str] | None = None,
                         access: AccessFn = os.access, run: RunFn = subprocess.run,
                         listdir: Callable[[str], list[str]] = os.listdir, user: str = "") -> list[Finding]:
    """Every check for ``dispatcher.kind: ansible-runner``, in the order a run needs them."""
    user = user or who()
    envvars = getattr(dispatcher, "envvars", None)
    if envvars is None:
        envvars = config.get("envvars") or {}
    env = run_environment(envvars, environ)
    project_dir = _dispatcher_value(dispatcher, config, "project_dir")
    cwd = project_dir if project_dir and os.path.isdir(project_dir) else None
    findings = [Finding(True, "runs as", f"{user}, HOME={env.get('HOME', '-')}, PATH={env.get('PATH', '-')}")]

    playbooks = []
    for name in ("playbook", "reconcile_playbook"):
        value = getattr(dispatcher, name, None)
        if isinstance(value, str) and os.path.isabs(value):
            playbooks.append((f"dispatcher.{name}", value))
    if not playbooks and isinstance(config.get("playbook"), str) and os.path.isabs(config["playbook"]):
        playbooks.append(("dispatcher.playbook", config["playbook"]))
    for what, path in playbooks:
        findings.append(check_readable(what, path, access, user))
    if project_dir:
        findings.append(check_readable("dispatcher.project_dir", project_dir, access, user))

    findings.append(check_home(env, access, user))
    found, ansible_playbook = check_ansible_playbook(env, run, cwd, user)
    findings.append(found)

    inventory = _dispatcher_value(dispatcher, config, "inventory")
    problems, vaulted = check_inventory_files(inventory, access, listdir, user)
    findings += problems
    cfg = find_ansible_cfg(env, cwd)
    if cfg:
        findings.append(check_readable("ansible.cfg", cfg, access, user))
    findings += check_vault(vault_sources(env, envvars, cfg), vaulted, access, user)
    key = private_key_source(env, envvars, cfg)
    if key:
        findings.append(check_readable(f"SSH private key ({key[1]})", key[0], access, user))

    if ansible_playbook and all(f.ok for f in findings):
        findings.append(check_inventory_loads(ansible_playbook, inventory, env, run, cwd, user))
    return findings
