# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seed library where `make mutate` found it under-tested: every error message word for word,
the exact diff and result of converging and removing, derived instance-ids that stay as released,
seeds holding bytes that are not UTF-8 kept byte for byte, and the mode, owner and group a seed
gets on disk (setuid/setgid bits included, which a change of owner would clear)."""

from __future__ import annotations

import gzip
import os
import stat

import pytest

from tests import needs
from tests.unit.plugins.module_utils.test_seed import _content
from tests.unit.plugins.module_utils.test_seed_exact import FILES, write_iso

from ansible_collections.rum.pool.plugins.module_utils import _seed
from ansible_collections.rum.pool.plugins.module_utils._checksum import file_digest
from ansible_collections.rum.pool.plugins.module_utils._seed import SeedContent, SeedError

# Ids that exist on every Debian host (daemon, bin): a seed handed to another account than root's.
OTHER_UID, OTHER_GID = 1, 2


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(SeedError) as info:
        call(*args, **kwargs)
    return str(info.value)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------------------------- messages


@pytest.mark.parametrize("call, args, kwargs, message", [
    (_seed.render_user_data, (["x"],), {},
     "user_data must be a string or a mapping (cloud-config), got list"),
    (_seed.render_user_data, ({"a": {1}},), {},
     "user_data.a: value of type set cannot be written to YAML"),
    (_seed.make_seed, ("x",), {"meta_data": ["x"]}, "meta_data must be a mapping, got list"),
    (_seed.make_seed, ("x",), {"meta_data": {"a": {1}}},
     "meta_data.a: value of type set cannot be written to YAML"),
    (_seed.make_seed, ("x",), {"network_config": ["x"]},
     "network_config must be a string or a mapping (network-config v1/v2), got list"),
    (_seed.make_seed, ("x",), {"network_config": {"ethernets": {"eth0": b"x"}}},
     "network_config.ethernets.eth0: value of type bytes cannot be written to YAML"),
    (_seed.make_seed, ("x",), {"vendor_data": 3},
     "vendor_data must be a string or a mapping (cloud-config), got int"),
    (_seed.dump_yaml, ({"a": [object()]},), {}, "data.a[0]: value of type object cannot be written to YAML"),
])
def test_bad_input_is_named_exactly(call, args, kwargs, message):
    assert _message(call, *args, **kwargs) == message


def test_meta_data_given_as_content_is_checked_when_written():
    content = SeedContent("u", {"instance-id": "i", "tags": {"a": {1}}})
    assert _message(content.files) == "meta_data.tags.a: value of type set cannot be written to YAML"


def test_a_missing_library_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(_seed, "HAS_YAML", False)
    assert _message(_seed.make_seed, {"a": 1}) == "the PyYAML library is required to render cloud-init seeds"
    monkeypatch.setattr(_seed, "HAS_PYCDLIB", False)
    expected = "the pycdlib library is required to build cloud-init seed ISOs"
    assert _message(_seed.build_iso_bytes, SeedContent("u", {"instance-id": "i"})) == expected
    assert _message(_seed.read_iso, str(tmp_path / "seed.iso")) == expected


@pytest.mark.parametrize("mode, expected", [("0000", 0), (0, 0), ("7777", 0o7777), (0o7777, 0o7777)])
def test_the_ends_of_the_mode_range_are_modes(mode, expected):
    assert _seed.parse_mode(mode) == expected


# ------------------------------------------------------------------------- rendering and ids


def test_a_network_config_string_is_kept_verbatim():
    text = "network:\n  version: 2\n  ethernets: {}\n"
    assert _seed.make_seed("x", network_config=text).network_config == text


def test_derived_instance_ids_stay_as_released():
    """Derived ids come from the rendered bytes: rendering differently would give every guest a
    new instance-id on upgrade, and cloud-init would provision them all again."""
    content = _seed.make_seed({"runcmd": ["echo hi"]}, {"local-hostname": "web1"})
    assert content.instance_id == "iid-477c58e0c1dd4f03"
    assert content.files()["user-data"] == b"#cloud-config\nruncmd:\n- echo hi\n"


def test_long_lines_are_folded_only_past_column_4096():
    words = "a" * 4093 + " b c"  # `- ` then 4095 columns before " b": the fold comes after b
    assert _seed.render_user_data({"runcmd": [words]}) == (
        "#cloud-config\nruncmd:\n- " + "a" * 4093 + " b\n  c\n")
    assert _seed.render_user_data({"runcmd": ["x " * 2000]}).count("\n") == 3


def test_the_derived_id_ignores_any_instance_id_in_meta_data():
    plain = _seed.derive_instance_id("x", {"h": 1}, None, None)
    assert _seed.derive_instance_id("x", {"instance-id": "given", "h": 1}, None, None) == plain
    # An empty instance-id in meta_data counts as none: one is derived, the same as without it.
    assert _seed.make_seed("x", {"instance-id": "", "h": 1}).instance_id == \
        _seed.make_seed("x", {"h": 1}).instance_id


def test_vendor_data_is_part_of_the_derived_id():
    ids = {_seed.make_seed("x").instance_id, _seed.make_seed("x", vendor_data="a").instance_id,
           _seed.make_seed("x", vendor_data="b").instance_id}
    assert len(ids) == 3
    assert _seed.derive_instance_id("x", {}, None, "a") != _seed.derive_instance_id("x", {}, None, None)


def test_the_readable_text_of_every_member():
    content = SeedContent("", {"instance-id": "i-1"}, "version: 2", "v\n")
    assert content.text() == ("# ---- user-data ----\n"
                              "# ---- meta-data ----\ninstance-id: i-1\n"
                              "# ---- network-config ----\nversion: 2\n"
                              "# ---- vendor-data ----\nv\n")


# ------------------------------------------------------------------------------- reading back


def test_bytes_that_are_not_utf8_survive_a_read_back(tmp_path):
    """A gzip'd user-data (cloud-init accepts it) and members in another encoding are kept byte
    for byte; the diff shows them with replacement characters."""
    gz = gzip.compress(b"#cloud-config\nruncmd: [echo hi]\n", mtime=0)
    files = dict(FILES, **{"user-data": gz, "network-config": b"# caf\xe9\nversion: 2\n",
                           "vendor-data": b"#!/bin/sh\necho \xff\n"})
    path = write_iso(tmp_path / "s.iso", files)
    content = _seed.read_iso(path)
    assert content.files() == {"user-data": gz, "meta-data": b"instance-id: i-1\nlocal-hostname: h\n",
                               "network-config": files["network-config"], "vendor-data": files["vendor-data"]}
    assert "# ---- network-config ----\n# caf\ufffd\nversion: 2\n" in content.text()
    assert content.text().startswith("# ---- user-data ----\n\x1f\ufffd\x08")
    # The seed rebuilt from what was read holds the same bytes, so it is not rewritten.
    before = file_digest(path)
    assert _seed.ensure_seed(path, content, mode=_mode(path))["changed"] is False
    assert file_digest(path) == before


def test_meta_data_that_is_not_utf8_is_named(tmp_path):
    path = write_iso(tmp_path / "s.iso", dict(FILES, **{"meta-data": b"instance-id: \xff\n"}))
    assert _message(_seed.read_iso, path).startswith(
        f"seed ISO {path}: meta-data is not valid YAML: unacceptable character #xdcff")


def test_a_volume_id_that_is_not_ascii_is_named(tmp_path):
    path = write_iso(tmp_path / "s.iso", FILES)
    with open(path, "r+b") as handle:  # the primary volume descriptor's volume identifier
        handle.seek(16 * 2048 + 40)
        handle.write(b"cidat\xff")
    assert _message(_seed.read_iso, path) == (
        f"seed ISO {path}: volume id is 'cidat\ufffd', not 'cidata': not a cloud-init NoCloud seed")


def test_an_empty_user_data_reads_back_empty(tmp_path):
    path = write_iso(tmp_path / "s.iso", dict(FILES, **{"user-data": b""}))
    assert _seed.read_iso(path).user_data == ""


# -------------------------------------------------------------------- converging and removing


def test_the_result_of_making_a_seed(tmp_path):
    path = str(tmp_path / "seed.iso")
    content = _content()
    result = _seed.ensure_seed(path, content)
    assert result == {
        "changed": True, "content_changed": True, "path": path, "sha256": file_digest(path),
        "instance_id": content.instance_id,
        "diff": {"before_header": path, "after_header": path, "before": "",
                 "after": "# mode: 0600\n" + content.text()},
    }
    # Neither owner nor group asked for: the file is the running user's.
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (os.getuid(), os.getgid())


def test_the_diff_lists_mode_owner_and_group(tmp_path):
    path = str(tmp_path / "seed.iso")
    content = _content()
    result = _seed.ensure_seed(path, content, mode="0640", owner=os.getuid(), group=os.getgid())
    assert result["diff"]["after"] == (f"# mode: 0640\n# owner: {os.getuid()}\n# group: {os.getgid()}\n"
                                       + content.text())


@pytest.mark.parametrize("owner, group, expected", [
    (OTHER_UID, None, (OTHER_UID, 0)),
    (None, OTHER_GID, (0, OTHER_GID)),
    (OTHER_UID, OTHER_GID, (OTHER_UID, OTHER_GID)),
])
def test_a_new_seed_gets_its_owner_and_group(tmp_path, owner, group, expected):
    needs.root("handing a file to another user or group")
    path = str(tmp_path / "seed.iso")
    _seed.ensure_seed(path, _content(), owner=owner, group=group)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == expected
    assert _mode(path) == 0o600
    assert _seed.ensure_seed(path, _content(), owner=owner, group=group)["changed"] is False


def test_a_group_change_alone_is_made_in_place(tmp_path):
    needs.root("changing a file's group")
    path = str(tmp_path / "seed.iso")
    _seed.ensure_seed(path, _content(), group=0)
    inode = os.stat(path).st_ino
    result = _seed.ensure_seed(path, _content(), group=OTHER_GID)
    assert result["changed"] is True and result["content_changed"] is False
    assert os.stat(path).st_gid == OTHER_GID and os.stat(path).st_ino == inode
    assert result["diff"]["before"].startswith("# mode: 0600\n# group: 0\n# ---- user-data ----\n")
    assert result["diff"]["after"].startswith(f"# mode: 0600\n# group: {OTHER_GID}\n# ---- user-data ----\n")
    assert _seed.ensure_seed(path, _content(), group=OTHER_GID)["changed"] is False


@pytest.mark.parametrize("first", [{}, {"mode": "0600"}, {"mode": "4750"}], ids=["new", "0600", "4750"])
def test_setuid_and_setgid_bits_survive_a_change_of_owner(tmp_path, first):
    """The kernel clears setuid/setgid when a file changes hands: the mode is set after the owner,
    whether the seed is written anew or only handed over, and a second run changes nothing."""
    needs.root("handing a file to another user")
    path = str(tmp_path / "seed.iso")
    if first:
        _seed.ensure_seed(path, _content(), **first)
    result = _seed.ensure_seed(path, _content(), mode="6750", owner=OTHER_UID, group=OTHER_GID)
    assert result["changed"] is True
    assert (_mode(path), os.stat(path).st_uid, os.stat(path).st_gid) == (0o6750, OTHER_UID, OTHER_GID)
    assert _seed.ensure_seed(path, _content(), mode="6750", owner=OTHER_UID, group=OTHER_GID)["changed"] is False


def test_the_result_of_removing(tmp_path):
    path = str(tmp_path / "seed.iso")
    assert _seed.remove_seed(path) == {"changed": False, "path": path, "diff": {"before": "", "after": ""}}
    _seed.ensure_seed(path, _content())
    assert _seed.remove_seed(path) == {
        "changed": True, "path": path,
        "diff": {"before_header": path, "after_header": path, "before": _content().text(), "after": ""},
    }
    assert not os.path.exists(path)
