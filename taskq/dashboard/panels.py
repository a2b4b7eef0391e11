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
from typing import Any

from .. import admin
from ..app import App
from ..brokers import display_url
from ..brokers.base import Broker, DeadLetter, Inspection
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


def recent_failures(broker: Inspection, limit: int = FAILURES_SHOWN) -> list[dict[str, Any]]:
    """The latest failures, newest first: today the latest dead letters and why they
    died. The one place the failures panel reads, so that it can read an events feed
    (failed, dead-lettered) instead without touching the page."""
    return [letter_summary(d) for d in newest_first(broker.dead_letters())[:limit]]


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
            return {"failures": recent_failures(self.broker)}

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
