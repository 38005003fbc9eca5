# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A content-addressed cache of VM base images: download once, verify, share.

Internal to the rum.pool collection; not a public API. Used by ``rum_image`` and ``rum_vm``.

Layout under the cache root::

    <root>/sha256/<hex>         the image, named by its own digest (also sha512/, sha1/)
    <root>/sha256/<hex>.json    url(s), size, fetched_at, last_used
    <root>/url/<hash>.json      for images pulled without a checksum: URL -> digest pointer
    <root>/locks/<key>.lock     flock held while one process downloads that image
    <root>/tmp/<key>.*.part     downloads in progress (removed on failure, renamed on success)

A blob never changes once it is in place, so an overlay that uses it as its backing file is
never corrupted by a later pull: new content gets a new name and the old blob stays until it
is pruned. Blobs are 0644 and directories 0755 so that qemu (``libvirt-qemu``) can read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import tempfile
import time
import typing as t
import urllib.error
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.rum.pool.plugins.module_utils import _flock as flock
from ansible_collections.rum.pool.plugins.module_utils._checksum import (
    ALGORITHMS,
    CHUNK,
    HEX_RE,
    ChecksumError,
    file_digest,
    normalize_digest,
    parse_checksum,
    resolve_checksum,
)

BLOB_MODE = 0o644
DIR_MODE = 0o755
SUMS_MAX_BYTES = 16 << 20
PROGRESS_INTERVAL = 1.0
PROGRESS_STEP = 0.05
URL_TIMEOUT = 60

_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Opener = t.Callable[[str], t.Any]
Progress = t.Callable[[int, t.Optional[int]], None]  # a run-time alias: no "X | None" before Python 3.10


class ImageError(Exception):
    """An image that cannot be fetched, verified or cached; the message names the URL or file."""


# -- durations -----------------------------------------------------------------------------

def parse_duration(value: t.Any) -> int:
    """Seconds from ``7d``, ``12h``, ``1d12h``, ``90m``, ``2w`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ImageError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ImageError(f"invalid duration {value!r}: must not be negative")
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    compact = re.sub(r"\s+", "", text)
    parts = _DURATION_RE.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise ImageError(f"invalid duration {value!r}: use a number with s, m, h, d or w, "
                         "such as 7d or 12h")
    return sum(int(n) * _DURATION_UNITS[u.lower()] for n, u in parts)


# -- fetching --------------------------------------------------------------------------------

def _is_remote(url: str) -> bool:
    return "://" in url


def _local_path(url: str) -> str | None:
    """The file path behind a local path or a ``file://`` URL (None for other URLs)."""
    if not _is_remote(url):
        return os.path.abspath(os.path.expanduser(url))
    parts = urlsplit(url)
    if parts.scheme == "file":
        return unquote(parts.path)
    return None


def default_opener(url: str) -> t.IO[bytes]:
    """Open http(s) and file:// URLs with Ansible's ``open_url`` (proxies, CA bundle, redirects)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ImageError(f"cannot download {url}: unsupported URL scheme {scheme!r} "
                         "(use http, https, file or a local path)")
    return open_url(url, timeout=URL_TIMEOUT, http_agent="rum.pool image cache")


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return str(reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _content_length(handle: t.Any) -> int | None:
    length = getattr(handle, "length", None)
    if isinstance(length, int) and length >= 0:
        return length
    headers = getattr(handle, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# -- the cache -------------------------------------------------------------------------------

@dataclass
class CachedImage:
    """One image in the cache (or, in check mode, where it would be)."""

    path: str
    digest: str | None
    url: str
    size: int | None
    changed: bool
    warnings: list[str] = field(default_factory=list)
    download_seconds: float | None = None

    def as_dict(self) -> dict[str, t.Any]:
        return {"path": self.path, "digest": self.digest, "url": self.url, "size": self.size}


class _ProgressReporter:
    """Calls ``progress`` when a second has passed or another 5% arrived, and at the end."""

    def __init__(self, progress: Progress | None, total: int | None,
                 clock: t.Callable[[], float]) -> None:
        self.progress = progress
        self.total = total
        self.clock = clock
        self.last_time = clock()
        self.last_done = 0

    def update(self, done: int) -> None:
        if self.progress is None:
            return
        now = self.clock()
        step = self.total and (done - self.last_done) >= self.total * PROGRESS_STEP
        if now - self.last_time >= PROGRESS_INTERVAL or step:
            self.last_time, self.last_done = now, done
            self.progress(done, self.total)

    def finish(self, done: int) -> None:
        if self.progress is not None and done != self.last_done:
            self.progress(done, self.total)


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: str, data: dict[str, t.Any]) -> None:
    """Atomic JSON write (temp file in the same directory, fsync, rename), mode 0644."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".meta.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, BLOB_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: str) -> dict[str, t.Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class ImageCache:
    """Base images stored by digest under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str, opener: Opener | None = None,
                 log: t.Callable[[str], None] | None = None,
                 clock: t.Callable[[], float] = time.monotonic,
                 now: t.Callable[[], float] = time.time) -> None:
        self.root = os.path.abspath(root)
        self.opener = opener or default_opener
        self.log = log or (lambda msg: None)
        self.clock = clock
        self.now = now

    # -- paths ---------------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        algo, _sep, value = normalize_digest(digest).partition(":")
        if algo not in ALGORITHMS or len(value) != ALGORITHMS[algo] or not HEX_RE.match(value):
            raise ImageError(f"image cache {self.root}: {digest!r} is not a digest such as "
                             "sha256:<64 hex digits>")
        return os.path.join(self.root, algo, value)

    def _pointer_path(self, url: str) -> str:
        return os.path.join(self.root, "url", _url_key(url) + ".json")

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _makedirs(self, path: str) -> None:
        """Create missing directories 0755 whatever the umask (qemu must traverse them)."""
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, DIR_MODE)
                os.chmod(directory, DIR_MODE)

    # -- locking -------------------------------------------------------------------------
    def _lock_path(self, key: str) -> str:
        return os.path.join(self._dir("locks"), key + ".lock")

    def _lock(self, key: str, what: str) -> t.ContextManager[None]:
        """Hold ``key``'s lock (one download or removal of an image at a time); see ``_flock``."""
        self._makedirs(self._dir("locks"))
        return flock.held(self._lock_path(key), mode=BLOB_MODE, on_wait=lambda: self.log(
            f"image cache {self.root}: waiting for another process to finish {what}"))

    def _sweep(self, directory: str, suffix: str, *, check_mode: bool) -> list[str]:
        """Remove the files ending in ``suffix`` whose key's lock nobody holds; return their paths.

        The key is a file name up to its first dot (``<key>.lock``, ``<key>.<random>.part``).
        A missing lock file is held by nobody; a file is removed while its lock is held.
        """
        removed: list[str] = []
        if not os.path.isdir(directory):
            return removed
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not name.endswith(suffix):
                continue
            fd = flock.try_hold(self._lock_path(name.split(".", 1)[0]))
            if fd is None:
                continue  # held: a download in progress
            try:
                if os.path.lexists(path):
                    removed.append(path)
                    if not check_mode:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
            finally:
                if fd >= 0:
                    os.close(fd)
        return removed

    def clean_stale_locks(self, *, check_mode: bool = False) -> list[str]:
        """Remove lock files nobody holds (left by processes that died holding them)."""
        return self._sweep(self._dir("locks"), ".lock", check_mode=check_mode)

    def _clean_parts(self, key: str) -> None:
        """Remove leftovers of crashed downloads of ``key`` (call with its lock held)."""
        tmpdir = self._dir("tmp")
        if not os.path.isdir(tmpdir):
            return
        for name in os.listdir(tmpdir):
            if name.startswith(key + ".") and name.endswith(".part"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(tmpdir, name))
                    self.log(f"image cache {self.root}: removed stale partial download {name}")

    def clean_stale_parts(self, *, check_mode: bool = False) -> list[str]:
        """Remove partial downloads whose process is gone (their lock is free)."""
        return self._sweep(self._dir("tmp"), ".part", check_mode=check_mode)

    # -- reading sources -----------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, url: str) -> t.Iterator[tuple[t.Any, int | None]]:
        local = None if _is_remote(url) else _local_path(url)
        try:
            if local is not None:
                handle = open(local, "rb")
                total: int | None = os.fstat(handle.fileno()).st_size
            else:
                handle = self.opener(url)
                total = _content_length(handle)
        except ImageError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, UrlConnectionError, OSError,
                ValueError) as exc:
            raise ImageError(f"cannot download {url}: {_describe_error(exc)}") from None
        try:
            yield handle, total
        finally:
            with contextlib.suppress(Exception):
                handle.close()

    def read_text(self, url: str) -> str:
        """A small text file (a SUMS file) from a URL or path."""
        with self._open(url) as (handle, _total):
            try:
                data = handle.read(SUMS_MAX_BYTES + 1)
            except (http.client.HTTPException, OSError) as exc:
                raise ImageError(f"cannot read {url}: {_describe_error(exc)}") from None
        if len(data) > SUMS_MAX_BYTES:
            raise ImageError(f"cannot read {url}: larger than {SUMS_MAX_BYTES} bytes, "
                             "not a SUMS file")
        return data.decode("utf-8", errors="replace")

    def _source_stamp(self, url: str) -> dict[str, int] | None:
        """Size and mtime of a local source (None for remote URLs)."""
        local = _local_path(url)
        if local is None:
            return None
        try:
            st = os.stat(local)
        except OSError as exc:
            raise ImageError(f"cannot read image {url}: {_describe_error(exc)}") from None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    # -- metadata ------------------------------------------------------------------------
    def _meta_path(self, blob: str) -> str:
        return blob + ".json"

    def _touch(self, blob: str, url: str, *, fetched: bool, verified: bool) -> None:
        meta = _read_json(self._meta_path(blob))
        now = self.now()
        urls = [u for u in meta.get("urls", []) if u != url] + [url]
        meta.update({"url": url, "urls": urls, "size": os.stat(blob).st_size, "last_used": now})
        if fetched or "fetched_at" not in meta:
            meta["fetched_at"] = now
        meta["verified"] = bool(meta.get("verified")) or verified
        with contextlib.suppress(OSError):
            _write_json(self._meta_path(blob), meta)

    # -- ensure --------------------------------------------------------------------------
    def ensure(self, url: str, checksum: t.Any = None, *, check_mode: bool = False,
               progress: Progress | None = None, verify: bool = False) -> CachedImage:
        """Make sure the image at ``url`` is in the cache; return where it is.

        ``checksum`` is a string for ``parse_checksum`` or a ``Checksum``. A cached blob is
        trusted by its name unless ``verify`` re-hashes it. Without a checksum the image is
        cached by URL and a warning is returned; a local source that changed since is
        fetched again (into a new blob).
        """
        if not url:
            raise ImageError("no image URL given")
        try:
            return self._ensure(url, checksum, check_mode=check_mode, progress=progress,
                                verify=verify)
        except ChecksumError as exc:
            raise ImageError(f"{url}: {exc}") from None
        except OSError as exc:  # the cache itself: permissions, disk full
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise ImageError(f"image cache {self.root}: cannot store {url}: "
                             f"{_describe_error(exc)}{where}") from None

    def _ensure(self, url: str, checksum: t.Any, *, check_mode: bool,
                progress: Progress | None, verify: bool) -> CachedImage:
        if isinstance(checksum, str):
            checksum = parse_checksum(checksum) if checksum.strip() else None
        checksum = resolve_checksum(checksum, url, self.read_text)
        if checksum is None:
            return self._ensure_by_url(url, check_mode=check_mode, progress=progress, verify=verify)

        blob = self.blob_path(str(checksum))
        key = f"{checksum.algorithm}-{checksum.value}"
        if os.path.isfile(blob) and not verify:
            if not check_mode:
                self._touch(blob, url, fetched=False, verified=True)
            return CachedImage(blob, str(checksum), url, os.stat(blob).st_size, False)
        if check_mode:
            if os.path.isfile(blob):  # verify in check mode: report, do not repair
                if file_digest(blob, checksum.algorithm or "sha256") == checksum.value:
                    return CachedImage(blob, str(checksum), url, os.stat(blob).st_size, False)
            self._source_stamp(url)  # a missing local file fails check mode too
            return CachedImage(blob, str(checksum), url, None, True)

        self._makedirs(os.path.dirname(blob))
        with self._lock(key, f"downloading {url}"):
            if os.path.isfile(blob):
                if not verify:
                    self._touch(blob, url, fetched=False, verified=True)
                    return CachedImage(blob, str(checksum), url, os.stat(blob).st_size, False)
                got = file_digest(blob, checksum.algorithm or "sha256")
                if got == checksum.value:
                    self._touch(blob, url, fetched=False, verified=True)
                    return CachedImage(blob, str(checksum), url, os.stat(blob).st_size, False)
                self.log(f"image cache {self.root}: {blob} is corrupt ({checksum.algorithm}:{got}); "
                         "fetching it again")
                os.unlink(blob)
            self._clean_parts(key)
            tmp, digests, size, seconds = self._download(url, key, [checksum.algorithm or "sha256"],
                                                         progress)
            got = digests[checksum.algorithm or "sha256"]
            if got != checksum.value:
                os.unlink(tmp)
                raise ImageError(f"checksum mismatch for {url}: expected {checksum}, "
                                 f"got {checksum.algorithm}:{got}")
            self._install(tmp, blob)
            self._touch(blob, url, fetched=True, verified=True)
        return CachedImage(blob, str(checksum), url, size, True, download_seconds=seconds)

    def _ensure_by_url(self, url: str, *, check_mode: bool, progress: Progress | None,
                       verify: bool) -> CachedImage:
        pointer_path = self._pointer_path(url)
        key = "url-" + _url_key(url)
        warnings = [f"image {url} has no checksum: it is cached by URL and its content is not "
                    "verified; give a checksum (sha256:<hex> or a SUMS file URL) to pin it"]

        def current() -> CachedImage | None:
            pointer = _read_json(pointer_path)
            digest = pointer.get("digest")
            if not digest or pointer.get("url") != url:
                return None
            try:
                blob = self.blob_path(digest)
            except ImageError:
                return None
            if not os.path.isfile(blob):
                return None
            try:
                stamp = self._source_stamp(url)
            except ImageError as exc:
                warnings.append(f"{exc}; using the copy cached earlier")
                stamp = pointer.get("source")
            if stamp is not None and stamp != pointer.get("source"):
                self.log(f"image cache {self.root}: {url} changed since it was cached; "
                         "fetching it again")
                return None
            if verify and file_digest(blob, "sha256") != blob.rsplit("/", 1)[1]:
                return None
            if pointer.get("fetched_at") and stamp is None:
                fetched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pointer["fetched_at"]))
                warnings.append(f"reusing the copy of {url} downloaded at {fetched}; remove it "
                                "with rum_image state=absent to fetch it again")
            return CachedImage(blob, digest, url, os.stat(blob).st_size, False, warnings)

        hit = current()
        if hit is not None or check_mode:
            if hit is not None and not check_mode:
                self._touch(hit.path, url, fetched=False, verified=False)
            if hit is None:
                self._source_stamp(url)
                # the blob's name is only known once it is downloaded
                return CachedImage(os.path.join(self._dir("sha256"), "(not downloaded yet)"),
                                   None, url, None, True, warnings)
            return hit

        self._makedirs(self._dir("url"))
        self._makedirs(self._dir("sha256"))
        with self._lock(key, f"downloading {url}"):
            warnings[1:] = []
            hit = current()
            if hit is not None:
                self._touch(hit.path, url, fetched=False, verified=False)
                return hit
            self._clean_parts(key)
            stamp = self._source_stamp(url)
            tmp, digests, size, seconds = self._download(url, key, ["sha256"], progress)
            digest = f"sha256:{digests['sha256']}"
            blob = self.blob_path(digest)
            if os.path.isfile(blob):
                os.unlink(tmp)  # same content already cached (maybe from another URL)
            else:
                self._install(tmp, blob)
            self._touch(blob, url, fetched=True, verified=False)
            _write_json(pointer_path, {"url": url, "digest": digest, "source": stamp,
                                       "fetched_at": self.now()})
        return CachedImage(blob, digest, url, size, True, warnings, download_seconds=seconds)

    def _download(self, url: str, key: str, algorithms: t.Iterable[str],
                  progress: Progress | None) -> tuple[str, dict[str, str], int, float]:
        """Stream ``url`` into a ``.part`` file while hashing it; return (tmp, digests, size, s)."""
        tmpdir = self._dir("tmp")
        self._makedirs(tmpdir)
        hashes = {name: hashlib.new(name) for name in algorithms}
        started = self.clock()
        self.log(f"image cache {self.root}: downloading {url}")
        fd, tmp = tempfile.mkstemp(prefix=key + ".", suffix=".part", dir=tmpdir)
        done = 0
        try:
            with os.fdopen(fd, "wb") as out, self._open(url) as (handle, total):
                reporter = _ProgressReporter(progress, total, self.clock)
                while True:
                    try:
                        chunk = handle.read(CHUNK)
                    except (http.client.HTTPException, OSError) as exc:
                        raise ImageError(f"cannot download {url}: {_describe_error(exc)} "
                                         f"after {done} bytes") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    done += len(chunk)
                    reporter.update(done)
                if total is not None and done != total:
                    raise ImageError(f"cannot download {url}: the transfer ended after {done} of "
                                     f"{total} bytes")
                out.flush()
                os.fsync(out.fileno())
                reporter.finish(done)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        seconds = round(self.clock() - started, 3)
        self.log(f"image cache {self.root}: downloaded {url} ({done} bytes in {seconds} s)")
        return tmp, {name: h.hexdigest() for name, h in hashes.items()}, done, seconds

    def _install(self, tmp: str, blob: str) -> None:
        self._makedirs(os.path.dirname(blob))
        os.chmod(tmp, BLOB_MODE)
        os.replace(tmp, blob)
        _fsync_dir(os.path.dirname(blob))

    def digest_for(self, url: str | None, checksum: t.Any) -> str | None:
        """The digest a checksum (or a SUMS file entry for ``url``) names, as ``algo:hex``."""
        try:
            parsed = parse_checksum(checksum) if isinstance(checksum, str) else checksum
            if parsed is None:
                return None
            if parsed.is_reference and not url:
                raise ImageError(f"checksum {parsed} is a SUMS file: the image url is needed to "
                                 "look up its entry")
            resolved = resolve_checksum(parsed, url or "", self.read_text)
        except ChecksumError as exc:
            raise ImageError(str(exc)) from None
        return str(resolved) if resolved else None

    def in_use(self, disk_paths: t.Iterable[str],
               backing_of: t.Callable[[str], str | None]) -> dict[str, list[str]]:
        """Cached images that the given disks use, directly or down their backing chains.

        ``backing_of(path)`` returns a disk's backing file or None (``_disk.image_info``).
        Returns ``{digest: [disk paths using it]}``.
        """
        blobs = {os.path.realpath(e["path"]): e["digest"] for e in self._entries()}
        found: dict[str, list[str]] = {}
        for disk in disk_paths:
            path: str | None = disk
            seen = set()
            while path and path not in seen and len(seen) < 16:
                seen.add(path)
                real = os.path.realpath(path)
                if real in blobs:
                    found.setdefault(blobs[real], []).append(disk)
                path = backing_of(path)
                if path and not os.path.isabs(path):
                    path = os.path.join(os.path.dirname(real), path)
        return found

    # -- listing and removal ---------------------------------------------------------------
    def _entries(self) -> t.Iterator[dict[str, t.Any]]:
        for algo in sorted(ALGORITHMS):
            directory = self._dir(algo)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                if len(name) != ALGORITHMS[algo] or not HEX_RE.match(name):
                    continue
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                meta = _read_json(self._meta_path(path))
                yield {
                    "digest": f"{algo}:{name}",
                    "path": path,
                    "url": meta.get("url"),
                    "urls": meta.get("urls", []),
                    "size": st.st_size,
                    "fetched_at": meta.get("fetched_at", st.st_mtime),
                    "last_used": meta.get("last_used", st.st_mtime),
                    "verified": bool(meta.get("verified", False)),
                }

    def list(self) -> list[dict[str, t.Any]]:
        """Every cached image: digest, path, url, urls, size, fetched_at, last_used, verified."""
        return list(self._entries())

    def _delete(self, entry: dict[str, t.Any]) -> None:
        algo, _sep, value = entry["digest"].partition(":")
        with self._lock(f"{algo}-{value}", f"using {entry['digest']}"):
            for path in (entry["path"], self._meta_path(entry["path"])):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self.log(f"image cache {self.root}: removed {entry['digest']} ({entry.get('url')})")

    def _drop_pointers(self, digests: t.Iterable[str], *, check_mode: bool) -> None:
        gone = set(digests)
        directory = self._dir("url")
        if check_mode or not gone or not os.path.isdir(directory):
            return
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith(".json") and _read_json(path).get("digest") in gone:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def remove(self, digest: str, *, check_mode: bool = False) -> list[dict[str, t.Any]]:
        """Remove one image by digest; return the removed entry (empty when it was not cached)."""
        wanted = normalize_digest(digest)
        self.blob_path(wanted)  # validates the digest
        removed = [e for e in self._entries() if e["digest"] == wanted]
        for entry in removed:
            if not check_mode:
                self._delete(entry)
        self._drop_pointers(wanted and [wanted], check_mode=check_mode)
        return removed

    def remove_url(self, url: str, *, check_mode: bool = False) -> list[dict[str, t.Any]]:
        """Remove every image that was fetched from ``url`` (with or without a checksum)."""
        pointer = _read_json(self._pointer_path(url))
        removed = [e for e in self._entries()
                   if url in e["urls"] or e["url"] == url or e["digest"] == pointer.get("digest")]
        for entry in removed:
            if not check_mode:
                self._delete(entry)
        if not check_mode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pointer_path(url))
        self._drop_pointers([e["digest"] for e in removed], check_mode=check_mode)
        return removed

    def prune(self, *, keep: t.Iterable[str] = (), unused_for_seconds: float | None = None,
              check_mode: bool = False) -> list[dict[str, t.Any]]:
        """Remove images not in ``keep`` (and, if given, unused for that long); return them.

        ``keep`` takes digests (``sha256:<hex>`` or bare hex) or blob paths; the caller passes
        the images its VMs use. Partial downloads left by crashed runs go too.
        """
        kept = {normalize_digest(k) for k in keep if k}
        now = self.now()
        removed = []
        for entry in self._entries():
            if entry["digest"] in kept:
                continue
            if unused_for_seconds is not None and now - float(entry["last_used"]) < unused_for_seconds:
                continue
            removed.append(entry)
            if not check_mode:
                self._delete(entry)
        self._drop_pointers([e["digest"] for e in removed], check_mode=check_mode)
        self.clean_stale_parts(check_mode=check_mode)
        self.clean_stale_locks(check_mode=check_mode)
        return removed
