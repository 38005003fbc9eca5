"""The hyperv_seed action plugin: the seed is built on the controller and reaches the host only
through the connection's file transfer, joined with the host's own shell (PowerShell or sh)."""

from __future__ import annotations

import os
import shutil
from unittest import mock

import pytest
from ansible import constants
from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.plugins.loader import shell_loader

from ansible_collections.rum.pool.plugins.action import hyperv_seed as plugin
from ansible_collections.rum.pool.plugins.module_utils import _seed

SECRET = "ZXhhbXBsZS1qaXQtY29uZmlnLW5vdC1yZWFs"
SCRIPT = f"#ps1_sysnative\n$Secret = '{SECRET}'\n"


def _action(args, shell, tmp_path, *, check_mode=False, put=None):
    """An ActionModule on a connection whose put_file copies into ``tmp_path/host`` (recorded)."""
    host = tmp_path / "host"
    host.mkdir(exist_ok=True)
    puts = []

    def put_file(local, remote):
        with open(local, "rb") as handle:
            data = handle.read()
        puts.append({"local": local, "remote": remote, "data": data, "mode": os.stat(local).st_mode & 0o777})
        if put is not None:
            put(local, remote)

    connection = mock.MagicMock()
    connection._shell = shell_loader.get(shell)
    connection.put_file = put_file
    task = mock.MagicMock(args=args, async_val=0, check_mode=check_mode)
    action = plugin.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock())
    action._low_level_execute_command = mock.MagicMock(return_value={"rc": 0, "stdout": "", "stderr": ""})
    return action, puts


ARGS = {"path": "D:\\rum\\vms", "name": "win-hv1-1", "user_data": SCRIPT,
        "meta_data": {"local-hostname": "win-hv1-1-abc123"}}


def test_the_seed_is_built_on_the_controller_and_put_beside_the_vms_on_a_windows_host(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DEFAULT_LOCAL_TMP", str(tmp_path))
    action, puts = _action(dict(ARGS), "powershell", tmp_path)
    result = action.run(task_vars={"inventory_hostname": "hv1"})
    [put] = puts
    assert put["remote"] == result["path"] == "D:\\rum\\vms\\win-hv1-1-seed.iso"
    assert put["mode"] == 0o600 and not os.path.exists(put["local"]), "the controller's copy is private and removed"
    iso = tmp_path / "seed.iso"
    iso.write_bytes(put["data"])
    content = _seed.read_iso(str(iso))
    assert content.user_data == SCRIPT  # verbatim: cloudbase-init needs '#ps1_sysnative' at byte 0
    assert content.meta_data["local-hostname"] == "win-hv1-1-abc123"
    assert content.instance_id == result["instance_id"] and content.instance_id.startswith("iid-")
    assert result["changed"] is True and result["size"] == len(put["data"])
    assert SECRET not in repr(result), "the result never carries the user-data"
    action._low_level_execute_command.assert_not_called()  # no chmod on Windows: the folder's access list applies


def test_a_posix_host_gets_its_own_separator_and_a_private_file(tmp_path):
    action, puts = _action(dict(ARGS, path="/srv/hv/vms"), "sh", tmp_path)
    result = action.run(task_vars={})
    assert puts[0]["remote"] == result["path"] == "/srv/hv/vms/win-hv1-1-seed.iso"
    [call] = action._low_level_execute_command.call_args_list
    assert "chmod" in call.args[0] and "0600" in call.args[0] and result["path"] in call.args[0]


def test_check_mode_builds_the_seed_and_transfers_nothing(tmp_path):
    action, puts = _action(dict(ARGS), "powershell", tmp_path, check_mode=True)
    result = action.run(task_vars={})
    assert puts == [] and result["changed"] is True and result["path"].endswith("win-hv1-1-seed.iso")


@pytest.mark.parametrize("args, message", [
    ({"name": "../evil"}, "hyperv_seed: name '../evil': a VM name"),
    ({"path": " "}, "hyperv_seed: path must name the folder on the host"),
    ({"meta_data": "x"}, "meta_data"),
    ({"color": "red"}, "Unsupported parameters"),
])
def test_bad_arguments_fail_before_anything_is_transferred(tmp_path, args, message):
    action, puts = _action(dict(ARGS, **args), "powershell", tmp_path)
    with pytest.raises(AnsibleActionFail, match=message.replace("(", r"\(")):
        action.run(task_vars={})
    assert puts == []


def test_a_failed_transfer_names_the_path_and_host_and_not_the_secret(tmp_path):
    def refuse(_local, remote):
        raise AnsibleConnectionFailure(f"Could not find a part of the path '{remote}'")

    action, _puts = _action(dict(ARGS), "powershell", tmp_path, put=refuse)
    with pytest.raises(AnsibleActionFail) as err:
        action.run(task_vars={"inventory_hostname": "hv1"})
    message = str(err.value)
    assert "cannot put the seed of VM 'win-hv1-1' at 'D:\\rum\\vms\\win-hv1-1-seed.iso' on hv1" in message
    assert "does the folder exist" in message and SECRET not in message


def test_without_pycdlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(plugin._seed, "HAS_PYCDLIB", False)
    action, _puts = _action(dict(ARGS), "powershell", tmp_path)
    with pytest.raises(AnsibleActionFail, match="pycdlib library is required on the controller"):
        action.run(task_vars={})


def test_the_seed_reaches_a_real_folder_through_a_file_copy(tmp_path):
    """The same bytes through a put_file that writes them (as the local connection does)."""
    folder = tmp_path / "vms"
    folder.mkdir()
    action, _puts = _action(dict(ARGS, path=str(folder)), "sh", tmp_path, put=shutil.copyfile)
    result = action.run(task_vars={})
    assert _seed.read_iso(result["path"]).user_data == SCRIPT
