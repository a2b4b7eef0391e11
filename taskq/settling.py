"""Carry out a policy decision on a claimed message: ack, retry later, or dead-letter.

Used by the worker loop for attempts that ended in the task, and by the
supervisor for attempts that ended with the process (killed, timed out).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .brokers.base import Broker, Delivery
from .crashpoints import crash_point
from .errors import BadSignature, MessageError, UnsafeEntry, describe_error, safe_str
from .keys import Keyring
from .message import Message, decode, encode
from .policy import Ack, Dead, Decision, Outcome, RetryAt
from .results import RETRY, failure_record, success_record

log = logging.getLogger("taskq.worker")


class Settler:
    def __init__(self, broker: Broker, key: Keyring, worker: str) -> None:
        self.broker = broker
        self.key = key
        self.worker = worker

    def succeeded(self, delivery: Delivery, message: Message, value: Any) -> None:
        # The result is stored before the ack: a crash between the two runs the
        # task again (at-least-once), it never loses the outcome.
        if not message.ignore_result:
            self.broker.store_result(
                message.id, success_record(message.id, message.task, value, self.key)
            )
        crash_point("result.stored")
        self.broker.ack(delivery)
        crash_point("ack.done")

    def expired(self, delivery: Delivery, message: Message, error: BaseException) -> None:
        """Drop a message whose ``expires`` passed; ``.get()`` then raises ``error``."""
        if not message.ignore_result:
            record = failure_record(message.id, message.task, error, self.key)
            self.broker.store_result(message.id, record)
        self.broker.ack(delivery)

    def apply(
        self,
        delivery: Delivery,
        message: Message,
        payload: bytes,
        decision: Decision,
        outcome: Outcome,
        error: BaseException,
    ) -> None:
        """Settle an attempt that did not succeed."""
        attempts = (*message.attempts, self._attempt(outcome, error))
        if isinstance(decision, Ack):
            self.broker.ack(delivery)
        elif isinstance(decision, RetryAt):
            again = message.replace(
                retries=message.retries + 1, eta=decision.eta, attempts=attempts
            )
            if not message.ignore_result:
                record = failure_record(message.id, message.task, error, self.key, status=RETRY)
                self.broker.store_result(message.id, record)
            crash_point("retry.marked")
            self.broker.retry_later(delivery, again, encode(again, payload, self.key))
        elif isinstance(decision, Dead):
            if not message.ignore_result:
                record = failure_record(message.id, message.task, error, self.key)
                self.broker.store_result(message.id, record)
            self.broker.dead_letter(
                delivery, dead_record(delivery, message, decision.reason, error, attempts)
            )

    def open(self, delivery: Delivery) -> tuple[Message, bytes] | None:
        """Verify and parse a delivery: its envelope and (still pickled) payload.

        One that cannot be trusted or understood is dead-lettered here, never
        unpickled: ``unsafe`` (not a regular file: quarantined unread),
        ``bad-signature`` or ``undecodable``; then None.
        """
        if delivery.unsafe:
            log.error("Entry %s is not a message file: quarantined", delivery.name)
            self.reject(delivery, "unsafe-entry", UnsafeEntry(delivery.unsafe))
            return None
        try:
            return decode(delivery.data, self.key)
        except BadSignature as exc:
            log.error("Message %s has a bad signature: dead-lettered unopened", delivery.name)
            self.reject(delivery, "bad-signature", exc)
        except MessageError as exc:
            log.error("Message %s cannot be decoded (%s): dead-lettered", delivery.name, exc)
            self.reject(delivery, "undecodable", exc)
        return None

    def reject(self, delivery: Delivery, reason: str, error: BaseException) -> None:
        """Dead-letter a message that cannot be trusted or understood (never unpickled)."""
        self.broker.dead_letter(delivery, dead_record(delivery, None, reason, error, ()))

    def _attempt(self, outcome: Outcome, error: BaseException) -> Mapping[str, Any]:
        return {
            "at": _iso(time.time()),
            "worker": self.worker,
            "outcome": outcome.value,
            "error": describe_error(error),
        }


def dead_record(
    delivery: Delivery,
    message: Message | None,
    reason: str,
    error: BaseException,
    attempts: tuple[Mapping[str, Any], ...],
) -> dict[str, Any]:
    """The readable record kept beside a dead message."""
    record: dict[str, Any] = {
        "id": message.id if message else None,
        "task": message.task if message else None,
        "queue": delivery.queue,
        "file": delivery.name,
        "reason": reason,
        "died_at": _iso(time.time()),
        "exc_type": type(error).__name__,
        "exc_message": safe_str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
    if message is not None:
        record["retries"] = message.retries
        record["max_retries"] = message.max_retries
        record["attempts"] = list(attempts)
    return record


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
