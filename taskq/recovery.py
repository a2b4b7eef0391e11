"""Settle the claims of a consumer whose process is gone.

The kernel dropped the dead consumer's lock, so whoever takes it owns its
claims. Each one is either given back untouched (we stopped the process on
purpose: shutdown) or counted as a failed attempt and settled by the retry
policy, so a message that kills its worker again and again ends in dead/ as
poison instead of looping forever.
"""

from __future__ import annotations

import logging
import time

from .brokers.base import Broker
from .crashpoints import crash_point
from .errors import TaskqError
from .policy import Outcome, settle
from .settling import Settler
from .worker import describe

log = logging.getLogger("taskq.recovery")


def recover_consumer(
    broker: Broker,
    key: bytes,
    consumer: str,
    outcome: Outcome | None,
    error_type: type[TaskqError],
    recovered_by: str,
) -> int:
    """Settle every message ``consumer`` held; ``outcome=None`` requeues them uncounted.

    Returns how many messages were settled (0 if the consumer is alive or
    another process recovered it first).
    """
    deliveries = broker.recover(consumer)
    if deliveries is None:
        return 0
    crash_point("recovery.taken")
    settler = Settler(broker, key, consumer)
    for delivery in deliveries:
        if outcome is None:
            broker.requeue(delivery)
            log.info("Message %s returned to ready/ (worker stopped)", delivery.name)
            continue
        opened = settler.open(delivery)
        if opened is None:
            continue
        message, payload = opened
        error = error_type(
            f"task {message.task}[{message.id}]: worker {consumer} "
            + ("passed the hard time limit" if outcome is Outcome.TIME_LIMIT else "died")
        )
        decision = settle(message, outcome, time.time())
        settler.apply(delivery, message, payload, decision, outcome, error)
        describe(message, decision, error)
        crash_point("recovery.settled-one")
    broker.forget_consumer(consumer)
    if deliveries:
        log.info(
            "Recovered %d message(s) of consumer %s (by %s)",
            len(deliveries),
            consumer,
            recovered_by,
        )
    return len(deliveries)
