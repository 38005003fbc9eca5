"""What a test needs from the machine: present, or the test fails saying how to get it.

Never a silent skip: `make setup` (apt packages, libvirtd) and `make venv` (Python packages)
install everything the tests use, so a missing piece is a broken set-up worth a loud failure.
"""

from __future__ import annotations

import importlib
import shutil
import types

import pytest


def command(name: str, package: str) -> str:
    """The path of ``name``, or fail naming the Debian package that has it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {package} (make setup installs it)", pytrace=False)
    return path


def module(name: str, requirement: str) -> types.ModuleType:
    """Import ``name``, or fail naming what provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"Python module {name} is missing ({exc}): {requirement} "
                    "(make venv installs requirements-dev.txt)", pytrace=False)
        raise  # unreachable: pytest.fail raises


def root(why: str) -> None:
    """Fail unless running as root (as `make test` does on CI), saying what needs it."""
    import os  # pylint: disable=import-outside-toplevel
    if os.geteuid() != 0:
        pytest.fail(f"this test needs root ({why}): run the unit tests as root, as make test does",
                    pytrace=False)
