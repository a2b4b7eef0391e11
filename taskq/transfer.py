"""Backup, restore and move queues: ``taskq export``, ``import`` and ``migrate``.

Everything goes through the broker contract (``brokers.base.Transfer`` and
``Queues``), so it works alike on every broker. Memory stays flat: messages
stream through one at a time, and the ids already seen or already held are
kept in a temporary SQLite file, not in a Python set.

``transfer_commands`` opens the brokers and files the commands name.

Import checks the whole file before it changes anything: every line must
verify (see ``backup_lines``), or nothing is imported and the first bad line
is named. A file read from stdin is spooled to a temporary file first, so that
the second pass can read it again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .backup_lines import Line, from_line, restored_state, to_line
from .brokers.base import DEAD, MESSAGE_STATES, Broker, Stored
from .errors import MessageError, TaskqError
from .keys import Keyring
from .message import Message, decode, encode

Tick = Callable[[int], object]
_BATCH = 500  # messages published (and, when migrating, removed) per step


class IdSet:
    """A set of message ids in a temporary SQLite file: memory does not grow with it.

    New ids wait in a small in-memory batch and go to the file together (one
    statement a row costs more than the rest of an export's work on a message).
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

    def __contains__(self, task_id: object) -> bool:
        if task_id in self._batch:
            return True
        found = self._db.execute("SELECT 1 FROM ids WHERE id = ?", (task_id,))
        return found.fetchone() is not None

    def add(self, task_id: str) -> bool:
        """Add an id; whether it was new."""
        if task_id in self:
            return False
        self._batch.add(task_id)
        if len(self._batch) >= self._FLUSH_AT:
            self._flush()
        return True

    def update(self, ids: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO ids VALUES (?)", ((i,) for i in ids))

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


@dataclass
class Summary:
    """What an export, import or migration did, for its one-line report."""

    states: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # ids already in the destination (or earlier in the file)
    unverified: int = 0  # exported messages whose bytes this broker's key does not verify

    @property
    def total(self) -> int:
        return sum(self.states.values())

    def describe(self, verb: str) -> str:
        per_state = ", ".join(f"{s} {self.states[s]}" for s in MESSAGE_STATES)
        text = f"{verb} {self.total} message(s) ({per_state}); {self.skipped} skipped as duplicates"
        if self.unverified:
            text += (
                f"; {self.unverified} dead message(s) left out: their bytes do not verify "
                "with this broker's key (see `taskq dead list`)"
            )
        return text


# -- export -----------------------------------------------------------------------


def exported(
    broker: Broker, key: Keyring, queues: Collection[str] | None, summary: Summary
) -> Iterator[tuple[Stored, Message, bytes]]:
    """Each message of ``broker`` once, verified, with its pickled call."""
    with IdSet() as seen:
        for stored in broker.export_messages(queues, seen.__contains__):
            try:
                message, payload = decode(stored.data, key)
            except MessageError:
                summary.unverified += 1  # a bad-signature dead letter: never exported
                continue
            if seen.add(message.id):
                yield stored, message, payload


def export(
    broker: Broker,
    key: Keyring,
    out: IO[str],
    queues: Collection[str] | None = None,
    tick: Tick = lambda n: None,
) -> Summary:
    """Write every message of ``broker`` (of ``queues``) to ``out``, a signed line each."""
    summary = Summary()
    for stored, message, payload in exported(broker, key, queues, summary):
        out.write(to_line(message, payload, stored.state, stored.record, key) + "\n")
        summary.states[stored.state] += 1
        tick(1)
    return summary


# -- import -------------------------------------------------------------------------


def spooled(source: IO[str]) -> IO[str]:
    """A seekable copy of a stream (stdin), so that it can be read twice."""
    copy = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="taskq-import-")  # noqa: SIM115 - returned
    shutil.copyfileobj(source, copy)
    copy.seek(0)
    return copy


def _lines(
    source: IO[str], key: Keyring, where: str, outcome: str = "nothing was imported"
) -> Iterator[Line]:
    source.seek(0)
    for number, text in enumerate(source, 1):
        if not text.strip():
            continue
        try:
            yield from_line(text, key)
        except MessageError as exc:
            raise TaskqError(f"{where}, line {number}: {exc}; {outcome}") from None


def check(source: IO[str], key: Keyring, where: str, tick: Tick = lambda n: None) -> int:
    """Verify every line (the first pass); how many messages the file holds."""
    count = 0
    for _ in _lines(source, key, where):
        count += 1
        tick(1)
    return count


def import_(
    broker: Broker,
    key: Keyring,
    source: IO[str],
    *,
    source_key: Keyring | None = None,
    where: str = "<stdin>",
    tick: Tick = lambda n: None,
    checked: bool = False,
) -> Summary:
    """Put the messages of an export into ``broker``, signed with ``key``.

    ``source_key`` verifies the lines (the exporting broker's key; ``key`` if
    None). Every line is checked before anything is imported. Ids ``broker``
    holds already, in any state, are skipped: importing twice adds nothing.
    ``checked``: the caller ran ``check`` on ``source`` already.
    """
    if not checked:
        check(source, source_key or key, where)
    summary = Summary()
    with IdSet() as held:
        held.update(broker.message_ids())
        with _Placer(broker, key) as place:
            # Checked already: a line failing now was changed while this ran.
            changed = "the file changed while it was imported: import it again (to skip what is in)"
            for line in _lines(source, source_key or key, where, changed):
                if held.add(line.message.id):
                    place(line.message, line.payload, line.state, line.record)
                    summary.states[line.state] += 1
                else:
                    summary.skipped += 1
                tick(1)
    return summary


class _Placer:
    """Publishes restored messages in batches (one flush a batch on a durable
    broker); dead letters go back with their record. ``after`` runs once a batch
    is accepted (a migration removes its messages from the source then)."""

    def __init__(self, broker: Broker, key: Keyring, after: Callable[[], None] = lambda: None):
        self.broker, self.key, self.after = broker, key, after
        self.batch: list[tuple[Message, bytes]] = []

    def __call__(
        self, message: Message, payload: bytes, state: str, record: Mapping[str, Any] | None
    ) -> None:
        data = encode(message, payload, self.key)
        if restored_state(state) == DEAD:
            self.broker.restore_dead(message.queue, message.name, data, record or {})
            self.flush()
            return
        self.batch.append((message, data))
        if len(self.batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.broker.publish_many(self.batch)
            self.batch = []
        self.after()

    def __enter__(self) -> _Placer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.flush()


# -- migrate ------------------------------------------------------------------------


def migrate(
    source: Broker,
    source_key: Keyring,
    destination: Broker,
    destination_key: Keyring,
    tick: Tick = lambda n: None,
) -> Summary:
    """Move every message of ``source`` into ``destination``, export and import in one
    stream. A message leaves the source only once the destination holds it (its
    batch published, or its id found there already), so a migration stopped
    half-way loses nothing, and running it again finishes it without duplicates.
    """
    live = [w.get("name") for w in source.worker_states()]
    if live:
        raise TaskqError(
            f"workers are live on the source broker ({', '.join(map(str, live))}): stop them "
            "first, so that no message is claimed while it moves"
        )
    summary = Summary()
    pending: list[Stored] = []

    def release() -> None:  # the destination holds them: off the source
        for stored in pending:
            source.discard(stored)
        pending.clear()

    with IdSet() as held, _Placer(destination, destination_key, after=release) as place:
        held.update(destination.message_ids())
        for stored, message, payload in exported(source, source_key, None, summary):
            if held.add(message.id):
                pending.append(stored)
                place(message, payload, stored.state, stored.record)
                summary.states[stored.state] += 1
            else:
                summary.skipped += 1
                pending.append(stored)
            tick(1)
    return summary
