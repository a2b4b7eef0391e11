"""Dramatiq + RabbitMQ (pika): the queue and its delay and dead-letter queues are named
after the token and deleted afterwards."""

from __future__ import annotations

from .base import AMQP_URL, RABBITMQ, rabbitmq_delete, rabbitmq_version
from .dramatiq_common import DramatiqSystem


class DramatiqRabbitmqSystem(DramatiqSystem):
    name = "dramatiq-rabbitmq"
    packages = ("dramatiq", "pika")
    servers = (("RabbitMQ", RABBITMQ),)
    kind = "rabbitmq"
    url = AMQP_URL
    chaos_recovery = (
        "a dead worker process stops the whole `dramatiq` command (the driver starts it "
        "again); RabbitMQ redelivers a closed connection's unacknowledged messages at once"
    )
    chaos_recovery_s = 0.0

    def versions(self) -> dict[str, str]:
        return {"RabbitMQ server": rabbitmq_version()}

    def close(self) -> None:
        super().close()
        rabbitmq_delete(queues=[self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"])


SYSTEM = DramatiqRabbitmqSystem
