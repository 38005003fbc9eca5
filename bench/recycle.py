# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: a job's ``completed`` received by the webhook service -> the slot's new domain running.

One slot of a batch pool (runner_pool_batch: true) on the local libvirtd with a blank image and the
fake GitHub, and the webhook service as its own process (ansible-runner dispatcher, recreate.yml).
Each round plays a job on the slot's runner: GitHub shows the runner busy and the service gets a
signed ``in_progress``, then the runner goes offline and the service gets a signed ``completed``;
the clock runs from that POST until libvirt shows a domain with the slot's name, a new UUID, running.

* staged+standby: the service's ``stage: true`` (``in_progress`` stages the next generation first)
  and ``dispatcher.standby: true`` (recreate.yml already started, waiting for its request);
* staged:   ``stage: true``, recreate.yml started per task;
* unstaged: ``stage: false``: the recreate makes the whole new generation after ``completed``;
* raw:      libvirt's own start of a defined (never started) domain, the floor of all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import typing as t
import xml.etree.ElementTree as ET

from pool import (HOST, ROOT, STATE, FakeGitHubProcess, checked, fmt, force_remove, isolation_settings, libvirt_conn,
                  median, run_playbook, tiny_image, write_inventory)

sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "tools"), os.path.join(ROOT, ".collections")]
from tests.integration.webhook import ServiceProcess, free_port, post  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.examples import example, retarget, signed_headers  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.rum.pool.plugins.module_utils import _domain as domain  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv  # noqa: E402  pylint: disable=wrong-import-position

POOL = "rcyc"
SLOT = f"{POOL}-{HOST}-1"
SECRET = "bench-recycle-secret"
ROUNDS = int(os.environ.get("RUM_BENCH_RECYCLE_ROUNDS", "5"))
# (label, the service's stage, its dispatcher's standby)
MODES = (("staged+standby", True, True), ("staged", True, False), ("unstaged", False, False))
PLAYBOOK_ENV = {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections"), "ANSIBLE_NOCOLOR": "1"}


def slot_state() -> tuple[str, str, bool]:
    """(uuid, runner_name label, running) of the slot's domain, or ("", "", False)."""
    conn = libvirt_conn()
    try:
        dom = lv.lookup(conn, SLOT)
        if dom is None:
            return "", "", False
        labels = (domain.read_metadata(lv.inactive_xml(dom)) or {}).get("labels") or {}
        return dom.UUIDString(), str(labels.get("runner_name") or ""), bool(dom.isActive())
    finally:
        conn.close()


def staged_domains() -> list[str]:
    conn = libvirt_conn()
    try:
        return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(SLOT + "."))
    finally:
        conn.close()


def deliver(service: ServiceProcess, action: str, runner: str, delivery: str) -> dict:
    body = retarget(example(action), runner)
    code, answer = post(service.base + "/webhook", body, signed_headers(body, SECRET.encode(), delivery=delivery))
    if code not in (200, 202):
        raise SystemExit(f"the service answered {code} to {action} for {runner}: {answer}")
    return answer


def wait(what: str, check: t.Callable[[], bool], timeout: float, service: ServiceProcess, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}\n--- service log ---\n"
                             f"{service.log()[-6000:]}")
        time.sleep(poll)


def standby_waiting(service: ServiceProcess) -> bool:
    """A warm standby run of the service waits for its request (rum_standby's ready file)."""
    runs = os.path.join(service.dir, "state", "runs")
    try:
        return any(os.path.exists(os.path.join(runs, name, "request.json.ready")) for name in os.listdir(runs))
    except OSError:
        return False


def one_round(service: ServiceProcess, fake: FakeGitHubProcess, n: int, staged: bool, ended: list[int],
              standby: bool = False) -> float:
    """One job on the slot's runner; seconds from the completed POST to the new domain running."""
    uuid, runner, running = slot_state()
    if not (uuid and runner and running):
        raise SystemExit(f"round {n}: {SLOT} is not a running slot with a runner (uuid={uuid!r}, runner={runner!r})")
    fake.admin("POST", f"/runners/{runner}/status", {"status": "online", "busy": True})
    deliver(service, "in_progress", runner, f"start-{staged}-{n}")
    if staged:
        ended[0] += 1
        wait(f"round {n}: the stage task to end", lambda: service.settled(ended[0]), 300, service)
        if len(staged_domains()) != 1:
            raise SystemExit(f"round {n}: no staged generation after the stage task ({staged_domains()})\n"
                             f"{service.log()[-4000:]}")
    if standby:  # the job ran for minutes in real life: time enough for the next standby to wait
        wait(f"round {n}: a warm standby waiting", lambda: standby_waiting(service), 120, service)
    fake.admin("POST", f"/runners/{runner}/status", {"status": "offline", "busy": False})
    start = time.perf_counter()
    deliver(service, "completed", runner, f"end-{staged}-{n}")

    def replaced() -> bool:
        now_uuid, _runner, now_running = slot_state()
        return bool(now_uuid) and now_uuid != uuid and now_running

    wait(f"round {n}: {SLOT} replaced and running", replaced, 300, service)
    seconds = time.perf_counter() - start
    ended[0] += 1
    wait(f"round {n}: the recreate task to end", lambda: service.settled(ended[0]), 300, service)
    return seconds


def raw_start(work: str, repeat: int) -> list[float]:
    """libvirt's create() of a defined domain made like the slot's (its XML, disks of its own)."""
    import libvirt  # pylint: disable=import-outside-toplevel
    os.makedirs(work, mode=0o755, exist_ok=True)  # under the pool's storage: libvirt's qemu user can read it
    conn = libvirt_conn()
    times = []
    try:
        xml = conn.lookupByName(SLOT).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        for i in range(repeat):
            dom = conn.defineXML(_raw_copy(xml, work, f"{POOL}-raw-{i}"))
            try:
                start = time.perf_counter()
                dom.create()
                times.append(time.perf_counter() - start)
            finally:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    return times


def _raw_copy(xml: str, work: str, name: str) -> str:
    """The slot's domain XML under ``name``: no UUID, MAC, filter or serial log of its own, and its
    disks as files of its own (an overlay over the slot overlay's base image; a copy of the seed)."""
    root = ET.fromstring(xml)
    root.find("name").text = name
    for tag in ("uuid", "metadata"):
        for node in root.findall(tag):
            root.remove(node)
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        if source is None or not source.get("file"):
            continue
        copy = os.path.join(work, f"{name}-{disk.find('target').get('dev')}")
        if disk.get("device") == "cdrom":
            shutil.copyfile(source.get("file"), copy)
        else:
            info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", source.get("file")],
                                             check=True, capture_output=True, text=True).stdout)
            backing = info.get("full-backing-filename") or info.get("backing-filename")
            if not backing:
                raise SystemExit(f"{source.get('file')}: not an overlay (no backing file)")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, copy], check=True)
        os.chmod(copy, 0o644)
        source.set("file", copy)
    for iface in root.findall("./devices/interface"):
        for node in iface.findall("mac") + iface.findall("filterref") + iface.findall("target"):
            iface.remove(node)
    for device in root.findall("./devices/serial") + root.findall("./devices/console"):
        for node in device.findall("log"):
            device.remove(node)
    return ET.tostring(root, encoding="unicode")


def bench_recycle(work: str) -> None:
    storage = os.path.join(STATE, "bench-recycle")
    os.makedirs(storage, mode=0o755, exist_ok=True)
    image = tiny_image(os.path.join(STATE, "bench"))
    fake = FakeGitHubProcess(os.path.join(work, "fake"))
    fake.start()
    isolation, said = isolation_settings()  # RUM_BENCH_ISOLATION: off, nwfilter, nftables
    inventory = write_inventory(os.path.join(work, "hosts.json"), pool=POOL, size=1, url=fake.url, image=image,
                                storage=storage, vm={}, batch=True, **isolation)
    print(f"\n## recycle: {SLOT}'s job completed -> its new domain running, through the webhook service "
          f"(ansible-runner, recreate.yml), real libvirtd, blank image, fake GitHub; {ROUNDS} rounds each"
          f"; {said}")
    results: dict[str, list[float]] = {}
    try:
        checked(run_playbook(os.path.join(ROOT, "playbooks", "pool.yml"), inventory, work), "pool.yml (set-up)")
        for label, staged, standby in MODES:
            config = {"listen": {"host": "127.0.0.1", "port": free_port()}, "pools": [POOL], "max_parallel": 2,
                      "retry": {"attempts": 1, "backoff_seconds": 1}, "stage": staged,
                      "dispatcher": {"kind": "ansible-runner", "playbook": os.path.join(ROOT, "playbooks", "recreate.yml"),
                                     "inventory": inventory, "envvars": PLAYBOOK_ENV, "timeout": 600,
                                     "standby": standby},
                      "reconcile": {"at_start": False, "interval_minutes": 0}}
            service = ServiceProcess(os.path.join(work, f"service-{label}"), config, SECRET).start()
            ended = [0]
            try:
                results[label] = [one_round(service, fake, n, staged, ended, standby) for n in range(1, ROUNDS + 1)]
            except BaseException:
                print(f"--- service log ({label}) ---\n{service.log()[-6000:]}")
                raise
            finally:
                service.stop()
                if os.environ.get("RUM_BENCH_KEEP_LOGS"):  # a folder to keep each service's log in
                    os.makedirs(os.environ["RUM_BENCH_KEEP_LOGS"], exist_ok=True)
                    shutil.copy(service.log_path, os.path.join(os.environ["RUM_BENCH_KEEP_LOGS"], f"service-{label}.log"))
            print(f"  {label:<15} {', '.join(f'{s:.2f}' for s in results[label])} s")
        results["raw"] = raw_start(os.path.join(storage, "raw"), ROUNDS)
    finally:
        down = run_playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory, work)
        left = force_remove(f"{POOL}-")
        fake.stop()
        if down.rc != 0:
            print(f"  teardown.yml failed (rc={down.rc}); removed by hand: {left}")
    hot, staged_s, unstaged_s, raw_s = (median(results[k]) for k in ("staged+standby", "staged", "unstaged", "raw"))
    print(f"  completed -> running, median of {ROUNDS}:")
    print(f"    staged generation, warm standby (stage: true, dispatcher.standby: true)  {fmt(hot)}   "
          f"target <= 2.00 s: {'met' if hot <= 2.0 else 'NOT met'}")
    print(f"    staged generation, recreate.yml started per task (stage: true)          {fmt(staged_s)}   "
          f"({staged_s / hot:.1f}x)")
    print(f"    without staging or standby (stage: false)                               {fmt(unstaged_s)}   "
          f"({unstaged_s / hot:.1f}x)")
    print(f"    raw libvirt start of a defined domain                                   {fmt(raw_s)}   "
          f"(the hot path is {hot / raw_s:.1f}x it)")
    print(json.dumps({"recycle": {k: [round(x, 3) for x in v] for k, v in results.items()}}))
