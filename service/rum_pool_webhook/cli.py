# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rum-pool-webhook`` command: ``serve`` and ``check-config``.

``serve`` opens the state database, re-queues work a previous run left unfinished, starts the
worker threads and the HTTP server, and runs until SIGTERM or SIGINT. It then stops accepting
requests, gives running tasks up to 60 seconds to finish, and exits 0; anything still queued
stays in the database for the next start.

``check-config`` validates the config file, builds the dispatcher, and in ansible-runner mode
proves that this user can run it (``preflight``: playbook, ``ansible-playbook`` on the run's
PATH, inventory and vault password readable, the inventory loads); it prints a summary without
secret values, or exits 2 with every problem on stderr.

Exit codes: 0 fine, 1 could not start (state dir, database, address in use), 2 bad config.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from . import __version__, preflight
from .app import make_server
from .config import Config, ConfigError, load_config
from .metrics import Metrics
from .store import Store, StoreError
from .worker import Worker

DEFAULT_CONFIG = "/etc/rum-pool/webhook.yml"
CONFIG_ENV = "RUM_POOL_WEBHOOK_CONFIG"
DRAIN_SECONDS = 60.0
LOGGER = "rum_pool_webhook"


def _build_dispatcher(config: Config) -> Any:
    from .dispatch import make_dispatcher  # pylint: disable=import-outside-toplevel

    return make_dispatcher(config.dispatcher, config.state_dir, config.keep_runs,
                           reconcile=config.reconcile)


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def summary(config: Config) -> list[str]:
    """Human-readable lines describing ``config``; never a secret value."""
    disp = config.dispatcher
    lines = [
        "config: %s" % (config.source or "-"),
        "listen: %s:%d" % (config.listen_host, config.listen_port),
        "secret: from %s" % (config.secret_source or "-"),
        "state_dir: %s" % config.state_dir,
        "pools: %s" % ", ".join(config.pools),
        "max_parallel: %d" % config.max_parallel,
        "retry: %d attempt(s), %g s apart" % (config.retry_attempts, config.retry_backoff),
        "keep_runs: %d" % config.keep_runs,
        "dispatcher: %s" % disp.get("kind"),
    ]
    if disp.get("kind") == "awx":
        lines += [
            "  url: %s" % disp.get("url"),
            "  job_template: %s" % disp.get("job_template"),
            "  token: from %s" % (("token_file %s" % disp["token_file"])
                                  if disp.get("token_file") else "environment RUM_POOL_AWX_TOKEN"),
            "  validate_certs: %s" % ("yes" if disp.get("validate_certs") else "no"),
            "  poll_seconds: %g" % disp.get("poll_seconds"),
        ]
    else:
        lines += [
            "  playbook: %s" % disp.get("playbook"),
            "  project_dir: %s" % (disp.get("project_dir") or "- (the installed collection)"),
            "  inventory: %s" % disp.get("inventory"),
            # Only the names: values may be credentials.
            "  extravars: %s" % (", ".join(sorted(disp.get("extravars") or {})) or "-"),
            "  envvars: %s" % (", ".join(sorted(disp.get("envvars") or {})) or "-"),
        ]
    lines.append("  timeout: %g s" % disp.get("timeout"))
    return lines


def _timers(config: Config, store: Store, worker: Worker, metrics: Metrics,
            clock: Callable[[], float], log: logging.Logger) -> Any:
    """The reconcile and redelivery timers the config asks for (``schedule``)."""
    from .github import HookDeliveries  # pylint: disable=import-outside-toplevel
    from .schedule import Redeliverer, Timers  # pylint: disable=import-outside-toplevel

    redeliverer = None
    if config.github is not None and config.github.get("interval_minutes", 0) > 0:
        redeliverer = Redeliverer(HookDeliveries(config.github, clock=clock), store, config.github,
                                  clock=clock, log=log.info, counter=metrics.redeliveries)
    return Timers(store, worker, config.reconcile, redeliverer,
                  (config.github or {}).get("interval_minutes", 0), clock=clock, log=log.info,
                  warn=log.warning, reconcile_counter=metrics.reconciles)


def serve(config: Config, dispatcher: Any = None, stop: threading.Event | None = None,
          clock: Callable[[], float] = time.time, logger: logging.Logger | None = None,
          drain_seconds: float = DRAIN_SECONDS,
          on_ready: Callable[[Any], None] | None = None) -> int:
    """Run the service until ``stop`` is set (or SIGTERM/SIGINT in the main thread).

    Tasks a crash left running are queued again with their handles, so their runs are followed
    rather than started twice. On stop, runs still going after ``drain_seconds`` are left to
    finish on their own, and the next start follows them.
    """
    log = logger or logging.getLogger(LOGGER)
    stop = stop or threading.Event()
    try:
        os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        log.error("state_dir %s: cannot create: %s", config.state_dir, exc.strerror or exc)
        return 1
    try:
        store = Store(os.path.join(config.state_dir, "state.db"))
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    started = False
    try:
        recovered = store.recover()
        if recovered:
            log.warning("%d task(s) interrupted by the last stop are queued again; runs they "
                        "started are followed, not started again", recovered)
        if dispatcher is None:
            try:
                dispatcher = _build_dispatcher(config)
            except Exception as exc:  # pylint: disable=broad-except  # DispatchError and kin
                log.error("dispatcher: %s", _error_text(exc))
                return 2
        kind = getattr(dispatcher, "kind", "?")
        worker = Worker(store, dispatcher, config.max_parallel, config.retry_attempts,
                        config.retry_backoff, clock=clock, log=log.info, warn=log.warning)
        metrics = Metrics(store.metrics, clock())
        timers = _timers(config, store, worker, metrics, clock, log)
        try:
            server = make_server(config, store, worker, kind, clock=clock, log=log.info,
                                 warn=log.warning, metrics=metrics,
                                 debug=log.debug if log.isEnabledFor(logging.DEBUG) else None)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", config.listen_host, config.listen_port,
                      exc.strerror or exc)
            return 1
        started = True
    finally:
        if not started:
            store.close()

    worker.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="rum-pool-http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    log.info("rum-pool-webhook %s listening on http://%s:%d/ (dispatcher %s, pools %s, "
             "max_parallel %d)", __version__, host, port, kind, ", ".join(config.pools),
             config.max_parallel)
    for line in timers.describe():
        log.info("%s", line)
    timers.start()
    start_standby = getattr(dispatcher, "start_standby", None)
    if callable(start_standby):
        log.info("warm standby: recreate.yml is kept started ahead of the next task")
        start_standby(log.warning)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        def _on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        if on_ready is not None:
            on_ready(server)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopping: no new requests; waiting up to %g s for running tasks", drain_seconds)
        timers.stop()
        server.shutdown()
        server.server_close()
        thread.join(5)
        close = getattr(dispatcher, "close", None)
        if callable(close):
            close()  # a standby nobody took
        if worker.stop(drain_seconds):
            log.info("stopped")
        else:
            log.warning("runs still going after %g s are left to finish; the next start "
                        "follows them", drain_seconds)
        store.close()
    return 0


def check_config(path: str, out: Any = None, build_dispatcher: bool = True) -> int:
    """Validate ``path`` and prove the dispatcher can run as this user (``preflight``); print a
    summary and the checks (exit 0), or every problem found (exit 2)."""
    out = out or sys.stdout
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write("rum-pool-webhook: %s\n" % exc)
        return 2
    findings = []
    if build_dispatcher:
        try:
            dispatcher = _build_dispatcher(config)
        except Exception as exc:  # pylint: disable=broad-except  # DispatchError and kin
            sys.stderr.write("rum-pool-webhook: dispatcher: %s\n" % _error_text(exc))
            return 2
        if config.dispatcher.get("kind") == "ansible-runner":
            findings = preflight.check_ansible_runner(config.dispatcher, dispatcher)
    problems = [f for f in findings if not f.ok]
    if problems:
        for finding in problems:
            sys.stderr.write("rum-pool-webhook: %s\n" % finding.line())
        return 2
    for line in summary(config) + ["check: " + f.line() for f in findings]:
        out.write(line + "\n")
    out.write("ok\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV, DEFAULT_CONFIG),
                        help="the YAML config file (default: $%s or %s)"
                        % (CONFIG_ENV, DEFAULT_CONFIG))
    common.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="the least important messages logged (default: info)")
    parser = argparse.ArgumentParser(
        prog="rum-pool-webhook",
        description="Receive GitHub workflow_job webhooks and have rum.pool slots recreated.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("serve", parents=[common], help="run the service until SIGTERM/SIGINT")
    sub.add_parser("check-config", parents=[common],
                   help="validate the config file and print a summary without secrets")
    return parser


def setup_logging(level: str) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%Y-%m-%dT%H:%M:%S%z"))
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False
    return logger


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logger = setup_logging(args.log_level)
    if args.command == "check-config":
        return check_config(args.config)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    return serve(config, logger=logger)


if __name__ == "__main__":
    sys.exit(main())
