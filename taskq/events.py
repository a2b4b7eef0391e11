"""Events: what happens to each message, as JSON objects in the broker's event log.

A process records events into a buffer and appends it to the broker
(``Events.append_events``) in one batch: when the buffer is older than
``FLUSH_EVERY`` or holds ``BATCH`` events, when a worker child goes idle, at the
supervisor's next round, and at exit. So a task pays for appending to a list,
not for a write; a batch is formatted as it is flushed. Events are best effort: one
that cannot be written is logged (once) and dropped; the message itself is never
held up.

Every event has ``event``, ``ts`` (Unix time), ``id``, ``task``, ``queue``,
``attempt`` (1 for the first run), ``host`` and ``pid``; those of a worker have
``worker`` (the supervisor's name) too. ``started`` adds ``time_limit``; the end
of a run adds ``runtime`` (seconds); ``retried`` adds ``retry_in`` and ``error``;
``failed`` adds ``error``; ``dead-lettered`` adds ``reason``; ``recovered``
adds ``consumer`` and ``requeued``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps does to a str
from typing import Any

from .brokers.base import Events
from .errors import TaskqError, describe_error
from .message import Message
from .policy import Ack, Dead, Outcome, RetryAt

log = logging.getLogger("taskq.events")

FLUSH_EVERY = 0.25  # seconds an event waits in a process's buffer at most (while it runs)
BATCH = 500  # events appended in one write at most
_HOST = socket.gethostname()
_encode = json.JSONEncoder(separators=(",", ":")).encode
_NUMBERS = (int, float)  # by type: a bool's repr is no JSON; these need no encoder


class Recorder:
    """Buffers one process's events and appends them to ``sink`` in batches.

    ``timer``: a buffer waiting ``FLUSH_EVERY`` is flushed by a thread of this
    process (producers have no loop; a worker child's loop is held up while a long
    task runs), one thread for the process's life, woken by the first event of each
    batch. The supervisor calls ``flush`` from its loop instead: no thread runs
    across its forks.
    """

    def __init__(self, sink: Events, worker: str = "", *, timer: bool = False) -> None:
        self.sink = sink
        self.worker = worker
        self._timer = timer
        # (event, ts, its own fields encoded, message): formatted into lines when
        # flushed, so a task pays for an append, and a batch is formatted at once.
        self._buffer: list[tuple[str, float, str, Message]] = []
        self._since = 0.0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._failing = False
        self._wake: threading.Event | None = None  # the flusher's, in process _flusher_pid
        self._flusher_pid = 0
        if timer:
            atexit.register(self.flush)

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def record(self, event: str, message: Message, **fields: Any) -> None:
        """Buffer one event about ``message``; ``fields`` add to it (``ts`` replaces it)."""
        ts = fields.pop("ts", None)
        extra = "".join(
            f'"{k}":{v!r},'
            if type(v) in _NUMBERS
            else f'"{k}":{_quote(v) if type(v) is str else _encode(v)},'
            for k, v in fields.items()
        )
        self._add(event, message, extra, ts)

    def started(self, message: Message, time_limit: float) -> None:
        """``started``, on the hot path: its one field formatted here."""
        limit = f"{float(time_limit)!r}" if time_limit else "null"
        self._add("started", message, f'"time_limit":{limit},', None)

    def _add(self, event: str, message: Message, extra: str, ts: float | None) -> None:
        now = time.time()
        with self._lock:
            self._buffer.append((event, now if ts is None else float(ts), extra, message))
            held = len(self._buffer)
        if held == 1:
            self._since = now
            if self._timer:
                self._wake_flusher()
        elif held >= BATCH or now - self._since >= FLUSH_EVERY:
            self.flush()

    def _wake_flusher(self) -> None:
        wake = self._wake
        if wake is None or self._flusher_pid != os.getpid():  # none yet, or the parent's
            wake = self._wake = threading.Event()
            self._flusher_pid = os.getpid()
            threading.Thread(target=self._flusher, args=(wake,), daemon=True).start()
        wake.set()

    def _flusher(self, wake: threading.Event) -> None:
        while True:
            wake.wait()
            wake.clear()
            time.sleep(FLUSH_EVERY)
            self.flush()

    def _lines(self, batch: list[tuple[str, float, str, Message]]) -> list[str]:
        """The batch's events as JSON lines; what every event of a message has is
        encoded once for its run of events (a worker records two a message)."""
        worker = f',"worker":{_quote(self.worker)}' if self.worker else ""
        ours = f'"host":{_quote(_HOST)},"pid":{self._pid:d}{worker}}}'  # the same in each
        lines, last, common = [], None, ""
        for event, ts, extra, message in batch:
            if message is not last:
                last = message
                common = (
                    f'"id":{_quote(message.id)},"task":{_quote(message.task)},'
                    f'"queue":{_quote(message.queue)},"attempt":{message.retries + 1:d},{ours}'
                )
            lines.append(f'{{"event":"{event}","ts":{ts!r},{extra}{common}')
        return lines

    def flush(self) -> None:
        """Append what is buffered, in one batch."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            self.sink.append_events(self._lines(batch))
        except (OSError, TaskqError) as exc:
            if not self._failing:
                log.warning("Cannot write %d event(s), dropped: %s", len(batch), exc)
            self._failing = True
            return
        if self._failing:
            log.warning("Writing events again")
            self._failing = False

    def settled(
        self, message: Message, outcome: Outcome, decision: Any, value: Any, runtime: float | None
    ) -> None:
        """The events of a delivery's end: what ``policy.settle`` decided for it."""
        if isinstance(decision, Ack) and outcome is not Outcome.EXPIRED:  # the hot path
            took = "" if runtime is None else f'"runtime":{round(runtime, 6)!r},'
            self._add("succeeded", message, took, None)
            return
        ran = {} if runtime is None else {"runtime": round(runtime, 6)}
        if outcome is Outcome.EXPIRED:
            self.record("expired", message)
        elif isinstance(decision, RetryAt):
            error = _error(value)
            self.record("retried", message, retry_in=round(decision.delay, 3), error=error, **ran)
        elif isinstance(decision, Dead):
            if outcome not in _NEVER_RAN:
                self.record("failed", message, error=_error(value), **ran)
            self.record("dead-lettered", message, reason=decision.reason)


def _error(value: Any) -> str:
    return describe_error(value) if isinstance(value, BaseException) else repr(value)


_NEVER_RAN = frozenset({Outcome.UNKNOWN_TASK, Outcome.UNDECODABLE})


def matches(event: dict[str, Any], queue: str | None, task: str | None) -> bool:
    """Whether ``event`` passes ``taskq events``' filters."""
    return (queue is None or event.get("queue") == queue) and (
        task is None or event.get("task") == task
    )
