"""taskq with events and Prometheus metrics on (docs/monitoring.md): the producer
records ``published`` events, the worker its tasks' events and serves metrics. The
same brokers as ``taskq`` and ``taskq-redis``, to measure what monitoring costs."""

from __future__ import annotations

from .taskq_default import TaskqSystem
from .taskq_redis import TaskqRedisSystem

_MODE = " with `TASKQ_EVENTS=true` and `TASKQ_METRICS_PORT` set; the producer's `App(events=True)`"


class TaskqMonitoredSystem(TaskqSystem):
    name = "taskq+monitoring"
    monitored = True
    worker_mode = TaskqSystem.worker_mode + _MODE


class TaskqRedisMonitoredSystem(TaskqRedisSystem):
    name = "taskq-redis+monitoring"
    monitored = True
    worker_mode = TaskqRedisSystem.worker_mode + _MODE


SYSTEM = TaskqMonitoredSystem
