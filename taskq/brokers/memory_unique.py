"""Unique keys on the memory broker: a dict under the broker's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from ..message import validate_unique_key


class MemoryUniques:
    """``Uniques`` for ``MemoryBroker``: key -> (holder id, end of its lifetime)."""

    _lock: threading.RLock
    _uniques: dict[str, tuple[str, float]]

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        validate_unique_key(key)
        now = time.time()
        with self._lock:
            held = self._uniques.get(key)
            if held is not None and held[1] > now:
                return held[0]
            self._uniques[key] = (task_id, now + ttl)
            return task_id

    def release_unique(self, key: str, task_id: str) -> None:
        with self._lock:
            held = self._uniques.get(key)
            if held is not None and held[0] == task_id:
                del self._uniques[key]

    def unique_expiry_steps(self, now: float) -> Iterator[bool]:
        with self._lock:
            lapsed = [key for key, (_, ends) in self._uniques.items() if ends <= now]
        for key in lapsed:
            with self._lock:
                held = self._uniques.get(key)
                gone = held is not None and held[1] <= now
                if gone:
                    del self._uniques[key]
            yield gone
