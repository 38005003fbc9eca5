# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image cache: downloads, verification against checksums and SUMS files, locking, pruning."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import io
import json
import multiprocessing
import os
import stat
import threading
import time
import urllib.error

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _image as image
from ansible_collections.rum.pool.plugins.module_utils._image import ImageCache, ImageError, parse_duration

HEX_A = "a" * 64
PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


# -- a local HTTP server that counts requests --------------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.delay = 0.0
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.counts[self.path] = server.counts.get(self.path, 0) + 1
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = 32_768
        for start in range(0, len(body), step):
            self.wfile.write(body[start:start + step])
            if server.delay:
                time.sleep(server.delay)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src" / "disk image.qcow2"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


@pytest.fixture
def cache(tmp_path):
    return ImageCache(str(tmp_path / "cache"))


def _file_url(path) -> str:
    return "file://" + str(path).replace(" ", "%20")


def _files_under(root) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


@pytest.mark.parametrize("value, seconds", [
    ("7d", 7 * 86400), ("12h", 43200), ("1d12h", 129600), ("90m", 5400), ("2w", 1209600),
    ("45", 45), (30, 30), ("10 s", 10),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "7x", "d7", "-1", "1d garbage", True])
def test_parse_duration_rejects(value):
    with pytest.raises(ImageError, match="invalid duration"):
        parse_duration(value)


# -- ensure: file:// and local paths -------------------------------------------------------------

def test_ensure_file_url_downloads_verifies_and_lays_out(cache, source):
    got = cache.ensure(_file_url(source), f"sha256:{PAYLOAD_SHA256}")
    blob = os.path.join(cache.root, "sha256", PAYLOAD_SHA256)
    assert got.changed is True
    assert (got.path, got.digest, got.size) == (blob, f"sha256:{PAYLOAD_SHA256}", len(PAYLOAD))
    assert got.download_seconds is not None
    with open(blob, "rb") as fh:
        assert fh.read() == PAYLOAD
    meta = json.loads(open(blob + ".json").read())
    assert meta["url"] == _file_url(source) and meta["size"] == len(PAYLOAD)
    assert meta["fetched_at"] <= meta["last_used"]
    assert not os.listdir(os.path.join(cache.root, "tmp"))


def test_files_are_readable_by_qemu_whatever_the_umask(cache, source):
    old = os.umask(0o077)
    try:
        got = cache.ensure(str(source), PAYLOAD_SHA256)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(got.path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(got.path + ".json").st_mode) == 0o644
    for directory in (cache.root, os.path.dirname(got.path)):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755


def test_second_ensure_trusts_the_content_address(cache, source):
    url = _file_url(source)
    cache.ensure(url, f"sha256:{PAYLOAD_SHA256}")
    blob = os.path.join(cache.root, "sha256", PAYLOAD_SHA256)
    with open(blob, "r+b") as fh:  # damage it behind the cache's back
        fh.write(b"XX")
    again = cache.ensure(url, f"sha256:{PAYLOAD_SHA256}")
    assert again.changed is False and again.path == blob
    with open(blob, "rb") as fh:
        assert fh.read(2) == b"XX", "an unchanged run must not re-hash or re-fetch"

    repaired = cache.ensure(url, f"sha256:{PAYLOAD_SHA256}", verify=True)
    assert repaired.changed is True
    with open(blob, "rb") as fh:
        assert fh.read() == PAYLOAD


def test_no_lock_files_pile_up(cache, source):
    cache.ensure(str(source), PAYLOAD_SHA256)
    cache.ensure(str(source))  # by URL, another lock key
    cache.ensure(str(source), PAYLOAD_SHA256, verify=True)
    assert os.listdir(os.path.join(cache.root, "locks")) == []


def test_verify_on_a_good_blob_is_not_a_change(cache, source):
    cache.ensure(str(source), PAYLOAD_SHA256)
    assert cache.ensure(str(source), PAYLOAD_SHA256, verify=True).changed is False


def test_checksum_mismatch_leaves_nothing_behind(cache, source):
    wrong = "0" * 64
    with pytest.raises(ImageError) as err:
        cache.ensure(_file_url(source), f"sha256:{wrong}")
    assert str(err.value) == (f"checksum mismatch for {_file_url(source)}: expected sha256:{wrong}, "
                              f"got sha256:{PAYLOAD_SHA256}")
    assert not [f for f in _files_under(cache.root) if not f.startswith("locks/")]


def test_missing_local_image_names_url_and_cause(cache, tmp_path):
    url = _file_url(tmp_path / "gone.qcow2")
    with pytest.raises(ImageError, match=r"cannot download file://.*/gone.qcow2: No such file"):
        cache.ensure(url, HEX_A)
    with pytest.raises(ImageError, match=r"gone.qcow2: No such file"):
        cache.ensure(str(tmp_path / "gone.qcow2"), HEX_A, check_mode=True)


def test_check_mode_touches_nothing(cache, source):
    got = cache.ensure(str(source), PAYLOAD_SHA256, check_mode=True)
    assert got.changed is True and got.size is None
    assert got.path == os.path.join(cache.root, "sha256", PAYLOAD_SHA256)
    assert not os.path.exists(cache.root)
    cache.ensure(str(source), PAYLOAD_SHA256)
    assert cache.ensure(str(source), PAYLOAD_SHA256, check_mode=True).changed is False


def test_sha512_checksums_get_their_own_directory(cache, source):
    digest = hashlib.sha512(PAYLOAD).hexdigest()
    got = cache.ensure(str(source), f"sha512:{digest}")
    assert got.path == os.path.join(cache.root, "sha512", digest)
    assert got.digest == f"sha512:{digest}"


def test_sums_file_on_disk_resolves_by_image_name(cache, source, tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'1' * 64}  other.qcow2\n{PAYLOAD_SHA256} *disk image.qcow2\n")
    got = cache.ensure(_file_url(source), f"sha256:{_file_url(sums)}")
    assert got.digest == f"sha256:{PAYLOAD_SHA256}" and got.changed
    sums.write_text(f"{'1' * 64}  other.qcow2\n")
    with pytest.raises(ImageError, match=r"no sha256 checksum for disk image.qcow2 in SUMS file"):
        cache.ensure(_file_url(source), f"sha256:{sums}")


# -- ensure without a checksum --------------------------------------------------------------------

def test_without_checksum_caches_by_url_and_warns(cache, source):
    first = cache.ensure(str(source))
    assert first.changed and first.digest == f"sha256:{PAYLOAD_SHA256}"
    assert any("has no checksum" in w for w in first.warnings)
    pointers = os.listdir(os.path.join(cache.root, "url"))
    assert pointers == [hashlib.sha256(str(source).encode()).hexdigest() + ".json"]
    again = cache.ensure(str(source))
    assert again.changed is False and again.path == first.path and again.warnings


def test_without_checksum_a_changed_source_is_fetched_into_a_new_blob(cache, source):
    first = cache.ensure(str(source))
    source.write_bytes(PAYLOAD + b"v2")
    second = cache.ensure(str(source))
    assert second.changed is True
    assert second.path != first.path
    assert os.path.exists(first.path), "the old blob may back existing overlays"
    with open(second.path, "rb") as fh:
        assert fh.read() == PAYLOAD + b"v2"


def test_a_later_checksum_reuses_the_unverified_download(cache, source):
    cache.ensure(str(source))
    assert cache.ensure(str(source), PAYLOAD_SHA256).changed is False


# -- ensure over HTTP -------------------------------------------------------------------------------

def test_http_download_with_sums_file_and_progress(server, tmp_path):
    server.files["/img/base.qcow2"] = PAYLOAD
    server.files["/img/SHA256SUMS"] = f"{PAYLOAD_SHA256}  base.qcow2\n".encode()
    calls = []
    cache = ImageCache(str(tmp_path / "c"))
    got = cache.ensure(server.base + "/img/base.qcow2", server.base + "/img/SHA256SUMS",
                       progress=lambda done, total: calls.append((done, total)))
    assert got.changed and got.digest == f"sha256:{PAYLOAD_SHA256}"
    assert calls and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert len(calls) <= 21
    assert server.counts["/img/base.qcow2"] == 1
    again = cache.ensure(server.base + "/img/base.qcow2", server.base + "/img/SHA256SUMS")
    assert again.changed is False
    assert server.counts["/img/base.qcow2"] == 1, "a cached image is not downloaded again"


def test_http_404_names_url_and_status(server, cache):
    url = server.base + "/missing.qcow2"
    with pytest.raises(ImageError, match=r"cannot download http://127.0.0.1:\d+/missing.qcow2: HTTP 404"):
        cache.ensure(url, HEX_A)
    assert not [f for f in _files_under(cache.root) if not f.startswith("locks/")]


def _pull(root, url, digest, queue):
    got = ImageCache(root).ensure(url, digest)
    queue.put((got.path, got.changed))


def test_concurrent_processes_download_once(server, tmp_path):
    server.files["/base.qcow2"] = PAYLOAD
    server.delay = 0.02  # ~0.2 s per download, so the processes overlap
    root = str(tmp_path / "shared-cache")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    args = (root, server.base + "/base.qcow2", f"sha256:{PAYLOAD_SHA256}", queue)
    procs = [ctx.Process(target=_pull, args=args) for _index in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    results = [queue.get(timeout=5) for _proc in procs]
    assert server.counts["/base.qcow2"] == 1
    assert sorted(changed for _path, changed in results) == [False, False, False, True]
    assert {path for path, _changed in results} == {os.path.join(root, "sha256", PAYLOAD_SHA256)}
    with open(os.path.join(root, "sha256", PAYLOAD_SHA256), "rb") as fh:
        assert fh.read() == PAYLOAD
    assert os.listdir(os.path.join(root, "tmp")) == []


# -- injected openers ------------------------------------------------------------------------------

class _Short(io.BytesIO):
    length = len(PAYLOAD)


def test_truncated_transfer_is_an_error_and_leaves_nothing(tmp_path):
    cache = ImageCache(str(tmp_path / "c"), opener=lambda url: _Short(PAYLOAD[:1000]))
    with pytest.raises(ImageError, match=r"ended after 1000 of 300000 bytes"):
        cache.ensure("https://example.invalid/x.qcow2", PAYLOAD_SHA256)
    assert os.listdir(os.path.join(cache.root, "tmp")) == []


def test_opener_errors_become_image_errors(tmp_path):
    def opener(url):
        raise urllib.error.URLError(OSError(111, "Connection refused"))
    cache = ImageCache(str(tmp_path / "c"), opener=opener)
    with pytest.raises(ImageError, match=r"cannot download https://mirror.example/x.img: Connection refused"):
        cache.ensure("https://mirror.example/x.img", HEX_A)


def test_progress_is_throttled_by_time_and_share():
    ticks = iter(range(0, 10_000))
    calls = []
    reporter = image._ProgressReporter(lambda d, t: calls.append((d, t)), len(PAYLOAD),
                                       lambda: next(ticks) * 0.01)
    for done in range(1000, len(PAYLOAD) + 1, 1000):  # 300 chunks, 10 ms apart
        reporter.update(done)
    reporter.finish(len(PAYLOAD))
    # every 5% (15000 bytes) or every second -> about 20 calls, never 300
    assert 15 <= len(calls) <= 25
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_progress_without_a_size_is_reported_by_time():
    ticks = iter(range(0, 10_000))
    calls = []
    reporter = image._ProgressReporter(lambda d, t: calls.append((d, t)), None,
                                       lambda: next(ticks) * 0.1)
    for done in range(1, 101):  # 10 s worth of chunks
        reporter.update(done)
    assert 9 <= len(calls) <= 11
    assert all(total is None for _done, total in calls)


def test_unsupported_scheme(cache):
    with pytest.raises(ImageError, match=r"unsupported URL scheme 'ftp'"):
        cache.ensure("ftp://example.org/x.qcow2", HEX_A)


# -- stale partial downloads ------------------------------------------------------------------------

def test_ensure_removes_stale_part_of_the_same_image(cache, source):
    tmpdir = os.path.join(cache.root, "tmp")
    os.makedirs(tmpdir)
    stale = os.path.join(tmpdir, f"sha256-{PAYLOAD_SHA256}.crashed.part")
    with open(stale, "wb") as fh:
        fh.write(PAYLOAD[:10])
    cache.ensure(str(source), PAYLOAD_SHA256)
    assert not os.path.exists(stale)


def test_prune_removes_stale_parts_but_not_a_download_in_progress(cache):
    tmpdir = os.path.join(cache.root, "tmp")
    locks = os.path.join(cache.root, "locks")
    os.makedirs(tmpdir)
    os.makedirs(locks)
    stale = os.path.join(tmpdir, f"sha256-{'1' * 64}.x.part")
    busy = os.path.join(tmpdir, f"sha256-{'2' * 64}.y.part")
    for path in (stale, busy):
        open(path, "wb").close()
    with open(os.path.join(locks, f"sha256-{'2' * 64}.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        cache.prune()
        assert not os.path.exists(stale)
        assert os.path.exists(busy)
        assert os.path.exists(held.name), "a held lock file is never removed"


# -- list / remove / prune -------------------------------------------------------------------------

class _Clock:
    def __init__(self, start: float) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


def _two_images(tmp_path, now):
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    a.write_bytes(b"image a")
    b.write_bytes(b"image b")
    cache = ImageCache(str(tmp_path / "cache"), now=now)
    da = cache.ensure(str(a), hashlib.sha256(b"image a").hexdigest()).digest
    now.value += 10 * 86400
    db = cache.ensure(str(b), hashlib.sha256(b"image b").hexdigest()).digest
    return cache, da, db


def test_list_reports_each_image(tmp_path):
    now = _Clock(1_700_000_000.0)
    cache, da, db = _two_images(tmp_path, now)
    listed = {e["digest"]: e for e in cache.list()}
    assert set(listed) == {da, db}
    assert listed[da]["url"].endswith("a.qcow2") and listed[da]["size"] == len(b"image a")
    assert listed[da]["last_used"] == 1_700_000_000.0
    assert listed[db]["last_used"] == 1_700_000_000.0 + 10 * 86400
    assert listed[da]["verified"] is True
    assert ImageCache(str(tmp_path / "nothing-here")).list() == []


def test_prune_keeps_what_is_in_use(tmp_path):
    cache, da, db = _two_images(tmp_path, _Clock(1_700_000_000.0))
    assert [e["digest"] for e in cache.prune(keep={da}, check_mode=True)] == [db]
    assert len(cache.list()) == 2, "check mode removes nothing"
    removed = cache.prune(keep={da.split(":")[1]})  # bare hex is accepted too
    assert [e["digest"] for e in removed] == [db]
    assert [e["digest"] for e in cache.list()] == [da]


def test_prune_unused_for(tmp_path):
    now = _Clock(1_700_000_000.0)
    cache, da, db = _two_images(tmp_path, now)
    now.value += 86400  # a: unused for 11 days, b: for 1 day
    assert [e["digest"] for e in cache.prune(unused_for_seconds=7 * 86400)] == [da]
    assert [e["digest"] for e in cache.list()] == [db]
    assert cache.prune(unused_for_seconds=7 * 86400) == []


def test_using_an_image_refreshes_last_used(tmp_path):
    now = _Clock(1_700_000_000.0)
    cache, da, _db = _two_images(tmp_path, now)
    now.value += 86400
    cache.ensure(str(tmp_path / "a.qcow2"), da)
    assert cache.prune(unused_for_seconds=7 * 86400) == []


def test_remove_by_digest_and_by_url(tmp_path):
    cache, da, db = _two_images(tmp_path, _Clock(1_700_000_000.0))
    assert cache.remove(da, check_mode=True)[0]["digest"] == da
    assert len(cache.list()) == 2
    assert [e["digest"] for e in cache.remove(da)] == [da]
    assert cache.remove(da) == []
    assert [e["digest"] for e in cache.remove_url(str(tmp_path / "b.qcow2"))] == [db]
    assert cache.list() == []
    assert not [f for f in _files_under(cache.root) if f.startswith(("sha256/", "url/"))]
    with pytest.raises(ImageError, match="is not a digest"):
        cache.remove("sha256:xyz")


def test_remove_url_drops_an_unverified_pointer(cache, source):
    got = cache.ensure(str(source))
    assert [e["path"] for e in cache.remove_url(str(source))] == [got.path]
    assert os.listdir(os.path.join(cache.root, "url")) == []
    assert cache.ensure(str(source)).changed is True


# -- which images are in use --------------------------------------------------------------------

def test_in_use_follows_backing_chains(tmp_path):
    cache, da, db = _two_images(tmp_path, _Clock(1_700_000_000.0))
    blob_a = cache.blob_path(da)
    chain = {"/vms/web1/disk.qcow2": blob_a, "/vms/web2/disk.qcow2": "/vms/web2/mid.qcow2",
             "/vms/web2/mid.qcow2": blob_a, "/vms/db/disk.qcow2": "/elsewhere/base.qcow2"}
    used = cache.in_use(["/vms/web1/disk.qcow2", "/vms/web2/disk.qcow2", "/vms/db/disk.qcow2",
                         "/vms/db/seed.iso"], chain.get)
    assert used == {da: ["/vms/web1/disk.qcow2", "/vms/web2/disk.qcow2"]}
    assert [e["digest"] for e in cache.prune(keep=used)] == [db]


def test_in_use_survives_a_backing_loop(tmp_path):
    cache, _da, _db = _two_images(tmp_path, _Clock(1_700_000_000.0))
    loop = {"/a": "/b", "/b": "/a"}
    assert cache.in_use(["/a"], loop.get) == {}


def test_digest_for_checksums_and_sums_files(cache, tmp_path):
    assert cache.digest_for(None, HEX_A) == f"sha256:{HEX_A}"
    assert cache.digest_for("x", None) is None
    sums = tmp_path / "SUMS"
    sums.write_text(f"{'9' * 64}  img.qcow2\n")
    assert cache.digest_for("https://h/img.qcow2", str(sums)) == f"sha256:{'9' * 64}"
    with pytest.raises(ImageError, match="the image url is needed"):
        cache.digest_for(None, str(sums))
