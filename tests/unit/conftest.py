"""Unit tests never touch the machine's own nftables ruleset: the nftables engine's nft runs a fake."""

from __future__ import annotations

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _nftables as nftables


class FakeNft:
    """nft as a host without rum.pool's tables answers: listing fails (no such table), a script
    is taken (and kept in ``scripts``), ``--version`` prints one."""

    def __init__(self):
        self.scripts: list[str] = []

    def __call__(self, argv, stdin):
        if argv[1:2] == ["-f"]:
            self.scripts.append(stdin)
            return 0, "", ""
        if argv[1:2] == ["--version"]:
            return 0, "nftables v1.0.6 (fake)\n", ""
        return 1, "", "Error: No such file or directory\n"


@pytest.fixture(autouse=True)
def fake_nft(monkeypatch):
    fake = FakeNft()
    monkeypatch.setattr(nftables, "_run", fake)
    return fake
