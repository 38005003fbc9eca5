"""Helpers for the webhook service's integration tests: the service as a process, HTTP on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request

from tests.integration.guests import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:  # not listening (yet)
        return 0, "", str(getattr(exc, "reason", exc))


def post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class ServiceProcess:
    """``rum-pool-webhook serve`` with a config written into ``folder``; ``prefix`` (for example
    strace) runs in front of it."""

    def __init__(self, folder, config: dict, secret: str, prefix: tuple = ()) -> None:
        self.dir = folder
        os.makedirs(self.dir, exist_ok=True)
        secret_file = os.path.join(self.dir, "webhook-secret")
        with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(secret + "\n")
        self.port = config.setdefault("listen", {}).setdefault("port", free_port())
        config["listen"].setdefault("host", "127.0.0.1")
        config.setdefault("secret_file", secret_file)
        config.setdefault("state_dir", os.path.join(self.dir, "state"))
        self.config = os.path.join(self.dir, "webhook.yml")
        with open(self.config, "w", encoding="utf-8") as fh:
            json.dump(config, fh)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "service.log")
        self.prefix = tuple(prefix)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "ServiceProcess":
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                list(self.prefix) + [os.path.join(BIN, "rum-pool-webhook"), "serve", "--config", self.config],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        wait_until("the service's /healthz", lambda: self.proc.poll() is None and get(self.base + "/healthz")[0] == 200,
                   timeout, on_timeout=self.log, interval=0.1)
        return self

    @property
    def pid(self) -> int:
        """The service's pid (under a ``prefix`` such as strace: the prefix's child)."""
        assert self.proc is not None
        if not self.prefix:
            return self.proc.pid
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children", encoding="ascii") as fh:
            return int(fh.read().split()[0])

    def kill(self) -> None:
        """kill -9: no shutdown, no drain, nothing written after this instant."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)

    @contextlib.contextmanager
    def watched(self, tail: int = 20000):
        """On a failure inside, print the end of the service's log; stop the service after."""
        try:
            yield self
        except BaseException:
            print(f"--- service log ---\n{self.log()[-tail:]}")
            raise
        finally:
            self.stop()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8") as fh:
                return fh.read()
        except OSError:
            return ""

    def status(self) -> dict:
        return json.loads(get(self.base + "/api/status")[2] or "{}")

    def settled(self, count: int) -> bool:
        """True once ``count`` tasks have ended (done, skipped or failed)."""
        counts = self.status().get("counts", {})
        return counts.get("done", 0) + counts.get("skipped", 0) + counts.get("failed", 0) >= count


def send_all(port: int, deliveries: list, connections: int = 4, after_each=None) -> dict:
    """POST ``deliveries`` ([(delivery id, body, headers)]) over ``connections`` keep-alive
    connections at once; {delivery id: HTTP status, or None when the connection failed}.
    ``after_each(status_by_id)`` runs after every answer (a test kills the service from there)."""
    results: dict = {}
    lock = threading.Lock()
    queue = list(deliveries)

    def worker() -> None:
        conn = None
        while True:
            with lock:
                if not queue:
                    break
                guid, body, headers = queue.pop(0)
            status = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/webhook", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                results[guid] = status
                snapshot = dict(results)
            if after_each is not None:
                after_each(snapshot)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
