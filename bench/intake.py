"""Webhook intake: the service against a bare aiohttp handler, measured in the same run.

    .venv/bin/python bench/run.py intake

What each side does, exactly:

* The deliveries: GitHub's published example bytes for queued, in_progress and completed jobs
  (a third each; in_progress and completed pointed at 200 runners of the pool ``bench``), each
  with a delivery id of its own and its ``X-Hub-Signature-256``, built as raw HTTP/1.1 requests
  before the clock starts. Both servers get the same bytes.
* The load generator (this process, the same code for both): one thread, one epoll loop over
  16 keep-alive connections, non-blocking sockets, no asyncio. Each connection sends a
  request, waits for the whole answer (status line, headers, ``Content-Length`` bytes of body),
  takes its latency and sends the next; nothing is pipelined. It parses only the status and
  ``Content-Length`` and fails the run on any answer that is not 2xx.
* The bare handler (a process of its own): aiohttp's ``web.run_app`` with one POST route whose
  handler awaits ``request.read()`` (the whole body) and returns a fixed 11-byte JSON
  ``web.Response``. That is the least any aiohttp handler must do for these requests:
  aiohttp parses the request line and headers and the body, and writes status, headers and
  body. No signature, no JSON parsing, no disk.
* The service (``rum-pool-webhook serve``, a process of its own, log level info, AWX
  dispatcher pointed at a fake AWX that never finishes a job): for each delivery it checks
  what the request may cost, computes the HMAC-SHA256 over the raw body as it streams in and
  compares it with the header, parses the whole JSON body (a malformed one is a 4xx), decides
  (ping / recreate / record / ignore), and hands the change to the store: the delivery id
  marked seen (a redelivery is answered "duplicate"), the delivery row, the slot row, a task
  for a completed job (coalesced with one still queued or running for the same runner), the
  counters. The answer goes out only once the sqlite group commit holding that change has
  returned from its sync of the WAL (``synchronous=FULL``). The first task is launched
  against the fake AWX; the rest coalesce or wait (``max_parallel`` 1).

* Where the service's time goes (bench only): the same service started twice more through a
  launcher of this file that cuts part of its work out in that process before ``main`` runs,
  never in the product: once with the store answering at once (nothing written, nothing
  synced), once also without parsing the body and deciding (the signature is still checked
  over the streamed body). The differences of the per-delivery times are the costs of those
  parts under this load.

Nothing here asserts speed: it prints deliveries/s, p50 and p99 of both, the CPU time each
server process and the load generator spent per delivery (user + system, from /proc), the
connections the kernel dropped at a listen queue meanwhile (TcpExt ListenDrops, counted for the
whole machine; a connection the server closes fails the run), and the group commits the service
made.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_awx import FakeAwx  # noqa: E402  pylint: disable=wrong-import-position
from fake_github.examples import example, retarget, signed_headers  # noqa: E402  pylint: disable=wrong-import-position

SECRET = "bench-intake-secret"
CONNECTIONS = 16
DELIVERIES = 6000
WARMUP = 600
TARGETS = "target: >= 2,000/s, >= 50% of the bare handler's rate, p99 <= 20 ms"

BARE = """
import sys
from aiohttp import web

async def handle(request):
    await request.read()
    return web.Response(body=b'{"ok": true}', content_type="application/json")

app = web.Application()
app.router.add_post("/webhook", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            backlog=1024)
"""


# The service with parts of its work cut out (argv[1]: "store" or "store,parse"), for the
# "where the time goes" lines; the rest of argv is rum-pool-webhook's.
CUT = """
import asyncio
import sys
from rum_pool_webhook import app, cli, events, store

cut = sys.argv[1].split(",")
if "store" in cut:
    def accept_async(self, delivery, decision, now):
        future = asyncio.get_running_loop().create_future()
        future.set_result(store.Accepted("recorded"))
        return future
    store.Store.accept_async = accept_async
if "parse" in cut:
    def parse_delivery(headers, body, content_type=None):
        return events.Delivery(id=headers["x-github-delivery"], event=headers["x-github-event"])
    app.parse_delivery = parse_delivery
sys.exit(cli.main(sys.argv[2:]))
"""
CUTS = (("store", "without its store (answers once decided, writes nothing)"),
        ("store,parse", "without its store, body parsing and decision"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requests(count: int) -> list[bytes]:
    """Signed POSTs as raw bytes: a third each queued (no runner yet), in_progress, completed,
    on 200 runners of the pool 'bench'."""
    bodies = [example("queued", with_runner=False), example("in_progress"), example("completed")]
    out = []
    for n in range(count):
        body = bodies[n % 3]
        if n % 3:
            body = retarget(body, f"bench-hv{n % 200 + 1}-1-k3x9qa")
        headers = signed_headers(body, SECRET.encode(), delivery=str(uuid.uuid4()))
        head = "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + f"Content-Length: {len(body)}\r\n\r\n"
        out.append(head.encode() + body)
    return out


class _Conn:  # pylint: disable=too-few-public-methods
    """One keep-alive connection of the load generator: its requests and the answer so far."""

    def __init__(self, sock: socket.socket, batch: list[bytes]) -> None:
        self.sock = sock
        self.batch = batch
        self.next = 0
        self.out = memoryview(b"")
        self.buf = bytearray()
        self.need = -1  # bytes of the whole answer, once its headers are in
        self.started = 0.0

    def send_next(self) -> bool:
        """Start the next request; False when there is none left."""
        if self.next >= len(self.batch):
            return False
        self.out = memoryview(self.batch[self.next])
        self.next += 1
        self.started = time.perf_counter()
        self.flush()
        return True

    def flush(self) -> None:
        """Send what the socket takes now; the rest waits for EPOLLOUT."""
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            sent = 0
        self.out = self.out[sent:]


def load(port: int, batch: list[bytes]) -> tuple[float, list[float], list[str]]:
    """Send ``batch`` over ``CONNECTIONS`` keep-alive connections, one request in flight on
    each; (seconds, latencies, failed status lines)."""
    latencies: list[float] = []
    failures: list[str] = []
    poller = select.epoll()
    conns: dict[int, _Conn] = {}
    for index in range(CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conns[sock.fileno()] = _Conn(sock, batch[index::CONNECTIONS])
    read_only, read_write = select.EPOLLIN, select.EPOLLIN | select.EPOLLOUT
    started = time.perf_counter()
    for fd, conn in conns.items():
        conn.send_next()
        poller.register(fd, read_write if conn.out else read_only)
    live = len(conns)
    try:
        while live:
            for fd, events in poller.poll():
                conn = conns[fd]
                if events & select.EPOLLOUT and conn.out:
                    conn.flush()
                    if not conn.out:
                        poller.modify(fd, read_only)
                if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    continue
                try:
                    data = conn.sock.recv(262144)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        continue
                    raise
                if not data:
                    raise SystemExit(f"the server closed a connection after {conn.next} requests")
                conn.buf += data
                if conn.need < 0:
                    end = conn.buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = bytes(conn.buf[:end]).lower()
                    at = head.index(b"\r\ncontent-length:") + 17
                    stop = head.find(b"\r\n", at)
                    conn.need = end + 4 + int(head[at:stop if stop >= 0 else len(head)])
                if len(conn.buf) < conn.need:
                    continue
                latencies.append(time.perf_counter() - conn.started)
                if conn.buf[9:10] != b"2":
                    failures.append(bytes(conn.buf[:conn.buf.find(b"\r\n")]).decode())
                del conn.buf[:conn.need]
                conn.need = -1
                if conn.send_next():
                    if conn.out:
                        poller.modify(fd, read_write)
                else:
                    poller.unregister(fd)
                    live -= 1
        seconds = time.perf_counter() - started
    finally:
        poller.close()
        for conn in conns.values():
            conn.sock.close()
    return seconds, latencies, failures


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (this one by default), all its threads."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_drops() -> int:
    """The kernel's count of connections dropped at a listen queue (TcpExt ListenDrops), all
    sockets of the machine."""
    with open("/proc/net/netstat", encoding="ascii") as fh:
        lines = [line.split() for line in fh if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1]))["ListenDrops"])


def wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port}")


def measure(name: str, port: int, proc: subprocess.Popen, commits: bool = False) -> dict:
    wait_for_port(port, proc, name)
    load(port, requests(WARMUP))
    before = commit_figures(port) if commits else (0.0, 0.0, 0.0)
    batch = requests(DELIVERIES)
    server_before, client_before, drops = cpu_seconds(proc.pid), cpu_seconds(), listen_drops()
    seconds, latencies, failures = load(port, batch)
    server_cpu, client_cpu = cpu_seconds(proc.pid) - server_before, cpu_seconds() - client_before
    drops = listen_drops() - drops
    after = commit_figures(port) if commits else (0.0, 0.0, 0.0)
    if failures:
        raise SystemExit(f"{name}: {len(failures)} answers were not 2xx, e.g. {failures[0]}")
    latencies.sort()
    return {"rate": len(latencies) / seconds, "p50": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1], "count": len(latencies),
            "server_us": server_cpu / len(latencies) * 1e6,
            "client_us": client_cpu / len(latencies) * 1e6, "drops": drops,
            "groups": after[0] - before[0], "changes": after[1] - before[1],
            "commit_seconds": after[2] - before[2]}


def service_config(work: str, awx_url: str, port: int) -> str:
    secret = os.path.join(work, "secret")
    with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as fh:
        fh.write(SECRET)
    token = os.path.join(work, "awx-token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as fh:
        fh.write("bench-token")
    path = os.path.join(work, "webhook.yml")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"listen": {"host": "127.0.0.1", "port": port}, "secret_file": secret,
                   "state_dir": os.path.join(work, "state"), "pools": ["bench"], "max_parallel": 1,
                   "reconcile": {"at_start": False, "interval_minutes": 0},
                   "dispatcher": {"kind": "awx", "url": awx_url, "token_file": token, "job_template": 7,
                                  "poll_seconds": 30}}, fh)
    return path


def commit_figures(port: int) -> tuple[float, float, float]:
    """(group commits, changes committed, seconds committing) from the service's /metrics."""
    import urllib.request  # pylint: disable=import-outside-toplevel

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    count = float(re.search(r"^rum_pool_webhook_commit_group_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^rum_pool_webhook_commit_group_size_sum (\S+)$", text, re.M).group(1))
    seconds = float(re.search(r"^rum_pool_webhook_commit_seconds_sum (\S+)$", text, re.M).group(1))
    return count, total, seconds


def bench_intake(work: str) -> None:
    awx = FakeAwx(token="bench-token")
    awx.add_template("rum.pool recreate slot", script=("pending", "running"), auto_advance=False)
    awx_url = awx.start()
    bare_port, service_port = free_port(), free_port()
    procs = []
    try:
        bare = subprocess.Popen([os.path.join(BIN, "python"), "-c", BARE, str(bare_port)])  # pylint: disable=consider-using-with
        procs.append(bare)
        bare_figures = measure("the bare aiohttp handler", bare_port, bare)
        bare.terminate()
        with tempfile.TemporaryDirectory(dir=work) as state, open(os.path.join(work, "service.log"), "w") as log:
            service = subprocess.Popen(  # pylint: disable=consider-using-with
                [os.path.join(BIN, "rum-pool-webhook"), "serve", "--config", service_config(state, awx_url, service_port)],
                stdout=log, stderr=subprocess.STDOUT)
            procs.append(service)
            service_figures = measure("rum-pool-webhook", service_port, service, commits=True)
            service.terminate()
            service.wait(timeout=90)
        cut_figures = []
        for cut, _what in CUTS:
            port = free_port()
            with tempfile.TemporaryDirectory(dir=work) as state, \
                    open(os.path.join(work, f"service-{cut}.log"), "w") as log:
                proc = subprocess.Popen(  # pylint: disable=consider-using-with
                    [os.path.join(BIN, "python"), "-c", CUT, cut, "serve", "--config",
                     service_config(state, awx_url, port)], stdout=log, stderr=subprocess.STDOUT)
                procs.append(proc)
                cut_figures.append(measure(f"rum-pool-webhook {cut}", port, proc))
                proc.terminate()
                proc.wait(timeout=90)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        awx.stop()
    groups, changes = service_figures["groups"], service_figures["changes"]
    print(f"\n## webhook intake: {DELIVERIES} signed deliveries over {CONNECTIONS} keep-alive connections "
          f"(after {WARMUP} to warm up)")
    for name, fig in (("rum-pool-webhook (synced to disk before each 2xx)", service_figures),
                      ("bare aiohttp handler (reads the body, answers 200)", bare_figures)):
        print(f"  {name:<52} {fig['rate']:8,.0f}/s  p50 {fig['p50'] * 1000:6.2f} ms  "
              f"p99 {fig['p99'] * 1000:6.2f} ms  CPU per delivery: server {fig['server_us']:4.0f} us, "
              f"load generator {fig['client_us']:3.0f} us, listen drops {fig['drops']}")
    print(f"  ratio: the service runs at {service_figures['rate'] / bare_figures['rate']:.0%} of the bare "
          f"handler's rate; {TARGETS}")
    print("  where the service's time goes (the same service with parts cut out, bench only):")
    for (_cut, what), fig in zip(CUTS, cut_figures):
        print(f"    {what:<58} {fig['rate']:8,.0f}/s  p99 {fig['p99'] * 1000:6.2f} ms  "
              f"({fig['rate'] / bare_figures['rate']:.0%} of the bare handler's rate)")
    per = [1e6 / fig["rate"] for fig in (bare_figures, cut_figures[1], cut_figures[0], service_figures)]
    print(f"    per delivery: the bare handler {per[0]:.0f} us; + the service's HTTP side (limits, signature, "
          f"routing, answer, log, metrics) {per[1] - per[0]:.0f} us; + parsing and deciding "
          f"{per[2] - per[1]:.0f} us; + the store (group commit, synced) {per[3] - per[2]:.0f} us")
    print(f"  group commits: {groups:,.0f} syncs of the database for {changes:,.0f} changes "
          f"({changes / groups if groups else 0:.1f} per sync), "
          f"{service_figures['commit_seconds'] / groups * 1000 if groups else 0:.2f} ms each")
