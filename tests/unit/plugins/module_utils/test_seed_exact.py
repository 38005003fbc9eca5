# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seeds read back through each naming scheme (Rock Ridge, Joliet, plain ISO9660), seeds whose
meta-data is not usable, and the seed files that cannot be written, changed or removed: each
named in its error."""

from __future__ import annotations

import io
import os

import pycdlib
import pytest

from ansible_collections.rum.pool.plugins.module_utils import _seed
from ansible_collections.rum.pool.plugins.module_utils._seed import SeedError


def write_iso(path, files, rock_ridge=True, joliet=True, volume="cidata"):
    iso = pycdlib.PyCdlib()
    kwargs = {"vol_ident": volume, "interchange_level": 1}
    if rock_ridge:
        kwargs["rock_ridge"] = "1.09"
    if joliet:
        kwargs["joliet"] = 3
    iso.new(**kwargs)
    for name, data in files.items():
        extra = {}
        if rock_ridge:
            extra["rr_name"] = name
        if joliet:
            extra["joliet_path"] = "/" + name
        iso.add_fp(io.BytesIO(data), len(data), "/" + _seed.ISO_NAMES[name], **extra)
    iso.write(str(path))
    iso.close()
    return str(path)


FILES = {"user-data": b"#cloud-config\n{}\n", "meta-data": b"instance-id: i-1\nlocal-hostname: h\n",
         "network-config": b"version: 2\n"}


@pytest.mark.parametrize("rock_ridge, joliet", [(True, True), (False, True), (False, False)])
def test_a_seed_is_read_through_whichever_names_it_has(tmp_path, rock_ridge, joliet):
    path = write_iso(tmp_path / "s.iso", FILES, rock_ridge=rock_ridge, joliet=joliet)
    content = _seed.read_iso(path)
    assert content.user_data == "#cloud-config\n{}\n"
    assert content.meta_data == {"instance-id": "i-1", "local-hostname": "h"}
    assert content.network_config == "version: 2\n" and content.vendor_data is None


def test_the_volume_id_is_compared_without_case(tmp_path):
    path = write_iso(tmp_path / "s.iso", FILES, volume="CIDATA")
    assert _seed.read_iso(path).meta_data["instance-id"] == "i-1"


@pytest.mark.parametrize("meta, message", [
    (b"a: [1\n", "meta-data is not valid YAML: "),
    (b"- a\n- b\n", "meta-data is not a mapping"),
])
def test_unusable_meta_data_is_named(tmp_path, meta, message):
    path = write_iso(tmp_path / "s.iso", dict(FILES, **{"meta-data": meta}))
    with pytest.raises(SeedError) as info:
        _seed.read_iso(path)
    assert str(info.value).startswith(f"seed ISO {path}: {message}")


def test_empty_meta_data_is_an_empty_mapping(tmp_path):
    path = write_iso(tmp_path / "s.iso", dict(FILES, **{"meta-data": b"  \n"}))
    assert _seed.read_iso(path).meta_data == {}


def test_a_seed_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    path = write_iso(tmp_path / "s.iso", FILES)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(SeedError) as info:
        _seed.read_iso(path)
    assert str(info.value) == f"seed ISO {path}: cannot read it: Permission denied"


def test_writing_where_no_directory_is(tmp_path):
    path = tmp_path / "gone" / "s.iso"
    with pytest.raises(SeedError) as info:
        _seed.write_atomic(str(path), b"x", 0o600)
    assert str(info.value) == f"seed ISO {path}: directory {tmp_path}/gone does not exist"


def test_a_temp_file_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_seed.tempfile, "mkstemp", refuse)
    with pytest.raises(SeedError) as info:
        _seed.write_atomic(str(tmp_path / "s.iso"), b"x", 0o600)
    assert str(info.value) == f"seed ISO {tmp_path}/s.iso: cannot create a file in {tmp_path}: No space left on device"


def test_the_temp_file_is_named_after_the_seed_and_gets_its_mode(tmp_path, monkeypatch):
    made = []
    real = _seed.tempfile.mkstemp

    def watch(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(_seed.tempfile, "mkstemp", watch)
    _seed.write_atomic(str(tmp_path / "s.iso"), b"data", 0o640)
    assert made == [{"prefix": ".s.iso.", "suffix": ".tmp", "dir": str(tmp_path)}]
    assert (tmp_path / "s.iso").read_bytes() == b"data"
    assert os.stat(tmp_path / "s.iso").st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["s.iso"]


def test_a_mode_that_cannot_be_set_is_named(tmp_path, monkeypatch):
    content = _seed.make_seed({"a": 1})
    path = str(tmp_path / "s.iso")
    _seed.ensure_seed(path, content, mode=0o600)

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_seed.os, "chmod", refuse)
    with pytest.raises(SeedError) as info:
        _seed.ensure_seed(path, content, mode=0o644)
    assert str(info.value) == f"seed ISO {path}: cannot set mode/owner: Operation not permitted"


def test_a_seed_that_cannot_be_deleted_is_named(tmp_path, monkeypatch):
    path = str(tmp_path / "s.iso")
    _seed.ensure_seed(path, _seed.make_seed({"a": 1}))

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_seed.os, "unlink", refuse)
    with pytest.raises(SeedError) as info:
        _seed.remove_seed(path)
    assert str(info.value) == f"seed ISO {path}: cannot delete it: Operation not permitted"


def test_removing_a_seed_that_vanishes_meanwhile(tmp_path, monkeypatch):
    path = str(tmp_path / "s.iso")
    _seed.ensure_seed(path, _seed.make_seed({"a": 1}))

    def vanished(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(_seed.os, "unlink", vanished)
    result = _seed.remove_seed(path)
    assert result["changed"] is True and result["diff"]["after"] == ""
