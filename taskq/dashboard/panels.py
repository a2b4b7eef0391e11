"""What each panel of the dashboard shows and does, through the broker contract only.

Every panel is a method returning plain JSON data. Reads go through one
``Broker`` object guarded by a lock (the HTTP server answers from a pool of
threads); retry and purge call the same ``taskq.admin`` functions as
``taskq dead retry`` and ``taskq dead purge``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import admin
from ..app import App
from ..brokers import display_url
from ..brokers.base import Broker, DeadLetter, Events, Inspection
from ..config import Settings
from ..errors import TaskqError

log = logging.getLogger("taskq.dashboard")

DEAD_SHOWN = 100  # the newest dead letters the dead-letter panel lists
FAILURES_SHOWN = 10


class NotFound(TaskqError):
    """A dead letter the request names is not (or no longer) there."""


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter as the page shows it. A record is a file anyone with access to
    the broker may have edited: every field is turned into text, never trusted."""
    r = letter.record
    return {
        "id": letter.id,
        "queue": letter.queue,
        "task": str(r.get("task", "")),
        "reason": str(r.get("reason", "")),
        "died_at": str(r.get("died_at", "")),
        "error": f"{r.get('exc_type', '')}: {r.get('exc_message', '')}".strip(": "),
    }


def newest_first(letters: list[DeadLetter]) -> list[DeadLetter]:
    return sorted(letters, key=lambda d: (str(d.record.get("died_at", "")), d.name), reverse=True)


def recent_failures(
    broker: Inspection, feed: FailureFeed | None = None, limit: int = FAILURES_SHOWN
) -> list[dict[str, Any]]:
    """The latest failures, newest first: the failed attempts the event log holds
    (retried, failed for good, dead-lettered unrun) when events are on, else the
    latest dead letters and why they died."""
    if feed is not None and feed.seen:
        return feed.latest(limit)
    return [letter_summary(d) for d in newest_first(broker.dead_letters())[:limit]]


_FAILED = frozenset({"retried", "failed", "dead-lettered"})


class FailureFeed:
    """The failures in the event log, read on from where the last read stopped:
    the first read goes through the whole log once, later ones only what is new."""

    def __init__(self, size: int = 5 * FAILURES_SHOWN) -> None:
        self._cursor = ""
        self._rows: deque[dict[str, Any]] = deque(maxlen=size)
        self.seen = False  # whether the log held any event: events are on

    def read(self, events: Events) -> None:
        while True:
            batch, self._cursor = events.read_events(self._cursor, limit=1000)
            self.seen = self.seen or bool(batch)
            for event in batch:
                if event.get("event") in _FAILED:
                    self._add(event)
            if len(batch) < 1000:
                return

    def _add(self, event: dict[str, Any]) -> None:
        task_id, kind = str(event.get("id", "")), str(event.get("event"))
        if kind == "dead-lettered":  # after its "failed": one row says both
            for row in reversed(self._rows):
                if row["id"] == task_id and row["reason"].startswith("failed"):
                    row["reason"] = row["reason"].replace("failed", _dead(event), 1)
                    return
        ts = event.get("ts")
        when = _iso(ts) if isinstance(ts, int | float) else ""
        reason = {
            "retried": f"retried in {event.get('retry_in', '?')} s",
            "failed": "failed",
            "dead-lettered": _dead(event),
        }[kind]
        self._rows.append(
            {
                "id": task_id,
                "queue": str(event.get("queue", "")),
                "task": str(event.get("task", "")),
                "reason": f"{reason} (attempt {event.get('attempt', '?')})",
                "died_at": when,
                "error": str(event.get("error", "")),
            }
        )

    def latest(self, limit: int) -> list[dict[str, Any]]:
        return list(reversed(self._rows))[:limit]


def _dead(event: dict[str, Any]) -> str:
    return f"dead-lettered ({event.get('reason', '')})"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class DepthHistory:
    """Queue depths sampled every ``interval`` seconds; the last ``size`` samples kept."""

    def __init__(
        self, read: Callable[[], dict[str, dict[str, int]]], interval: float, size: int
    ) -> None:
        self._read = read
        self.interval = interval
        self._samples: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._failing = False

    def sample(self) -> None:
        counts = self._read()
        sample = {"at": time.time(), "queues": counts}
        with self._lock:
            self._samples.append(sample)

    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._samples)

    def run(self, stop: threading.Event) -> None:
        """Sample until ``stop`` is set. A broker that fails (Redis restarting, a disk
        error) is logged once and sampled again next time: the page keeps serving."""
        while not stop.is_set():
            try:
                self.sample()
            except Exception as exc:
                if not self._failing:
                    log.warning("dashboard: reading queue depths failed: %s", exc)
                self._failing = True
            else:
                self._failing = False
            stop.wait(self.interval)


class Panels:
    """The data behind the page, one method per JSON endpoint."""

    def __init__(self, settings: Settings, interval: float = 2.0, history: int = 300) -> None:
        self.settings = settings
        self.broker: Broker = App.from_settings(settings).broker
        self._lock = threading.Lock()
        self.history = DepthHistory(self._counts, interval, history)
        self._feed = FailureFeed()

    def _counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            counts = self.broker.counts()
        return {q: dataclasses.asdict(c) for q, c in sorted(counts.items())}

    def queues(self) -> dict[str, Any]:
        samples = self.history.samples()
        return {
            "broker": display_url(self.settings.broker),
            "interval": self.history.interval,
            "queues": samples[-1]["queues"] if samples else self._counts(),
            "history": samples,
        }

    def workers(self) -> dict[str, Any]:
        with self._lock:
            states = self.broker.worker_states()
        return {"now": time.time(), "workers": states}

    def failures(self) -> dict[str, Any]:
        with self._lock:
            self._feed.read(self.broker)
            return {"failures": recent_failures(self.broker, self._feed)}

    def dead(self) -> dict[str, Any]:
        with self._lock:
            letters = newest_first(self.broker.dead_letters())
        return {"total": len(letters), "dead": [letter_summary(d) for d in letters[:DEAD_SHOWN]]}

    def show(self, message_id: str) -> dict[str, Any]:
        letter = self._find(message_id)
        return {**letter_summary(letter), "text": admin.format_dead(letter)}

    def retry(self, message_id: str | None) -> dict[str, Any]:
        """Requeue one dead letter (or all) with its attempts reset, as ``taskq dead retry``."""
        target = None if message_id is None else self._find(message_id).id
        with self._lock:
            requeued, skipped = admin.retry_dead(self.settings, target)
        return {"requeued": requeued, "skipped": skipped}

    def purge(self, message_id: str | None, queue: str | None = None) -> dict[str, Any]:
        """Delete one dead letter, or all (of ``queue``), as ``taskq dead purge``."""
        if message_id is None:
            with self._lock:
                return {"deleted": admin.purge_dead(self.settings, queue)}
        letter = self._find(message_id)
        with self._lock:
            self.broker.remove_dead(letter)
        return {"deleted": 1}

    def _find(self, message_id: str) -> DeadLetter:
        with self._lock:
            for letter in self.broker.dead_letters():
                if message_id in (letter.id, letter.name):
                    return letter
        raise NotFound(f"no dead message with id {message_id!r} (retried or purged already?)")
