"""Rate limits: ``@task(rate_limit="100/m")``, one rate per task shared by every
worker of a broker.

A rate is "N/s", "N/m", "N/h" or a number (per second), as Celery spells it.
The worker applies it with the broker's ``RateLimits.take_slot``: a generic
cell rate algorithm (GCRA), where the broker keeps, per task, the time the next
call may start, and each take reserves one slot and moves that time on by one
interval. Every take gets a slot of its own, so the rate is exact and nobody
asks twice:

- a slot due within ``SLEEP_MOST`` seconds: the child sleeps until it, then runs;
- a later one: the message goes back to scheduled/ (no attempt counted, its
  retries untouched) a little before its slot, marked with it (``rate_slot``);
  the child that claims it then sleeps the rest and runs it without taking
  another slot. No child is tied up for long waits.

A reserved slot whose message never runs (its worker died, it expired, it was
purged) is lost: the rate dips by one call for that slot, never goes above.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import TaskqError

if TYPE_CHECKING:  # message.py checks envelopes with valid_rate: no import at run time
    from .brokers.base import RateLimits
    from .message import Message

log = logging.getLogger("taskq.worker")

SLEEP_MOST = 1.0  # seconds a child sleeps for a slot rather than rescheduling the message
# How early a message rescheduled for its slot is due again: more than the
# supervisor's promotion tick and a claim, so that its child sleeps the rest
# and runs it on time.
LEAD = 0.5
BURST = 1  # calls that may start at once after a quiet spell (Celery's bucket holds one too)

_SLOWEST = 366 * 86400.0  # seconds between calls: slots stay within an ETA's range
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([smh]))?\s*")


def interval_of(rate: str | float) -> float:
    """Seconds between two calls at ``rate`` ("N/s", "N/m", "N/h" or a number per
    second); ``TaskqError`` naming the value if it is not one, or not positive."""
    if isinstance(rate, bool) or not isinstance(rate, str | int | float):
        raise TaskqError(_bad(rate, "it is neither a string nor a number"))
    return _interval(rate)


@functools.lru_cache(maxsize=256)
def _interval(rate: str | float) -> float:
    if isinstance(rate, str):
        match = _RATE.fullmatch(rate)
        if match is None:
            raise TaskqError(_bad(rate, 'write "N/s", "N/m", "N/h" or a number (per second)'))
        count, per = float(match[1]), _PER[match[2] or "s"]
    else:
        count, per = float(rate), 1.0
    if not math.isfinite(count) or count <= 0:
        raise TaskqError(
            _bad(rate, "the number of calls must be finite and above 0 (None: no limit)")
        )
    if per / count > _SLOWEST:
        raise TaskqError(_bad(rate, "it is slower than one call a year"))
    return per / count


def _bad(rate: object, why: str) -> str:
    return f"invalid rate_limit {rate!r}: {why}"


def check_rate(rate: str | float | None) -> str | None:
    """The rate a message carries (as text, e.g. "100/m"), checked: ``TaskqError``
    naming a bad one when the task is declared, not when a worker meets it."""
    if rate is None:
        return None
    interval_of(rate)
    return rate if isinstance(rate, str) else repr(float(rate))


def valid_rate(value: object) -> bool:
    """Whether an envelope's ``rate_limit`` is a rate (for ``message.decode``)."""
    try:
        return isinstance(value, str) and interval_of(value) > 0
    except TaskqError:
        return False


def holds_slot(message: Message) -> bool:
    """Whether ``message`` is the copy put back in scheduled/ for the slot it names.
    Another copy (a retry, whatever its cause; a dead letter sent again) has
    another ETA and takes a slot of its own."""
    return message.rate_slot is not None and message.eta == message.rate_slot - LEAD


def admit(
    broker: RateLimits,
    message: Message,
    reschedule: Callable[[Message], None],
    sleep: Callable[[float], None] = time.sleep,
) -> Message | None:
    """Wait for ``message``'s slot at its task's rate: the message to run now (its
    slot is due), or None once it is rescheduled to its slot (``reschedule`` is
    given the copy to put back in scheduled/)."""
    assert message.rate_limit is not None
    if holds_slot(message):
        assert message.rate_slot is not None
        sleep(min(max(message.rate_slot - time.time(), 0.0), SLEEP_MOST))
        return message
    wait = broker.take_slot(message.task, interval_of(message.rate_limit), BURST)
    if wait <= SLEEP_MOST:
        sleep(wait)
        return message
    slot = time.time() + wait
    log.debug("Task %s[%s] waits %.2f s for its rate limit", message.task, message.id, wait)
    reschedule(message.replace(eta=slot - LEAD, rate_slot=slot))
    return None
