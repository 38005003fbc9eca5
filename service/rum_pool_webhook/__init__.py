# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum-pool-webhook: GitHub ``workflow_job`` webhooks in, rum.pool slot recreation out.

The data path: ``app`` verifies and parses a delivery (``signature``, ``events``), ``store``
persists it and queues a task per slot, ``worker`` threads hand queued tasks to a dispatcher
(``dispatch``: ansible-runner or AWX), and ``status_page`` shows what is going on.
"""

__version__ = "0.1.0"
