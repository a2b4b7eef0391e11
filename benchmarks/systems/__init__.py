"""One adapter module per system; ``load(name)`` imports only the one asked for, so a
missing peer package never stops the others."""

from __future__ import annotations

import importlib

from .base import System

MODULES = {
    "taskq": "taskq_default",
    "taskq-durable": "taskq_durable",
    "taskq-redis": "taskq_redis",
    "taskq+monitoring": "taskq_monitored",
    "taskq-redis+monitoring": "taskq_monitored:TaskqRedisMonitoredSystem",
    "celery-redis": "celery_redis",
    "celery-rabbitmq": "celery_rabbitmq",
    "celery-filesystem": "celery_filesystem",
    "rq": "rq_redis",
    "huey-redis": "huey_redis",
    "huey-sqlite": "huey_sqlite",
    "huey-file": "huey_file",
    "dramatiq-redis": "dramatiq_redis",
    "dramatiq-rabbitmq": "dramatiq_rabbitmq",
}


def load(name: str) -> System:
    """The adapter for ``name`` (a key of ``MODULES``)."""
    module_name, _, class_name = MODULES[name].partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    system: System = getattr(module, class_name or "SYSTEM")()
    return system
