"""Open a claimed delivery, and carry out the policy's decision on it: ack,
retry later, or dead-letter.

``classify`` is the one place a message's bytes are verified and parsed (the
worker, recovery and ``taskq dead retry`` all go through it). ``Settler`` asks
``policy.settle`` what to do with a delivery and does it; it decides nothing.
Used by the worker loop for every delivery, and by the supervisor for attempts
that ended with the process (killed, timed out).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .brokers.base import Broker, Delivery
from .crashpoints import crash_point
from .errors import (
    BadSignature,
    BrokerError,
    ChordFailed,
    MessageError,
    SerializationError,
    UnsafeEntry,
    describe_error,
    safe_str,
)
from .events import Recorder
from .keys import Keyring
from .message import Message, decode, encode
from .policy import Ack, Dead, Decision, Outcome, RetryAt, settle
from .results import FAILURE, RETRY, REVOKED, failure_record, success_record
from .workflow import FollowUps, first_copy, on_open

log = logging.getLogger("taskq.worker")


@dataclass(frozen=True, slots=True)
class Unopened:
    """A message that cannot be trusted or understood, and which outcome that is."""

    outcome: Outcome
    error: MessageError


def classify(data: bytes, key: Keyring, unsafe: str = "") -> tuple[Message, bytes] | Unopened:
    """Verify and parse a message: its envelope and (still pickled) payload.

    Never unpickles: an entry that is not a regular file (``unsafe`` says what
    it is) is not even read; a bad signature is rejected before parsing.
    """
    if unsafe:
        return Unopened(Outcome.UNSAFE_ENTRY, UnsafeEntry(unsafe))
    try:
        return decode(data, key)
    except BadSignature as exc:
        return Unopened(Outcome.BAD_SIGNATURE, exc)
    except MessageError as exc:
        return Unopened(Outcome.UNDECODABLE, exc)


@dataclass(frozen=True, slots=True)
class Settled:
    """How a delivery ended (``value``: the return value or the error) and what
    was done with it."""

    outcome: Outcome
    value: Any
    decision: Decision


# The log line for a delivery that could not be opened.
_UNOPENED_LOG = {
    Outcome.UNSAFE_ENTRY: "Entry {name} is not a message file: quarantined",
    Outcome.BAD_SIGNATURE: "Message {name} has a bad signature: dead-lettered unopened",
    Outcome.UNDECODABLE: "Message {name} cannot be decoded ({error}): dead-lettered",
}


class Settler:
    def __init__(
        self, broker: Broker, key: Keyring, worker: str, events: Recorder | None = None
    ) -> None:
        """``events`` records the follow-ups a workflow publishes."""
        self.broker = broker
        self.key = key
        self.worker = worker
        self.follow_ups = FollowUps(broker, key, events)

    def open(self, delivery: Delivery) -> tuple[Message, bytes] | None:
        """The delivery's envelope and (still pickled) payload; or, for one that
        cannot be trusted or understood, None once it is settled (dead-lettered
        unread: ``unsafe-entry``, ``bad-signature`` or ``undecodable``)."""
        opened = classify(delivery.data, self.key, delivery.unsafe)
        if not isinstance(opened, Unopened):
            return self._workflow(delivery, *opened) if opened[0].workflow else opened
        log.error(_UNOPENED_LOG[opened.outcome].format(name=delivery.name, error=opened.error))
        self.settle(delivery, None, b"", opened.outcome, opened.error)
        return None

    def _workflow(
        self, delivery: Delivery, message: Message, payload: bytes
    ) -> tuple[Message, bytes] | None:
        """A workflow message made ready to run (see ``workflow.on_open``); None
        once a chord callback whose member failed is dead-lettered unrun, or a
        second copy of a chord callback is dropped (``workflow.first_copy``)."""
        if not first_copy(self.broker, message):
            log.warning(
                "Task %s[%s]: second copy of a chord callback dropped", message.task, message.id
            )
            self.broker.ack(delivery)
            return None
        ready = on_open(message, payload)
        if not isinstance(ready, ChordFailed):
            return ready
        log.error("Task %s[%s] dead-lettered: %s", message.task, message.id, ready)
        self.settle(delivery, message, payload, Outcome.CHORD_FAILED, ready)
        return None

    def settle(
        self,
        delivery: Delivery,
        message: Message | None,
        payload: bytes,
        outcome: Outcome,
        value: Any,
        countdown: float | None = None,
    ) -> Settled:
        """Carry out ``policy.settle``'s decision for a delivery that ended with
        ``outcome``; ``value`` is the task's return value or the error."""
        decision = settle(message, outcome, time.time(), countdown)
        try:
            self._carry_out(delivery, message, payload, outcome, value, decision)
        except SerializationError as exc:
            if outcome is not Outcome.SUCCEEDED:
                raise
            # Running it again would return the same value: an outcome of its own.
            return self.settle(delivery, message, payload, Outcome.UNSERIALIZABLE_RESULT, exc)
        return Settled(outcome, value, decision)

    def _carry_out(
        self,
        delivery: Delivery,
        message: Message | None,
        payload: bytes,
        outcome: Outcome,
        value: Any,
        decision: Decision,
    ) -> None:
        if message is None:  # never opened: no result to store, no attempts to count
            assert isinstance(decision, Dead), "policy dead-letters every unopened delivery"
            self.broker.dead_letter(
                delivery, dead_record(delivery, None, decision.reason, value, ())
            )
            return
        # The result is stored before the ack: a crash between the two runs the
        # task again (at-least-once), it never loses the outcome.
        record = b""
        if not message.ignore_result or message.workflow:
            record = self._result(message, outcome, value, decision)
        if not message.ignore_result:
            self.broker.store_result(message.id, record)
        # Follow-ups too (next chain step, links, chord): sent again, never lost.
        if message.workflow and not isinstance(decision, RetryAt):
            self.follow_ups.settled(message, outcome is Outcome.SUCCEEDED, value, record)
        if isinstance(decision, Ack):
            crash_point("result.stored")
            self.broker.ack(delivery)
            crash_point("ack.done")
        else:
            attempts = (*message.attempts, self._attempt(outcome, value))
            if isinstance(decision, RetryAt):  # the new attempt keeps a unique key held
                again = message.replace(
                    retries=message.retries + 1, eta=decision.eta, attempts=attempts
                )
                crash_point("retry.marked")
                self.broker.retry_later(delivery, again, encode(again, payload, self.key))
                return
            self.broker.dead_letter(
                delivery, dead_record(delivery, message, decision.reason, value, attempts)
            )
        if message.unique:
            self._release(message)

    def _release(self, message: Message) -> None:
        """Let a unique key go once its message is settled for good (after, not
        before: a crash between leaves the key held until its lifetime passes,
        never a second call enqueued while this one could still run)."""
        try:
            self.broker.release_unique(message.unique, message.id)
        except (OSError, BrokerError) as exc:  # settled already: its lifetime is the backstop
            log.warning(
                "Task %s[%s]: its unique key could not be released (%s): it lapses "
                "after the task's unique_for",
                message.task,
                message.id,
                exc,
            )

    def _result(self, message: Message, outcome: Outcome, value: Any, decision: Decision) -> bytes:
        if outcome is Outcome.SUCCEEDED:
            return success_record(message.id, message.task, value, self.key)
        status = RETRY if isinstance(decision, RetryAt) else FAILURE
        if outcome is Outcome.REVOKED:
            status = REVOKED
        return failure_record(message.id, message.task, value, self.key, status=status)

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
