"""The loop inside one worker child: claim -> open -> run -> settle.

No signals beyond "stop after this task", no pool, no reload: those belong to
the supervisor, and a child's start-up (signals, imports, recycling) to
``child``. Everything that decides a message's fate is in ``policy``.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from . import signals
from .brokers.base import Broker, Consumer, Delivery
from .crashpoints import crash_point
from .errors import (
    Retry,
    SoftTimeLimitExceeded,
    TaskExpired,
    TaskNotFound,
    TaskRevokedError,
    describe_error,
    safe_str,
)
from .events import FLUSH_EVERY, Recorder
from .keys import Keyring
from .message import Message, encode, load_value
from .policy import Ack, Dead, Decision, Outcome, RetryAt, is_expired
from .rates import admit
from .settling import Settled, Settler
from .slots import Slot
from .tally import Tally
from .task import Request, Task, own_policy, registry

log = logging.getLogger("taskq.worker")


class Worker:
    """Runs claimed messages in this process and settles each one."""

    def __init__(
        self,
        broker: Broker,
        key: Keyring,
        consumer: Consumer,
        slot: Slot | None = None,
        default_time_limit: float = 0.0,
        on_failure: Callable[[Message, BaseException, Decision], None] | None = None,
        events: Recorder | None = None,
        tally: Tally | None = None,
    ) -> None:
        """``on_failure`` hears of each attempt that did not succeed, once it is
        settled (``App.join`` re-raises a task's error through it). ``events``
        records what happens to each message, flushed when the loop goes idle;
        ``tally`` counts it for the metrics, posted into ``slot`` as often."""
        self.broker = broker
        self.events = events
        self.tally = tally
        self._post_at = 0.0  # when the tally is next posted, if it changed
        self.on_failure = on_failure
        self.default_time_limit = default_time_limit
        self.key = key
        self.consumer = consumer
        self.slot = slot or Slot(0)
        self.settler = Settler(broker, key, consumer.name, events)
        self.stopping = False
        self.done = 0

    def run(self, should_continue: Callable[[], bool] = lambda: True) -> None:
        while not self.stopping and should_continue():
            delivery = self.consumer.claim(timeout=FLUSH_EVERY if self._unwritten else 1.0)
            if delivery is None:
                self.flush()  # idle: nothing is held up by writing them now
            if delivery is not None and not self.stopping:
                crash_point("claim.claimed")
                try:
                    self.process(delivery)
                except _Unsettled:
                    return  # the supervisor gives the claim back once this process exits
            elif delivery is not None:
                self.broker.requeue(delivery)  # claimed as a stop came in: not started

    @property
    def _unwritten(self) -> bool:
        return (self.events is not None and self.events.pending) or self._post_at > 0

    def flush(self) -> None:
        """Write the buffered events and post the tally, if any."""
        if self.events is not None:
            self.events.flush()
        self._post_tally()

    def _post_tally(self) -> None:
        if self.tally is not None and self._post_at:
            self.slot.post_stats(self.tally.to_bytes())
            self._post_at = 0.0

    def process(self, delivery: Delivery) -> None:
        opened = self._settled(lambda: self.settler.open(delivery))
        if opened is None:
            return
        message, payload = opened
        if message.by_name:
            message = own_policy(message)
        if message.rate_limit is not None and not self.broker.is_revoked(message.id):
            admitted = self._admitted(delivery, message, payload)
            if admitted is None:
                return
            message = admitted
        outcome, value, countdown, elapsed_ms = self._run(message, payload)
        settled = self._settled(
            lambda: self.settler.settle(delivery, message, payload, outcome, value, countdown)
        )
        describe(message, settled, elapsed_ms)
        runtime = None if elapsed_ms is None else elapsed_ms / 1000
        if self.events is not None:
            self.events.settled(message, settled.outcome, settled.decision, settled.value, runtime)
        if self.tally is not None:
            self.tally.settled(message.task, settled.outcome, settled.decision, runtime)
            now = time.monotonic()
            if not self._post_at:
                self._post_at = now + FLUSH_EVERY
            elif now >= self._post_at:
                self._post_tally()  # the events are the flusher thread's to write
        if self.on_failure is not None and not isinstance(settled.decision, Ack):
            self.on_failure(message, settled.value, settled.decision)
        _signal_settled(message, settled)

    def _admitted(self, delivery: Delivery, message: Message, payload: bytes) -> Message | None:
        """``message`` once its task's rate lets it start, or None once it is put back
        in scheduled/ for its slot (``rates.admit``). An expired one takes no slot."""
        if is_expired(message, time.time()):
            return message

        def reschedule(again: Message) -> None:
            self.broker.retry_later(delivery, again, encode(again, payload, self.key))

        return self._settled(lambda: admit(self.broker, message, reschedule))

    def _run(
        self, message: Message, payload: bytes
    ) -> tuple[Outcome, Any, float | None, float | None]:
        """``_attempt``, unless the message is revoked: then it is not started, and
        a failure of one revoked while it ran is not retried."""
        if self.broker.is_revoked(message.id):
            return _revoked(message)
        outcome, value, countdown, elapsed_ms = self._attempt(message, payload)
        if outcome in _RETRIED and self.broker.is_revoked(message.id):
            return _revoked(message, value, elapsed_ms)
        return outcome, value, countdown, elapsed_ms

    def _attempt(
        self, message: Message, payload: bytes
    ) -> tuple[Outcome, Any, float | None, float | None]:
        """Run the message's task if it can run: (outcome, return value or error,
        requested countdown, milliseconds it ran)."""
        if is_expired(message, time.time()):
            self.slot.count_expired()
            error: Exception = TaskExpired(
                f"task {message.task}[{message.id}] expired before a worker could start it"
            )
            return Outcome.EXPIRED, error, None, None
        task = registry().get(message.task)
        if task is None:
            error = TaskNotFound(
                f"no task named {message.task!r} is declared in the worker's modules"
            )
            return Outcome.UNKNOWN_TASK, error, None, None
        try:
            args, kwargs = load_value(payload)
        except Exception as exc:
            return Outcome.UNDECODABLE, exc, None, None
        log.info("Task %s[%s] received", message.task, message.id, extra=task_fields(message))
        started = time.time()
        # A task's own time_limit=0 means no limit; None means the worker's default.
        limit = self.default_time_limit if message.time_limit is None else message.time_limit
        deadline = started + limit if limit else 0.0
        attempt = message.retries + 1
        self.slot.start(message.id, message.task, started, deadline, attempt, limit)
        if self.events is not None:
            self.events.started(message, limit, started)
        global _running
        _running = message
        if signals.task_prerun.receivers:
            signals.task_prerun.send(
                sender=task, task_id=message.id, args=args, kwargs=kwargs, attempt=attempt
            )
        try:
            outcome, value, countdown = run_task(task, message, args, kwargs)
        finally:
            sys.stdout.flush()  # a line printed without its newline, still as the task's
            sys.stderr.flush()
            _running = None
        if signals.task_postrun.receivers:
            signals.task_postrun.send(
                sender=task,
                task_id=message.id,
                args=args,
                kwargs=kwargs,
                attempt=attempt,
                retval=value,
                outcome=outcome.value,
            )
        crash_point("run.done")
        self.slot.finish()
        self.done += 1
        return outcome, value, countdown, (time.time() - started) * 1000

    def _settled(self, step: Callable[[], _T]) -> _T:
        """Run a settling step until it works: the attempt is over, and its outcome
        must not be lost to a full disk (nor the message re-run for it).

        Meanwhile the message stays claimed. A stop gives up (``_Unsettled``):
        the supervisor puts the claim back in ready/, to run again (at least once).
        """
        pause, failing = _SETTLE_PAUSE, False
        while True:
            try:
                result = step()
            except OSError as exc:  # DiskFull too
                if not failing:
                    log.error("Cannot settle a message (%s): trying again until it works", exc)
                failing = True
                if self.stopping:
                    raise _Unsettled from exc
                time.sleep(pause)
                pause = min(pause * 2, _SETTLE_PAUSE_MAX)
                continue
            if failing:
                log.warning("Settled the message after all: writing works again")
            return result


_RETRIED = frozenset({Outcome.FAILED, Outcome.RETRY_REQUESTED})


def _revoked(
    message: Message, error: BaseException | None = None, elapsed_ms: float | None = None
) -> tuple[Outcome, TaskRevokedError, None, float | None]:
    """The outcome of a revoked message: not started, or (``error``) failed after
    it was revoked (in ``elapsed_ms``), so not retried."""
    what = f"task {message.task}[{message.id}] was revoked"
    if error is None:
        return Outcome.REVOKED, TaskRevokedError(f"{what}: not started"), None, None
    failed = f"{what} while it ran, then failed ({describe_error(error)}): not retried"
    return Outcome.REVOKED, TaskRevokedError(failed), None, elapsed_ms


def _signal_settled(message: Message, settled: Settled) -> None:
    """``task_success``, ``task_retry`` or ``task_failure``, once the outcome is stored."""
    decision, value = settled.decision, settled.value
    sender = registry().get
    if isinstance(decision, Ack):
        if settled.outcome is Outcome.SUCCEEDED and signals.task_success.receivers:
            signals.task_success.send(sender=sender(message.task), task_id=message.id, result=value)
    elif isinstance(decision, RetryAt):
        if signals.task_retry.receivers:
            signals.task_retry.send(
                sender=sender(message.task),
                task_id=message.id,
                exception=value,
                delay=decision.delay,
                attempt=message.retries + 1,
            )
    elif isinstance(decision, Dead) and signals.task_failure.receivers:
        signals.task_failure.send(
            sender=sender(message.task), task_id=message.id, exception=value, reason=decision.reason
        )


_T = TypeVar("_T")
_SETTLE_PAUSE, _SETTLE_PAUSE_MAX = 0.1, 5.0  # seconds between tries while settling fails


class _Unsettled(Exception):
    """A stop came while an outcome could not be written: the message stays claimed."""


def describe(message: Message, settled: Settled, elapsed_ms: float | None = None) -> None:
    """One log line for how a delivery ended."""
    what = f"Task {message.task}[{message.id}]"
    decision, value = settled.decision, settled.value
    fields = {
        **task_fields(message),
        "outcome": settled.outcome.value,
        "duration_ms": None if elapsed_ms is None else round(elapsed_ms, 3),
    }
    if settled.outcome is Outcome.SUCCEEDED:
        log.info("%s succeeded in %.1f ms: %.200r", what, elapsed_ms or 0.0, value, extra=fields)
    elif settled.outcome is Outcome.EXPIRED:
        log.warning("%s expired before it could run: dropped", what, extra=fields)
    elif settled.outcome is Outcome.REVOKED:
        text = safe_str(value)  # "task <name>[<id>] was revoked: ..."
        log.warning("%s%s", text[:1].upper(), text[1:], extra=fields)
    elif isinstance(decision, RetryAt):
        log.warning(
            "%s failed%s (%s): retry in %.2f s (attempt %d/%d)",
            what,
            "" if elapsed_ms is None else f" in {elapsed_ms:.1f} ms",
            describe_error(value),
            decision.delay,
            message.retries + 2,
            message.max_retries + 1,
            extra=fields,
        )
    elif isinstance(decision, Dead) and settled.outcome in _NEVER_RAN:
        log.error("%s dead-lettered (%s): %s", what, decision.reason, value, extra=fields)
    elif isinstance(decision, Dead):
        log.error(
            "%s failed (%s): dead-lettered (%s)",
            what,
            describe_error(value),
            decision.reason,
            extra=fields,
        )


_running: Message | None = None  # the message whose task this process runs now


def running_message() -> Message | None:
    """The message whose task this process is running, if any."""
    return _running


def task_fields(message: Message) -> dict[str, object]:
    """The task fields of a log record about ``message`` (see ``taskq.logs``)."""
    return {"task": message.task, "task_id": message.id, "attempt": message.retries + 1}


_NEVER_RAN = frozenset({Outcome.UNKNOWN_TASK, Outcome.UNDECODABLE})


def run_task(
    task: Task[Any, Any], message: Message, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Outcome, Any, float | None]:
    """Call the task: (outcome, return value or exception, requested countdown)."""
    task.request = Request(message.id, message.retries, message.eta, message.headers)
    if message.soft_time_limit:
        signal.setitimer(signal.ITIMER_REAL, message.soft_time_limit)
    try:
        return Outcome.SUCCEEDED, task(*args, **kwargs), None
    except Retry as retry:
        return Outcome.RETRY_REQUESTED, retry.exc or retry, retry.countdown
    except (Exception, SystemExit) as exc:
        retryable = task.options.retries_on(exc)
        return (Outcome.FAILED if retryable else Outcome.FAILED_FINAL), exc, None
    finally:
        if message.soft_time_limit:
            signal.setitimer(signal.ITIMER_REAL, 0)
        task.request = None


def soft_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")
