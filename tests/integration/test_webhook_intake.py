"""The webhook service's intake under the worst GitHub and the world can do, with no guest:

* a crash: kill -9 in the middle of a burst of 100 completions for 100 slots, at several points;
  after each restart, what got no 2xx is delivered again. Every slot is launched exactly once,
  counted by the fake AWX and, with ansible-runner, by the dispatcher's own record and by the
  stub playbook itself; delivering everything once more launches nothing;
* durability: with the service's system calls traced (strace), every 2xx goes out only after an
  fsync/fdatasync of the database's WAL that covers its delivery, and a burst is synced in groups;
* bad input: deep nesting, oversize, slow and unsigned uploads all get their 4xx or are cut off,
  the service's peak memory stays bounded, and a signed delivery sent meanwhile is answered
  within 100 ms.

Deliveries are GitHub's published example bytes with the runner name pointed at a slot.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid

import pytest

from tests.integration.guests import wait_until
from tests.integration.webhook import ROOT, ServiceProcess, free_port, post, send_all
from tests.needs import command

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_awx import FakeAwx  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.examples import example, retarget, signed_headers  # noqa: E402  pylint: disable=wrong-import-position

SECRET = "intake-test-secret-6d1f"
POOL = "ci"
AWX_TOKEN = "awx-intake-token"
SLOTS = 100
KILL_AT = (12, 40, 71)  # 2xx answers after which the service is killed, in the one burst

STUB_RECREATE = """\
- name: Stands in for recreate.yml and counts its runs
  hosts: all
  gather_facts: false
  tasks:
    - name: Count this run of the slot
      ansible.builtin.shell: "echo {{ slot }} {{ runner_name }} >> {{ count_file }}"
      changed_when: true
    - name: Take a moment, so that kills find runs going on
      ansible.builtin.pause:
        seconds: 1
"""


def deliveries(count: int = SLOTS) -> list:
    """One completed workflow_job per slot ci-hv<n>-1, GitHub's example bytes, each signed."""
    done = example("completed")
    out = []
    for n in range(1, count + 1):
        body = retarget(done, f"{POOL}-hv{n}-1-k3x9qa")
        guid = str(uuid.uuid4())
        out.append((guid, body, signed_headers(body, SECRET.encode(), delivery=guid)))
    return out


def crash_through(service: ServiceProcess, batch: list) -> list:
    """Deliver ``batch``, killing the service (-9) at each of KILL_AT answers and starting it
    again; redeliver what got no 2xx until everything has one. Returns the kills' answer counts."""
    pending = list(batch)
    kills = []
    acked = set()
    while pending:
        kill_at = next((k for k in KILL_AT if k > len(acked) and k not in kills), None)
        killed = threading.Event()

        def after_each(results, kill_at=kill_at, killed=killed):
            ok = len(acked | {g for g, status in results.items() if status and 200 <= status < 300})
            if kill_at is not None and ok >= kill_at and not killed.is_set():
                killed.set()
                service.kill()

        results = send_all(service.port, pending, connections=4, after_each=after_each)
        acked |= {g for g, status in results.items() if status and 200 <= status < 300}
        if killed.is_set():
            kills.append(kill_at)
            service.start()
        elif service.proc.poll() is not None:
            pytest.fail(f"the service died on its own\n{service.log()[-5000:]}")
        pending = [d for d in pending if d[0] not in acked]
    assert len(acked) == len(batch)
    return kills


def awx_dispatcher(tmp_path, awx, **more) -> dict:
    """The dispatcher section for the fake AWX (its token in a 0600 file)."""
    token = tmp_path / "awx-token"
    token.write_text(AWX_TOKEN)
    token.chmod(0o600)
    return dict({"kind": "awx", "url": awx.url, "token_file": str(token), "job_template": awx.template,
                 "timeout": 600}, **more)


def crash_and_settle(service: ServiceProcess, batch: list, timeout: float) -> None:
    """The burst with its kills, then every task to its end, all of them done."""
    service.start()
    kills = crash_through(service, batch)
    assert kills == list(KILL_AT), kills
    wait_until("every recreate to end", lambda: service.settled(SLOTS), timeout, on_timeout=service.log, interval=0.5)
    counts = service.status()["counts"]
    assert (counts["done"], counts["failed"]) == (SLOTS, 0), counts


def once_per_slot(pairs) -> None:
    """``pairs`` of (slot, one launch): every slot launched, none twice."""
    per_slot = {}
    for slot, launch in pairs:
        per_slot.setdefault(slot, []).append(launch)
    assert sorted(per_slot) == sorted(f"{POOL}-hv{n}-1" for n in range(1, SLOTS + 1))
    twice = {slot: launches for slot, launches in per_slot.items() if len(launches) != 1}
    assert not twice, f"slots launched more than once: {twice}"


def redeliver_everything(service: ServiceProcess, batch: list) -> None:
    """GitHub delivers everything once more: all duplicates."""
    again = send_all(service.port, batch, connections=4)
    assert set(again.values()) == {200}
    time.sleep(1)
    assert service.status()["counts"]["duplicates"] >= SLOTS


@pytest.fixture
def awx():
    fake = FakeAwx(token=AWX_TOKEN)
    fake.start()
    # each job takes a few polls, so that kills find jobs being launched and followed
    fake.template = fake.add_template("rum.pool recreate slot",
                                      script=("pending", "waiting", "running", "running", "successful"))
    yield fake
    fake.stop()


def test_kill_9_mid_burst_launches_every_slot_exactly_once_with_awx(tmp_path, awx):
    service = ServiceProcess(str(tmp_path / "svc"), {
        "pools": [POOL], "max_parallel": 4, "retry": {"attempts": 3, "backoff_seconds": 1},
        "reconcile": {"at_start": False, "interval_minutes": 0},
        "dispatcher": awx_dispatcher(tmp_path, awx, poll_seconds=0.1, timeout=120)}, SECRET)
    batch = deliveries()
    with service.watched(30000):
        crash_and_settle(service, batch, 300)
        once_per_slot((job["extra_vars"]["slot"], job["id"]) for job in awx.launches())
        redeliver_everything(service, batch)
        assert len(awx.launches()) == SLOTS  # nothing launched by the second delivery
        assert service.stop() == 0
    log = service.log()
    assert log.count("interrupted by the last stop are queued again") >= 1
    print(f"after the kills: {log.count('launched before the restart')} job(s) followed by their recorded "
          f"id, {log.count('launched just before the restart')} found by their variables")


def test_kill_9_mid_burst_launches_every_slot_exactly_once_with_ansible_runner(tmp_path):
    project = tmp_path / "project"
    (project / "playbooks").mkdir(parents=True)
    (project / "playbooks" / "recreate.yml").write_text(STUB_RECREATE)
    (project / "playbooks" / "pool.yml").write_text("[]\n")
    inventory = tmp_path / "inventory"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    count_file = tmp_path / "runs.txt"
    state = tmp_path / "svc" / "state"
    service = ServiceProcess(str(tmp_path / "svc"), {
        "pools": [POOL], "max_parallel": 6, "retry": {"attempts": 3, "backoff_seconds": 1},
        "reconcile": {"at_start": False, "interval_minutes": 0}, "keep_runs": 200,
        "dispatcher": {"kind": "ansible-runner", "project_dir": str(project), "inventory": str(inventory),
                       "extravars": {"count_file": str(count_file)},
                       "envvars": {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg")}, "timeout": 300}}, SECRET)
    batch = deliveries()
    with service.watched(30000):
        crash_and_settle(service, batch, 900)
        once_per_slot(line.split() for line in count_file.read_text().splitlines() if line)
        redeliver_everything(service, batch)
        assert service.stop() == 0
    # the dispatcher's own record: one launched run per slot, and no second one after the redelivery
    db = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    try:
        launched = db.execute("SELECT slot, COUNT(*) FROM launches GROUP BY slot").fetchall()
    finally:
        db.close()
    assert len(launched) == SLOTS and {n for _slot, n in launched} == {1}
    assert len(count_file.read_text().split()) == 2 * SLOTS  # still one run (two words) per slot


# ---------------------------------------------------------------- durability, under strace

TRACE_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+) (.*)$")


def parse_trace(path: str) -> list:
    """[(pid, start, end, call, args, text)]: strace -f -ttt -T lines, unfinished calls joined."""
    calls = []
    open_calls = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = TRACE_LINE.match(line.rstrip("\n"))
            if not match:
                continue
            pid, stamp, rest = int(match.group(1)), float(match.group(2)), match.group(3)
            if rest.endswith("<unfinished ...>"):
                open_calls[pid] = (stamp, rest[: -len("<unfinished ...>")])
                continue
            resumed = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
            if resumed and pid in open_calls:
                start, head = open_calls.pop(pid)
                rest = head + resumed.group(2)
            else:
                start = stamp
            duration = re.search(r"<(\d+\.\d+)>$", rest)
            end = start + float(duration.group(1)) if duration and not resumed else stamp
            call = re.match(r"^(\w+)\((.*)$", rest)
            if call:
                calls.append((pid, start, end, call.group(1), call.group(2), rest))
    return calls


def test_every_2xx_follows_the_sync_that_covers_its_delivery(tmp_path, awx):
    strace = command("strace", "strace")
    trace = tmp_path / "trace.txt"
    service = ServiceProcess(str(tmp_path / "svc"), {
        "pools": [POOL], "max_parallel": 1, "reconcile": {"at_start": False, "interval_minutes": 0},
        "dispatcher": awx_dispatcher(tmp_path, awx, poll_seconds=0.1)}, SECRET,
        prefix=(strace, "-f", "-ttt", "-T", "-yy", "-s", "4200", "-o", str(trace),
                "-e", "trace=fsync,fdatasync,pwrite64,write,writev,sendto,sendmsg,recvfrom,read"))
    batch = deliveries(200)
    with service.watched(20000):
        service.start(timeout=60)
        results = send_all(service.port, batch, connections=16)
        assert set(results.values()) == {202}
        assert service.stop() == 0
    calls = parse_trace(str(trace))
    wal = [c for c in calls if ("state.db-wal>" in c[4].split(",")[0])]
    syncs = [c for c in wal if c[3] in ("fsync", "fdatasync")]
    writes = [c for c in wal if c[3] in ("pwrite64", "write", "writev")]
    assert syncs, "no fsync/fdatasync of the WAL was traced"
    socket_of = {}  # TCP connection -> the delivery ids read on it, in order
    sends = {}  # TCP connection -> the starts of its 2xx answers, in order
    for pid, start, end, name, args, text in calls:
        fd = args.split(",", 1)[0]
        if "TCP:" not in fd:
            continue
        if name in ("recvfrom", "read"):
            for guid in re.findall(r"X-GitHub-Delivery: ([0-9a-f-]{36})", text):
                socket_of.setdefault(fd, []).append(guid)
        elif name in ("sendto", "write", "sendmsg", "writev") and '"HTTP/1.1 2' in text:
            sends.setdefault(fd, []).append(start)
    checked = 0
    covering = set()
    for fd, guids in socket_of.items():
        for guid, sent_at in zip(guids, sends.get(fd, [])):
            written = [w for w in writes if guid in w[5]]
            assert written, f"delivery {guid}: never written to the WAL before its answer"
            covered = [s for s in syncs if s[1] >= written[0][2]]
            assert covered, f"delivery {guid}: no sync of the WAL after it was written"
            assert covered[0][2] <= sent_at, (
                f"delivery {guid}: answered at {sent_at:.6f}, before the sync that covers it ended "
                f"({covered[0][2]:.6f})")
            covering.add(covered[0][1:3])
            checked += 1
    assert checked == len(batch), f"matched {checked} answers to their deliveries, not {len(batch)}"
    # group commit: one sync covers every delivery that arrived while the previous was written
    print(f"{len(batch)} deliveries, each answered after a sync of the WAL: {len(covering)} syncs "
          f"covered them ({len(syncs)} syncs in all, the worker's commits included)")
    assert len(covering) <= len(batch) // 2, "no group commit: about one sync per delivery"


# ---------------------------------------------------------------- bad input, and memory

def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def raw_exchange(port: int, head: bytes, body_parts=(), pause: float = 0.0, timeout: float = 60) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break  # the server cut the upload off
            if pause:
                time.sleep(pause)
        data = b""
        while not _complete(data):  # no half-close: asyncio servers drop a half-closed connection
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole HTTP answer (headers and Content-Length bytes of body)."""
    header, sep, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", header)
    return bool(sep) and found is not None and len(body) >= int(found.group(1))


def head(length: int, signature: str | None = "sha256=" + "0" * 64, delivery: str = "bad") -> bytes:
    out = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: %s\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n" % (delivery.encode(), length))
    if signature:
        out += b"X-Hub-Signature-256: %s\r\n" % signature.encode()
    return out + b"\r\n"


def test_bad_input_gets_4xx_memory_stays_bounded_and_real_deliveries_get_through(tmp_path, awx):
    service = ServiceProcess(str(tmp_path / "svc"), {
        "listen": {"port": free_port(), "body_timeout": 3, "idle_timeout": 3},
        "pools": [POOL], "reconcile": {"at_start": False, "interval_minutes": 0},
        "dispatcher": awx_dispatcher(tmp_path, awx, poll_seconds=5)}, SECRET)
    mib = 1024 * 1024
    chunk = b"x" * mib
    with service.watched(20000):
        service.start()
        port = service.port
        time.sleep(0.5)
        baseline = vm_hwm_kib(service.pid)
        answers = {}

        def attack(name, *args, **kwargs):
            answers[name] = raw_exchange(port, *args, **kwargs)

        deep = b"[" * 100000 + b"]" * 100000
        deep_headers = signed_headers(deep, SECRET.encode(), delivery="deep")
        attacks = [
            # 8 uploads of 25 MiB with a wrong signature, all at once: 200 MiB offered
            *[(f"forged-{n}", head(25 * mib, delivery=f"forged-{n}"), [chunk] * 25) for n in range(8)],
            # 8 unsigned 25 MiB uploads: refused before a byte of body is read
            *[(f"unsigned-{n}", head(25 * mib, signature=None, delivery=f"unsigned-{n}"), [chunk] * 25)
              for n in range(8)],
            ("oversize", head(200 * mib, delivery="oversize"), [chunk] * 4),
            ("slow", head(1000, delivery="slow"), [b"{"] * 20, 0.5),
            ("headers-never-end", b"POST /webhook HTTP/1.1\r\nHost: x\r\n", [b"X-A: b\r\n"] * 20, 0.5),
            ("deep", b"".join([b"POST /webhook HTTP/1.1\r\nHost: x\r\n"] +
                              [f"{k}: {v}\r\n".encode() for k, v in deep_headers.items()] +
                              [b"Content-Length: %d\r\n\r\n" % len(deep)]), [deep]),
        ]
        threads = [threading.Thread(target=attack, args=(name, h, parts) + tuple(rest))
                   for name, h, parts, *rest in attacks]
        for thread in threads:
            thread.start()
        # meanwhile, GitHub's real deliveries keep being answered at once
        time.sleep(0.5)
        latencies = []
        for guid, body, headers in deliveries(10):
            started = time.monotonic()
            assert post(service.base + "/webhook", body, headers)[0] == 202
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        for thread in threads:
            thread.join(120)
        peak = vm_hwm_kib(service.pid)

        def status(name):
            return int(answers[name].split(b" ", 2)[1]) if answers.get(name) else None

        # each got its 4xx (503 when the in-flight budget was full), or was cut off (None: the
        # server closed the connection while the client was still sending, before it could read
        # the answer); the service's own record says why each was refused
        assert {status(f"forged-{n}") for n in range(8)} <= {401, 503, None}
        assert {status(f"unsigned-{n}") for n in range(8)} <= {401, None}
        assert status("oversize") in (413, None)
        assert status("slow") == 408
        assert status("headers-never-end") is None  # cut off: the connection closed, no answer
        assert status("deep") == 400 and b"nested too deeply" in answers["deep"]
        refused = {}
        for delivery in service.status()["deliveries"]:
            if delivery["outcome"] == "rejected":
                refused.setdefault(delivery["id"], delivery["detail"])
        why = {name: refused.get(name) for name, _h, _p, *_r in attacks if name != "headers-never-end"}
        assert all(why[f"unsigned-{n}"] == "signature missing or wrong" for n in range(8)), why
        assert all(why[f"forged-{n}"] in ("signature missing or wrong",
                                          "too many request bodies in flight; try again") for n in range(8)), why
        assert "signature missing or wrong" in [why[f"forged-{n}"] for n in range(8)]  # read to the end, refused
        assert why["oversize"] == "body of 209715200 bytes is over the 25 MiB limit"
        assert why["slow"] == "body not received within 3 s"
        assert why["deep"] == "body is JSON nested too deeply"
        print(f"signed deliveries during the attack: max {max(latencies) * 1000:.1f} ms; "
              f"peak RSS {baseline // 1024} MiB before, {peak // 1024} MiB after")
        assert max(latencies) < 0.1, latencies
        # 64 MiB may be in flight (listen.max_inflight_bytes): the service grew by little more
        assert (peak - baseline) // 1024 < 110, (baseline, peak)
        assert service.proc.poll() is None
        assert service.stop() == 0
