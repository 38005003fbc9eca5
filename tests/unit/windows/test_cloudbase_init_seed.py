# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloudbase-init itself (PyPI cloudbase-init==1.1.9) reads the seed ISO a Windows slot gets.

The seed is built as the pool builds it: the user-data from ``runner_user_data_windows``, the
meta-data with ``local-hostname`` from ``windows_host_name``, through the collection's seed library
(``_seed.make_seed`` and ``_seed.build_iso_bytes``, what ``rum_seed_iso`` calls). cloudbase-init's
own ``NoCloudConfigDriveService`` and ``WindowsConfigDriveManager`` find it, and its own
``UserDataPlugin`` picks the PowerShell executor for the script.

Stubbed, because they only exist on Windows (and only these):

* ``cloudbaseinit.utils.windows.disk``: ``osconfigdrive/windows.py`` imports it for the raw-disk
  search; it needs ``ctypes.windll`` and pywin32's ``winioctlcon``. An empty module stands in; the
  CD-ROM search used on Hyper-V never calls it.
* the OS utilities (``osutils.factory.get_os_utils``, ``WindowsUtils`` on pywin32 and WMI): a
  stand-in answers the calls made on this path. ``get_cdrom_drives`` gives a folder holding the seed
  as Windows' CD-ROM file system shows it, through its Joliet names (Windows ignores Rock Ridge);
  ``get_volume_label`` gives the ISO's Joliet volume label; ``execute_powershell_script`` records
  the script instead of starting powershell.exe; the disk and volume lists are empty.
* ``osconfigdrive.factory.get_config_drive_manager``, which refuses any platform but win32: it
  returns cloudbase-init's own ``WindowsConfigDriveManager`` here too.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import types
from pathlib import Path

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _seed, _windows_guest
from tests import needs
from tests.unit.windows import samples

RUNNER_NAME = "ci-hyperv-host-01-12-k3x9qa"


class WindowsStandIn:
    """The Windows OS utility calls cloudbase-init makes on the NoCloud CD-ROM path."""

    def __init__(self, drive: Path, label: str) -> None:
        self.drive = drive
        self.label = label
        self.scripts: list[tuple[str, bytes, bool]] = []
        self.host_names: list[str] = []

    def get_cdrom_drives(self) -> list[str]:
        return [str(self.drive)]

    def get_volume_label(self, drive: str) -> str:
        return self.label if drive == str(self.drive) else ""

    def get_physical_disks(self) -> list[str]:
        return []

    def get_volumes(self) -> list[str]:
        return []

    def execute_powershell_script(self, path: str, sysnative: bool = True) -> tuple[bytes, bytes, int]:
        self.scripts.append((path, Path(path).read_bytes(), sysnative))
        return b"", b"", 0

    def set_host_name(self, name: str) -> bool:
        self.host_names.append(name)
        return True


def _mount_like_windows(iso_bytes: bytes, target: Path) -> str:
    """Copy the ISO's files out by their Joliet names (as Windows shows them); return the volume label."""
    pycdlib = needs.module("pycdlib", "pycdlib (requirements-dev.txt)")
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(iso_bytes))
    try:
        if iso.joliet_vd is None:
            # No Joliet: Windows falls back to the plain ISO 9660 names (8.3, upper case).
            for child in iso.list_children(iso_path="/"):
                if child.is_file():
                    name = child.file_identifier().decode("ascii").split(";")[0].rstrip(".")
                    with open(target / name, "wb") as out:
                        iso.get_file_from_iso_fp(out, iso_path="/" + child.file_identifier().decode("ascii"))
            return iso.pvd.volume_identifier.decode("ascii").strip()
        for child in iso.list_children(joliet_path="/"):
            if child.is_file():
                name = child.file_identifier().decode("utf-16-be")
                with open(target / name, "wb") as out:
                    iso.get_file_from_iso_fp(out, joliet_path="/" + name)
        return iso.joliet_vd.volume_identifier.decode("utf-16-be").strip()
    finally:
        iso.close()


@pytest.fixture()
def cloudbaseinit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    """cloudbase-init's modules, with only the Windows-only parts replaced (see the module docstring)."""
    monkeypatch.setitem(sys.modules, "cloudbaseinit.utils.windows.disk", types.ModuleType("disk"))
    needs.module("cloudbaseinit", "cloudbase-init==1.1.9 (requirements-dev.txt)")
    from cloudbaseinit.metadata.services import nocloudservice  # pylint: disable=import-outside-toplevel
    from cloudbaseinit.metadata.services.osconfigdrive import factory, windows  # pylint: disable=import-outside-toplevel
    from cloudbaseinit.osutils import factory as osutils_factory  # pylint: disable=import-outside-toplevel
    from cloudbaseinit.plugins.common import base, execcmd, userdata  # pylint: disable=import-outside-toplevel
    from cloudbaseinit.utils import hostname  # pylint: disable=import-outside-toplevel

    temp = tmp_path / "cloudbase-init-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    drive = tmp_path / "D-drive"
    drive.mkdir()
    holder = types.SimpleNamespace(windows=None)
    monkeypatch.setattr(osutils_factory, "get_os_utils", lambda: holder.windows)
    monkeypatch.setattr(factory, "get_config_drive_manager", windows.WindowsConfigDriveManager)
    return types.SimpleNamespace(nocloud=nocloudservice, userdata=userdata, execcmd=execcmd, base=base,
                                 hostname=hostname, holder=holder, drive=drive, temp=temp)


def _insert(cbi: types.SimpleNamespace, iso_bytes: bytes) -> WindowsStandIn:
    label = _mount_like_windows(iso_bytes, cbi.drive)
    cbi.holder.windows = WindowsStandIn(cbi.drive, label)
    return cbi.holder.windows


def test_cloudbase_init_reads_the_windows_slot_seed(cloudbaseinit: types.SimpleNamespace) -> None:
    user_data = _windows_guest.runner_user_data_windows(samples.JIT_CONFIG)
    host = _windows_guest.windows_host_name(RUNNER_NAME)
    content = _seed.make_seed(user_data, {"local-hostname": host})
    windows = _insert(cloudbaseinit, _seed.build_iso_bytes(content))
    assert windows.label == "cidata"

    service = cloudbaseinit.nocloud.NoCloudConfigDriveService()
    assert service.load() is True, "cloudbase-init did not find the seed"
    try:
        assert service.get_instance_id() == content.instance_id
        assert service.get_instance_id().startswith("iid-")
        assert service.get_host_name() == host
        assert service.get_decoded_user_data() == user_data.encode("utf-8")

        # The copy cloudbase-init keeps while its plugins run: a folder right under its TEMP, which
        # is where the user-data script looks for it (Get-SecretCopy).
        copy = Path(service._mgr.target_path)  # pylint: disable=protected-access
        assert copy.parent == cloudbaseinit.temp
        assert samples.JIT_CONFIG in (copy / "user-data").read_text()

        # Its SetHostNamePlugin logic leaves the name as it is (<= 15, no trailing '-').
        assert cloudbaseinit.hostname.set_hostname(windows, host)[0] == host

        status, reboot = cloudbaseinit.userdata.UserDataPlugin().execute(service, {})
        assert (status, reboot) == (cloudbaseinit.base.PLUGIN_EXECUTION_DONE, False)
        assert len(windows.scripts) == 1
        path, script, sysnative = windows.scripts[0]
        assert sysnative is True, "#ps1_sysnative: the 64-bit PowerShell"
        assert path.endswith(".ps1") and Path(path).parent == cloudbaseinit.temp, "a file right under TEMP"
        assert script == user_data.encode("utf-8")
        assert not Path(path).exists(), "cloudbase-init removes its temporary script after the run"
    finally:
        service.cleanup()
    assert not copy.exists(), "and its seed copy when its plugins are done"


def test_the_script_header_decides_the_executor(cloudbaseinit: types.SimpleNamespace) -> None:
    """cloudbase-init's own first-line test: with a byte-order mark, nothing would run."""
    script = _windows_guest.runner_user_data_windows(samples.JIT_CONFIG).encode("utf-8")
    windows = WindowsStandIn(cloudbaseinit.drive, "cidata")
    cloudbaseinit.holder.windows = windows
    from cloudbaseinit.plugins.common import userdatautils  # pylint: disable=import-outside-toplevel

    assert isinstance(userdatautils.get_command(script), cloudbaseinit.execcmd.PowershellSysnative)
    assert userdatautils.get_command(b"\xef\xbb\xbf" + script) is None


def test_without_joliet_names_windows_would_not_find_the_seed(cloudbaseinit: types.SimpleNamespace) -> None:
    """Control: a seed with only ISO 9660 (and Rock Ridge) names is invisible to cloudbase-init on Windows."""
    pycdlib = needs.module("pycdlib", "pycdlib (requirements-dev.txt)")
    content = _seed.make_seed(_windows_guest.runner_user_data_windows(samples.JIT_CONFIG), {"local-hostname": "w"})
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident="cidata", rock_ridge="1.09")
    for name, data in content.files().items():
        iso.add_fp(io.BytesIO(data), len(data), "/" + _seed.ISO_NAMES[name], rr_name=name)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    _insert(cloudbaseinit, out.getvalue())
    assert sorted(os.listdir(cloudbaseinit.drive)) == ["METADATA", "USERDATA"]
    service = cloudbaseinit.nocloud.NoCloudConfigDriveService()
    try:
        assert service.load() is False
    finally:
        service.cleanup()
