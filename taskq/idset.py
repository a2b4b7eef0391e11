"""A set of message ids in a temporary SQLite file: what export, import and migrate
remember of the messages they met, without a Python set that grows with the queue."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterable

_BLOOM_BITS = 1 << 24
_BLOOM_MASK = _BLOOM_BITS - 1


class IdSet:
    """Ids in a temporary SQLite file, deleted on close: memory does not grow with it.

    New ids wait in a small in-memory batch and go to the file together (one
    statement a row costs more than the rest of an export's work on a message).
    A Bloom filter of a fixed size (2 MB, two bits an id) answers most questions
    about an id never added without asking the file: an export or import asks
    of every message, and nearly all are new.
    """

    _FLUSH_AT = 1000

    def __init__(self) -> None:
        fd, self._path = tempfile.mkstemp(prefix="taskq-ids-", suffix=".sqlite")
        os.close(fd)
        self._db = sqlite3.connect(self._path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self._db.execute("BEGIN")  # never committed: a scratch file, deleted on close
        self._batch: set[str] = set()
        # The id last found absent, while nothing was added since: an export asks
        # of each id twice in a row (its file's name, then its message).
        self._absent: object = None
        self._bloom = bytearray(_BLOOM_BITS // 8)

    def _maybe(self, task_id: object) -> bool:
        """False if ``task_id`` was never added (True may be wrong: ask the file)."""
        first, second = _bits(task_id)
        bloom = self._bloom
        return bool(bloom[first >> 3] >> (first & 7) & 1 and bloom[second >> 3] >> (second & 7) & 1)

    def _mark(self, task_id: str) -> str:
        first, second = _bits(task_id)
        self._bloom[first >> 3] |= 1 << (first & 7)
        self._bloom[second >> 3] |= 1 << (second & 7)
        return task_id

    def __contains__(self, task_id: object) -> bool:
        if not self._maybe(task_id):
            self._absent = task_id
            return False
        if task_id in self._batch:
            return True
        found = self._db.execute("SELECT 1 FROM ids WHERE id = ?", (task_id,))
        if found.fetchone() is not None:
            return True
        self._absent = task_id
        return False

    def add(self, task_id: str) -> bool:
        """Add an id; whether it was new."""
        if task_id != self._absent and task_id in self:
            return False
        self._absent = None
        self._batch.add(self._mark(task_id))
        if len(self._batch) >= self._FLUSH_AT:
            self._flush()
        return True

    def update(self, ids: Iterable[str]) -> None:
        self._absent = None
        self._db.executemany(
            "INSERT OR IGNORE INTO ids VALUES (?)", ((self._mark(i),) for i in ids)
        )

    def _flush(self) -> None:
        self._db.executemany("INSERT OR IGNORE INTO ids VALUES (?)", ((i,) for i in self._batch))
        self._batch.clear()

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def __enter__(self) -> IdSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bits(task_id: object) -> tuple[int, int]:
    """The filter's two bits for ``task_id``: two parts of its hash."""
    h = hash(task_id)
    return h & _BLOOM_MASK, (h >> 32) & _BLOOM_MASK
