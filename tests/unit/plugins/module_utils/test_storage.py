# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage locations and the check that qemu (another user) can reach a path."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
from types import SimpleNamespace

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _storage as storage
from ansible_collections.rum.pool.plugins.module_utils._storage import StorageError, check_qemu_access

QEMU_UID = 4242
QEMU_GID = 4242
OTHER_GID = 4343


class FakeUsers:
    """A ``qemu-test`` user (uid/gid 4242) that exists only for these tests."""

    def __init__(self, supplementary=()):
        self.supplementary = list(supplementary)

    def getpwnam(self, name):
        if name == "qemu-test":
            return SimpleNamespace(pw_name="qemu-test", pw_uid=QEMU_UID, pw_gid=QEMU_GID)
        raise KeyError(name)

    def getpwuid(self, uid):
        if uid == QEMU_UID:
            return self.getpwnam("qemu-test")
        return pwd.getpwuid(uid)

    def getgrnam(self, name):
        if name == "qemu-test":
            return SimpleNamespace(gr_name="qemu-test", gr_gid=QEMU_GID)
        raise KeyError(name)

    def getgrgid(self, gid):
        names = {QEMU_GID: "qemu-test", OTHER_GID: "shared"}
        if gid in names:
            return SimpleNamespace(gr_name=names[gid], gr_gid=gid)
        return grp.getgrgid(gid)

    def getgrouplist(self, user, gid):
        return [gid] + self.supplementary

    def kwargs(self, conf_path="/nonexistent/qemu.conf"):
        return {"getpwnam": self.getpwnam, "getpwuid": self.getpwuid, "getgrnam": self.getgrnam,
                "getgrgid": self.getgrgid, "getgrouplist": self.getgrouplist,
                "conf_path": conf_path}


@pytest.fixture
def tree():
    """A directory whose ancestors are traversable (pytest's own tmp root is 0700)."""
    root = tempfile.mkdtemp(prefix="rum-storage-test-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _check(path, users=None, **kwargs):
    users = users or FakeUsers()
    return check_qemu_access(path, "qemu-test", **{**users.kwargs(), **kwargs})


def test_reachable_path_gives_none(tree):
    os.makedirs(os.path.join(tree, "vms", "web1"), 0o755)
    assert _check(os.path.join(tree, "vms", "web1", "disk.qcow2")) is None


def test_closed_directory_is_named_with_mode_owner_and_fix(tree):
    closed = os.path.join(tree, "home")
    os.makedirs(os.path.join(closed, "vms"))
    os.chmod(closed, 0o700)
    target = os.path.join(closed, "vms", "x.qcow2")
    assert _check(target) == (
        f"qemu (user qemu-test) cannot reach {target}: {closed} is mode 0700 owned by root:root; "
        f"use a storage_dir outside {closed} (default /var/lib/libvirt/images/rum) "
        f"or chmod o+x {closed}")


def test_group_permission_counts_only_for_members(tree):
    shared = os.path.join(tree, "shared")
    os.mkdir(shared)
    os.chown(shared, 0, OTHER_GID)
    os.chmod(shared, 0o710)
    target = os.path.join(shared, "disk.qcow2")
    assert _check(target, FakeUsers(supplementary=[OTHER_GID])) is None
    assert "is mode 0710 owned by root:shared" in _check(target, FakeUsers())


def test_owner_bits_win_over_other_bits(tree):
    mine = os.path.join(tree, "mine")
    os.mkdir(mine)
    os.chown(mine, QEMU_UID, 0)
    os.chmod(mine, 0o075)  # others may enter, the owner may not (POSIX checks the owner bits)
    assert "is mode 0075 owned by qemu-test:root" in _check(os.path.join(mine, "f"))
    os.chmod(mine, 0o100)
    assert _check(os.path.join(mine, "f")) is None


def test_missing_directories_are_skipped(tree):
    assert _check(os.path.join(tree, "not", "yet", "created", "disk.qcow2")) is None


def test_the_directory_itself_is_checked(tree):
    storage_dir = os.path.join(tree, "storage")
    os.mkdir(storage_dir, 0o700)
    os.chmod(storage_dir, 0o700)
    assert f"{storage_dir} is mode 0700" in _check(storage_dir)


def test_symlink_target_must_be_reachable_too(tree):
    hidden = os.path.join(tree, "private")
    os.makedirs(os.path.join(hidden, "images"))
    os.chmod(hidden, 0o700)
    link = os.path.join(tree, "images")
    os.symlink(os.path.join(hidden, "images"), link)
    assert f"{hidden} is mode 0700" in _check(os.path.join(link, "disk.qcow2"))


def test_check_file_requires_read_permission(tree):
    path = os.path.join(tree, "base.qcow2")
    open(path, "w").close()
    os.chmod(path, 0o600)
    assert _check(path) is None, "disk files are relabelled by libvirt; only dirs by default"
    assert "cannot read" in _check(path, check_file=True)
    os.chmod(path, 0o644)
    assert _check(path, check_file=True) is None


def test_unknown_qemu_user_skips_the_check(tree):
    closed = os.path.join(tree, "closed")
    os.mkdir(closed, 0o700)
    os.chmod(closed, 0o700)
    users = FakeUsers()
    assert check_qemu_access(os.path.join(closed, "x"), "no-such-user", **users.kwargs()) is None
    # and with no user given and none of the defaults present
    assert check_qemu_access(os.path.join(closed, "x"), **users.kwargs()) is None


def test_user_and_group_come_from_qemu_conf(tree):
    conf = os.path.join(tree, "qemu.conf")
    with open(conf, "w") as fh:
        fh.write('#user = "root"\nuser = "qemu-test"   # who runs qemu\ngroup = "shared"\n')
    assert storage.read_qemu_conf(conf) == ("qemu-test", "shared")
    shared = os.path.join(tree, "g")
    os.mkdir(shared)
    os.chown(shared, 0, OTHER_GID)
    os.chmod(shared, 0o710)
    users = FakeUsers()
    users_kwargs = users.kwargs(conf_path=conf)

    def getgrnam(name):
        if name == "shared":
            return SimpleNamespace(gr_name="shared", gr_gid=OTHER_GID)
        return users.getgrnam(name)

    users_kwargs["getgrnam"] = getgrnam
    assert check_qemu_access(os.path.join(shared, "x"), **users_kwargs) is None
    users_kwargs["conf_path"] = "/nonexistent"
    assert check_qemu_access(os.path.join(shared, "x"), "qemu-test", **users_kwargs) is not None


def test_qemu_running_as_root_needs_no_check(tree):
    conf = os.path.join(tree, "qemu.conf")
    with open(conf, "w") as fh:
        fh.write('user = "+0"\n')
    closed = os.path.join(tree, "c")
    os.mkdir(closed, 0o700)
    assert check_qemu_access(os.path.join(closed, "x"), conf_path=conf) is None


def test_real_libvirt_qemu_user_cannot_enter_root_home():
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        pytest.fail("no libvirt-qemu user on this host: apt-get install libvirt-daemon-system (make setup)")
    assert not os.stat("/root").st_mode & 0o001, "this test expects Debian's /root (mode 0700)"
    message = check_qemu_access("/root/vms/x.qcow2", "libvirt-qemu")
    assert message.startswith("qemu (user libvirt-qemu) cannot reach /root/vms/x.qcow2: /root is mode")


# -- locations ------------------------------------------------------------------------------------

def test_default_locations(monkeypatch):
    monkeypatch.setenv("HOME", "/home/alice")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert storage.default_storage_dir("qemu:///system") == "/var/lib/libvirt/images/rum"
    assert storage.default_storage_dir("qemu+ssh://root@kvm1/system") == "/var/lib/libvirt/images/rum"
    assert storage.default_storage_dir("qemu:///session") == "/home/alice/.local/share/rum"
    assert storage.default_image_cache("qemu:///system") == "/var/lib/libvirt/images/rum/cache"
    assert storage.default_image_cache("qemu:///session") == "/home/alice/.cache/rum/images"
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    monkeypatch.setenv("XDG_CACHE_HOME", "/cache")
    assert storage.default_storage_dir("qemu:///session") == "/data/rum"
    assert storage.default_image_cache("qemu:///session") == "/cache/rum/images"


def test_uri_kinds():
    assert storage.is_system_uri("qemu:///system")
    assert storage.is_system_uri("qemu+ssh://kvm1/system")
    assert not storage.is_system_uri("qemu:///session")
    assert not storage.is_system_uri("test:///default")
    assert storage.is_session_uri("qemu:///session")


def test_vm_dir():
    assert storage.vm_dir("/var/lib/libvirt/images/rum", "web1") == "/var/lib/libvirt/images/rum/web1"
    for bad in ("", "..", "../etc", "a/b", ".hidden", "-x"):
        with pytest.raises(StorageError, match="cannot be used as a directory name"):
            storage.vm_dir("/s", bad)


def test_domain_disk_files():
    xml = """<domain type='qemu'><name>web1</name><devices>
      <disk type='file' device='disk'><source file='/vms/web1/disk.qcow2'/><target dev='vda'/></disk>
      <disk type='file' device='cdrom'><source file='/vms/web1/seed.iso'/><target dev='sda'/></disk>
      <disk type='network' device='disk'><source protocol='rbd' name='pool/x'/></disk>
      <disk type='file' device='cdrom'><target dev='sdb'/></disk>
    </devices></domain>"""
    assert storage.domain_disk_files(xml) == ["/vms/web1/disk.qcow2", "/vms/web1/seed.iso"]
    assert storage.domain_disk_files("not xml") == []
