# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which PowerShell the checks look at: files in the tree, and the guest scripts the collection renders."""

from __future__ import annotations

import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Generated, vendored or scratch trees that are not the collection's own PowerShell.
_SKIP_PARTS = {".venv", ".collections", ".sanity", ".cache", ".ansible", "node_modules", "output", "packer_cache"}


def _files(*patterns: str) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        for path in ROOT.glob(pattern):
            if path.is_file() and not _SKIP_PARTS.intersection(path.relative_to(ROOT).parts):
                found.add(path)
    return sorted(found)


def tree_files() -> list[Path]:
    """Every .ps1/.psm1 in the repository (modules, module utils, Packer scripts, Pester tests)."""
    return _files("**/*.ps1", "**/*.psm1")


def module_files() -> list[Path]:
    return _files("plugins/**/*.ps1", "plugins/**/*.psm1")


def guest_files() -> list[Path]:
    """PowerShell that runs inside a Windows guest while its image is built."""
    return _files("packer/**/*.ps1")


def host_test_files() -> list[Path]:
    """PowerShell the Windows integration test runs on the Hyper-V host."""
    return _files("tests/windows/integration/**/*.ps1")


def pester_files() -> list[Path]:
    """The Pester tests and their runner (Pester's own commands are not in Microsoft's reference)."""
    return sorted(set(_files("tests/windows/**/*.ps1")) - set(host_test_files()))


def rendered_guest_scripts() -> list[tuple[str, bytes]]:
    """The user-data scripts runner_user_data_windows renders, for JIT and registration, with and without poweroff."""
    from tests.unit.windows import samples  # pylint: disable=import-outside-toplevel

    return [(f"<runner_user_data_windows {label}>", script.encode("utf-8"))
            for label, script in samples.rendered_scripts()]


def module_functions() -> set[str]:
    """Functions the collection's shared PowerShell defines (lower case): the module utils, which the modules
    import, and the Packer template's common.ps1, which its scripts dot-source. They are not cmdlets."""
    from tests.windows import pscheck  # pylint: disable=import-outside-toplevel

    out: set[str] = set()
    for path in _files("plugins/module_utils/*.psm1", "packer/*/scripts/common.ps1"):
        out |= pscheck.defined_functions(path.read_bytes())
    return out


def _read(paths: t.Iterable[Path]) -> list[tuple[str, bytes]]:
    return [(str(path.relative_to(ROOT)), path.read_bytes()) for path in paths]


def cmdlet_sources() -> list[tuple[str, bytes]]:
    """What the cmdlet check reads: modules, module utils, guest and host test scripts, rendered bootstraps."""
    return _read(module_files()) + _read(guest_files()) + _read(host_test_files()) + rendered_guest_scripts()


def all_sources() -> list[tuple[str, bytes]]:
    """What the parse check reads: every file in the tree and the rendered bootstraps."""
    return _read(tree_files()) + rendered_guest_scripts()
