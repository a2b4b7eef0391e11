"""Every decision about a delivery, in one pure function.

``settle(message, outcome, now)`` says what happens to a message: ack it,
retry it at a time, or dead-letter it with a reason. That covers every way a
delivery can end, from one that cannot even be opened (``message`` is then
None) to a task that ran. No I/O here, so the worker, the supervisor (for
children it killed or lost) and the tests all get the same answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .message import Message


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the task raised an error its autoretry_for covers
    FAILED_FINAL = "failed-final"  # the task raised an error that is never retried
    RETRY_REQUESTED = "retry-requested"  # the task raised Retry
    TIME_LIMIT = "time-limit"  # the supervisor killed it at its hard time limit
    KILLED = "killed"  # its process died mid-task (SIGKILL, OOM, crash)
    EXPIRED = "expired"  # its `expires` passed before it could start
    REVOKED = "revoked"  # revoked: never started, or killed by a revoke with terminate
    # Never run, never retried: running it again would end the same way.
    UNSAFE_ENTRY = "unsafe-entry"  # not a regular file: quarantined unread
    BAD_SIGNATURE = "bad-signature"  # not signed by a key we trust: never unpickled
    UNDECODABLE = "undecodable"  # its envelope or its arguments cannot be decoded
    UNKNOWN_TASK = "unknown-task"  # no imported module declares its task
    UNSERIALIZABLE_RESULT = "unserializable-result"  # it ran, its return value cannot be stored
    CHORD_FAILED = "chord-failed"  # a chord callback whose member failed for good: never run


@dataclass(frozen=True, slots=True)
class Ack:
    """Done with the message: remove it."""


@dataclass(frozen=True, slots=True)
class RetryAt:
    eta: float
    delay: float


@dataclass(frozen=True, slots=True)
class Dead:
    reason: str


Decision = Ack | RetryAt | Dead

_ACKED = frozenset({Outcome.SUCCEEDED, Outcome.EXPIRED, Outcome.REVOKED})

# Why a message ends in dead/ at once, whatever retries it has left.
_FINAL_REASON = {
    Outcome.FAILED_FINAL: "failed",
    Outcome.UNSERIALIZABLE_RESULT: "failed",
    Outcome.UNSAFE_ENTRY: "unsafe-entry",
    Outcome.BAD_SIGNATURE: "bad-signature",
    Outcome.UNDECODABLE: "undecodable",
    Outcome.UNKNOWN_TASK: "unknown-task",
    Outcome.CHORD_FAILED: "chord-failed",
}

# Why a message ends in dead/ when its attempts run out, by what ended the last one.
_EXHAUSTED_REASON = {
    Outcome.FAILED: "max-retries",
    Outcome.RETRY_REQUESTED: "max-retries",
    Outcome.TIME_LIMIT: "time-limit",
    Outcome.KILLED: "poison",
}


def backoff(
    retries: int,
    base: float,
    cap: float,
    jitter: bool,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before attempt ``retries + 1``: ``base * 2**retries``, capped.

    Jitter spreads retries of a burst of failures, but never shortens a delay
    below half of it, so a backoff still backs off.
    """
    # 2.0**retries raises OverflowError past 1023 retries; 2.0**1000 times any real
    # base is far past any real cap, so the exponent can stop there.
    delay = min(base * 2.0 ** min(retries, 1000), cap)
    if jitter:
        delay *= 0.5 + 0.5 * rand()
    return delay


def settle(
    message: Message | None,
    outcome: Outcome,
    now: float,
    countdown: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What to do with a delivery that ended with ``outcome``.

    ``message`` is None for a delivery that could not be opened (unsafe, bad
    signature, undecodable): those outcomes never need it. ``countdown`` is the
    delay a task asked for when it raised ``Retry``.
    """
    if outcome in _ACKED:
        return Ack()
    if outcome in _FINAL_REASON:
        return Dead(_FINAL_REASON[outcome])
    if message is None:
        raise ValueError(f"outcome {outcome.value!r} is settled by its message's retries")
    if message.retries >= message.max_retries:
        return Dead(_EXHAUSTED_REASON[outcome])
    if countdown is None:
        countdown = backoff(
            message.retries,
            message.retry_backoff,
            message.retry_backoff_max,
            message.retry_jitter,
            rand,
        )
    return RetryAt(now + countdown, countdown)


def is_expired(message: Message, now: float) -> bool:
    return message.expires is not None and now >= message.expires
