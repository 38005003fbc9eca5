# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The command line: check-config, and serve (in-process and as a real process with SIGTERM)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from rum_pool_webhook import __version__, cli
from rum_pool_webhook.config import Config
from rum_pool_webhook.signature import sign
from rum_pool_webhook.tasks import Result

SECRET = "cli-test-secret-value"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture()
def cfg(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    (tmp_path / "inventory").write_text("localhost ansible_connection=local\n")
    (tmp_path / "recreate.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n        msg: '{{ slot }}'\n")
    path = tmp_path / "webhook.yml"
    path.write_text(
        "listen: {host: 127.0.0.1, port: 0}\n"
        "secret_file: secret\n"
        "state_dir: state\n"
        "pools: [ci]\n"
        "dispatcher:\n"
        "  kind: ansible-runner\n"
        "  playbook: %s\n"
        "  inventory: inventory\n"
        "  extravars: {vault_password: hunter2}\n" % (tmp_path / "recreate.yml"))
    return path


def test_check_config_prints_a_summary_without_secrets(cfg, capsys):
    assert cli.main(["check-config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "pools: ci" in out and "dispatcher: ansible-runner" in out
    assert "secret: from secret_file %s" % (cfg.parent / "secret") in out
    assert "extravars: vault_password" in out
    assert out.endswith("ok\n")
    assert SECRET not in out and "hunter2" not in out


def test_check_config_exit_2_with_the_config_error(cfg, capsys):
    os.chmod(cfg.parent / "secret", 0o640)
    assert cli.main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err == ("rum-pool-webhook: secret_file %s: mode 0640 is readable by group/others; "
                   "chmod 600 it\n" % (cfg.parent / "secret"))


def test_check_config_exit_2_when_the_dispatcher_cannot_be_built(cfg, capsys):
    os.unlink(cfg.parent / "inventory")
    assert cli.main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rum-pool-webhook: dispatcher: ")
    assert "inventory" in err


def test_summary_of_an_awx_config_hides_the_token():
    config = Config(secret=b"s", pools=["ci"], secret_source="environment X", dispatcher={
        "kind": "awx", "url": "https://awx", "job_template": 9, "token": "tok-value",
        "token_file": "/etc/t", "validate_certs": False, "poll_seconds": 5.0, "timeout": 60.0})
    text = "\n".join(cli.summary(config))
    assert "token: from token_file /etc/t" in text and "tok-value" not in text
    assert "job_template: 9" in text and "validate_certs: no" in text


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append((record.levelname, record.getMessage()))

    def text(self):
        return "\n".join(record[1] for record in self.records)


def make_logger(name):
    logger = logging.getLogger("test-rum-pool-webhook-" + name)
    logger.handlers[:] = []
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, handler


def post_completed(port, example, delivery="cli-1", runner="ci-hv1-1-k3x9qa"):
    body = json.dumps(example("completed", runner_name=runner)).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/webhook", body, {
        "Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
        "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sign(SECRET.encode(), body)})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def run_serve(config, dispatcher, name, drain_seconds=60.0, level=logging.DEBUG):
    logger, handler = make_logger(name)
    logger.setLevel(level)
    stop = threading.Event()
    ready = []
    result = []
    thread = threading.Thread(target=lambda: result.append(cli.serve(
        config, dispatcher=dispatcher, stop=stop, logger=logger, drain_seconds=drain_seconds,
        on_ready=ready.append)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not ready and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return stop, ready, result, thread, handler


def test_serve_runs_a_task_and_stops_cleanly(tmp_path, example, fake_dispatcher_cls):
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=SECRET.encode(),
                    state_dir=str(tmp_path / "state"), pools=["ci"])
    dispatcher = fake_dispatcher_cls()
    stop, ready, result, thread, handler = run_serve(config, dispatcher, "ok")
    assert ready, handler.text()
    port = ready[0].server_address[1]
    assert post_completed(port, example) == (202, {"queued": 1, "slot": "ci-hv1-1"})
    assert dispatcher.started.acquire(timeout=10)
    deadline = time.monotonic() + 10
    while "done in" not in handler.text() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert result == [0]
    text = handler.text()
    assert "rum-pool-webhook %s listening on http://127.0.0.1:%d/" % (__version__, port) in text
    assert "task 1 slot ci-hv1-1: started (attempt 1/3)" in text
    assert "task 1 slot ci-hv1-1: done in" in text
    assert "stopped" in text
    assert oct(os.stat(config.state_dir).st_mode & 0o777) == "0o700"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_serve_stops_after_the_drain_time_and_requeues_at_next_start(tmp_path, example,
                                                                     fake_dispatcher_cls):
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=SECRET.encode(),
                    state_dir=str(tmp_path / "state"), pools=["ci"])
    gate = threading.Event()
    detached = []

    class Detachable(fake_dispatcher_cls):
        def run(self, task, log, record=None):
            result = super().run(task, log, record)
            return Result(False, "left running", detached=True) if detached else result

        def detach_all(self):
            detached.append(1)
            gate.set()

    dispatcher = Detachable(gate=gate)
    stop, ready, result, thread, handler = run_serve(config, dispatcher, "drain",
                                                     drain_seconds=0.3)
    port = ready[0].server_address[1]
    assert post_completed(port, example)[0] == 202
    assert dispatcher.started.acquire(timeout=10)
    stop.set()
    thread.join(15)
    assert result == [0] and detached == [1]
    assert "runs still going after 0.3 s are left to finish; the next start follows them" in \
        handler.text()
    # the task stays running in the database: the next start takes it up again
    from rum_pool_webhook.store import Store  # pylint: disable=import-outside-toplevel
    store = Store(str(tmp_path / "state" / "state.db"))
    try:
        assert store.task_counts() == {"queued": 0, "running": 1}
    finally:
        store.close()


def test_serve_recovers_interrupted_tasks_at_start(tmp_path, fake_dispatcher_cls):
    from rum_pool_webhook.store import Store

    state = tmp_path / "state"
    state.mkdir()
    store = Store(str(state / "state.db"))
    store.enqueue("ci-hv1-1", "ci-hv1-1-aaaaaa", "d1", time.time())
    store.claim(time.time())
    store.close()
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=b"x",
                    state_dir=str(state), pools=["ci"])
    dispatcher = fake_dispatcher_cls()
    stop, ready, result, thread, handler = run_serve(config, dispatcher, "recover")
    assert dispatcher.started.acquire(timeout=10)
    stop.set()
    thread.join(10)
    assert result == [0]
    assert "1 task(s) interrupted by the last stop are queued again" in handler.text()
    assert dispatcher.calls[0].runner == "ci-hv1-1-aaaaaa"


def test_serve_exit_1_when_the_port_is_taken(tmp_path, fake_dispatcher_cls):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        config = Config(listen_host="127.0.0.1", listen_port=taken.getsockname()[1],
                        secret=b"x", state_dir=str(tmp_path / "state"), pools=["ci"])
        logger, handler = make_logger("port")
        assert cli.serve(config, dispatcher=fake_dispatcher_cls(), logger=logger) == 1
        assert "cannot listen on 127.0.0.1:%d" % taken.getsockname()[1] in handler.text()
    finally:
        taken.close()


def test_serve_exit_2_when_the_dispatcher_cannot_be_built(tmp_path):
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=b"x",
                    state_dir=str(tmp_path / "state"), pools=["ci"],
                    dispatcher={"kind": "awx", "url": "https://awx", "job_template": 1,
                                "token": ""})
    logger, handler = make_logger("disp")
    assert cli.serve(config, logger=logger) == 2
    assert handler.records[-1][0] == "ERROR"
    assert handler.records[-1][1].startswith("dispatcher: ")


def test_real_process_serves_and_exits_0_on_sigterm(cfg):
    with open(cfg, "a", encoding="utf-8") as fh:  # no pool reconcile at start in this test
        fh.write("reconcile: {at_start: false, interval_minutes: 60}\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RUM_POOL_WEBHOOK_SECRET", None)
    proc = subprocess.Popen(
        [os.path.join(VENV_BIN, "rum-pool-webhook"), "serve", "--config", str(cfg),
         "--log-level", "debug"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    lines = []
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:([0-9]+)/", line)
            if found:
                port = int(found.group(1))
        assert port, "".join(lines)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {"ok": True, "queued": 0,
                                                                "running": 0})
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        lines.append(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} INFO rum-pool-webhook ", text,
                     re.M), text
    assert '"GET /healthz" 200' in text
    assert "received SIGTERM" in text and "stopped" in text
    assert SECRET not in text and "hunter2" not in text
    assert os.path.exists(cfg.parent / "state" / "state.db")


def test_version_and_help():
    out = subprocess.run([os.path.join(VENV_BIN, "rum-pool-webhook"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "rum-pool-webhook %s" % __version__
    parser = cli.build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args([])
    assert info.value.code == 2
    args = parser.parse_args(["serve", "-c", "/x.yml", "--log-level", "warning"])
    assert (args.command, args.config, args.log_level) == ("serve", "/x.yml", "warning")


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_serve_logs_quiet_deliveries_at_debug_only(tmp_path, example, fake_dispatcher_cls, level):
    config = Config(listen_host="127.0.0.1", listen_port=0, secret=SECRET.encode(),
                    state_dir=str(tmp_path / "state"), pools=["ci"])
    stop, ready, result, thread, handler = run_serve(config, fake_dispatcher_cls(), "quiet-%d" % level,
                                                     level=level)
    assert ready, handler.text()
    port = ready[0].server_address[1]
    try:
        assert post_completed(port, example, delivery="q-1")[0] == 202
        assert post_completed(port, example, delivery="q-1") == (200, {"duplicate": True})
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]
    lines = [(lvl, msg) for lvl, msg in handler.records if " delivery q-1 " in msg]
    expected = [("INFO", "202")] + ([("DEBUG", "200")] if level == logging.DEBUG else [])
    assert [(lvl, msg.split('"')[2].split()[0]) for lvl, msg in lines] == expected
