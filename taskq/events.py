"""Events: what happens to each message, as JSON objects in the broker's event log.

A process records events into a buffer and appends it to the broker
(``Events.append_events``) in batches: a thread of its own does, ``FLUSH_EVERY``
after the first event of a batch (or the process's loop: a worker child when it
goes idle, the supervisor each round), and at exit. So a task pays for
formatting its line and appending it to a list, neither for a write nor for
waiting on one. Events are best effort: one that cannot be written
is logged (once) and dropped; the message itself is never held up.

Every event has ``event``, ``ts`` (Unix time), ``id``, ``task``, ``queue``,
``attempt`` (1 for the first run), ``host`` and ``pid``; those of a worker have
``worker`` (the supervisor's name) too. ``started`` adds ``time_limit``; the end
of a run adds ``runtime`` (seconds); ``retried`` adds ``retry_in`` and ``error``;
``failed`` adds ``error``; ``dead-lettered`` adds ``reason``; ``recovered``
adds ``consumer`` and ``requeued``; ``revoked`` (settled unrun, or killed by a
revoke with terminate) has nothing more.
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
from .policy import Dead, Outcome, RetryAt

log = logging.getLogger("taskq.events")

FLUSH_EVERY = 0.25  # seconds an event waits in a process's buffer at most (while it runs)
BATCH = 500  # lines appended in one write at most
_MOST = 10 * BATCH  # events a process holds at most (its flusher fallen behind)
_QUOTED_MOST = 1000  # task and queue names kept quoted (a producer may make up names)
_HOST = socket.gethostname()
_encode = json.JSONEncoder(separators=(",", ":")).encode
_NUMBERS = (int, float)  # by type: a bool's repr is no JSON; these need no encoder


class Recorder:
    """Buffers one process's events and appends them to ``sink`` in batches.

    ``timer``: the buffer is flushed by a thread of this process ``FLUSH_EVERY``
    after a batch's first event (producers have no loop; a worker child's loop is
    held up while a long task runs), one thread for the process's life. It does
    the writing, so the recording thread does not wait on it (a write to Redis
    is a round trip), unless it falls ``_MOST`` events behind. Without one (the
    supervisor, which calls ``flush`` from its loop: no thread runs across its
    forks), the next event writes a buffer ``BATCH`` long or ``FLUSH_EVERY`` old.

    An event is formatted into its JSON line as it is recorded: the buffer holds
    strings, which the garbage collector does not visit, and no message outlives
    its run. Times are whole microseconds (see ``brokers.base.parse_events``).
    A worker's run is the hot path: ``started`` only notes the run, and its end
    (``settled``) buffers one line for both events (``parse_events`` gives
    readers the two). A flush while the run goes on writes its ``started``
    then, so a long task is seen running.
    """

    def __init__(self, sink: Events, worker: str = "", *, timer: bool = False) -> None:
        self.sink = sink
        self._timer = timer
        self._pid = os.getpid()
        self.worker = worker
        self._buffer: list[str] = []
        # The run started in this process, its ``started`` not buffered yet:
        # (message, when, time limit). Read and cleared under the lock.
        self._running: tuple[Message, float, float] | None = None
        self._since = 0.0
        self._lock = threading.Lock()
        self._quoted: dict[str, str] = {}
        self._failing = False
        self._wake: threading.Event | None = None  # the flusher's, in process _flusher_pid
        self._flusher_pid = 0
        if timer:
            atexit.register(self.flush)

    @property
    def worker(self) -> str:
        """The supervisor's name, in each event of its worker processes."""
        return self._worker

    @worker.setter
    def worker(self, name: str) -> None:
        self._worker = name
        worker = f',"worker":{_quote(name)}' if name else ""
        # What each event ends with: the same in every line of this process.
        self._ours = f'"host":{_quote(_HOST)},"pid":{self._pid:d}{worker}}}'

    @property
    def pending(self) -> bool:
        return bool(self._buffer) or self._running is not None

    def record(self, event: str, message: Message, **fields: Any) -> None:
        """Buffer one event about ``message``; ``fields`` add to it (``ts`` replaces it)."""
        ts = fields.pop("ts", None)
        extra = _members(fields) if fields else ""
        now = time.time()
        at = now if ts is None else float(ts)
        line = f'{{"event":"{event}","ts_us":{int(at * 1e6)},{extra}{self._common(message)}'
        with self._lock:
            self._buffer.append(line)
            held = len(self._buffer)
        self._held(held, now)

    def started(self, message: Message, time_limit: float, at: float) -> None:
        """``message`` started running at ``at``: buffered with the run's end, or
        by the next flush if that comes first."""
        if self._running is not None:  # a run within a run (eager): the outer one's first
            with self._lock:
                outer, self._running = self._running, None
                if outer is not None:
                    self._buffer.append(self._started(*outer))
                held = len(self._buffer)
            self._held(held, at)
        self._running = (message, at, time_limit)
        if not self._buffer:  # no batch waits: the run's start begins one
            self._since = at
            if self._timer:
                self._wake_flusher()

    def _started(self, message: Message, at: float, time_limit: float) -> str:
        limit = _limit(time_limit) if time_limit else "null"
        return (
            f'{{"event":"started","ts_us":{int(at * 1e6)},"time_limit":{limit},'
            f"{self._common(message)}"
        )

    def _common(self, message: Message) -> str:
        """What every event of ``message`` has, closing the line's object."""
        quoted = self._quoted
        task = quoted.get(message.task) or self._quote_name(message.task)
        queue = quoted.get(message.queue) or self._quote_name(message.queue)
        return (
            f'"id":{_quote(message.id)},"task":{task},"queue":{queue},'
            f'"attempt":{message.retries + 1},{self._ours}'
        )

    def _quote_name(self, name: str) -> str:
        if len(self._quoted) >= _QUOTED_MOST:
            self._quoted.clear()
        quoted = self._quoted[name] = _quote(name)
        return quoted

    def _held(self, held: int, now: float) -> None:
        """After a line is buffered: begin a batch, or write a full or old one."""
        if held == 1:
            self._since = now
            if self._timer:
                self._wake_flusher()
        elif self._timer:  # the flusher writes: a task never waits for the write
            if held >= _MOST:  # unless the flusher falls that far behind
                self.flush()
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

    def flush(self) -> None:
        """Append what is buffered, in one batch, with the start of a run going on."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            if self._running is not None:
                batch.append(self._started(*self._running))
                self._running = None
        if not batch:
            return
        try:
            for start in range(0, len(batch), BATCH):
                self.sink.append_events(batch[start : start + BATCH])
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
        """The events of a delivery's end: what ``policy.settle`` decided for it,
        after its ``started`` if that is not written yet."""
        now = time.time()
        with self._lock:
            run = self._running
            if run is not None and run[0] is message:
                self._running = None
            else:
                run = None  # none, or an outer run's (eager), still going on
            if outcome is _SUCCESS:  # the hot path: one line, formatted here
                if run is not None and runtime is not None:  # the run's two events
                    limit = _limit(run[2]) if run[2] else "null"
                    line = (
                        f'{{"event":"succeeded","ts_us":{int(now * 1e6)},'
                        f'"runtime_us":{int(runtime * 1e6)},'
                        f'"started_us":{int(run[1] * 1e6)},"time_limit":{limit},'
                    )
                else:
                    if run is not None:  # no run time to put on one line with it
                        self._buffer.append(self._started(*run))
                    took = "" if runtime is None else f'"runtime_us":{int(runtime * 1e6)},'
                    line = f'{{"event":"succeeded","ts_us":{int(now * 1e6)},{took}'
                self._buffer.append(line + self._common(message))
                held = len(self._buffer)
            elif run is not None:
                self._buffer.append(self._started(*run))
        if outcome is _SUCCESS:
            self._held(held, now)
            return
        ran = {} if runtime is None else {"runtime": round(runtime, 6)}
        if outcome is Outcome.EXPIRED:
            self.record("expired", message)
        elif outcome is Outcome.REVOKED:
            self.record("revoked", message, **ran)
        elif isinstance(decision, RetryAt):
            error = _error(value)
            self.record("retried", message, retry_in=round(decision.delay, 3), error=error, **ran)
        elif isinstance(decision, Dead):
            if outcome not in _NEVER_RAN:
                self.record("failed", message, error=_error(value), **ran)
            self.record("dead-lettered", message, reason=decision.reason)


_SUCCESS = Outcome.SUCCEEDED  # a global: an enum's member is slow to look up on its class


def _members(fields: dict[str, Any]) -> str:
    """``fields`` as the members of a JSON object, each followed by a comma."""
    return "".join(
        f'"{k}":{v!r},'
        if type(v) in _NUMBERS
        else f'"{k}":{_quote(v) if type(v) is str else _encode(v)},'
        for k, v in fields.items()
    )


def _limit(time_limit: float) -> str:
    return f"{float(time_limit)!r}"


def _error(value: Any) -> str:
    return describe_error(value) if isinstance(value, BaseException) else repr(value)


_NEVER_RAN = frozenset({Outcome.UNKNOWN_TASK, Outcome.UNDECODABLE})


def matches(event: dict[str, Any], queue: str | None, task: str | None) -> bool:
    """Whether ``event`` passes ``taskq events``' filters."""
    return (queue is None or event.get("queue") == queue) and (
        task is None or event.get("task") == task
    )
