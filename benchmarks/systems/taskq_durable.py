"""taskq with ``durable = true``: every publish is fsynced (a ``map`` batch once)."""

from __future__ import annotations

from .taskq_default import TaskqSystem


class TaskqDurableSystem(TaskqSystem):
    name = "taskq-durable"
    durable = True
    worker_mode = (
        "`taskq worker --concurrency 2` with `TASKQ_DURABLE=true`; "
        "the producer's `App(durable=True)`"
    )


SYSTEM = TaskqDurableSystem
