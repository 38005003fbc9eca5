"""The seed ISO library: rendering, instance-id policy, ISO build/read-back, converging on disk."""

from __future__ import annotations

import collections
import io
import os
import stat
import subprocess

import pycdlib
import pytest
import yaml

from tests import needs

from ansible_collections.rum.pool.plugins.module_utils import _seed
from ansible_collections.rum.pool.plugins.module_utils._checksum import file_digest
from ansible_collections.rum.pool.plugins.module_utils._seed import SeedContent, SeedError

TRICKY_STRINGS = [
    "#!/bin/sh\nset -eu\necho \"hello $USER\" > /tmp/x\n",
    "  leading spaces\n  on every line\n",
    "trailing spaces   \nline two\n",
    "no trailing newline\nsecond",
    "two trailing newlines\n\n",
    "\n\nleading newlines",
    "tab\tinside\nand\ttab\n",
    "windows\r\nline endings\r\n",
    "yes", "no", "on", "null", "~", "0755", "1e3", "0x1F", "2024-01-01", "",
    "- looks like a list", "key: value", "# a comment", "!tag value", "&anchor", "*alias",
    "'single' and \"double\" quotes", "back\\slash", "{braces}", "[brackets]", "100%",
    "unicode: é ✓ 日本", "bell\x07 and nul-free control",
    "heredoc <<EOF\n  $(cmd) `cmd` ${var}\nEOF\n",
    "ends with a backslash \\\n",
]


# --------------------------------------------------------------------------------------- render


def test_render_string_is_verbatim():
    text = "#!/bin/sh\necho hi\n"
    assert _seed.render_user_data(text) == text


def test_render_dict_has_cloud_config_header():
    rendered = _seed.render_user_data({"runcmd": ["echo hi"]})
    assert rendered.startswith("#cloud-config\n")
    assert yaml.safe_load(rendered) == {"runcmd": ["echo hi"]}


@pytest.mark.parametrize("value", TRICKY_STRINGS)
def test_render_round_trips_odd_strings(value):
    data = {"write_files": [{"path": "/x", "content": value}], "runcmd": [value, [value]],
            value or "empty": value}
    rendered = _seed.render_user_data(data)
    assert yaml.safe_load(rendered) == data


def test_render_keeps_multiline_scripts_readable():
    script = "#!/bin/sh\necho one\necho two\n"
    rendered = _seed.render_user_data({"write_files": [{"content": script}]})
    # A literal block, not an escaped one-liner.
    assert "content: |\n    #!/bin/sh\n    echo one\n    echo two\n" in rendered


def test_render_keeps_key_order_and_unicode():
    rendered = _seed.render_user_data({"z": 1, "a": "é"})
    assert rendered == "#cloud-config\nz: 1\na: é\n"


def test_render_accepts_mapping_and_str_subclasses_and_tuples():
    class Text(str):
        pass

    data = collections.OrderedDict([(Text("runcmd"), (Text("echo"), 1, 2.5, True, None))])
    rendered = _seed.render_user_data(data)
    assert "!!python" not in rendered
    assert yaml.safe_load(rendered) == {"runcmd": ["echo", 1, 2.5, True, None]}


@pytest.mark.parametrize("bad, where", [
    ({"a": {1, 2}}, "user_data.a"),
    ({"a": [b"bytes"]}, "user_data.a[0]"),
    ({"a": object()}, "user_data.a"),
    ({("tuple", "key"): 1}, "user_data"),
])
def test_render_rejects_non_data_naming_where(bad, where):
    with pytest.raises(SeedError) as err:
        _seed.render_user_data(bad)
    assert str(err.value).startswith(where + ":")


@pytest.mark.parametrize("bad", [["a", "list"], 42, b"bytes", None])
def test_render_rejects_other_top_level_types(bad):
    with pytest.raises(SeedError, match="user_data must be a string or a mapping"):
        _seed.render_user_data(bad)


# -------------------------------------------------------------------------------- content / ids


def test_files_names_and_optional_members():
    content = SeedContent("#cloud-config\n{}\n", {"instance-id": "i-1"})
    assert list(content.files()) == ["user-data", "meta-data"]
    full = SeedContent("u", {"instance-id": "i-1"}, "version: 2\n", "v")
    assert list(full.files()) == ["user-data", "meta-data", "network-config", "vendor-data"]
    assert full.files()["meta-data"] == b"instance-id: i-1\n"


def test_digest_is_stable_and_sensitive():
    one = SeedContent("a", {"instance-id": "x"})
    assert one.digest() == SeedContent("a", {"instance-id": "x"}).digest()
    assert one.digest() != SeedContent("b", {"instance-id": "x"}).digest()
    # Moving bytes between files changes the digest (names and lengths are hashed too).
    assert SeedContent("a", {}, "b").digest() != SeedContent("ab", {}, "").digest()


def test_make_seed_derives_a_stable_instance_id_from_content():
    first = _seed.make_seed({"runcmd": ["echo 1"]}, {"local-hostname": "web1"})
    again = _seed.make_seed({"runcmd": ["echo 1"]}, {"local-hostname": "web1"})
    changed = _seed.make_seed({"runcmd": ["echo 2"]}, {"local-hostname": "web1"})
    renamed = _seed.make_seed({"runcmd": ["echo 1"]}, {"local-hostname": "web2"})
    with_net = _seed.make_seed({"runcmd": ["echo 1"]}, {"local-hostname": "web1"},
                               network_config={"version": 2})
    assert first.instance_id == again.instance_id
    assert first.instance_id.startswith("iid-") and len(first.instance_id) == 20
    assert len({first.instance_id, changed.instance_id, renamed.instance_id,
                with_net.instance_id}) == 4
    assert first.meta_data == {"instance-id": first.instance_id, "local-hostname": "web1"}


def test_make_seed_explicit_instance_id_wins():
    meta = {"instance-id": "from-meta", "local-hostname": "h"}
    assert _seed.make_seed("x", meta).instance_id == "from-meta"
    assert _seed.make_seed("x", meta, instance_id="explicit").instance_id == "explicit"
    assert _seed.make_seed("x", {"local-hostname": "h"}, instance_id="e").meta_data == {
        "instance-id": "e", "local-hostname": "h"}
    # A fixed id is kept across content changes: no re-provisioning.
    assert _seed.make_seed("y", meta).instance_id == "from-meta"


def test_make_seed_renders_every_member():
    content = _seed.make_seed({"a": 1}, None, {"version": 2, "ethernets": {}}, {"b": 2})
    assert content.user_data == "#cloud-config\na: 1\n"
    assert content.network_config == "version: 2\nethernets: {}\n"
    assert content.vendor_data == "#cloud-config\nb: 2\n"
    assert _seed.make_seed(None).user_data == "#cloud-config\n{}\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"user_data": ["x"]}, "user_data must be a string or a mapping"),
    ({"user_data": "x", "meta_data": ["x"]}, "meta_data must be a mapping"),
    ({"user_data": "x", "network_config": ["x"]}, "network_config must be a string or a mapping"),
    ({"user_data": "x", "vendor_data": 3}, "vendor_data must be a string or a mapping"),
    ({"user_data": "x", "instance_id": "two\nlines"}, "single line"),
    ({"user_data": "x", "instance_id": "  "}, "non-empty"),
])
def test_make_seed_rejects_bad_input(kwargs, message):
    with pytest.raises(SeedError, match=message):
        _seed.make_seed(**kwargs)


# ------------------------------------------------------------------------------------------ ISO


def _content() -> SeedContent:
    return _seed.make_seed({"runcmd": ["echo hi"], "write_files": [{"content": TRICKY_STRINGS[0]}]},
                           {"local-hostname": "web1"}, {"version": 2, "ethernets": {}},
                           "#!/bin/sh\necho vendor\n")


def test_iso_round_trip(tmp_path):
    content = _content()
    path = tmp_path / "seed.iso"
    path.write_bytes(_seed.build_iso_bytes(content))
    assert _seed.read_iso(str(path)) == content


def test_iso_volume_id_and_names_with_pycdlib(tmp_path):
    path = tmp_path / "seed.iso"
    path.write_bytes(_seed.build_iso_bytes(_content()))
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        rr_names = sorted(child.rock_ridge.name().decode()
                          for child in iso.list_children(rr_path="/") if child.is_file())
        joliet_names = sorted(child.file_identifier().decode("utf-16-be").split(";")[0]
                              for child in iso.list_children(joliet_path="/") if child.is_file())
    finally:
        iso.close()
    expected = ["meta-data", "network-config", "user-data", "vendor-data"]
    assert rr_names == expected
    assert joliet_names == expected


def _isoinfo_listing(path: str) -> tuple:
    info = subprocess.run(["isoinfo", "-d", "-i", path], capture_output=True, text=True,
                          check=True).stdout
    volume = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("Volume id:"))
    rock_ridge = subprocess.run(["isoinfo", "-R", "-f", "-i", path], capture_output=True,
                                text=True, check=True).stdout
    joliet = subprocess.run(["isoinfo", "-J", "-f", "-i", path], capture_output=True,
                            text=True, check=True).stdout
    return volume, sorted(rock_ridge.split()), sorted(joliet.split())


def _xorriso_listing(path: str) -> tuple:
    out = subprocess.run(["xorriso", "-indev", path, "-pvd_info", "-find", "/", "-type", "f"],
                         capture_output=True, text=True, check=True).stdout
    volume = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                  if line.startswith("Volume Id"))
    names = sorted(line.strip("'") for line in out.splitlines() if line.startswith("'/"))
    return volume, names, None


@pytest.mark.parametrize("tool, package, listing", [("isoinfo", "genisoimage", _isoinfo_listing),
                                                    ("xorriso", "xorriso", _xorriso_listing)])
def test_iso_names_with_an_independent_reader(tmp_path, tool, package, listing):
    """Other ISO readers (pycdlib's own view is tested above) see the same names."""
    needs.command(tool, package)
    path = tmp_path / "seed.iso"
    path.write_bytes(_seed.build_iso_bytes(_content()))
    volume, rock_ridge, joliet = listing(str(path))
    expected = ["/meta-data", "/network-config", "/user-data", "/vendor-data"]
    assert volume == "cidata"
    assert rock_ridge == expected
    assert joliet in (None, expected)


def test_read_iso_missing_is_none(tmp_path):
    assert _seed.read_iso(str(tmp_path / "nope.iso")) is None


def test_read_iso_rejects_non_iso(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 2000)
    with pytest.raises(SeedError, match="not a readable ISO9660 image"):
        _seed.read_iso(str(path))


def test_read_iso_rejects_other_volume_ids(tmp_path):
    iso = pycdlib.PyCdlib()
    iso.new(vol_ident="DATA", rock_ridge="1.09")
    iso.add_fp(io.BytesIO(b"x"), 1, "/USERDATA.;1", rr_name="user-data")
    path = tmp_path / "other.iso"
    iso.write(str(path))
    iso.close()
    with pytest.raises(SeedError, match="volume id is 'DATA'.*not a cloud-init NoCloud seed"):
        _seed.read_iso(str(path))


def test_read_iso_rejects_a_seed_without_meta_data(tmp_path):
    iso = pycdlib.PyCdlib()
    iso.new(vol_ident="cidata", rock_ridge="1.09")
    iso.add_fp(io.BytesIO(b"x"), 1, "/USERDATA.;1", rr_name="user-data")
    path = tmp_path / "half.iso"
    iso.write(str(path))
    iso.close()
    with pytest.raises(SeedError, match="no user-data or meta-data"):
        _seed.read_iso(str(path))


def test_read_iso_rejects_a_directory(tmp_path):
    with pytest.raises(SeedError, match="not a regular file"):
        _seed.read_iso(str(tmp_path))


# ------------------------------------------------------------------------------- ensure / remove


def _no_temp_files(directory) -> bool:
    return not [name for name in os.listdir(directory) if name.endswith(".tmp")]


def test_ensure_creates_then_is_idempotent(tmp_path):
    path = str(tmp_path / "seed.iso")
    content = _content()
    first = _seed.ensure_seed(path, content)
    assert first["changed"] is True
    assert first["instance_id"] == content.instance_id
    assert first["sha256"] == file_digest(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _seed.read_iso(path) == content
    inode = os.stat(path).st_ino

    second = _seed.ensure_seed(path, _content())
    assert second["changed"] is False
    assert second["sha256"] == first["sha256"]
    assert os.stat(path).st_ino == inode  # not rewritten
    assert second["diff"]["before"] == second["diff"]["after"]
    assert _no_temp_files(tmp_path)


def test_ensure_check_mode_writes_nothing(tmp_path):
    path = str(tmp_path / "seed.iso")
    result = _seed.ensure_seed(path, _content(), check_mode=True)
    assert result["changed"] is True and result["sha256"] is None
    assert not os.path.exists(path)
    assert result["diff"]["before"] == ""
    assert "# ---- user-data ----\n#cloud-config\n" in result["diff"]["after"]


def test_ensure_content_change_rewrites_with_new_instance_id(tmp_path):
    path = str(tmp_path / "seed.iso")
    old = _seed.ensure_seed(path, _seed.make_seed({"runcmd": ["echo 1"]}))
    new_content = _seed.make_seed({"runcmd": ["echo 2"]})
    checked = _seed.ensure_seed(path, new_content, check_mode=True)
    assert checked["changed"] is True and checked["sha256"] is None
    assert file_digest(path) == old["sha256"]  # check mode left it alone
    new = _seed.ensure_seed(path, new_content)
    assert new["changed"] is True
    assert new["instance_id"] != old["instance_id"]
    assert "- echo 1" in new["diff"]["before"] and "- echo 2" in new["diff"]["after"]
    assert _seed.read_iso(path) == new_content


def test_ensure_mode_change_alone_is_a_change_in_place(tmp_path):
    path = str(tmp_path / "seed.iso")
    _seed.ensure_seed(path, _content())
    inode = os.stat(path).st_ino
    result = _seed.ensure_seed(path, _content(), mode="0640", check_mode=True)
    assert result["changed"] is True and result["content_changed"] is False
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    result = _seed.ensure_seed(path, _content(), mode="0640")
    assert result["changed"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.stat(path).st_ino == inode
    assert "# mode: 0600" in result["diff"]["before"] and "# mode: 0640" in result["diff"]["after"]
    assert _seed.ensure_seed(path, _content(), mode=0o640)["changed"] is False


def test_ensure_owner_and_group_by_id_are_applied_and_reported(tmp_path):
    path = str(tmp_path / "seed.iso")
    uid, gid = os.getuid(), os.getgid()
    result = _seed.ensure_seed(path, _content(), owner=str(uid), group=gid)
    assert result["changed"] is True
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (uid, gid)
    assert f"# owner: {uid}" in result["diff"]["after"]
    assert _seed.ensure_seed(path, _content(), owner=uid, group=str(gid))["changed"] is False


def test_ensure_owner_change_is_reported(tmp_path):
    needs.root("changing a file's owner")
    path = str(tmp_path / "seed.iso")
    _seed.ensure_seed(path, _content())
    result = _seed.ensure_seed(path, _content(), owner="nobody")
    assert result["changed"] is True and result["content_changed"] is False
    assert os.stat(path).st_uid != 0
    assert _seed.ensure_seed(path, _content(), owner="nobody")["changed"] is False


def test_ensure_unknown_owner_or_group(tmp_path):
    path = str(tmp_path / "seed.iso")
    with pytest.raises(SeedError, match="owner 'no-such-user-rum': no such user"):
        _seed.ensure_seed(path, _content(), owner="no-such-user-rum")
    with pytest.raises(SeedError, match="group 'no-such-group-rum': no such group"):
        _seed.ensure_seed(path, _content(), group="no-such-group-rum")
    assert not os.path.exists(path)


def test_ensure_refuses_to_replace_a_file_that_is_not_a_seed(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x00precious" * 5000)
    with pytest.raises(SeedError, match="not a readable ISO9660 image"):
        _seed.ensure_seed(str(path), _content())
    assert path.read_bytes() == b"\x00precious" * 5000


def test_ensure_missing_directory(tmp_path):
    path = str(tmp_path / "missing" / "seed.iso")
    with pytest.raises(SeedError, match="directory .*missing does not exist"):
        _seed.ensure_seed(path, _content())


def test_failed_write_leaves_old_seed_and_no_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "seed.iso")
    old = _seed.ensure_seed(path, _seed.make_seed("one"))

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_seed.os, "replace", broken_replace)
    with pytest.raises(SeedError, match=f"seed ISO {path}: write failed: No space left on device"):
        _seed.ensure_seed(path, _seed.make_seed("two"))
    assert file_digest(path) == old["sha256"]
    assert _no_temp_files(tmp_path)


def test_temp_file_has_its_final_mode_before_the_rename(tmp_path, monkeypatch):
    path = str(tmp_path / "seed.iso")
    seen = []
    real_replace = os.replace

    def spying_replace(src, dst):
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr(_seed.os, "replace", spying_replace)
    _seed.ensure_seed(path, _content(), mode="0640")
    assert seen == [0o640]


def test_remove(tmp_path):
    path = str(tmp_path / "seed.iso")
    _seed.ensure_seed(path, _content())
    checked = _seed.remove_seed(path, check_mode=True)
    assert checked["changed"] is True and os.path.exists(path)
    assert "# ---- user-data ----" in checked["diff"]["before"]
    assert _seed.remove_seed(path)["changed"] is True
    assert not os.path.exists(path)
    assert _seed.remove_seed(path)["changed"] is False


def test_remove_refuses_a_file_that_is_not_a_seed_unless_forced(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"data" * 1000)
    with pytest.raises(SeedError, match="refusing to delete it"):
        _seed.remove_seed(str(path))
    assert path.exists()
    assert _seed.remove_seed(str(path), force=True)["changed"] is True
    assert not path.exists()


@pytest.mark.parametrize("mode, expected", [
    ("0600", 0o600), ("600", 0o600), ("0644", 0o644), (0o640, 0o640), (None, 0o600),
    ("2750", 0o2750),
])
def test_parse_mode(mode, expected):
    assert _seed.parse_mode(mode) == expected


@pytest.mark.parametrize("mode", ["rw-r--r--", "0999", "u=rw", "", True, 0o10000, -1])
def test_parse_mode_rejects(mode):
    with pytest.raises(SeedError, match="mode"):
        _seed.parse_mode(mode)
