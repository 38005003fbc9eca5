# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The suite's own rules, kept: no silent skips (tests/needs.py fails loudly instead), and
tests/needs.py itself fails with the install hint."""

from __future__ import annotations

import os
import re

import pytest

from tests import needs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the ways a pytest test steps aside without failing
SKIPS = re.compile(r"importorskip|pytest\.skip\b|mark\.skip|skipif|mark\.xfail|pytest\.xfail")


def test_no_test_skips_itself_silently():
    found = []
    for top, dirs, files in os.walk(os.path.join(ROOT, "tests")):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "output")]
        for name in files:
            if not name.endswith(".py") or name == os.path.basename(__file__):
                continue
            path = os.path.join(top, name)
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if SKIPS.search(line):
                        found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert found == [], "a test that needs something missing fails with tests/needs.py, it does not skip:\n" + \
        "\n".join(found)


def test_needs_fails_loudly_with_the_install_hint():
    missing_tool = r"^no-such-tool-x is missing: apt-get install pkg-x \(make setup installs it\)$"
    with pytest.raises(pytest.fail.Exception, match=missing_tool):
        needs.command("no-such-tool-x", "pkg-x")
    missing_module = (r"^Python module no_such_module_x is missing \(.*\): req-x "
                      r"\(make venv installs requirements-dev.txt\)$")
    with pytest.raises(pytest.fail.Exception, match=missing_module):
        needs.module("no_such_module_x", "req-x")
    assert needs.command("sh", "dash").endswith("/sh")
    assert needs.module("json", "stdlib").__name__ == "json"
