"""A small shared-memory board where each worker child posts what it is doing.

The supervisor reads it to enforce hard time limits and report status, with
no per-task message between the processes (a pipe round trip costs more than
a whole task on the hot path). The mapping is made before the fork, so parent
and child see the same bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

# started_at, deadline (0 = none), tasks done, expired dropped, task id, task name,
# attempt (1 = first run), time limit in seconds (0 = none)
_LAYOUT = struct.Struct("ddQQ128s96sId")
# A sequence number before the posting: odd while the child writes, so the
# supervisor never acts on a torn read (a half-written deadline).
_SEQ = struct.Struct("Q")
_SIZE = _SEQ.size + _LAYOUT.size
# The child's metrics (a ``tally.Tally`` as JSON), posted apart from the task it runs:
# a sequence number, the length, the bytes. Pages are only allocated once written.
_STATS_HEAD = struct.Struct("QQ")
STATS_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Posting:
    started_at: float
    deadline: float
    done: int
    expired: int
    task_id: str
    task: str
    attempt: int = 0
    time_limit: float = 0.0

    @property
    def busy(self) -> bool:
        return self.started_at > 0


class Slot:
    """One child's posting; the slot outlives the child and is reset on respawn."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._map = mmap.mmap(-1, _SIZE)
        self._stats = mmap.mmap(-1, STATS_SIZE)
        self._stats_seq = 0
        self._done = 0
        self._expired = 0
        self._seq = 0

    def reset(self) -> None:
        self._done = 0
        self._expired = 0
        self._seq = 0
        self._map[:] = bytes(_SIZE)
        self._stats_seq = 0
        self._stats[: _STATS_HEAD.size] = bytes(_STATS_HEAD.size)

    def start(
        self,
        task_id: str,
        task: str,
        started_at: float,
        deadline: float,
        attempt: int = 1,
        time_limit: float = 0.0,
    ) -> None:
        self._write(started_at, deadline, task_id, task, attempt, time_limit)

    def finish(self) -> None:
        self._done += 1
        self._write(0.0, 0.0, "", "")

    def count_expired(self) -> None:
        self._expired += 1
        self._write(0.0, 0.0, "", "")

    def _write(
        self,
        started_at: float,
        deadline: float,
        task_id: str,
        task: str,
        attempt: int = 0,
        time_limit: float = 0.0,
    ) -> None:
        body = _LAYOUT.pack(
            started_at,
            deadline,
            self._done,
            self._expired,
            task_id.encode()[:128],
            task.encode()[:96],
            min(attempt, 2**32 - 1),
            time_limit,
        )
        self._seq += 1
        self._map[: _SEQ.size] = _SEQ.pack(self._seq)
        self._map[_SEQ.size :] = body
        self._seq += 1
        self._map[: _SEQ.size] = _SEQ.pack(self._seq)

    def read(self) -> Posting:
        for _ in range(1000):  # bounded: a child killed mid-write leaves an odd number
            raw = self._map[:]
            (before,) = _SEQ.unpack_from(raw)
            (after,) = _SEQ.unpack_from(self._map[: _SEQ.size])
            if before == after and before % 2 == 0:
                break
        started_at, deadline, done, expired, task_id, task, attempt, limit = _LAYOUT.unpack_from(
            raw, _SEQ.size
        )
        return Posting(
            started_at,
            deadline,
            done,
            expired,
            task_id.rstrip(b"\0").decode(errors="replace"),
            task.rstrip(b"\0").decode(errors="replace"),
            attempt,
            limit,
        )

    def post_stats(self, data: bytes) -> bool:
        """Replace the posted metrics; False (nothing posted) if they do not fit."""
        if len(data) > STATS_SIZE - _STATS_HEAD.size:
            return False
        self._stats_seq += 1  # odd: being written
        self._stats[: _STATS_HEAD.size] = _STATS_HEAD.pack(self._stats_seq, len(data))
        self._stats[_STATS_HEAD.size : _STATS_HEAD.size + len(data)] = data
        self._stats_seq += 1
        self._stats[: _STATS_HEAD.size] = _STATS_HEAD.pack(self._stats_seq, len(data))
        return True

    def read_stats(self) -> bytes:
        """The last metrics posted whole (b"" if none, or if every try met a write)."""
        for _ in range(100):
            before, length = _STATS_HEAD.unpack_from(self._stats)
            data = self._stats[_STATS_HEAD.size : _STATS_HEAD.size + length]
            (after,) = _SEQ.unpack_from(self._stats)
            if before == after and before % 2 == 0:
                return data if before else b""
        return b""
