"""``App.join``: run what a queue holds in this process, as a worker would.

For tests: ``add.delay(2, 3)``, then ``app.join()``, then ``.get()``. Each
message takes the worker's own path (``Worker.process``: verify the
signature, decode, look the task up, run it, settle it), so results are
stored, retries scheduled and dead letters kept exactly as under
``taskq worker``; only the process is the test's own.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .brokers.base import Broker, Consumer, Delivery
from .message import Message, new_id, validate_queue
from .policy import Dead, Decision
from .worker import Worker, soft_limit

if TYPE_CHECKING:
    from .app import App

_RELIST_WAIT = 0.05  # seconds a file consumer may need to see a name it has not listed


def join(
    app: App,
    queue: str = "default",
    *,
    fail_fast: bool = True,
    timeout: float = 10.0,
    run_scheduled: bool = False,
) -> int:
    """Run ``queue``'s ready messages, and its scheduled ones as they come due,
    until none is left; return how many messages were processed.

    ``fail_fast``: re-raise the exception a task raised when join cannot bring
    it to success: at once when the task fails for good (no retries left, or not
    retryable; it is dead-lettered first, as a worker would), leaving the rest
    queued; or at the end, for a task whose retry still waits for its backoff.
    ``run_scheduled``: treat every scheduled message (of every queue) as due at
    once, so countdowns, ETAs and retry backoffs are not waited for.
    ``TimeoutError`` if the queue is not empty after ``timeout`` seconds.
    """
    validate_queue(queue)
    broker = app.broker
    failures: list[BaseException] = []
    retrying: dict[str, BaseException] = {}  # task id -> the error of its last attempt

    def failed(message: Message, error: BaseException, decision: Decision) -> None:
        if isinstance(decision, Dead):
            failures.append(error)
        retrying[message.id] = error

    consumer = broker.open_consumer([queue], f"join-{os.getpid()}-{new_id()[:8]}")
    worker = Worker(broker, app.key, consumer, on_failure=failed, events=app.events)
    deadline = time.monotonic() + timeout
    processed = 0
    with _soft_time_limits():
        try:
            while (delivery := _next(broker, consumer, queue, run_scheduled)) is not None:
                worker.process(delivery)
                processed += 1
                if fail_fast and failures:
                    raise failures[0]
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"join of queue {queue!r} ran {processed} message(s) in {timeout} s "
                        "and it is still not empty (a task that keeps enqueueing more?)"
                    )
        finally:
            # Every claim is settled here (process settles before it returns), so the
            # consumer leaves nothing behind to recover.
            consumer.close()
            broker.forget_consumer(consumer.name)
    if fail_fast:
        # A retry left waiting for its backoff: the task has not succeeded.
        for task_id, error in retrying.items():
            if broker.find(task_id) == "scheduled":
                raise error
    return processed


def _next(broker: Broker, consumer: Consumer, queue: str, run_scheduled: bool) -> Delivery | None:
    """The next delivery of ``queue``, or None once nothing is ready or due."""
    broker.promote_due(math.inf if run_scheduled else time.time())
    delivery = consumer.claim(timeout=0)
    if delivery is None and _ready(broker, queue):
        # A consumer that caches its listing (the file broker's) may not have
        # seen a message promoted meanwhile: let it look again.
        delivery = consumer.claim(timeout=_RELIST_WAIT)
    return delivery


def _ready(broker: Broker, queue: str) -> int:
    counts = broker.counts().get(queue)
    return counts.ready if counts is not None else 0


@contextlib.contextmanager
def _soft_time_limits() -> Iterator[None]:
    """A task's ``soft_time_limit`` arms SIGALRM: raise ``SoftTimeLimitExceeded``
    in the task, as in a worker, rather than end the test process."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install a handler: the one in place applies
        return
    previous = signal.signal(signal.SIGALRM, soft_limit)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
