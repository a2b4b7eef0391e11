"""Celery's benchmark app. The worker runs ``celery -A benchmarks.peers.celery_tasks:app``
with its configuration in ``BENCH_CELERY`` (JSON); the producer calls ``make_app``."""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

from .record import noop, slow, stamp

# W5's "reliable" row: acknowledge after the task, requeue a task whose pool process
# died, and reserve one message per process (Celery's documentation on acks_late,
# task_reject_on_worker_lost and prefetching).
RELIABLE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def make_app(
    broker_url: str, queue: str, transport_options: dict[str, Any], reliable: bool = False
) -> Celery:
    """A Celery app with no result backend, no remote control and no events; with
    ``reliable``, the settings of ``RELIABLE``."""
    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    if reliable:
        app.conf.update(RELIABLE)
    app.task(name="bench.noop")(noop)
    app.task(name="bench.stamp")(stamp)
    app.task(name="bench.slow")(slow)
    return app


_config = os.environ.get("BENCH_CELERY")
app = make_app(**json.loads(_config)) if _config else None
