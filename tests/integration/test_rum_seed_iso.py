"""rum_seed_iso through ansible-playbook (no libvirt needed)."""

from __future__ import annotations

import os


def test_rum_seed_iso_lifecycle(playbook, state_dir):
    seed_dir = os.path.join(state_dir, "seed-iso-test")
    run = playbook("rum_seed_iso/seed.yml", {"seed_dir": seed_dir})
    assert "failed=0" in run.stdout
    assert not os.path.exists(seed_dir)


def test_rum_seed_iso_shows_content_only_with_diff(playbook, state_dir):
    """The seed's content (secrets included) reaches the output only with --diff."""
    seed_dir = os.path.join(state_dir, "seed-iso-diff")
    plain = playbook("rum_seed_iso/diff.yml", {"seed_dir": seed_dir})
    assert "s3cret-value" not in plain.stdout + plain.stderr
    with_diff = playbook("rum_seed_iso/diff.yml", {"seed_dir": seed_dir}, diff=True)
    assert "# ---- user-data ----" in with_diff.stdout
    assert "-    token: s3cret-value-2\n" in with_diff.stdout
    assert "+    token: s3cret-value-3\n" in with_diff.stdout
    assert not os.path.exists(seed_dir)
