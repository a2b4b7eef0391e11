"""The memory broker's event log: a capped list in this process, cursors are sequence numbers."""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from typing import Any

KEEP = 100_000  # events kept; the oldest go first


class MemoryEvents:
    """``Events`` for the memory broker. Guarded by the broker's lock."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=KEEP)
        self._event_seq = 0

    def append_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            for event in events:
                self._event_seq += 1
                self._events.append((self._event_seq, dict(event)))

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        start = _sequence(after)
        with self._lock:
            found = [(n, e) for n, e in self._events if n > start][:limit]
        if not found:
            return [], after
        return [dict(e) for _, e in found], str(found[-1][0])


def _sequence(cursor: str) -> int:
    try:
        return int(cursor) if cursor else 0
    except ValueError:
        return 0  # not one of ours: from the oldest kept
