# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img wrappers: sizes, argv with a fake runner, and one real overlay."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests import needs

from ansible_collections.rum.pool.plugins.module_utils import _disk as disk
from ansible_collections.rum.pool.plugins.module_utils._disk import DiskError, parse_size

GIB = 1 << 30


@pytest.mark.parametrize("value, expected", [
    ("20G", 20 * GIB), ("20g", 20 * GIB), ("20GiB", 20 * GIB), ("20GB", 20 * GIB),
    ("512M", 512 << 20), ("1T", 1 << 40), ("64K", 64 << 10), ("1.5G", 3 * (GIB // 2)),
    ("1048576", 1 << 20), (4096, 4096), (" 2 G ", 2 * GIB),
])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value, fragment", [
    ("20X", "expected bytes or a number with K, M, G or T"),
    ("", "expected bytes"),
    ("G", "expected bytes"),
    ("-1G", "expected bytes"),
    ("0", "greater than zero"),
    (0, "greater than zero"),
    ("1.3K", "not a whole number of bytes"),
    (True, "expected bytes"),
])
def test_parse_size_errors(value, fragment):
    with pytest.raises(DiskError, match=fragment):
        parse_size(value)


class FakeQemuImg:
    """Records argv; answers ``info`` from a table and ``create`` by making the file."""

    def __init__(self, infos: dict | None = None, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.infos = infos or {}
        self.fail = fail

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if self.fail and self.fail in argv:
            return 1, "", f"qemu-img: {self.fail} failed: Permission denied\n"
        if argv[1] == "info":
            info = self.infos.get(argv[-1])
            return (0, json.dumps(info), "") if info else (1, "", "qemu-img: Could not open\n")
        if argv[1] == "create":
            target = argv[-1] if not argv[-1].isdigit() else argv[-2]
            open(target, "w").close()
        return 0, "", ""


def _base(tmp_path, size=2 * GIB, **extra):
    path = tmp_path / "base.qcow2"
    path.write_bytes(b"")
    info = {"format": "qcow2", "virtual-size": size, "filename": str(path)}
    info.update(extra)
    return str(path), info


def test_overlay_argv_never_copies_and_names_the_backing_format():
    argv = disk.overlay_argv("/c/sha256/abc", "qcow2", None, "/vms/web1/disk.qcow2")
    assert argv == ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/c/sha256/abc", "-F", "qcow2",
                    "/vms/web1/disk.qcow2"]
    assert "convert" not in argv
    assert disk.overlay_argv("/b", "raw", 5 * GIB, "/o")[-2:] == ["/o", str(5 * GIB)]


def test_create_overlay_grows_to_requested_size(tmp_path):
    base, info = _base(tmp_path)
    run = FakeQemuImg({base: info})
    target = str(tmp_path / "disk.qcow2")
    assert disk.create_overlay(base, target, base_format="qcow2", size_bytes=20 * GIB, run=run) == 20 * GIB
    create = run.calls[-1]
    assert create[:10] == ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                           create[9]]
    assert create[9].endswith(".part") and os.path.dirname(create[9]) == str(tmp_path)
    assert create[10] == str(20 * GIB)
    assert os.path.exists(target) and not os.path.exists(create[9])
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_create_overlay_never_smaller_than_its_base(tmp_path):
    base, info = _base(tmp_path, size=30 * GIB)
    run = FakeQemuImg({base: info})
    size = disk.create_overlay(base, str(tmp_path / "d.qcow2"), base_format="qcow2",
                               size_bytes=20 * GIB, run=run)
    assert size == 30 * GIB
    assert not run.calls[-1][-1].isdigit(), "no size argument: the overlay inherits the base size"


def test_create_overlay_refuses_a_base_with_a_backing_file(tmp_path):
    base, info = _base(tmp_path, **{"backing-filename": "/etc/shadow"})
    with pytest.raises(DiskError, match=r"base image has a backing file of its own \(/etc/shadow\)"):
        disk.create_overlay(base, str(tmp_path / "d.qcow2"), base_format="qcow2",
                            run=FakeQemuImg({base: info}))


def test_create_overlay_refuses_a_wrong_format_and_an_existing_target(tmp_path):
    base, info = _base(tmp_path)
    with pytest.raises(DiskError, match="base_format is raw but qemu-img reads the base as qcow2"):
        disk.create_overlay(base, str(tmp_path / "d.qcow2"), base_format="raw",
                            run=FakeQemuImg({base: info}))
    existing = tmp_path / "vm.qcow2"
    existing.write_bytes(b"guest data")
    with pytest.raises(DiskError, match="already exists; refusing to overwrite"):
        disk.create_overlay(base, str(existing), base_format="qcow2", run=FakeQemuImg({base: info}))
    assert existing.read_bytes() == b"guest data"


def test_failed_create_reports_stderr_and_leaves_nothing(tmp_path):
    run = FakeQemuImg(fail="create")
    with pytest.raises(DiskError, match=r"cannot create disk .*/d1.qcow2: qemu-img: create failed"):
        disk.create_blank(str(tmp_path / "d1.qcow2"), GIB, run=run)
    assert os.listdir(tmp_path) == []


def test_create_blank_argv(tmp_path):
    run = FakeQemuImg()
    disk.create_blank(str(tmp_path / "data.raw"), 10 * GIB, fmt="raw", run=run)
    argv = run.calls[0]
    assert argv[:5] == ["qemu-img", "create", "-q", "-f", "raw"] and argv[-1] == str(10 * GIB)
    with pytest.raises(DiskError, match="greater than zero"):
        disk.create_blank(str(tmp_path / "x"), 0, run=run)


def test_grow_only_grows(tmp_path):
    path, info = _base(tmp_path, size=10 * GIB)
    run = FakeQemuImg({path: info})
    assert disk.grow(path, 5 * GIB, run=run) is False
    assert disk.grow(path, 10 * GIB, run=run) is False
    assert all(c[1] == "info" for c in run.calls), "never shrinks, never resizes to the same size"
    assert disk.grow(path, 20 * GIB, check_mode=True, run=run) is True
    assert all(c[1] == "info" for c in run.calls)
    assert disk.grow(path, 20 * GIB, run=run) is True
    assert run.calls[-1] == ["qemu-img", "resize", "-q", "-f", "qcow2", path, str(20 * GIB)]


def test_image_info_errors(tmp_path):
    with pytest.raises(DiskError, match=r"cannot inspect disk image .*/nope: no such file"):
        disk.image_info(str(tmp_path / "nope"), run=FakeQemuImg())
    broken = tmp_path / "broken"
    broken.write_bytes(b"")
    with pytest.raises(DiskError, match="qemu-img printed no JSON"):
        disk.image_info(str(broken), run=lambda argv: (0, "not json", ""))


def test_missing_qemu_img_is_explained():
    rc, _out, err = disk.default_run(["/nonexistent/qemu-img", "info"])
    assert rc == 127 and "install qemu-utils" in err


def test_real_overlay_has_its_backing_file_and_grew(tmp_path):
    needs.command("qemu-img", "qemu-utils")
    base = str(tmp_path / "base.qcow2")
    disk.create_blank(base, 64 << 20)
    overlay = str(tmp_path / "vm" / "disk.qcow2")
    os.mkdir(os.path.dirname(overlay))
    assert disk.create_overlay(base, overlay, base_format="qcow2", size_bytes=GIB) == GIB
    info = disk.image_info(overlay)
    assert info["format"] == "qcow2"
    assert info["backing_file"] == base and info["backing_format"] == "qcow2"
    assert info["virtual-size"] == info["virtual_size"] == GIB
    assert os.path.getsize(overlay) < (1 << 20), "an overlay, not a copy"
    assert disk.grow(overlay, 2 * GIB) is True
    assert disk.image_info(overlay)["virtual_size"] == 2 * GIB
    assert disk.grow(overlay, GIB) is False
    assert disk.image_info(overlay)["virtual_size"] == 2 * GIB
