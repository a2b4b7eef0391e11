"""The memory broker's event log: a capped list in this process, cursors are sequence numbers."""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

from .base import parse_events

KEEP = 100_000  # events kept; the oldest go first


class MemoryEvents:
    """``Events`` for the memory broker. Guarded by the broker's lock."""

    _lock: threading.RLock

    def __init__(self) -> None:
        # (sequence number, the events of one stored line): a line's are read together.
        self._events: collections.deque[tuple[int, list[dict[str, Any]]]] = collections.deque(
            maxlen=KEEP
        )
        self._event_seq = 0

    def append_events(self, events: Sequence[str]) -> None:
        parsed = [parse_events(line.encode()) for line in events]
        with self._lock:
            for found in parsed:
                self._event_seq += 1
                self._events.append((self._event_seq, found))

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        start, cursor = _sequence(after), after
        page: list[dict[str, Any]] = []
        with self._lock:
            for n, found in self._events:
                if n <= start:
                    continue
                if len(page) >= limit or (page and len(page) + len(found) > limit):
                    break  # a line's events are not split
                page += map(dict, found)
                cursor = str(n)
        return page, cursor


def _sequence(cursor: str) -> int:
    try:
        return int(cursor) if cursor else 0
    except ValueError:
        return 0  # not one of ours: from the oldest kept
