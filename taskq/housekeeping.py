"""The supervisor's chores, kept from ever stopping supervision.

Two dangers: an I/O error (a full disk) raised out of a chore would end the
supervisor, leaving its children unsupervised; and a chore that takes seconds
(deleting 90,000 expired results) would hold up time limits, promotions,
recovery and respawns for as long. So every chore runs under :class:`Chores`,
which logs a failing chore once and carries on, and the long clean-up is a
:class:`Sweep` that does a few milliseconds of work a round and resumes where
it stopped. No thread: the supervisor forks its children. :class:`TrustWatch`
re-checks, through the broker, that it is still safe to run code from.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from datetime import datetime

from .brokers.base import Broker, Inspection, KeyStore
from .errors import BrokerError, TaskRevokedError, TimeLimitExceeded, WorkerLost
from .events import Recorder
from .keys import Keyring
from .policy import Outcome
from .recovery import recover_consumer
from .tally import Tally

log = logging.getLogger("taskq.supervisor")
trust_log = logging.getLogger("taskq.trust")


class Chores:
    """Runs chores so that an I/O error never ends supervision.

    A chore that fails is logged once (and again only if its error changes),
    tried again when its turn comes, and logged once more when it works again.
    """

    def __init__(self) -> None:
        self._failing: dict[str, int | None] = {}  # chore -> errno of its last failure

    @contextlib.contextmanager
    def chore(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if what not in self._failing or self._failing[what] != exc.errno:
                log.error("Cannot %s: %s. Supervising on; trying again on each round.", what, exc)
            self._failing[what] = exc.errno
            return
        if what in self._failing:
            del self._failing[what]
            log.warning("Can %s again", what)

    @property
    def failing(self) -> list[str]:
        return sorted(self._failing)


class Sweep:
    """The periodic clean-up (``Broker.housekeeping_steps``: expired results and
    what else the broker leaves behind; then dead letters past their time),
    driven ``budget`` seconds a round instead of all at once.

    The first sweep starts at once, so a worker that lives less than a minute
    still expires results; one cut short by a stop is done by the next start
    (what it deleted is gone, the rest is found again).
    """

    def __init__(self, broker: Broker, every: float, budget: float) -> None:
        self._broker = broker
        self._every = every
        self._budget = budget
        self._steps: Iterator[bool] | None = None
        self._due = 0.0
        self._started = 0.0
        self.removed = 0  # by the sweep in progress, or the last one

    @property
    def pending(self) -> bool:
        return self._steps is not None

    def tick(self, now: float, results_before: float, dead_before: float = 0.0) -> None:
        """Start a sweep if one is due, and run the current one for up to ``budget`` s.
        Dead letters that died before ``dead_before`` go too (0: none do)."""
        if self._steps is None:
            if now < self._due:
                return
            self._steps = itertools.chain(
                self._broker.housekeeping_steps(now, results_before),
                expire_dead_letters(self._broker, dead_before),
            )
            self._due = now + self._every
            self._started = time.monotonic()
            self.removed = 0
        stop_at = time.monotonic() + self._budget
        try:
            for removed in self._steps:
                self.removed += removed
                if time.monotonic() >= stop_at:
                    return
        except BaseException:
            self._steps = None
            raise
        self._steps = None
        log.debug(
            "Housekeeping: deleted %d item(s) in %.1f s",
            self.removed,
            time.monotonic() - self._started,
        )


def expire_dead_letters(broker: Inspection, before: float) -> Iterator[bool]:
    """Delete the dead letters that died before ``before`` (a timestamp; 0: none),
    one step each. A letter whose record gives no time of death is kept."""
    if not before:
        return
    for letter in broker.dead_letters():
        died = _timestamp(letter.record.get("died_at"))
        expired = died is not None and died < before
        if expired:
            broker.remove_dead(letter)
        yield expired


def _timestamp(text: object) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


# The error stored for a task whose process the supervisor killed, by why it did.
_KILLED_ERROR = {Outcome.TIME_LIMIT: TimeLimitExceeded, Outcome.REVOKED: TaskRevokedError}


class Recoveries:
    """Settles the claims of dead consumers: the supervisor's own children as
    they are reaped, others' (and those whose settling failed) every sweep."""

    def __init__(
        self,
        broker: Broker,
        key: Keyring,
        name: str,
        chores: Chores,
        events: Recorder | None = None,
        tally: Tally | None = None,
    ) -> None:
        self._broker = broker
        self._events = events
        self._tally = tally
        self._key = key
        self._name = name
        self._chores = chores
        # Consumers whose settling failed half-way (a full disk), with how they
        # died: the next sweep settles their rest the same way.
        self._unsettled: dict[str, Outcome | None] = {}

    def settle(self, consumer: str, outcome: Outcome | None) -> None:
        error = _KILLED_ERROR.get(outcome, WorkerLost) if outcome else WorkerLost
        self._unsettled[consumer] = outcome
        with self._chores.chore("settle the messages of dead workers"):
            recover_consumer(
                self._broker,
                self._key,
                consumer,
                outcome,
                error,
                self._name,
                self._events,
                self._tally,
            )
            del self._unsettled[consumer]

    def sweep(self, live: set[str]) -> None:
        """Recover every dead consumer but ``live`` ones (this pool's), and forget
        dead supervisors."""
        dead: list[str] | None = None
        with self._chores.chore("sweep dead consumers and supervisors"):
            dead = self._broker.dead_consumers()
            for name in self._broker.forget_dead_workers():
                log.info("Removed the status files of dead supervisor %s", name)
        if dead is None:
            return
        for consumer in dead:
            if consumer not in live:
                self.settle(consumer, self._unsettled.get(consumer, Outcome.KILLED))
        # Recovered by another supervisor meanwhile: nothing left to remember.
        keep = set(dead) | live
        self._unsettled = {c: o for c, o in self._unsettled.items() if c in keep}


class TrustWatch:
    """The supervisor's re-check: is the broker still safe to run code from?"""

    def __init__(self, broker: KeyStore, every: float) -> None:
        self.broker = broker
        self.every = every
        self.error: BrokerError | None = None
        self._next = 0.0

    def failed(self, now: float) -> bool:
        """Re-check every ``every`` seconds; True (once, logged) when the broker
        no longer passes: the supervisor then stops, as it would on SIGTERM."""
        if self.error is not None or now < self._next:
            return False
        self._next = now + self.every
        try:
            self.broker.check_trust()
        except OSError as exc:  # a folder we can no longer list is no longer ours
            self.error = BrokerError(f"cannot check broker {exc.filename}: {exc.strerror}")
        except BrokerError as exc:
            self.error = exc
        if self.error is None:
            return False
        trust_log.error("Broker no longer trusted, stopping: %s", self.error)
        return True

    def raise_error(self) -> None:
        """After the stop: the error, for the command line to print and exit non-zero."""
        if self.error is not None:
            raise self.error
