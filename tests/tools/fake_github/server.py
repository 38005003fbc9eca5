# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fake GitHub over HTTP: in-process (``FakeGitHub().start()``) or as a command.

    python tests/tools/fake_github/server.py --port 0 --state DIR

prints its base URL on the first line of stdout and serves until killed. With ``--state`` the
state is loaded from and saved to ``DIR/state.json`` (and the URL written to ``DIR/url``), so a
restarted fake keeps its runners and credentials. Loopback only unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fake_github.model import FakeGitHubModel  # pylint: disable=import-error
else:
    from .model import FakeGitHubModel

MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model: FakeGitHubModel

    def version_string(self) -> str:
        return "GitHub.com"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        reply = self.model.handle(self.command, self.path, dict(self.headers.items()), body)
        if reply.delay:  # done, but answered late (after the client may have given up)
            time.sleep(reply.delay)
        if reply.reset:  # done, but the connection drops before any answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.body and self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (delay faults)
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: t.Any) -> None:  # pylint: disable=redefined-builtin
        if os.environ.get("FAKE_GITHUB_LOG"):
            sys.stderr.write("fake-github: " + (format % args) + "\n")


def _save(path: str, state: dict) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    os.chmod(tmp, 0o600)  # it holds test tokens
    os.replace(tmp, path)


class FakeGitHub:
    """The fake GitHub server. ``start()`` returns its base URL; ``stop()`` shuts it down.

    ``model`` is the request handler and state; tests may call its admin API over HTTP or poke
    ``model.state`` directly. ``clock`` is injectable (JWT expiry, rate-limit resets, tokens).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state_dir: str | None = None,
                 clock: t.Callable[[], float] = time.time, public_url: str | None = None):
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.public_url_override = public_url
        state = None
        self._state_file = None
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            self._state_file = os.path.join(state_dir, "state.json")
            if os.path.exists(self._state_file):
                with open(self._state_file, encoding="utf-8") as fh:
                    state = json.load(fh)
        self.model = FakeGitHubModel(clock=clock, state=state,
                                     on_change=self._persist if self._state_file else None)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def _persist(self, state: dict) -> None:
        if self._state_file:
            _save(self._state_file, state)

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"model": self.model})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        self.url = f"http://{shown}:{port}"
        self.model.public_url = (self.public_url_override or self.url).rstrip("/")
        httpd = self._httpd
        self._thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.05), name="fake-github",
                                        daemon=True)
        self._thread.start()
        if self.state_dir:
            with open(os.path.join(self.state_dir, "url"), "w", encoding="utf-8") as fh:
                fh.write(self.url + "\n")
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeGitHub:
        self.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()

    # Helpers for tests in the same process (the same operations as the admin API).
    def admin(self, method: str, path: str, data: t.Any = None) -> t.Any:
        body = json.dumps(data).encode() if data is not None else b""
        reply = self.model.handle(method, "/_fake" + path, {"Content-Type": "application/json"}, body)
        if reply.status >= 400:
            raise RuntimeError(f"fake GitHub admin {method} {path}: {reply.status} {reply.body!r}")
        return reply.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fake GitHub REST API for rum.pool tests.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--state", help="directory for state.json and url (kept across restarts)")
    parser.add_argument("--public-url", help="base URL to put in Link headers and JIT configs")
    parser.add_argument("--setup", help="JSON file with an admin /_fake/setup body to apply at start")
    args = parser.parse_args(argv)
    fake = FakeGitHub(host=args.host, port=args.port, state_dir=args.state, public_url=args.public_url)
    url = fake.start()
    if args.setup:
        with open(args.setup, encoding="utf-8") as fh:
            fake.admin("POST", "/setup", json.load(fh))
    print(url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
