# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rum.pool test guest image: built from Debian packages by ``testimage/build.sh``, cached.

Test tooling only (not shipped in the collection). ``ensure_test_image()`` returns the cached
image for the current recipe, building it first when needed. The cache key is a hash of every
file in the recipe directory, so editing the recipe builds a new image and never serves a stale
one. Images live under ``$RUM_TEST_STATE/images/<recipe_hash>/`` (default state directory
/var/lib/rum-pool-test), readable by the libvirt-qemu user. An exclusive flock makes concurrent
callers build once; a build happens in a temporary directory that is renamed into place only
when complete, so nobody ever sees half an image.

Command line: ``python tests/tools/testimage.py [--state-dir DIR] [--hash] [--prune]`` builds if
needed and prints the result as JSON (``--prune`` first removes images of other recipes).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

RECIPE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testimage")
DEFAULT_STATE_DIR = "/var/lib/rum-pool-test"
IMAGE_FILE = "disk.qcow2"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
CMDLINE_FILE = "cmdline"
MANIFEST_FILE = "image.json"
BUILD_LOG_FILE = "build.log"
BUILD_TIMEOUT = 1800
LOG_TAIL_LINES = 40

# Host command -> the Debian package that provides it (for the error hint).
REQUIRED_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "extlinux": "extlinux",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
}
EXTLINUX_MBR = "/usr/lib/EXTLINUX/mbr.bin"

Progress = t.Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The test image could not be built; the message says why and ends with the build log tail."""


def _progress(line: str) -> None:
    print(f"testimage: {line}", file=sys.stderr, flush=True)


def state_dir_default() -> str:
    return os.environ.get("RUM_TEST_STATE") or DEFAULT_STATE_DIR


def recipe_hash(recipe_dir: str = RECIPE_DIR) -> str:
    """A short hash of every file in the recipe directory (path, executable bit, content)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(recipe_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".pyc", "~")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, recipe_dir)
            if os.path.islink(path):
                kind, data = "link", os.readlink(path).encode()
            else:
                kind = "exec" if os.access(path, os.X_OK) else "file"
                with open(path, "rb") as handle:
                    data = handle.read()
            digest.update(f"{rel}\0{kind}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()[:16]


def _file_digest(path: str) -> str:
    """The image's sha256, by the collection's own file hashing (as rum_vm verifies it)."""
    collections = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               ".collections")
    if collections not in sys.path:  # run as a script: make the checkout importable as the collection
        sys.path.append(collections)
    from ansible_collections.rum.pool.plugins.module_utils._checksum import file_digest  # pylint: disable=import-outside-toplevel
    return file_digest(path)


def missing_host_requirements() -> list[str]:
    """Debian packages to install before an image can be built (empty when all is there)."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    packages = [pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool, path=search) is None]
    if not os.path.exists(EXTLINUX_MBR) and "extlinux" not in packages:
        packages.append("extlinux")
    return packages


def _describe(image_dir: str) -> dict[str, object] | None:
    """The image in a finished cache directory, or None when it is not complete."""
    try:
        with open(os.path.join(image_dir, MANIFEST_FILE), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    path = os.path.join(image_dir, IMAGE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(os.path.join(image_dir, CMDLINE_FILE), encoding="utf-8") as handle:
            cmdline = handle.read().strip()
    except OSError:
        return None
    return {
        "path": path,
        "sha256": manifest["sha256"],
        "kernel": os.path.join(image_dir, KERNEL_FILE),
        "initrd": os.path.join(image_dir, INITRD_FILE),
        "recipe_hash": manifest["recipe_hash"],
        "cmdline": cmdline,
        # Conveniences for rum_vm's image options.
        "url": "file://" + path,
        "checksum": "sha256:" + manifest["sha256"],
        "size": manifest.get("size"),
        "build_seconds": manifest.get("build_seconds"),
    }


def _mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: str) -> None:
    """Remove a build directory left by a killed build, unmounting what it left mounted first."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _make_readable(path: str) -> None:
    """Directories 0755 and files 0644 (executables 0755): libvirt-qemu must read the image."""
    os.chmod(path, 0o755)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755 if os.stat(full).st_mode & 0o100 else 0o644)


def _ensure_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    mode = os.stat(path).st_mode & 0o7777
    if mode & 0o755 != 0o755:
        os.chmod(path, mode | 0o755)


def _tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError as exc:
        return f"(no build log: {exc})"


def _run_build(recipe_dir: str, out_dir: str, log_path: str, progress: Progress) -> None:
    """Run build.sh OUT_DIR, all output to the log, its '>> ' lines also as progress."""
    cmd = ["bash", os.path.join(recipe_dir, "build.sh"), out_dir]
    env = dict(os.environ, LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + BUILD_TIMEOUT
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith(">> "):
                log.flush()
                progress(line[3:].rstrip())
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait()
    if rc != 0:
        reason = f"timed out after {BUILD_TIMEOUT} s" if time.monotonic() > deadline else f"exited {rc}"
        raise ImageBuildError(f"test image build ({' '.join(cmd)}) {reason}; log {log_path}, last lines:\n"
                              + _tail(log_path))


def _ensure_image(state_dir: str | None, recipe_dir: str, *, check_host: bool = True,
                  progress: Progress = _progress) -> dict[str, object]:
    state = os.path.abspath(state_dir or state_dir_default())
    images = os.path.join(state, "images")
    key = recipe_hash(recipe_dir)
    final = os.path.join(images, key)
    found = _describe(final)
    if found:
        return found

    if check_host and os.geteuid() != 0:
        raise ImageBuildError(f"test image {key} is not in {images} and building it needs root (mmdebstrap "
                              f"--mode=root and a loop mount); build it once as root with "
                              f"`sudo python3 {os.path.abspath(__file__)}`")
    _ensure_dir(state)
    _ensure_dir(images)
    with open(os.path.join(images, f".{key}.lock"), "a", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another process is building image {key}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        found = _describe(final)
        if found:
            return found

        if check_host:
            missing = missing_host_requirements()
            if missing:
                raise ImageBuildError(f"test image {key}: missing build tools; install them with: "
                                      f"apt-get install {' '.join(missing)}")
        # Leftovers of killed builds of this recipe, and an incomplete final directory.
        for name in os.listdir(images):
            if name.startswith(f".build-{key}-"):
                _remove_tree(os.path.join(images, name))
        if os.path.lexists(final):
            _remove_tree(final)

        work = tempfile.mkdtemp(prefix=f".build-{key}-", dir=images)
        os.chmod(work, 0o755)  # apt's _apt user downloads into the tree being built
        out = os.path.join(work, key)
        log_path = os.path.join(work, BUILD_LOG_FILE)
        progress(f"building image {key} from {recipe_dir} (log: {log_path})")
        started = time.monotonic()
        try:
            _run_build(recipe_dir, out, log_path, progress)
            image = os.path.join(out, IMAGE_FILE)
            if not os.path.isfile(image):
                raise ImageBuildError(f"test image {key}: build.sh succeeded but made no {IMAGE_FILE} in {out}; "
                                      f"last lines of {log_path}:\n{_tail(log_path)}")
            manifest = {
                "recipe_hash": key,
                "sha256": _file_digest(image),
                "size": os.path.getsize(image),
                "build_seconds": round(time.monotonic() - started, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            shutil.move(log_path, os.path.join(out, BUILD_LOG_FILE))
            with open(os.path.join(out, MANIFEST_FILE), "w", encoding="utf-8") as handle:
                json.dump(manifest, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            _make_readable(out)
            os.rename(out, final)
        except BaseException:
            if os.path.exists(log_path):
                kept = os.path.join(images, f"{key}.failed-build.log")
                shutil.move(log_path, kept)
            raise
        finally:
            _remove_tree(work)
        found = _describe(final)
        assert found is not None
        progress(f"image {key} ready in {manifest['build_seconds']} s: {found['path']} "
                 f"({manifest['size'] // (1024 * 1024)} MiB)")
        return found


def ensure_test_image(state_dir: str | None = None) -> dict:
    """Return the test image for the current recipe, building it once if it is not cached.

    The result has ``path`` (the qcow2), ``sha256`` (its hex digest), ``kernel`` and ``initrd``
    (for direct kernel boot), ``recipe_hash``, ``cmdline`` (kernel command line for direct kernel
    boot), and for convenience ``url`` (file://),
    ``checksum`` (``sha256:<hex>``), ``size`` and ``build_seconds``.
    Raises ImageBuildError with the reason (and the build log tail) when it cannot be built.
    """
    return _ensure_image(state_dir, RECIPE_DIR)


def prune_other_images(state_dir: str | None = None, recipe_dir: str = RECIPE_DIR,
                       progress: Progress = _progress) -> list[str]:
    """Remove cached images of other recipes (not being built or pruned by someone else right now)."""
    images = os.path.join(os.path.abspath(state_dir or state_dir_default()), "images")
    keep = recipe_hash(recipe_dir)
    removed = []
    if not os.path.isdir(images):
        return removed
    for name in sorted(os.listdir(images)):
        path = os.path.join(images, name)
        if name.endswith(".failed-build.log") and not name.startswith(keep):
            os.unlink(path)
            continue
        if name == keep or not os.path.isdir(path) or len(name) != 16 or name.startswith("."):
            continue
        with open(os.path.join(images, f".{name}.lock"), "a", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"image {name} is locked by another process; kept")
                continue
            _remove_tree(path)
        removed.append(path)
        progress(f"removed {path}")
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (once) and print the rum.pool test guest image.")
    parser.add_argument("--state-dir", help=f"default: $RUM_TEST_STATE or {DEFAULT_STATE_DIR}")
    parser.add_argument("--hash", action="store_true", help="only print the recipe hash")
    parser.add_argument("--prune", action="store_true", help="also remove cached images of other recipes")
    args = parser.parse_args(argv)
    if args.hash:
        print(recipe_hash())
        return 0
    if args.prune:
        prune_other_images(args.state_dir)
    try:
        info = ensure_test_image(args.state_dir)
    except ImageBuildError as exc:
        print(f"testimage: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
