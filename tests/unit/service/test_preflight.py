# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""check-config's preflight: each check with a passing and a failing case, then the command as
a user that really lacks permissions (``nobody``, through setpriv)."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from types import SimpleNamespace

import pytest

from rum_pool_webhook import preflight
from rum_pool_webhook.preflight import Finding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.dirname(sys.executable)
USER = "user tester (uid 4242)"
VAULT_PASSWORD = "correct horse battery staple"
SECRET_VALUE = "the-inventory-secret-value"


def deny(*paths, mode=None):
    """An ``access`` that refuses ``mode`` (any mode if None) on the given paths only."""
    denied = {os.path.abspath(str(p)) for p in paths}

    def access(path, wanted):
        if os.path.abspath(path) in denied and (mode is None or wanted & mode):
            return False
        return os.path.exists(path)
    return access


def ran(rc=0, stdout="", stderr="", exc=None):
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs))
        if exc is not None:
            raise exc
        return subprocess.CompletedProcess(argv, rc, stdout, stderr)
    run.calls = calls
    return run


# -- readable files --------------------------------------------------------------------------

def test_readable_file_passes(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    assert preflight.check_readable("what", str(path), os.access, USER).ok


def test_missing_file_is_named(tmp_path):
    found = preflight.check_readable("dispatcher.playbook", str(tmp_path / "gone.yml"), os.access, USER)
    assert not found.ok and found.line() == f"dispatcher.playbook: {tmp_path / 'gone.yml'}: no such file or directory"


def test_unreadable_file_names_the_user(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    found = preflight.check_readable("what", str(path), deny(path, mode=os.R_OK), USER)
    assert not found.ok and found.detail == f"{path}: not readable by {USER} (permission denied)"


def test_a_directory_in_the_way_is_named(tmp_path):
    path = tmp_path / "sub" / "f"
    path.parent.mkdir()
    path.write_text("x")
    found = preflight.check_readable("what", str(path), deny(tmp_path / "sub", mode=os.X_OK), USER)
    assert not found.ok and found.detail == f"{path}: {USER} cannot enter {tmp_path / 'sub'} (permission denied)"


# -- HOME --------------------------------------------------------------------------------------

def test_home_writable_passes(tmp_path):
    found = preflight.check_home({"HOME": str(tmp_path)}, os.access, USER)
    assert found.ok and found.detail == f"{tmp_path / '.ansible'}: writable"


def test_home_not_writable_fails(tmp_path):
    found = preflight.check_home({"HOME": str(tmp_path)}, deny(tmp_path, mode=os.W_OK), USER)
    assert not found.ok and found.what == "HOME" and f"{tmp_path}: not writable by {USER}" in found.detail


def test_home_unset_fails():
    assert not preflight.check_home({}, os.access, USER).ok


def test_ansible_home_wins_over_home(tmp_path):
    found = preflight.check_home({"HOME": "/nonexistent", "ANSIBLE_HOME": str(tmp_path / "a")}, os.access, USER)
    assert found.ok and found.what == "ANSIBLE_HOME"


# -- ansible-playbook ------------------------------------------------------------------------------

def test_ansible_playbook_not_on_path(tmp_path):
    found, path = preflight.check_ansible_playbook({"PATH": str(tmp_path)}, ran(), user=USER)
    assert not found.ok and path is None
    assert f"not found on the PATH the playbook runs with ({tmp_path})" in found.detail


def fake_ansible_playbook(tmp_path):
    script = tmp_path / "ansible-playbook"
    script.write_text("#!/bin/sh\necho 'ansible-playbook [core 2.19.14]'\n")
    script.chmod(0o755)
    return script


def test_ansible_playbook_that_cannot_run(tmp_path):
    script = fake_ansible_playbook(tmp_path)
    found = preflight.check_ansible_playbook(
        {"PATH": str(tmp_path)}, ran(exc=PermissionError(13, "Permission denied")), user=USER)[0]
    assert not found.ok and found.detail == f"{script}: {USER} cannot run it: Permission denied"


def test_ansible_playbook_that_fails(tmp_path):
    fake_ansible_playbook(tmp_path)
    found = preflight.check_ansible_playbook(
        {"PATH": str(tmp_path)}, ran(rc=1, stderr="ERROR: Ansible requires the locale encoding to be UTF-8\n"),
        user=USER)[0]
    assert not found.ok and found.detail.endswith("exited 1 as user tester (uid 4242): "
                                                  "ERROR: Ansible requires the locale encoding to be UTF-8")


def test_ansible_playbook_runs_with_the_run_environment(tmp_path):
    script = fake_ansible_playbook(tmp_path)
    run = ran(stdout="ansible-playbook [core 2.19.14]\n  config file = None\n")
    env = {"PATH": str(tmp_path), "HOME": "/srv/home"}
    found, path = preflight.check_ansible_playbook(env, run, cwd=str(tmp_path), user=USER)
    assert found.ok and path == str(script) and found.detail == f"{script} (ansible-playbook [core 2.19.14])"
    argv, kwargs = run.calls[0]
    assert argv == [str(script), "--version"] and kwargs["env"] == env and kwargs["cwd"] == str(tmp_path)


def test_the_real_ansible_playbook_runs():
    found, path = preflight.check_ansible_playbook(dict(os.environ, PATH=VENV_BIN), user=USER)
    assert found.ok, found
    assert path == os.path.join(VENV_BIN, "ansible-playbook") and "core 2." in found.detail


# -- inventory files ------------------------------------------------------------------------------

def inventory_dir(tmp_path, vault_file=None):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "hypervisors").mkdir(parents=True)
    (inv / "hosts.yml").write_text("hypervisors:\n  hosts:\n    hv1:\n      ansible_connection: local\n")
    (inv / "group_vars" / "hypervisors" / "pool.yml").write_text("runner_pool_name: ci\n")
    if vault_file is not None:
        (inv / "group_vars" / "hypervisors" / "vault.yml").write_bytes(vault_file)
    return inv


def test_readable_inventory_passes(tmp_path):
    inv = inventory_dir(tmp_path)
    problems, vaulted = preflight.check_inventory_files(str(inv), os.access, user=USER)
    assert problems == [] and vaulted == []


def test_unreadable_inventory_file_is_named(tmp_path):
    inv = inventory_dir(tmp_path)
    hidden = inv / "group_vars" / "hypervisors" / "pool.yml"
    problems = preflight.check_inventory_files(str(inv), deny(hidden, mode=os.R_OK), user=USER)[0]
    assert problems == [Finding(False, "dispatcher.inventory", f"{hidden}: not readable by {USER} (permission denied)")]


def test_inventory_directory_not_enterable_is_named(tmp_path):
    inv = inventory_dir(tmp_path)
    problems = preflight.check_inventory_files(str(inv), deny(inv / "group_vars", mode=os.X_OK), user=USER)[0]
    assert [p.detail for p in problems] == [f"{inv / 'group_vars'}: not readable by {USER} (permission denied)"]


def test_missing_inventory(tmp_path):
    problems = preflight.check_inventory_files(str(tmp_path / "nope"), os.access, user=USER)[0]
    assert [p.detail for p in problems] == [f"{tmp_path / 'nope'}: no such file or directory"]


def test_vaulted_files_are_found(tmp_path):
    inv = inventory_dir(tmp_path, vault_file=b"$ANSIBLE_VAULT;1.1;AES256\n3132\n")
    (inv / "group_vars" / "hypervisors" / "inline.yml").write_text("x: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n")
    vaulted = preflight.check_inventory_files(str(inv), os.access, user=USER)[1]
    assert sorted(os.path.basename(v) for v in vaulted) == ["inline.yml", "vault.yml"]


# -- ansible.cfg and vault password sources ---------------------------------------------------

def test_ansible_cfg_search_order(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    cwd.mkdir()
    (home / ".ansible.cfg").write_text("[defaults]\n")
    assert preflight.find_ansible_cfg({"HOME": str(home)}, str(cwd)) == str(home / ".ansible.cfg")
    (cwd / "ansible.cfg").write_text("[defaults]\n")
    assert preflight.find_ansible_cfg({"HOME": str(home)}, str(cwd)) == str(cwd / "ansible.cfg")
    cwd.chmod(0o777)  # Ansible ignores ansible.cfg in a world-writable directory
    assert preflight.find_ansible_cfg({"HOME": str(home)}, str(cwd)) == str(home / ".ansible.cfg")
    named = tmp_path / "named.cfg"
    named.write_text("[defaults]\n")
    assert preflight.find_ansible_cfg({"HOME": str(home), "ANSIBLE_CONFIG": str(named)}, str(cwd)) == str(named)


def test_vault_sources_from_envvars_environment_and_cfg(tmp_path):
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nvault_password_file = secrets/pass ; relative to the cfg\n"
                   "vault_identity_list = dev@~/dev-pass, prod@prompt\n")
    assert preflight.vault_sources({}, {}, str(cfg)) == [
        (str(tmp_path / "secrets" / "pass"), f"vault_password_file in {cfg}"),
        (os.path.expanduser("~/dev-pass"), f"vault_identity_list in {cfg}"),
        ("prompt", f"vault_identity_list in {cfg}")]
    env = {"ANSIBLE_VAULT_PASSWORD_FILE": "/etc/rum-pool/vault-pass"}
    assert preflight.vault_sources(env, env, str(cfg))[0] == (
        "/etc/rum-pool/vault-pass", "dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE")
    assert preflight.vault_sources(env, {}, None) == [
        ("/etc/rum-pool/vault-pass", "the environment's ANSIBLE_VAULT_PASSWORD_FILE")]


def test_private_key_from_envvars_or_cfg(tmp_path):
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nprivate_key_file = keys/id_ed25519\n")
    assert preflight.private_key_source({}, {}, str(cfg)) == (
        str(tmp_path / "keys" / "id_ed25519"), f"private_key_file in {cfg}")
    env = {"ANSIBLE_PRIVATE_KEY_FILE": "/srv/key"}
    assert preflight.private_key_source(env, env, str(cfg)) == ("/srv/key", "dispatcher.envvars.ANSIBLE_PRIVATE_KEY_FILE")
    assert preflight.private_key_source({}, {}, None) is None


def test_an_unreadable_private_key_is_a_problem(tmp_path):
    inv = inventory_dir(tmp_path)
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    envvars = {"ANSIBLE_PRIVATE_KEY_FILE": str(key), "PATH": str(tmp_path / "empty")}
    findings = preflight.check_ansible_runner({}, dispatcher_for(tmp_path, inv, envvars),
                                              environ={"HOME": str(tmp_path)}, access=deny(key, mode=os.R_OK),
                                              run=ran(), user=USER)
    assert [f.line() for f in findings if not f.ok][1] == (
        f"SSH private key (dispatcher.envvars.ANSIBLE_PRIVATE_KEY_FILE): {key}: not readable by {USER} "
        "(permission denied)")


def test_vault_password_file_readable_passes(tmp_path):
    pw = tmp_path / "pass"
    pw.write_text("x")
    assert [f.ok for f in preflight.check_vault([(str(pw), "here")], [], os.access, USER)] == [True]


def test_vault_password_file_unreadable_fails(tmp_path):
    pw = tmp_path / "pass"
    pw.write_text("x")
    [found] = preflight.check_vault([(str(pw), "dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE")], [],
                                    deny(pw, mode=os.R_OK), USER)
    assert not found.ok
    assert found.line() == (f"vault password (dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE): {pw}: "
                            f"not readable by {USER} (permission denied)")


def test_vault_prompt_fails():
    [found] = preflight.check_vault([("prompt", "vault_identity_list in /x/ansible.cfg")], [], os.access, USER)
    assert not found.ok and "asks on a terminal" in found.detail


def test_vaulted_inventory_without_a_password_fails(tmp_path):
    [found] = preflight.check_vault([], [str(tmp_path / "vault.yml")], os.access, USER)
    assert not found.ok and "set dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE" in found.detail
    assert preflight.check_vault([], [], os.access, USER) == []


# -- the inventory loads with the run's Ansible --------------------------------------------------

def vaulted_inventory(tmp_path, password=VAULT_PASSWORD):
    pw = tmp_path / "vault-pass"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    plain = tmp_path / "plain.yml"
    plain.write_text(f"vault_secret: {SECRET_VALUE}\n")
    encrypted = subprocess.run([os.path.join(VENV_BIN, "ansible-vault"), "encrypt", "--vault-password-file",
                                str(pw), "--output", "-", str(plain)], check=True, capture_output=True).stdout
    plain.unlink()
    return inventory_dir(tmp_path, vault_file=encrypted), pw


def test_inventory_loads_with_the_right_password(tmp_path):
    inv, pw = vaulted_inventory(tmp_path)
    env = dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(pw), HOME=str(tmp_path))
    found = preflight.check_inventory_loads(os.path.join(VENV_BIN, "ansible-playbook"), str(inv), env, user=USER)
    assert found.ok, found


def test_inventory_with_the_wrong_password_fails_without_showing_secrets(tmp_path):
    inv, pw = vaulted_inventory(tmp_path)
    pw.write_text("not the password\n")
    env = dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(pw), HOME=str(tmp_path))
    found = preflight.check_inventory_loads(os.path.join(VENV_BIN, "ansible-playbook"), str(inv), env, user=USER)
    assert not found.ok and found.what == "dispatcher.inventory"
    assert "ansible-inventory --list failed" in found.detail and "ecrypt" in found.detail, found
    assert SECRET_VALUE not in found.detail and VAULT_PASSWORD not in found.detail


# -- all checks together -------------------------------------------------------------------------

def dispatcher_for(tmp_path, inv, envvars):
    playbook = tmp_path / "recreate.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    return SimpleNamespace(kind="ansible-runner", playbook=str(playbook), project_dir=None,
                           inventory=str(inv), envvars=envvars)


def test_all_checks_pass_for_a_usable_set_up(tmp_path):
    inv, pw = vaulted_inventory(tmp_path)
    envvars = {"ANSIBLE_VAULT_PASSWORD_FILE": str(pw), "PATH": VENV_BIN}
    findings = preflight.check_ansible_runner({}, dispatcher_for(tmp_path, inv, envvars),
                                              environ={"HOME": str(tmp_path), "LANG": "C.UTF-8"}, user=USER)
    assert all(f.ok for f in findings), findings
    assert [f.what for f in findings] == [
        "runs as", "dispatcher.playbook", "HOME", "ansible-playbook",
        "vault password (dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE)", "dispatcher.inventory"]
    assert findings[0].detail == f"{USER}, HOME={tmp_path}, PATH={VENV_BIN}"


def test_all_problems_are_reported_and_ansible_is_not_run_then(tmp_path):
    inv, pw = vaulted_inventory(tmp_path)
    envvars = {"ANSIBLE_VAULT_PASSWORD_FILE": str(pw), "PATH": str(tmp_path / "empty")}
    run = ran()
    findings = preflight.check_ansible_runner({}, dispatcher_for(tmp_path, inv, envvars),
                                              environ={"HOME": str(tmp_path)}, access=deny(pw, mode=os.R_OK),
                                              run=run, user=USER)
    problems = [f.what for f in findings if not f.ok]
    assert problems == ["ansible-playbook", "vault password (dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE)"]
    assert run.calls == []


# -- the command, as a user that really lacks the permissions ----------------------------------------
#
# This venv's Python lives under /root (pyenv), which nobody cannot enter: that is the service
# user's view of an installer's ansible-playbook. The passing case runs the same Ansible with the
# system Python 3.11 and this venv's site-packages, through two small scripts.

@pytest.fixture
def nobody_dir():
    if os.getuid() != 0:
        pytest.fail("this test switches to the user nobody with setpriv and must run as root (make unit does)")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing: apt-get install util-linux")
    path = tempfile.mkdtemp(prefix="rum-preflight-", dir="/tmp")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_check_config_as_a_user_who_cannot_run_ansible_or_read_the_vault_password(nobody_dir):
    nobody = pwd.getpwnam("nobody")
    base = nobody_dir
    site_packages = sysconfig.get_paths()["purelib"]
    pythonpath = f"{site_packages}:{os.path.join(ROOT, 'service')}"
    inv, pw = vaulted_inventory(base)
    bindir = base / "bin"
    bindir.mkdir()
    for name, module in (("ansible-playbook", "playbook"), ("ansible-inventory", "inventory")):
        (bindir / name).write_text(f"#!/bin/sh\nexec /usr/bin/python3 -c 'import sys; sys.argv[0] = \"{name}\"; "
                                   f"from ansible.cli.{module} import main; main()' \"$@\"\n")
    for root, dirs, files in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o755 if root == str(bindir) else 0o644)
    os.chmod(pw, 0o600)  # root's only: nobody cannot read it
    secret = base / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    os.chown(secret, nobody.pw_uid, nobody.pw_gid)
    home = base / "home"
    home.mkdir()
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    playbook = base / "recreate.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    playbook.chmod(0o644)
    config = base / "webhook.yml"
    config.write_text(f"secret_file: secret\nstate_dir: state\npools: [ci]\ndispatcher:\n  kind: ansible-runner\n"
                      f"  playbook: {playbook}\n  inventory: {inv}\n"
                      f"  envvars: {{ANSIBLE_VAULT_PASSWORD_FILE: {pw}}}\n")
    config.chmod(0o644)

    def as_nobody(path):
        return subprocess.run(
            ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
             "env", "-i", f"PATH={path}", f"HOME={home}", "LANG=C.UTF-8", f"PYTHONPATH={pythonpath}",
             "/usr/bin/python3", "-m", "rum_pool_webhook.cli", "check-config", "--config", str(config)],
            cwd=str(base), capture_output=True, text=True, timeout=300, check=False)

    # the installer's PATH (this venv first), and a vault password file only root may read
    refused = as_nobody(f"{VENV_BIN}:/usr/bin:/bin")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    who = f"user nobody (uid {nobody.pw_uid})"
    assert refused.stderr == (
        f"rum-pool-webhook: ansible-playbook: {VENV_BIN}/ansible-playbook: {who} cannot run it: Permission denied\n"
        f"rum-pool-webhook: vault password (dispatcher.envvars.ANSIBLE_VAULT_PASSWORD_FILE): {pw}: "
        f"not readable by {who} (permission denied)\n")

    os.chown(pw, nobody.pw_uid, nobody.pw_gid)
    passed = as_nobody(f"{bindir}:/usr/bin:/bin")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"check: runs as: {who}, HOME={home}, PATH={bindir}:/usr/bin:/bin" in passed.stdout
    assert f"check: ansible-playbook: {bindir}/ansible-playbook (ansible-playbook [core " in passed.stdout
    assert f"check: dispatcher.inventory: {inv}: loads (ansible-inventory --list)" in passed.stdout
    assert passed.stdout.endswith("ok\n") and SECRET_VALUE not in passed.stdout + passed.stderr
