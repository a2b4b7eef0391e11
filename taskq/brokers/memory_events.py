"""The memory broker's event log: a capped list in this process, cursors are sequence numbers."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Sequence
from typing import Any

KEEP = 100_000  # events kept; the oldest go first


class MemoryEvents:
    """``Events`` for the memory broker. Guarded by the broker's lock."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=KEEP)
        self._event_seq = 0

    def append_events(self, events: Sequence[str]) -> None:
        parsed = [json.loads(e) for e in events]
        with self._lock:
            for event in parsed:
                self._event_seq += 1
                self._events.append((self._event_seq, event))

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
