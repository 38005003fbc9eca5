"""rum.pool benchmarks: each number is printed beside a baseline measured in the same run.

    make bench            # all
    .venv/bin/python bench/run.py overlay seed rerun

Benchmarks print; they assert nothing about speed (timed assertions belong nowhere near unit tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, ".collections"), ROOT]
STATE = os.environ.get("RUM_TEST_STATE", "/var/lib/rum-pool-test")

from ansible_collections.rum.pool.plugins.module_utils import _disk as disk  # noqa: E402
from ansible_collections.rum.pool.plugins.module_utils import _seed as seed  # noqa: E402
from ansible_collections.rum.pool.plugins.module_utils import _cloudinit as cloudinit  # noqa: E402
from pool import bench_pool100, bench_recreate  # noqa: E402  pylint: disable=wrong-import-position
from intake import bench_intake  # noqa: E402  pylint: disable=wrong-import-position
from recycle import bench_recycle  # noqa: E402  pylint: disable=wrong-import-position


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _attempt in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def report(title: str, subject: str, subject_times: list[float], baseline: str, base_times: list[float]) -> None:
    s, b = statistics.median(subject_times), statistics.median(base_times)
    print(f"\n## {title}")
    print(f"  {subject:<48} {fmt(s)}  (median of {len(subject_times)})")
    print(f"  {baseline:<48} {fmt(b)}  (median of {len(base_times)})")
    if s > 0 and b > 0:
        faster = b / s
        print(f"  ratio: {subject} takes {s / b:.4f}x the baseline's time ({faster:,.1f}x faster)"
              if faster >= 1 else f"  ratio: {subject} takes {s / b:.2f}x the baseline's time")


def base_image(work: str) -> str:
    """The test image when it is cached; otherwise a 512 MiB qcow2 full of data."""
    images = os.path.join(STATE, "images")
    if os.path.isdir(images):
        for entry in sorted(os.listdir(images)):
            candidate = os.path.join(images, entry, "disk.qcow2")
            if os.path.exists(candidate):
                return candidate
    raw = os.path.join(work, "base.raw")
    with open(raw, "wb") as fh:
        for _block in range(512):
            fh.write(os.urandom(1 << 20))
    path = os.path.join(work, "base.qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, path], check=True)
    os.unlink(raw)
    return path


def bench_overlay(work: str) -> None:
    base = base_image(work)
    size = os.path.getsize(base)
    counter = iter(range(10 ** 6))

    def overlay():
        disk.create_overlay(base, os.path.join(work, f"ov{next(counter)}.qcow2"), base_format="qcow2",
                            size_bytes=20 << 30)

    def full_copy():
        dest = os.path.join(work, f"copy{next(counter)}.qcow2")
        shutil.copyfile(base, dest)
        with open(dest, "rb+") as fh:
            os.fsync(fh.fileno())
        os.unlink(dest)

    report(f"VM disk: qcow2 overlay vs full copy of the {size / (1 << 20):.0f} MiB base image",
           "rum_vm overlay (create_overlay)", timed(overlay, 7),
           "full copy of the base (cp + fsync)", timed(full_copy, 3))


def bench_seed(work: str) -> None:
    user_data = cloudinit.vm_user_data(hostname="bench", user="rum", ssh_authorized_keys=["ssh-ed25519 AAAAC3Nza bench"],
                                       provision_script="echo hi\n", packages=["curl"])
    meta = cloudinit.vm_meta_data(hostname="bench")
    net = cloudinit.vm_network_config(["52:54:00:12:34:56"])
    path = os.path.join(work, "seed.iso")

    def build():
        content = seed.make_seed(user_data, meta_data=meta, network_config=net)
        with open(path, "wb") as fh:
            fh.write(seed.build_iso_bytes(content))

    content = seed.make_seed(user_data, meta_data=meta, network_config=net)
    folder = os.path.join(work, "seedfiles")
    os.makedirs(folder, exist_ok=True)
    for name, data in content.files().items():
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
    tool = shutil.which("xorriso") or shutil.which("genisoimage")
    if not tool:
        print("\n## seed ISO: xorriso/genisoimage missing (apt-get install xorriso) - no baseline")
        return
    argv = ([tool, "-as", "mkisofs"] if tool.endswith("xorriso") else [tool])
    argv += ["-quiet", "-o", os.path.join(work, "seed-ref.iso"), "-V", "cidata", "-J", "-r", folder]

    def external():
        subprocess.run(argv, check=True, capture_output=True)

    unchanged = seed.ensure_seed(path, content)  # first write
    report("cloud-init seed ISO",
           "pycdlib build + write (in process)", timed(build, 20),
           f"{os.path.basename(tool)} -as mkisofs (a process)", timed(external, 10))
    again = timed(lambda: seed.ensure_seed(path, content), 20)
    print(f"  unchanged seed re-check (read back, compare, no write): {fmt(statistics.median(again))}"
          f"  changed={unchanged['changed']} then changed={seed.ensure_seed(path, content)['changed']}")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read())
    return digest.hexdigest()


def bench_rerun(work: str) -> None:
    """An unchanged rum_vm re-run against the real libvirtd vs a trivial module run."""
    storage = os.path.join(STATE, "bench")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    img = os.path.join(storage, "tiny.qcow2")
    if not os.path.exists(img):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"], check=True)
        os.chmod(img, 0o644)
    name = "rumbench-rerun"
    vm_args = {"name": name, "state": "present", "domain_type": "qemu", "memory_mb": 256,
               "storage_dir": storage, "image_cache_dir": os.path.join(storage, "images"),
               "image": {"url": f"file://{img}", "checksum": f"sha256:{sha256(img)}"}}
    ansible = os.path.join(ROOT, ".venv", "bin", "ansible")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))

    def run_module(module: str, args: dict) -> dict:
        proc = subprocess.run([ansible, "localhost", "-m", module, "-a", json.dumps(args), "-o"],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{module} failed:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(proc.stdout.split("=>", 1)[1])

    try:
        first = run_module("rum.pool.rum_vm", vm_args)
        assert first["changed"], first
        rerun = timed(lambda: run_module("rum.pool.rum_vm", vm_args), 5)
        assert not run_module("rum.pool.rum_vm", vm_args)["changed"]
        stat = timed(lambda: run_module("ansible.builtin.stat", {"path": img}), 5)
        report("rum_vm idempotent re-run (ansible localhost -m rum.pool.rum_vm, real libvirtd, changed=false)",
               "rum_vm unchanged re-run", rerun, "ansible.builtin.stat (Ansible's own overhead)", stat)

        from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
        params = vm.VMParams.from_dict(vm_args)
        core = timed(lambda: vm.VMManager(params).run(), 10)
        print(f"  the core alone (VMManager.run in process, no Ansible): {fmt(statistics.median(core))}")
    finally:
        run_module("rum.pool.rum_vm", {"name": name, "state": "absent", "storage_dir": storage})


BENCHES = {"overlay": bench_overlay, "seed": bench_seed, "rerun": bench_rerun,
           "recreate": bench_recreate, "pool100": bench_pool100, "intake": bench_intake,
           "recycle": bench_recycle}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    print(f"rum.pool benchmarks on {os.cpu_count()} cores ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"rum-bench-{name}-", dir="/var/tmp") as work:
            BENCHES[name](work)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
