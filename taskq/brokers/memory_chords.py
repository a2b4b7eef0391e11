"""Chord state on the memory broker: a dict under the broker's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import BrokerError
from ..message import validate_task_id


@dataclass
class _Chord:
    members: dict[int, bytes] = field(default_factory=dict)
    done_by: int | None = None
    changed: float = 0.0


class MemoryChords:
    """``Chords`` for ``MemoryBroker``."""

    _lock: threading.RLock
    _chords: dict[str, _Chord]

    def chord_add(self, chord_id: str, index: int, total: int, data: bytes) -> bool:
        validate_task_id(chord_id)
        if not 0 <= index < total:
            raise BrokerError(f"chord member index {index} is outside 0..{total - 1}")
        with self._lock:
            chord = self._chords.setdefault(chord_id, _Chord())
            chord.members.setdefault(index, bytes(data))  # the first result stays
            chord.changed = time.time()
            if chord.done_by is None and len(chord.members) >= total:
                chord.done_by = index
            return chord.done_by == index

    def chord_results(self, chord_id: str) -> list[bytes]:
        validate_task_id(chord_id)
        with self._lock:
            chord = self._chords.get(chord_id, _Chord())
            return [data for _, data in sorted(chord.members.items())]

    def chord_expiry_steps(self, older_than: float) -> Iterator[bool]:
        with self._lock:
            old = [cid for cid, chord in self._chords.items() if chord.changed < older_than]
        for chord_id in old:
            with self._lock:
                chord = self._chords.get(chord_id)
                expired = chord is not None and chord.changed < older_than
                if expired:
                    del self._chords[chord_id]
            yield expired
