"""Settle the claims of a consumer whose process is gone.

The kernel dropped the dead consumer's lock, so whoever takes it owns its
claims. Each one is either given back untouched (we stopped the process on
purpose: shutdown) or counted as a failed attempt and settled by the retry
policy, so a message that kills its worker again and again ends in dead/ as
poison instead of looping forever.
"""

from __future__ import annotations

import logging

from .brokers.base import Broker, Delivery
from .crashpoints import crash_point
from .errors import TaskqError
from .events import Recorder
from .keys import Keyring
from .policy import Outcome
from .settling import Settler, Unopened, classify
from .tally import Tally
from .worker import describe

log = logging.getLogger("taskq.recovery")


def recover_consumer(
    broker: Broker,
    key: Keyring,
    consumer: str,
    outcome: Outcome | None,
    error_type: type[TaskqError],
    recovered_by: str,
    events: Recorder | None = None,
    tally: Tally | None = None,
) -> int:
    """Settle every message ``consumer`` held; ``outcome=None`` requeues them uncounted.

    Returns how many messages were settled (0 if the consumer is alive or
    another process recovered it first).
    """
    deliveries = broker.recover(consumer)
    if deliveries is None:
        return 0
    crash_point("recovery.taken")
    settler = Settler(broker, key, consumer, events)
    try:
        for delivery in deliveries:
            _settle(broker, settler, delivery, outcome, error_type, events, tally)
            crash_point("recovery.settled-one")
    except BaseException:
        # A full disk, say, half-way: the messages settled so far left claimed/,
        # the rest are still there. Releasing the dead consumer lets the next
        # sweep take them over, so none is lost.
        broker.abandon_recovery(consumer)
        raise
    broker.forget_consumer(consumer)
    if deliveries:
        log.info(
            "Recovered %d message(s) of consumer %s (by %s)",
            len(deliveries),
            consumer,
            recovered_by,
        )
    return len(deliveries)


def _settle(
    broker: Broker,
    settler: Settler,
    delivery: Delivery,
    outcome: Outcome | None,
    error_type: type[TaskqError],
    events: Recorder | None,
    tally: Tally | None,
) -> None:
    if outcome is None or not delivery.started:
        _requeued(events, settler, delivery)
        broker.requeue(delivery)
        why = "worker stopped" if outcome is None else "taken ahead, never started"
        log.info("Message %s returned to ready/ (%s)", delivery.name, why)
        return
    opened = settler.open(delivery)
    if opened is None:
        return
    message, payload = opened
    error = error_type(
        f"task {message.task}[{message.id}]: worker {delivery.consumer} "
        + ("passed the hard time limit" if outcome is Outcome.TIME_LIMIT else "died")
    )
    settled = settler.settle(delivery, message, payload, outcome, error)
    describe(message, settled)
    if events is not None:
        events.record("recovered", message, consumer=delivery.consumer, requeued=False)
        events.settled(message, settled.outcome, settled.decision, settled.value, None)
    if tally is not None:
        tally.recovered(message.task)
        tally.settled(message.task, settled.outcome, settled.decision, None)


def _requeued(events: Recorder | None, settler: Settler, delivery: Delivery) -> None:
    """The ``recovered`` event of a claim given back unopened, if its envelope reads."""
    if events is None:
        return
    opened = classify(delivery.data, settler.key, delivery.unsafe)
    if not isinstance(opened, Unopened):
        events.record("recovered", opened[0], consumer=delivery.consumer, requeued=True)
