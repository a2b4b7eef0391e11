"""Celery's benchmark app. The worker runs ``celery -A benchmarks.peers.celery_tasks:app``
with its configuration in ``BENCH_CELERY`` (JSON); the producer calls ``make_app``."""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

from .record import noop, stamp


def make_app(broker_url: str, queue: str, transport_options: dict[str, Any]) -> Celery:
    """A Celery app with no result backend, no remote control and no events."""
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
    app.task(name="bench.noop")(noop)
    app.task(name="bench.stamp")(stamp)
    return app


_config = os.environ.get("BENCH_CELERY")
app = make_app(**json.loads(_config)) if _config else None
