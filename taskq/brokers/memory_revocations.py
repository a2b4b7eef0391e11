"""Revocations on the memory broker: a dict under the broker's lock."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator

from ..message import validate_task_id


class MemoryRevocations:
    """``Revocations`` for ``MemoryBroker``: id -> (terminate, expires at)."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._revoked: dict[str, tuple[bool, float]] = {}

    def revoke(self, task_ids: Collection[str], terminate: bool, expires_at: float) -> None:
        with self._lock:
            for task_id in task_ids:
                kill, until = self._revoked.get(validate_task_id(task_id), (False, 0.0))
                self._revoked[task_id] = (kill or terminate, max(until, expires_at))

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self._revoked  # one dict lookup: atomic under the GIL

    def terminations(self) -> set[str]:
        with self._lock:
            return {task_id for task_id, (kill, _) in self._revoked.items() if kill}

    def revocation_steps(self, now: float) -> Iterator[bool]:
        with self._lock:
            old = [task_id for task_id, (_, until) in self._revoked.items() if until < now]
        for task_id in old:
            with self._lock:
                held = self._revoked.get(task_id)
                expired = held is not None and held[1] < now
                if expired:
                    del self._revoked[task_id]
            yield expired
