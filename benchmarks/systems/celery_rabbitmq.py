"""Celery + RabbitMQ (py-amqp). The queue and its exchange are named after the token and
deleted afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import AMQP_URL, RABBITMQ, rabbitmq_delete, rabbitmq_version
from .celery_common import CelerySystem


class CeleryRabbitmqSystem(CelerySystem):
    name = "celery-rabbitmq"
    packages = ("celery", "kombu", "pika")
    servers = (("RabbitMQ", RABBITMQ),)
    chaos_recovery = (
        "with `acks_late`: a pool process's death requeues at once "
        "(`task_reject_on_worker_lost`), the consumer's death closes its connection and "
        "RabbitMQ redelivers its unacknowledged messages at once; with Celery's defaults a "
        "message is acknowledged on receipt and a kill loses it"
    )
    chaos_recovery_s = 0.0

    def config(self, work: Path, token: str) -> dict[str, Any]:
        return {"broker_url": AMQP_URL.replace("amqp://", "pyamqp://"), "transport_options": {}}

    def versions(self) -> dict[str, str]:
        return {"RabbitMQ server": rabbitmq_version()}

    def close(self) -> None:
        super().close()
        rabbitmq_delete(queues=[self.queue], exchanges=[self.queue])


SYSTEM = CeleryRabbitmqSystem
