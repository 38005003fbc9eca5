# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small things the dispatcher tests share: a task, and a log (or record) that keeps its lines."""

from __future__ import annotations

from typing import Any

from rum_pool_webhook.tasks import Task

SLOT = "ci-hv1-1"
RUNNER = "ci-hv1-1-k3x9qa"


def task(task_id: int = 1, attempts: int = 0, runner: str | None = RUNNER, slot: str = SLOT,
         **more: Any) -> Task:
    return Task(id=task_id, slot=slot, runner=runner, delivery="d-1", attempts=attempts,
                created_at=0.0, **more)


class Lines(list):
    """A ``log`` callable that keeps the lines (or, as ``record``, the handles)."""

    def __call__(self, line: Any) -> None:
        self.append(line)
