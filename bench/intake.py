"""Webhook intake: the service against a bare aiohttp handler, measured in the same run.

    .venv/bin/python bench/run.py intake

Both run as processes of their own on loopback; one load generator (asyncio, raw HTTP/1.1 on 16
keep-alive connections) sends each of them the same signed deliveries, GitHub's published
example bytes for queued, in_progress and completed jobs pointed at a pool's runners. The
service verifies, parses, decides and commits each delivery to its database, and answers only
once the group commit holding it is synced to disk; the bare handler reads the body and answers
200. Nothing here asserts speed: it prints deliveries/s, p50 and p99 of both, and the group
commits the service made.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
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
    return web.json_response({"ok": True}, status=200)

app = web.Application()
app.router.add_post("/webhook", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            backlog=1024)
"""


def free_port() -> int:
    import socket  # pylint: disable=import-outside-toplevel

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


async def _connection(port: int, batch: list[bytes], latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in batch:
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 202")):
                failures.append(head.split(b"\r\n", 1)[0].decode())
    finally:
        writer.close()


async def _load(port: int, batch: list[bytes]) -> tuple[float, list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    slices = [batch[i::CONNECTIONS] for i in range(CONNECTIONS)]
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, s, latencies, failures) for s in slices))
    return time.perf_counter() - started, latencies, failures


def load(port: int, batch: list[bytes]) -> tuple[float, list[float], list[str]]:
    return asyncio.run(_load(port, batch))


def wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    import socket  # pylint: disable=import-outside-toplevel

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
    seconds, latencies, failures = load(port, requests(DELIVERIES))
    after = commit_figures(port) if commits else (0.0, 0.0, 0.0)
    if failures:
        raise SystemExit(f"{name}: {len(failures)} answers were not 2xx, e.g. {failures[0]}")
    latencies.sort()
    return {"rate": len(latencies) / seconds, "p50": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1], "count": len(latencies),
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
              f"p99 {fig['p99'] * 1000:6.2f} ms")
    print(f"  ratio: the service runs at {service_figures['rate'] / bare_figures['rate']:.0%} of the bare "
          f"handler's rate; {TARGETS}")
    print(f"  group commits: {groups:,.0f} syncs of the database for {changes:,.0f} changes "
          f"({changes / groups if groups else 0:.1f} per sync), "
          f"{service_figures['commit_seconds'] / groups * 1000 if groups else 0:.2f} ms each")
