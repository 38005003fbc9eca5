# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every .ps1/.psm1 in the tree, and every script the Windows bootstrap renders, parses as PowerShell.

The parser is tree-sitter-powershell (a real grammar, the same one editors use); nothing here runs
PowerShell. Its grammar has gaps: it flags some valid PowerShell (a size suffix after an operator,
``4 * 1GB``; a bare comma list as a command argument, ``-Function a, b``; an unquoted path with a
variable, ``-Path $dir\\file.vhdx``; an empty script block argument, ``{ }``; a parameter name
that ends in a digit, ``-Sha256 $x``). The check is not loosened for them: the collection's code is
written so that the parser reads it (``* 1048576``, ``@('a', 'b')``, quoted or Join-Path'd paths,
``{ $null }``, parameter names without a final digit), and
``test_known_grammar_gaps_are_still_gaps`` records the gaps so that the day the grammar learns
them, this note and the workarounds can go.
"""

from __future__ import annotations

import pytest

from tests.unit.windows import ps_sources
from tests.windows import pscheck

SOURCES = ps_sources.all_sources()


def test_the_check_sees_the_collections_powershell() -> None:
    names = {entry[0] for entry in SOURCES}
    for expected in ("plugins/modules/hyperv_vm.ps1", "plugins/modules/hyperv_vm_info.ps1",
                     "plugins/module_utils/_HyperV.psm1"):
        assert expected in names
    assert any(name.startswith("packer/windows-runner/scripts/") for name in names), "the template's scripts too"
    assert any(name.startswith("tests/windows/pester/") for name in names), "and the Pester tests"
    assert sum(name.startswith("<runner_user_data_windows") for name in names) == 13


@pytest.mark.parametrize(("name", "source"), SOURCES, ids=[entry[0] for entry in SOURCES])
def test_parses(name: str, source: bytes) -> None:
    assert pscheck.syntax_errors(source) == [], name


@pytest.mark.parametrize("broken", [
    "if ($x) { Write-Host 'unclosed'",
    "$h = @{ a = 1; b = }",
    "Get-VM -Name 'x' | | Stop-VM",
    "function Get-Thing { param([string]$A }",
    "$s = 'unterminated",
    "foreach ($x in $y { }",
    "try { 1 } catch { 2 } finally",
])
def test_a_broken_script_fails_the_check(broken: str) -> None:
    assert pscheck.syntax_errors(broken.encode()), broken


def test_a_broken_copy_of_the_module_fails_the_check() -> None:
    source = dict(SOURCES)["plugins/module_utils/_HyperV.psm1"]
    # Drop the closing brace of the first function: everything after it belongs to it.
    broken = source.replace(b"        return $null\n    }\n", b"        return $null\n\n", 1)
    assert broken != source
    assert pscheck.syntax_errors(broken)


@pytest.mark.parametrize(("gap", "workaround"), [
    ("$bytes = 4 * 1GB", "$bytes = 4 * 1073741824"),
    ("Export-ModuleMember -Function Get-A, Get-B", "Export-ModuleMember -Function @('Get-A', 'Get-B')"),
    ("New-VHD -Path $dir\\disk.vhdx -ParentPath $t -Differencing",
     "New-VHD -Path \"$dir\\disk.vhdx\" -ParentPath $t -Differencing"),
    ("Mock -CommandName Stop-VM -MockWith { }", "Mock -CommandName Stop-VM -MockWith { $null }"),
    ("Save-CheckedDownload -Path $zip -Sha256 $hash", "Save-CheckedDownload -Path $zip -Checksum $hash"),
])
def test_known_grammar_gaps_are_still_gaps(gap: str, workaround: str) -> None:
    """Valid PowerShell the grammar (0.26.4) flags, and the spelling the collection uses instead."""
    assert pscheck.syntax_errors(gap.encode()), f"the grammar now reads {gap!r}: the workaround can go"
    assert pscheck.syntax_errors(workaround.encode()) == []


def test_no_byte_order_mark_and_lf_endings() -> None:
    """Ansible's module wrapper and cloudbase-init's first-line test want plain UTF-8 without a BOM."""
    for name, source in SOURCES:
        assert not source.startswith(b"\xef\xbb\xbf"), name
        assert b"\r\n" not in source, name
