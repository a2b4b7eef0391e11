"""Backup, restore and move queues: ``taskq export``, ``import`` and ``migrate``.

Everything goes through the broker contract (``brokers.base.Transfer`` and
``Queues``), so it works alike on every broker. Memory stays flat: messages
stream through one at a time, and the ids already seen or already held are
kept in a temporary SQLite file, not in a Python set.

``transfer_commands`` opens the brokers and files the commands name.

Import checks the whole file before it changes anything: every line must
verify (see ``backup_lines``), or nothing is imported and the first bad line
is named. The first pass keeps what it verified in a temporary file
(``Verified``), and the second publishes from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import marshal
import os
import sqlite3
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .backup_lines import from_line, restored_state, to_line
from .brokers.base import DEAD, MESSAGE_STATES, Broker, Stored
from .errors import MessageError, TaskqError
from .keys import Keyring
from .message import Message, check_envelope, encode, envelope_from, unseal

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
        # The id last found absent, while nothing was added since: an export asks
        # of each id twice in a row (its file's name, then its message).
        self._absent: object = None

    def __contains__(self, task_id: object) -> bool:
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
        self._batch.add(task_id)
        if len(self._batch) >= self._FLUSH_AT:
            self._flush()
        return True

    def update(self, ids: Iterable[str]) -> None:
        self._absent = None
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
) -> Iterator[tuple[Stored, dict[str, Any], bytes]]:
    """Each message of ``broker`` once, verified: its header (checked as a worker
    checks it, see ``message.check_envelope``) and its pickled call."""
    with IdSet() as seen:
        for stored in broker.export_messages(queues, seen.__contains__):
            try:
                header, payload = unseal(stored.data, key)
                check_envelope(header)
            except MessageError:
                summary.unverified += 1  # a bad-signature dead letter: never exported
                continue
            if seen.add(header["id"]):
                yield stored, header, payload


def export(
    broker: Broker,
    key: Keyring,
    out: IO[str],
    queues: Collection[str] | None = None,
    tick: Tick = lambda n: None,
) -> Summary:
    """Write every message of ``broker`` (of ``queues``) to ``out``, a signed line each."""
    summary = Summary()
    for stored, header, payload in exported(broker, key, queues, summary):
        out.write(to_line(header, payload, stored.state, stored.record, key) + "\n")
        summary.states[stored.state] += 1
        tick(1)
    return summary


# -- import -------------------------------------------------------------------------


class Verified:
    """An export's messages, each line verified and its message signed again with
    the destination's key, in a private temporary file (memory stays flat). The
    import publishes from here, so nothing is parsed twice, and a file changed or a
    stream (stdin) read meanwhile changes nothing: what was checked is what goes in.

    Each message's fields are kept as ``marshal`` gives them (they are JSON values:
    the checked envelope's), so the import rebuilds it without parsing its header
    or checking its signature again: the file is this process's own, unnamed.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="taskq-import-")  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(
        self, message: Message, data: bytes, state: str, record: Mapping[str, Any] | None
    ) -> None:
        fields = marshal.dumps(tuple(map(message.__getattribute__, _FIELDS)))
        meta = b"" if record is None else json.dumps(record).encode()
        head = _SPOOLED.pack(_STATE_CODES[state], len(fields), len(meta), len(data))
        self._file.write(b"".join((head, fields, meta, data)))
        self.count += 1

    def __iter__(self) -> Iterator[tuple[Message, bytes, str, Mapping[str, Any] | None]]:
        """(message, its signed bytes, state, record) of each, in the file's order."""
        self._file.seek(0)
        read = self._file.read
        while head := read(_SPOOLED.size):
            code, fields_size, meta_size, data_size = _SPOOLED.unpack(head)
            message = Message(*marshal.loads(read(fields_size)))
            meta = read(meta_size)
            record = json.loads(meta) if meta else None
            yield message, read(data_size), MESSAGE_STATES[code], record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Verified:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A spooled message: its state; the sizes of its fields, record and signed bytes.
_SPOOLED = struct.Struct("<BIII")
_FIELDS = tuple(f.name for f in dataclasses.fields(Message))
_STATE_CODES = {state: code for code, state in enumerate(MESSAGE_STATES)}


def verify(
    source: IO[str], source_key: Keyring, key: Keyring, where: str, tick: Tick = lambda n: None
) -> Verified:
    """The first pass: every line of ``source`` verified with ``source_key`` (the
    exporting broker's), its message signed with ``key`` (the destination's) into a
    ``Verified`` spool. ``TaskqError`` naming the first bad line, and nothing kept."""
    verified = Verified()
    try:
        for number, text in enumerate(source, 1):
            if not text.strip():
                continue
            try:
                line = from_line(text, source_key)
            except MessageError as exc:
                raise TaskqError(f"{where}, line {number}: {exc}; nothing was imported") from None
            message = line.message
            verified.add(message, encode(message, line.payload, key), line.state, line.record)
            tick(1)
    except BaseException:
        verified.close()
        raise
    return verified


def import_(
    broker: Broker,
    key: Keyring,
    source: IO[str] | Verified,
    *,
    source_key: Keyring | None = None,
    where: str = "<stdin>",
    tick: Tick = lambda n: None,
) -> Summary:
    """Put the messages of an export into ``broker``, signed with ``key``.

    ``source_key`` verifies the lines (the exporting broker's key; ``key`` if
    None). Every line is checked before anything is imported (``source`` may be
    what ``verify`` made of it already). Ids ``broker`` holds already, in any
    state, are skipped: importing twice adds nothing.
    """
    with contextlib.ExitStack() as stack:
        if not isinstance(source, Verified):
            source = stack.enter_context(verify(source, source_key or key, key, where))
        summary = Summary()
        held = stack.enter_context(IdSet())
        held.update(broker.message_ids())
        place = stack.enter_context(_Placer(broker))
        for message, data, state, record in source:
            if held.add(message.id):
                place(message, data, state, record)
                summary.states[state] += 1
            else:
                summary.skipped += 1
            tick(1)
    return summary


class _Placer:
    """Publishes restored messages (signed for the destination) in batches (one
    flush a batch on a durable broker); dead letters go back with their record.
    ``after`` runs once a batch is accepted (a migration removes its messages from
    the source then)."""

    def __init__(self, broker: Broker, after: Callable[[], None] = lambda: None):
        self.broker, self.after = broker, after
        self.batch: list[tuple[Message, bytes]] = []

    def __call__(
        self, message: Message, data: bytes, state: str, record: Mapping[str, Any] | None
    ) -> None:
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

    with IdSet() as held, _Placer(destination, after=release) as place:
        held.update(destination.message_ids())
        for stored, header, payload in exported(source, source_key, None, summary):
            message = envelope_from(header)
            if held.add(message.id):
                pending.append(stored)
                data = encode(message, payload, destination_key)
                place(message, data, stored.state, stored.record)
                summary.states[stored.state] += 1
            else:
                summary.skipped += 1
                pending.append(stored)
            tick(1)
    return summary
