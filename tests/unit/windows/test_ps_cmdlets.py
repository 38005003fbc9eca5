# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every cmdlet the collection's PowerShell calls exists and is called with parameters from one of its sets.

The table, tests/data/hyperv_cmdlets.json, is recorded from Microsoft's reference pages
(windows-powershell-docs for Hyper-V, Storage, ScheduledTasks, ... on Windows Server 2022;
PowerShell-Docs reference/5.1 for the core cmdlets of Windows PowerShell 5.1) by
tests/windows/record_cmdlets.py; each entry names its page and file. The checked code is the
modules and their module utils, the Packer templates' guest scripts and every script the Windows
runner bootstrap renders.
"""

from __future__ import annotations

import pytest

from tests.unit.windows import ps_sources
from tests.windows import pscheck

TABLE = pscheck.Table.load()
LOCAL = ps_sources.module_functions()
SOURCES = ps_sources.cmdlet_sources()


def _problems(source: str) -> list[str]:
    return pscheck.check_source(source.encode(), TABLE, "<test>", LOCAL)


@pytest.mark.parametrize(("name", "source"), SOURCES, ids=[entry[0] for entry in SOURCES])
def test_every_call_binds_to_one_parameter_set(name: str, source: bytes) -> None:
    assert pscheck.check_source(source, TABLE, name, LOCAL) == []


def test_the_check_sees_the_hyperv_calls() -> None:
    called = {call.name for entry in SOURCES for call in pscheck.calls(entry[1])}
    for cmdlet in ("New-VHD", "New-VM", "Set-VM", "Set-VMMemory", "Set-VMFirmware", "Add-VMDvdDrive",
                   "Remove-VM", "Stop-VM", "Get-VMNetworkAdapter", "Register-ScheduledTask"):
        assert cmdlet in called


def test_every_table_entry_names_its_page_and_is_used() -> None:
    called = {call.name.lower() for entry in SOURCES for call in pscheck.calls(entry[1])}
    for name, entry in TABLE.data["cmdlets"].items():
        assert entry["page"].startswith("https://learn.microsoft.com/powershell/module/"), name
        assert entry["source"].startswith(("MicrosoftDocs/windows-powershell-docs/docset/winserver2022-ps/",
                                           "MicrosoftDocs/PowerShell-Docs/reference/5.1/")), name
        assert entry["source"].endswith(f"/{name}.md"), name
        assert entry["sets"], name
        assert name.lower() in called, f"{name} is recorded but nothing calls it: re-record the table"
    for source in TABLE.data["sources"].values():
        assert len(source["commit"]) == 40


def test_the_table_knows_the_differencing_disk_set() -> None:
    """The facts the module relies on, as recorded from New-VHD's and New-VM's pages."""
    sets = TABLE.entry("New-VHD")["sets"]
    assert sets["Differencing"]["mandatory"] == ["Path", "ParentPath"]
    assert "Differencing" in sets["Differencing"]["optional"]
    assert "Fixed" not in sets["Differencing"]["optional"] + sets["Differencing"]["mandatory"]
    new_vm = TABLE.entry("New-VM")["sets"]
    assert "VHDPath" in new_vm["Existing VHD"]["mandatory"]
    assert "NewVHDPath" not in new_vm["Existing VHD"]["mandatory"] + new_vm["Existing VHD"]["optional"]


def test_a_good_call_passes() -> None:
    assert _problems("New-VHD -Path 'C:\\d.vhdx' -ParentPath 'C:\\t.vhdx' -Differencing -ErrorAction Stop") == []
    assert _problems("Get-VM -VMName 'x'") == [], "an alias from the page is accepted"
    assert _problems("$vm | Stop-VM -TurnOff -Force") == [], "pipeline input binds to -VM"
    assert _problems("Join-Path $a 'b'") == [], "positional arguments bind in order"


@pytest.mark.parametrize(("call", "message"), [
    ("New-VHD -Path 'C:\\d.vhdx' -ParentPth 'C:\\t.vhdx' -Differencing", "New-VHD has no parameter -ParentPth"),
    ("Set-VM -VM $vm -ProcesorCount 4", "Set-VM has no parameter -ProcesorCount"),
    ("Remove-Item -LiteralPath $p -Recurce", "Remove-Item has no parameter -Recurce"),
    ("Stop-VM -VM $vm -TurnOf", "Stop-VM has no parameter -TurnOf"),
])
def test_a_misspelt_parameter_is_caught(call: str, message: str) -> None:
    problems = _problems(call)
    assert problems and message in problems[0], problems


@pytest.mark.parametrize(("call", "message"), [
    # -Fixed belongs to the Fixed* sets, -ParentPath to Differencing only.
    ("New-VHD -Path 'C:\\d.vhdx' -ParentPath 'C:\\t.vhdx' -Fixed", "no parameter set takes these together"),
    # -VHDPath (existing disk) and -NewVHDPath (new disk) are two different sets of New-VM.
    ("New-VM -Name x -VHDPath 'C:\\d.vhdx' -NewVHDPath 'C:\\n.vhdx' -NewVHDSizeBytes 1073741824",
     "no parameter set takes these together"),
    # -Name selects the Name set, -VM the VMObject set.
    ("Stop-VM -Name x -VM $vm -Force", "no parameter set takes these together"),
    ("Remove-Item -Path $a -LiteralPath $b", "no parameter set takes these together"),
])
def test_a_mixed_parameter_set_is_caught(call: str, message: str) -> None:
    problems = _problems(call)
    assert problems and message in problems[0], problems


@pytest.mark.parametrize(("call", "message"), [
    ("New-VHD -Path 'C:\\d.vhdx' -Differencing", "mandatory -parentpath not given"),
    ("Set-VMDvdDrive -Path 'C:\\seed.iso'", "mandatory -vmname not given"),
    ("Get-VM | New-VHD -Differencing -Path 'C:\\d.vhdx'", "nothing takes pipeline input"),
    ("'x' | Start-Sleep -Seconds 1", "nothing takes pipeline input"),
    ("Set-VMDvdDrive -VMDvdDrive $d -Path $a -Path $b", "more than once"),
    ("Get-Vmm -Name x", "not in the cmdlet table"),
    ("Get-VM -Name x | where { $_.State -eq 'Off' }", "an alias"),
])
def test_other_mistakes_are_caught(call: str, message: str) -> None:
    problems = _problems(call)
    assert problems and message in " ".join(problems), problems


def test_splatted_parameters_are_checked() -> None:
    good = "$p = @{ Path = 'C:\\d.vhdx'; ParentPath = 'C:\\t.vhdx' }\n$p.Differencing = $true\nNew-VHD @p\n"
    assert _problems(good) == []
    bad = "$p = @{ Path = 'C:\\d.vhdx'; ParentPath = 'C:\\t.vhdx' }\n$p['Fixed'] = $true\nNew-VHD @p\n"
    assert "no parameter set takes these together" in " ".join(_problems(bad))
    unknown = "New-VHD @params\n"
    assert "not built from literal keys" in " ".join(_problems(unknown))


def test_functions_of_the_collection_are_not_cmdlets() -> None:
    assert _problems("function Get-Thing { param($A) }\nGet-Thing -A 1 -Whatever 2") == []
    assert _problems("Invoke-RumVm -Params @{} -CheckMode $true") == [], "defined in _HyperV.psm1"
