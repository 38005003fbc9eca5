# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum-pool-webhook: GitHub ``workflow_job`` webhooks in, rum.pool slot recreation out.

The data path: ``app`` (aiohttp) verifies a delivery as it streams in (``signature``) and
parses it (``events``); ``store`` persists it and queues a task per slot, answering only once
its group commit is on disk; ``worker`` threads hand queued ``tasks`` to a dispatcher
(``dispatch``: ``dispatch_runner`` with its detached ``runner_job``, or ``dispatch_awx``), which
records what it starts so a restart follows it instead of starting it again. ``schedule`` runs
the pool's reconcile and, through ``github``, asks GitHub to redeliver what failed; ``metrics``
and ``status_page`` show what is going on.
"""

__version__ = "0.1.0"
