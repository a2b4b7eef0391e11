"""The memory broker's ``RateLimits``: the time each rate's next slot starts, in
a dict under the broker's lock."""

from __future__ import annotations

import threading
import time


class MemoryRates:
    """``RateLimits`` for ``MemoryBroker``."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._next_slots: dict[str, float] = {}  # rate -> when its next slot starts

    def take_slot(self, key: str, interval: float, burst: int) -> float:
        following = self._next_slots
        with self._lock:
            now = time.time()
            start = max(following.get(key, now), now)
            following[key] = start + interval
        return max(start - (burst - 1) * interval - now, 0.0)
