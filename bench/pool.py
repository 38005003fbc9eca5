"""Runner pool benchmarks: one slot recreate against the raw operations, and a 100-slot pool (batch path beside the per-slot include path).

    .venv/bin/python bench/run.py recreate pool100

Both drive the real playbooks (playbooks/recreate.yml, pool.yml, teardown.yml) with ansible-playbook
against the local libvirtd and the fake GitHub on loopback. The runner image is a small blank qcow2,
so every guest sits in its BIOS and no guest boot is measured. A callback of our own
(bench/callback_plugins/rum_bench_timer.py) timestamps every task, so a run splits into Ansible
start-up, per-task time and the gaps between tasks. Nothing here asserts speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import typing as t
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.environ.get("RUM_TEST_STATE", "/var/lib/rum-pool-test")
BIN = os.path.join(ROOT, ".venv", "bin")
PYTHON = os.path.join(BIN, "python")
CALLBACKS = os.path.join(ROOT, "bench", "callback_plugins")
FAKE_SERVER = os.path.join(ROOT, "tests", "tools", "fake_github", "server.py")
URI = "qemu:///system"
REPO = "acme/bench"
PAT = "ghp_benchtoken0000000000000000000000000"
HOST = "localhost"  # the inventory host; its short name goes into slot names


# -- small helpers --------------------------------------------------------------------------------
def fmt(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms" if seconds < 10 else f"{seconds:8.2f} s "


def median(values: t.Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tiny_image(folder: str) -> dict:
    """A 64 MiB blank qcow2: the VM finds no boot disk and idles in its BIOS."""
    os.makedirs(folder, mode=0o755, exist_ok=True)
    path = os.path.join(folder, "tiny.qcow2")
    if not os.path.exists(path):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"], check=True)
        os.chmod(path, 0o644)
    return {"url": f"file://{path}", "checksum": f"sha256:{sha256_file(path)}", "path": path}


def meminfo() -> dict:
    out = {}
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def qemu_processes(prefix: str) -> dict[int, tuple[int, float]]:
    """{pid: (rss bytes, cpu seconds)} of the qemu processes running a domain named prefix*."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if not argv or b"qemu-system" not in argv[0]:
                continue
            if not any(a.startswith(f"guest={prefix}".encode()) for a in argv):
                continue
            with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                rss = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[int(pid)] = (rss, (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue
    return out


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


# -- the fake GitHub, as its own process ------------------------------------------------------------
class FakeGitHubProcess:
    """tests/tools/fake_github/server.py on loopback with one all-scopes PAT."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        os.makedirs(self.state_dir, exist_ok=True)
        self.proc = subprocess.Popen([PYTHON, FAKE_SERVER, "--port", "0", "--state", self.state_dir],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise SystemExit(f"the fake GitHub did not start (first line {self.url!r})")
        self.admin("POST", "/setup", {"reset": True, "pats": [{"token": PAT, "scopes": ["*"]}]})
        return self.url

    def admin(self, method: str, path: str, body: t.Any = None) -> t.Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/_fake{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def runners(self, prefix: str = "") -> list[dict]:
        found = self.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]
        return [r for r in found if r["name"].startswith(prefix)]

    def calls(self) -> list[dict]:
        found = self.admin("GET", "/calls")
        return found.get("calls", found) if isinstance(found, dict) else found

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- ansible-playbook runs with per-task timing -------------------------------------------------------
@dataclass
class TaskTime:
    name: str
    action: str
    path: str
    start: float
    end: float
    status: str = "ok"
    changed: bool = False
    phases: dict = field(default_factory=dict)  # rum_slots: its phases' seconds
    steps: dict = field(default_factory=dict)  # rum_slots: step -> (slots, seconds summed, longest)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Run:
    rc: int
    wall: float
    stdout: str
    stderr: str
    launched: float
    exited: float
    tasks: list[TaskTime] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    stopped: str = ""  # why the run was stopped early, if it was
    github_calls: int | None = None

    @property
    def changed(self) -> int | None:
        host = self.stats.get(HOST)
        return host.get("changed") if host else None

    @property
    def startup(self) -> float:
        """Process launch to the first task's start: interpreter, plugins, inventory, playbook."""
        return (self.tasks[0].start - self.launched) if self.tasks else self.wall

    @property
    def tail(self) -> float:
        """Last task's result to process exit: recap, callbacks, interpreter shutdown."""
        return (self.exited - self.tasks[-1].end) if self.tasks else 0.0

    @property
    def gaps(self) -> float:
        """Time between one task's result and the next task's start (includes, templating, strategy)."""
        return sum(max(0.0, b.start - a.end) for a, b in zip(self.tasks, self.tasks[1:]))

    def describe(self) -> str:
        return f"rc={self.rc}\n--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-3000:]}"


def _read_events(path: str) -> tuple[list[TaskTime], dict]:
    tasks: list[TaskTime] = []
    stats: dict = {}
    if not os.path.exists(path):
        return tasks, stats
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            ev = json.loads(line)
            if ev["ev"] == "task_start":
                tasks.append(TaskTime(ev["name"], ev["action"], ev["path"], ev["t"], ev["t"]))
            elif ev["ev"] in ("result", "include") and tasks:
                tasks[-1].end = max(tasks[-1].end, ev["t"])
                if ev["ev"] == "result":
                    tasks[-1].status = ev["status"]
                    tasks[-1].changed = tasks[-1].changed or ev["changed"]
                    tasks[-1].phases = ev.get("phases") or tasks[-1].phases
                    tasks[-1].steps = ev.get("steps") or tasks[-1].steps
            elif ev["ev"] == "stats":
                stats = ev["hosts"]
    return tasks, stats


def ansible_env() -> dict:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONPATH": os.path.join(ROOT, ".collections"),
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
        "ANSIBLE_CALLBACK_PLUGINS": CALLBACKS,
        "ANSIBLE_CALLBACKS_ENABLED": "rum_bench_timer",
    })
    return env


def run_playbook(playbook: str, inventory: str, work: str, extra_vars: dict | None = None, *,
                 timeout: float = 3600, watch: t.Callable[[], str] | None = None) -> Run:
    """ansible-playbook from the repo root; ``watch()`` is polled each second and may stop the run."""
    timer = os.path.join(work, f"timer-{time.monotonic_ns()}.jsonl")
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    env = ansible_env()
    env["RUM_BENCH_TIMER_FILE"] = timer
    out_path, err_path = timer + ".out", timer + ".err"
    stopped = ""
    with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
        launched = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        while proc.poll() is None:
            try:
                proc.wait(1)
            except subprocess.TimeoutExpired:
                why = watch() if watch else ""
                if not why and time.perf_counter() - start > timeout:
                    why = f"timed out after {timeout:.0f}s"
                if why:
                    stopped = why
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
        wall = time.perf_counter() - start
        exited = time.time()
    with open(out_path, encoding="utf-8") as fh:
        stdout = fh.read()
    with open(err_path, encoding="utf-8") as fh:
        stderr = fh.read()
    tasks, stats = _read_events(timer)
    return Run(proc.returncode, wall, stdout, stderr, launched, exited, tasks, stats, stopped)


def checked(run: Run, what: str) -> Run:
    if run.rc != 0 or run.stopped:
        raise SystemExit(f"{what} failed{' (' + run.stopped + ')' if run.stopped else ''}:\n{run.describe()}")
    return run


def write_inventory(path: str, *, pool: str, size: int, url: str, image: dict, storage: str, vm: dict,
                    **more: t.Any) -> str:
    hostvars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": PYTHON,
        "runner_pool_name": pool,
        "runner_pool_size": size,
        "runner_pool_labels": ["self-hosted", "linux", "x64", "rum-bench"],
        "runner_pool_github": {"api_url": url, "repository": REPO, "token": PAT},
        "runner_pool_image": {"url": image["url"], "checksum": image["checksum"]},
        "runner_pool_vm": dict({"domain_type": "qemu", "vcpus": 1, "memory_mb": 256, "storage_dir": storage,
                                "image_cache_dir": os.path.join(storage, "images")}, **vm),
        # the blank image never brings a runner online: keep the slots from being recycled mid-benchmark
        "runner_pool_online_timeout": 86400,
    }
    hostvars.update({f"runner_pool_{key}": value for key, value in more.items()})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"hypervisors": {"hosts": {HOST: hostvars}}}, fh)
    return path


def baseline_playbook(work: str, n_tasks: int) -> str:
    """n ansible.builtin.ping tasks: the fixed cost of a module task (AnsiballZ, fork, interpreter)."""
    path = os.path.join(work, "baseline.yml")
    tasks = [{"name": f"Ping {i}", "ansible.builtin.ping": {}} for i in range(n_tasks)]
    tasks.append({"name": "A controller-only task", "ansible.builtin.debug": {"msg": "x"}})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump([{"name": "Baseline", "hosts": "hypervisors", "gather_facts": False, "tasks": tasks}], fh)
    return path


# -- libvirt leftovers ----------------------------------------------------------------------------
def libvirt_conn():
    import libvirt  # pylint: disable=import-outside-toplevel
    return libvirt.open(URI)


def domains(prefix: str) -> dict[str, str]:
    """{name: state} of the domains whose name starts with prefix."""
    import libvirt  # pylint: disable=import-outside-toplevel
    names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
             libvirt.VIR_DOMAIN_SHUTOFF: "shut off"}
    conn = libvirt_conn()
    try:
        return {d.name(): names.get(d.state()[0], str(d.state()[0]))
                for d in conn.listAllDomains() if d.name().startswith(prefix)}
    finally:
        conn.close()


def force_remove(prefix: str) -> list[str]:
    """Destroy and undefine what a failed teardown left (only names under our own prefix)."""
    import libvirt  # pylint: disable=import-outside-toplevel
    removed = []
    conn = libvirt_conn()
    try:
        for dom in conn.listAllDomains():
            if not dom.name().startswith(prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            removed.append(dom.name())
    finally:
        conn.close()
    return removed


# -- benchmark 1: one slot recreate --------------------------------------------------------------------
def category(task: TaskTime) -> str:
    action = task.action.split(".")[-1]
    if action.startswith("gh_"):
        return "github"
    if action.startswith("rum_vm"):
        return "libvirt"
    if action == "rum_lock":
        return "lock"
    return "controller"  # set_fact, debug, assert, include_*: no module is sent


CATEGORY_TEXT = {
    "github": "GitHub module tasks (gh_*)",
    "libvirt": "libvirt module tasks (rum_vm*)",
    "lock": "slot lock module tasks (rum_lock)",
    "controller": "controller-only tasks (set_fact/debug/include)",
}


def _equivalent_domain_xml(slot_xml: str, name: str, overlay: str, seed_iso: str, serial: str) -> str:
    """The slot's own definition under another name, with its disks and serial log swapped for ours."""
    root = ET.fromstring(slot_xml)
    root.find("name").text = name
    for tag in ("uuid", "metadata", "description"):
        el = root.find(tag)
        if el is not None:
            root.remove(el)
    for disk in root.iter("disk"):
        source = disk.find("source")
        if source is None:
            continue
        source.set("file", seed_iso if disk.get("device") == "cdrom" else overlay)
    for iface in root.iter("interface"):
        mac = iface.find("mac")
        if mac is not None:
            iface.remove(mac)  # let libvirt pick one: the slot's VM uses its MAC on the same network
    for serial_el in list(root.iter("serial")) + list(root.iter("console")):
        for child in serial_el:
            if child.tag == "log" or (child.tag == "source" and child.get("path")):
                child.set("file" if child.tag == "log" else "path", serial)
    return ET.tostring(root, encoding="unicode")


def raw_operations(work: str, slot: str, base_image: str, fake: FakeGitHubProcess, repeat: int) -> dict[str, list[float]]:
    """The operations a recreate is made of, done directly: libvirt-python, qemu-img, pycdlib, HTTP."""
    sys.path[:0] = [os.path.join(ROOT, ".collections")]
    # pylint: disable=import-outside-toplevel
    import libvirt
    from ansible_collections.rum.pool.plugins.module_utils import _cloudinit as cloudinit
    from ansible_collections.rum.pool.plugins.module_utils import _runner_guest as runner_guest
    from ansible_collections.rum.pool.plugins.module_utils import _seed as seed

    name = "rumbench-raw"
    os.makedirs(work, mode=0o755, exist_ok=True)
    overlay, seed_iso, serial = (os.path.join(work, f) for f in ("disk.qcow2", "seed.iso", "serial.log"))
    conn = libvirt.open(URI)
    try:
        slot_xml = conn.lookupByName(slot).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    xml = _equivalent_domain_xml(slot_xml, name, overlay, seed_iso, serial)
    force_remove(name)

    times: dict[str, list[float]] = {k: [] for k in (
        "libvirt connect", "qemu-img overlay", "seed ISO build + write", "define + start",
        "destroy + undefine", "JIT config (HTTP POST)", "runner lookup + delete (HTTP GET, DELETE)")}
    headers = {"Authorization": f"Bearer {PAT}", "User-Agent": "rum-bench", "Accept": "application/vnd.github+json",
               "Content-Type": "application/json"}

    def http(method: str, path: str, body: t.Any = None) -> t.Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{fake.url}/repos/{REPO}/actions/runners{path}", data=data,
                                     method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    for attempt in range(repeat):
        runner_name = f"rumbench-raw-{attempt}-{time.monotonic_ns() % 100000}"
        t0 = time.perf_counter()
        jit = http("POST", "/generate-jitconfig", {"name": runner_name, "runner_group_id": 1,
                                                   "labels": ["self-hosted", "rum-bench"], "work_folder": "_work"})
        times["JIT config (HTTP POST)"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base_image, overlay],
                       check=True)
        times["qemu-img overlay"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        extra = runner_guest.runner_user_data(jit["encoded_jit_config"], runner_dir="/opt/actions-runner",
                                              runner_user="runner")
        user_data = cloudinit.vm_user_data(hostname=runner_name, user="rum", extra=extra)
        content = seed.make_seed(user_data, meta_data=dict(cloudinit.vm_meta_data(hostname=runner_name)),
                                 network_config=cloudinit.vm_network_config(["52:54:00:00:00:01"]))
        with open(seed_iso, "wb") as fh:
            fh.write(seed.build_iso_bytes(content))
            fh.flush()
            os.fsync(fh.fileno())
        times["seed ISO build + write"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        conn = libvirt.open(URI)
        times["libvirt connect"].append(time.perf_counter() - t0)
        try:
            t0 = time.perf_counter()
            dom = conn.defineXML(xml)
            dom.create()
            times["define + start"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            times["destroy + undefine"].append(time.perf_counter() - t0)
        finally:
            conn.close()

        t0 = time.perf_counter()
        found = http("GET", f"?name={runner_name}")
        for runner in found.get("runners", []):
            http("DELETE", f"/{runner['id']}")
        times["runner lookup + delete (HTTP GET, DELETE)"].append(time.perf_counter() - t0)
        for path in (overlay, seed_iso):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return times


def import_costs(modules: t.Iterable[str], repeat: int = 5) -> dict[str, float]:
    """Seconds a fresh interpreter takes to import each module (the fastest of ``repeat`` runs).

    The entry ``python + ansible.module_utils.basic`` is the part every module (ping too) pays.
    """
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".collections"))

    def cost(statement: str) -> float:
        times = []
        for _attempt in range(repeat):
            start = time.perf_counter()
            subprocess.run([PYTHON, "-c", statement], env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        return min(times)

    out = {"python + ansible.module_utils.basic": cost("import ansible.module_utils.basic")}
    for module in sorted(set(modules)):
        short = module.split(".")[-1]
        out[short] = cost(f"import ansible_collections.rum.pool.plugins.modules.{short}")
    return out


def _print_tasks(run: Run) -> None:
    print(f"  per task (the median run, {len(run.tasks)} tasks, in order):")
    print(f"    {'seconds':>9}  {'category':<10}  task")
    for task in run.tasks:
        print(f"    {task.seconds:9.3f}  {category(task):<10}  {task.name[:90]}"
              f"{'  [changed]' if task.changed else ''}{'  [skipped]' if task.status == 'skipped' else ''}")


def bench_recreate(work: str, repeat: int = 3) -> None:
    """Controller overhead of ``recreate.yml -e slot=...`` against the raw operations it is made of."""
    storage = os.path.join(STATE, "bench-recreate")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    image = tiny_image(os.path.join(STATE, "bench"))
    pool = "rbench"
    slot = f"{pool}-{HOST}-1"
    fake = FakeGitHubProcess(os.path.join(work, "fake"))
    fake.start()
    inventory = write_inventory(os.path.join(work, "hosts.json"), pool=pool, size=1, url=fake.url, image=image,
                                storage=storage, vm={})
    pool_yml = os.path.join(ROOT, "playbooks", "pool.yml")
    recreate_yml = os.path.join(ROOT, "playbooks", "recreate.yml")
    teardown_yml = os.path.join(ROOT, "playbooks", "teardown.yml")
    print(f"\n## recreate: one slot ({slot}) recreated by playbooks/recreate.yml, real libvirtd, blank image, fake GitHub")
    try:
        first = checked(run_playbook(pool_yml, inventory, work), "pool.yml (set-up)")
        print(f"  set-up: pool.yml with 1 slot from empty {fmt(first.wall)} (changed={first.changed})")
        runs, uuids = [], []
        for _attempt in range(repeat):
            fake.admin("DELETE", "/calls")
            before = domains(slot)
            run = checked(run_playbook(recreate_yml, inventory, work, {"slot": slot}), "recreate.yml")
            after = domains(slot)
            if after.get(slot) != "running":
                raise SystemExit(f"recreate.yml left {slot} {after.get(slot, 'absent')} (before: {before})")
            run.github_calls = len(fake.calls())
            runs.append(run)
            conn = libvirt_conn()
            try:
                uuids.append(conn.lookupByName(slot).UUIDString())
            finally:
                conn.close()
        if len(set(uuids)) != len(uuids):
            print(f"  WARNING: the domain UUID did not change on every recreate: {uuids}")

        base = checked(run_playbook(baseline_playbook(work, 5), inventory, work), "baseline playbook")
        pings = [x.seconds for x in base.tasks if x.action.endswith("ping")]
        ping = median(pings)
        debug = median([x.seconds for x in base.tasks if x.action.endswith("debug")])

        cache_dir = os.path.join(storage, "images")
        cached = [os.path.join(d, f) for d, _s, fs in os.walk(cache_dir) for f in fs if f.endswith(".qcow2")]
        raw = raw_operations(os.path.join(storage, "raw"), slot, cached[0] if cached else image["path"], fake, repeat)
    finally:
        down = run_playbook(teardown_yml, inventory, work)
        left = force_remove(f"{pool}-{HOST}-")
        fake.stop()
        if down.rc != 0:
            print(f"  teardown.yml failed (rc={down.rc}); removed by hand: {left}\n{down.describe()}")

    walls = [r.wall for r in runs]
    mid = sorted(runs, key=lambda r: r.wall)[len(runs) // 2]
    raw_total = sum(median(v) for v in raw.values())
    print(f"  recreate.yml wall time: {fmt(median(walls))}  (median of {len(walls)}: "
          f"{', '.join(f'{w:.2f}' for w in walls)} s)")
    print(f"  raw operations, done directly in one process (median of {repeat} each):")
    for label, values in raw.items():
        print(f"    {label:<44} {fmt(median(values))}")
    print(f"    {'sum':<44} {fmt(raw_total)}")
    print(f"  ratio: recreate.yml takes {median(walls) / raw_total:.1f}x the raw operations' time "
          f"({median(walls) - raw_total:.2f} s of controller overhead)")

    by_cat: dict[str, list[TaskTime]] = {}
    for task in mid.tasks:
        by_cat.setdefault(category(task), []).append(task)
    modules = [x for x in mid.tasks if category(x) != "controller" and x.status != "skipped"]
    print(f"\n  where the time goes (median run, {fmt(mid.wall).strip()} in all):")
    print(f"    {'Ansible start-up (process to first task)':<64} {fmt(mid.startup)}")
    for cat in ("lock", "libvirt", "github", "controller"):
        tasks = by_cat.get(cat, [])
        ran = [x for x in tasks if x.status != "skipped"]
        print(f"    {CATEGORY_TEXT[cat] + f' ({len(ran)} ran, {len(tasks) - len(ran)} skipped)':<64} "
              f"{fmt(sum(x.seconds for x in tasks))}")
    print(f"    {'between tasks (includes, templating, strategy)':<64} {fmt(mid.gaps)}")
    print(f"    {'recap and exit':<64} {fmt(mid.tail)}")
    fixed = ping * len(modules)
    print(f"  module transfer and start-up: an ansible.builtin.ping task costs {fmt(ping).strip()} here "
          f"(a debug task {fmt(debug).strip()}), so the {len(modules)} module tasks that ran spend about "
          f"{fmt(fixed).strip()} on module transfer and interpreter start-up alone")
    gh = sum(x.seconds for x in by_cat.get("github", []))
    lv_s = sum(x.seconds for x in by_cat.get("libvirt", []))
    gh_n = len([x for x in by_cat.get("github", []) if x.status != "skipped"])
    lv_n = len([x for x in by_cat.get("libvirt", []) if x.status != "skipped"])
    gh_raw = median(raw["JIT config (HTTP POST)"]) + median(raw["runner lookup + delete (HTTP GET, DELETE)"])
    lv_raw = raw_total - gh_raw
    print(f"  GitHub: {mid.github_calls} HTTP calls reached the fake; the gh_* tasks took "
          f"{fmt(gh).strip()}, {fmt(max(0.0, gh - gh_n * ping)).strip()} beyond the per-module cost; "
          f"raw HTTP {fmt(gh_raw).strip()}")
    print(f"  libvirt: the rum_vm* tasks took {fmt(lv_s).strip()}, {fmt(max(0.0, lv_s - lv_n * ping)).strip()} "
          f"beyond the per-module cost; raw libvirt + qemu-img + seed {fmt(lv_raw).strip()}")
    imports = import_costs(x.action for x in modules if x.action.startswith("rum.pool."))
    print("  a fresh interpreter importing each module (fastest of 5; every task of that module pays it):")
    for short, seconds in imports.items():
        print(f"    {short:<20} {fmt(seconds)}")
    _print_tasks(mid)


# -- benchmark 2: a 100-slot pool ------------------------------------------------------------------
class MemoryWatch:
    """Samples host memory and the pool's qemu processes; says stop when memory gets tight."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        total = meminfo()["MemTotal"]
        self.floor = max(2 << 30, total // 10)
        self.peak_rss = 0
        self.peak_count = 0
        self.min_available = meminfo()["MemAvailable"]
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        procs = qemu_processes(self.prefix)
        rss = sum(r for r, _cpu in procs.values())
        if rss > self.peak_rss:
            self.peak_rss, self.peak_count = rss, len(procs)
        available = meminfo()["MemAvailable"]
        self.min_available = min(self.min_available, available)
        if available < self.floor and not self.reason:
            self.reason = (f"host memory is tight: {gib(available)} available, below the {gib(self.floor)} floor "
                           f"({len(procs)} pool guests hold {gib(rss)} RSS)")

    def _loop(self) -> None:
        while not self._stop.wait(2):
            self.sample()

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def check(self) -> str:
        return self.reason


def _per_slot_breakdown(run: Run, slots: int) -> None:
    """Sum each task over the slots: which per-slot step costs what, and the include overhead."""
    totals: dict[str, list[float]] = {}
    for task in run.tasks:
        name = re.sub(r"\b[a-z0-9-]+-\d+\b", "<slot>", task.name)  # one row per task, not per slot
        key = f"{os.path.basename(task.path.split(':')[0]) or '?'}: {name}"
        totals.setdefault(key, []).append(task.seconds)
    rows = sorted(totals.items(), key=lambda kv: -sum(kv[1]))
    print(f"  per task, summed over the run (top 14 of {len(rows)}; {len(run.tasks)} task starts):")
    print(f"    {'total':>9}  {'count':>5}  {'each':>8}  task")
    for key, values in rows[:14]:
        print(f"    {sum(values):8.2f}s  {len(values):5d}  {sum(values) / len(values):7.3f}s  {key[:90]}")
    print(f"    {run.gaps:8.2f}s  {'':5}  {run.gaps / max(slots, 1):7.3f}s  between tasks (include_role/include_tasks,"
          " templating), per slot")
    print(f"    {run.startup:8.2f}s  {'':5}  {'':8}  Ansible start-up")
    slot_tasks = [x for x in run.tasks if "/runner_slot/" in x.path]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for task in slot_tasks:
        sums[category(task)] = sums.get(category(task), 0.0) + task.seconds
        counts[category(task)] = counts.get(category(task), 0) + (task.status != "skipped")
    per_slot = "; ".join(f"{CATEGORY_TEXT[c].split(' (', maxsplit=1)[0]} {sums[c] / max(slots, 1):.2f} s "
                         f"({counts[c] / max(slots, 1):.0f} ran)" for c in ("lock", "libvirt", "github", "controller")
                         if c in sums)
    print(f"  per slot: {per_slot}")


def _batch_breakdown(what: str, task: TaskTime, concurrency: int) -> None:
    """Where the rum_slots task of a batch run spent its time: its phases (controller side) and
    each step on the host summed over the slots (they overlap: the batch works on several at once)."""
    print(f"\n  {what} breakdown: the rum_slots task took {task.seconds:.2f} s; its phases: " + ", ".join(
        f"{name} {seconds:.2f} s" for name, seconds in task.phases.items()))
    print(f"    steps on the host, summed over the slots (up to {concurrency} slots at once):")
    for name, (count, total, longest) in sorted(task.steps.items(), key=lambda kv: -kv[1][1]):
        print(f"      {name:<12} {total:8.2f} s over {count:3d} slots ({total / count:.3f} s each, longest {longest:.3f} s)")


def isolation_settings() -> tuple[dict, str]:
    """The pool settings RUM_BENCH_ISOLATION asks for, and how to say them: unset, the default
    (isolation on, engine auto: nftables on the libvirt network); ``off``; or an engine's name."""
    asked = os.environ.get("RUM_BENCH_ISOLATION", "")
    if asked == "off":
        return {"isolation": {"enabled": False}}, "network isolation off (RUM_BENCH_ISOLATION=off)"
    if asked in ("nwfilter", "nftables"):
        return {"isolation": {"engine": asked}}, f"network isolation on, engine {asked} (RUM_BENCH_ISOLATION)"
    if asked:
        raise SystemExit(f"RUM_BENCH_ISOLATION={asked!r}: say off, nwfilter or nftables (unset: the default)")
    return {}, "network isolation on (the default: engine nftables on a libvirt network)"


def bench_pool100(work: str, size: int = 100) -> None:
    """A ``size``-slot pool converged from empty, re-run and torn down through the batch path
    (runner_pool_batch: true, one rum_slots task), beside the per-slot include path measured in the
    same run on a smaller pool (RUM_BENCH_BASELINE_SIZE, default 10) and scaled per slot."""
    size = int(os.environ.get("RUM_BENCH_POOL_SIZE", size))
    baseline = int(os.environ.get("RUM_BENCH_BASELINE_SIZE", min(10, size)))
    concurrency = int(os.environ.get("RUM_BENCH_CONCURRENCY", 8))
    more, said = isolation_settings()
    print(f"\n## pool{size}: {size} slots (1 vCPU, 256 MiB, blank image, domain type qemu) on the real libvirtd,"
          f" the batch path (runner_pool_batch: true, concurrency {concurrency}); the per-slot include path"
          f" (runner_pool_batch: false) on {baseline} slots in the same run, scaled per slot; {said}")
    batch = _pool_round(os.path.join(work, "batch"), size=size, batch=True, concurrency=concurrency, **more)
    include = _pool_round(os.path.join(work, "include"), size=baseline, batch=False, concurrency=concurrency, **more)
    if not batch or not include:
        return
    print(f"\n  summary (per slot; the include path measured on {baseline} slots, the batch path on {size}):")
    print(f"    {'':22} {'batch, ' + str(size) + ' slots':>22} {'include, ' + str(baseline) + ' slots':>22}"
          f" {'include x ' + str(size) + ' (scaled)':>22} {'speed-up':>9}")
    for what in ("converge", "rerun", "teardown"):
        b, i = batch[what], include[what]
        scaled = i / baseline * size if what != "rerun" else i
        note = "" if what != "rerun" else " (re-run: not scaled, mostly fixed cost)"
        print(f"    {what:<22} {fmt(b):>22} {fmt(i):>22} {fmt(scaled):>22} {scaled / b if b else 0:8.1f}x{note}")
    print(f"    {'converge per slot':<22} {fmt(batch['converge'] / size):>22} {fmt(include['converge'] / baseline):>22}")
    print(f"    {'teardown per slot':<22} {fmt(batch['teardown'] / size):>22} {fmt(include['teardown'] / baseline):>22}")
    floor = _raw_floor(os.path.join(STATE, "bench-pool100-raw"), size=size, concurrency=concurrency)
    if floor:
        print(f"    {'raw libvirt floor':<22} {fmt(floor):>22}   ({size} bare domains of the same shape, their overlays"
              f" made, defined and started {concurrency} at a time by libvirt directly: no rum.pool, no seed, no"
              f" GitHub; the batch converge is {batch['converge'] / floor:.1f}x it)")
    if size == 100:
        print("  targets for 100 slots (batch path): " + "; ".join(
            f"{what} <= {limit:g} s: {'met' if batch[what] <= limit else 'NOT met'} ({batch[what]:.1f} s)"
            for what, limit in (("converge", 30.0), ("rerun", 5.0), ("teardown", 30.0))))


def _raw_floor(folder: str, *, size: int, concurrency: int) -> float | None:
    """What the machine itself takes for ``size`` guests like the slots' (1 vCPU, 256 MiB, q35, a
    qcow2 overlay of the blank image, a virtio NIC on ``default``, a serial console): each overlay
    made, the domain defined and started, ``concurrency`` at a time, straight through libvirt."""
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    import libvirt  # pylint: disable=import-outside-toplevel
    prefix = "rawfloor-"
    force_remove(prefix)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    base = tiny_image(os.path.join(STATE, "bench"))["path"]
    conn = libvirt_conn()

    def one(index: int) -> None:
        disk = os.path.join(folder, f"{index}.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", disk], check=True)
        conn.defineXML(
            f"<domain type='qemu'><name>{prefix}{index}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
            "<target dev='vda' bus='virtio'/></disk><interface type='network'><source network='default'/>"
            "<model type='virtio'/></interface><serial type='pty'/></devices></domain>").create()
    start = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(size)))
        return time.monotonic() - start
    except (libvirt.libvirtError, subprocess.CalledProcessError) as exc:
        print(f"  raw libvirt floor: FAILED ({exc})")
        return None
    finally:
        force_remove(prefix)
        conn.close()
        shutil.rmtree(folder, ignore_errors=True)


def _pool_round(work: str, *, size: int, batch: bool, concurrency: int, **more: t.Any) -> dict[str, float] | None:
    """Converge ``size`` slots from empty, re-run, tear down; print and return the wall times."""
    os.makedirs(work, exist_ok=True)
    path = "batch" if batch else "include"
    storage = os.path.join(STATE, f"bench-pool100-{path}")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    image = tiny_image(os.path.join(STATE, "bench"))
    pool = "p100" if batch else "pinc"
    prefix = f"{pool}-{HOST}-"
    print(f"\n### {path} path: {size} slots")
    existing = domains(prefix)
    if existing:
        print(f"  removing {len(existing)} leftover domains of an earlier run: {force_remove(prefix)[:5]}...")
    mem = meminfo()
    need = size * 256 << 20
    print(f"  host memory before: {gib(mem['MemAvailable'])} available of {gib(mem['MemTotal'])}; the guests may "
          f"use up to {gib(need)} (256 MiB each; blank guests touch far less)")
    if mem["MemAvailable"] < max(2 << 30, mem["MemTotal"] // 10) + (size * (64 << 20)):
        print(f"  SKIPPED: not enough free memory for {size} guests (need roughly {gib(size * (64 << 20))} "
              "of qemu RSS plus a 2 GiB floor)")
        return None
    fake = FakeGitHubProcess(os.path.join(work, "fake"))
    fake.start()
    inventory = write_inventory(os.path.join(work, "hosts.json"), pool=pool, size=size, url=fake.url, image=image,
                                storage=storage, vm={}, batch=batch, concurrency=concurrency, **more)
    pool_yml = os.path.join(ROOT, "playbooks", "pool.yml")
    teardown_yml = os.path.join(ROOT, "playbooks", "teardown.yml")
    watch = MemoryWatch(prefix)
    converged = rerun = down = None
    figures: dict[str, float] = {}
    try:
        with watch:
            converged = run_playbook(pool_yml, inventory, work, watch=watch.check)
            doms = domains(prefix)
            running = sum(1 for s in doms.values() if s == "running")
            runners = len(fake.runners(prefix))
            if converged.stopped:
                print(f"  STOPPED EARLY: {converged.stopped}; {running} guests were running. Tearing down.")
                return None
            checked(converged, f"pool.yml (converge, {path} path)")
            figures["converge"] = converged.wall
            print(f"  converge from empty:   {fmt(converged.wall)}  = {converged.wall / size:.2f} s per slot; "
                  f"changed={converged.changed}; {running} domains running, {runners} runners registered"
                  f"{'' if running == size == runners else ' - EXPECTED ' + str(size) + ' of each'}")
            cpu_before = sum(c for _r, c in qemu_processes(prefix).values())
            rerun = run_playbook(pool_yml, inventory, work, watch=watch.check)
            cpu_after = sum(c for _r, c in qemu_processes(prefix).values())
            checked(rerun, f"pool.yml (no-op re-run, {path} path)")
            figures["rerun"] = rerun.wall
            print(f"  no-op re-run:          {fmt(rerun.wall)}  changed={rerun.changed} "
                  f"({len(rerun.tasks)} tasks; {'OK' if rerun.changed == 0 else 'EXPECTED changed=0'})")
            print(f"  idle blank guests during the re-run: {cpu_after - cpu_before:.1f} CPU-seconds in "
                  f"{rerun.wall:.1f} s ({(cpu_after - cpu_before) / rerun.wall * 100:.0f}% of one core for {running} guests)")
        print(f"  memory: peak qemu RSS {gib(watch.peak_rss)} over {watch.peak_count} guests "
              f"({watch.peak_rss / max(watch.peak_count, 1) / (1 << 20):.0f} MiB each); lowest available "
              f"{gib(watch.min_available)}")
    finally:
        try:
            down = run_playbook(teardown_yml, inventory, work)
            left_doms = domains(prefix)
            left_runners = len(fake.runners(prefix))
        finally:
            removed = force_remove(prefix)
            fake.stop()
            shutil.rmtree(storage, ignore_errors=True)
        if down.rc == 0:
            figures["teardown"] = down.wall
            print(f"  teardown:              {fmt(down.wall)}  = {down.wall / size:.2f} s per slot; "
                  f"{len(left_doms)} domains and {left_runners} runners left")
        else:
            print(f"  teardown.yml FAILED (rc={down.rc}); removed {len(removed)} domains by hand\n{down.describe()}")
    if batch:
        for what, run in (("converge", converged), ("teardown", down)):
            for task in (run.tasks if run else ()):
                if task.phases:
                    _batch_breakdown(what, task, concurrency)
    if not batch and converged is not None and down is not None:
        print("\n  converge breakdown:")
        _per_slot_breakdown(converged, size)
        print("\n  teardown breakdown:")
        _per_slot_breakdown(down, size)
    if rerun is not None:
        print("\n  no-op re-run, per task:")
        for task in rerun.tasks:
            print(f"    {task.seconds:8.3f}s  {task.name[:90]}")
    return figures if len(figures) == 3 else None
