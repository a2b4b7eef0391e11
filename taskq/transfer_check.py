"""The first pass of ``taskq import``: every line of an export checked before anything
is imported, and what it checked kept in a private spool (``Verified``).

Checking a line (its signature, its JSON, each field's type) and signing its
message again with the destination's key is pure computation, ~25 µs a line:
a long file is checked by a pool of processes, one per core, a chunk of lines
at a time. They are forked (a fresh interpreter would import the caller's main
module again, and cost more than a short file's whole check), and run nothing
but the check: no lock of this process's other threads is theirs to wait on.
The chunks come back in the file's order, a few at a time in flight, so memory
stays flat and the spool keeps the file's order.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import marshal
import multiprocessing
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from typing import IO, Any, NamedTuple

from .backup_lines import from_line
from .brokers.base import MESSAGE_STATES
from .brokers.fs import usable_cores
from .errors import MessageError, TaskqError
from .idset import IdSet
from .keys import Keyring
from .message import Message, encode

Tick = Callable[[int], object]
_CHUNK = 2000  # lines a process checks at a time (~700 KB of text)
_MOST_PROCESSES = 4


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
        self.skipped = 0  # ids held already, or met earlier in the file

    def add(self, chunk: Checked, skip: IdSet | None = None) -> None:
        """Keep the messages of ``chunk``, those whose id ``skip`` holds left out (and
        counted in ``skipped``); their ids go into ``skip``."""
        if skip is None:
            self._file.write(chunk.spooled)
            self.count += len(chunk.ids)
            return
        spooled, start = memoryview(chunk.spooled), 0
        for task_id, end in zip(chunk.ids, chunk.ends, strict=True):
            if skip.add(task_id):
                self._file.write(spooled[start:end])
                self.count += 1
            else:
                self.skipped += 1
            start = end

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


class Checked(NamedTuple):
    """A chunk of lines checked: the ids of its messages, and the messages as
    ``Verified`` keeps them, one after the other (message i ends at ``ends[i]``)."""

    ids: list[str]
    ends: list[int]
    spooled: bytes


def spool(message: Message, data: bytes, state: str, record: Mapping[str, Any] | None) -> bytes:
    """One message as ``Verified`` keeps it."""
    fields = marshal.dumps(tuple(map(message.__getattribute__, _FIELDS)))
    meta = b"" if record is None else json.dumps(record).encode()
    head = _SPOOLED.pack(_STATE_CODES[state], len(fields), len(meta), len(data))
    return b"".join((head, fields, meta, data))


def verify(
    source: IO[str],
    source_key: Keyring,
    key: Keyring,
    where: str,
    tick: Tick = lambda n: None,
    skip: IdSet | None = None,
) -> Verified:
    """Every line of ``source`` verified with ``source_key`` (the exporting broker's),
    its message signed with ``key`` (the destination's) into a ``Verified`` spool,
    but for ids ``skip`` holds. ``TaskqError`` naming the first bad line, and
    nothing kept."""
    verified = Verified()
    try:
        for chunk in _checked(_numbered_chunks(source), source_key, key, where):
            verified.add(chunk, skip)
            tick(len(chunk.ids))
    except BaseException:
        verified.close()
        raise
    return verified


# A chunk's outcome: its messages, or the number of its first bad line and what is
# wrong with it.
_Outcome = Checked | tuple[int, str]


def _checked(
    chunks: Iterator[tuple[int, list[str]]], source_key: Keyring, key: Keyring, where: str
) -> Iterator[Checked]:
    head = list(itertools.islice(chunks, 2))
    processes = min(usable_cores(), _MOST_PROCESSES)
    if len(head) < 2 or processes < 2:  # a short file: starting processes costs more
        for number, lines in itertools.chain(head, chunks):
            yield _accepted(_check(number, lines, source_key, key), where)
        return
    keys = (source_key.current, source_key.previous, key.signing_key())
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_take_keys,
        initargs=keys,
    )
    try:
        pending: collections.deque[Future[_Outcome]] = collections.deque()
        for number, lines in itertools.chain(head, chunks):
            pending.append(pool.submit(_check_here, number, lines))
            if len(pending) > 2 * processes:  # a few in flight: memory stays flat
                yield _accepted(pending.popleft().result(), where)
        while pending:
            yield _accepted(pending.popleft().result(), where)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _accepted(outcome: _Outcome, where: str) -> Checked:
    if isinstance(outcome, Checked):
        return outcome
    number, reason = outcome
    raise TaskqError(f"{where}, line {number}: {reason}; nothing was imported")


def _numbered_chunks(source: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(number of its first line, lines) for each run of ``_CHUNK`` lines."""
    lines = iter(source)
    number = 1
    while chunk := list(itertools.islice(lines, _CHUNK)):
        yield number, chunk
        number += len(chunk)


def _check(number: int, lines: list[str], source_key: Keyring, key: Keyring) -> _Outcome:
    ids: list[str] = []
    ends: list[int] = []
    out: list[bytes] = []
    end = 0
    for at, text in enumerate(lines, number):
        if not text.strip():
            continue
        try:
            line = from_line(text, source_key)
        except MessageError as exc:
            return at, str(exc)
        message = line.message
        out.append(spool(message, encode(message, line.payload, key), line.state, line.record))
        ids.append(message.id)
        end += len(out[-1])
        ends.append(end)
    return Checked(ids, ends, b"".join(out))


# -- in a checking process ------------------------------------------------------------

_keys: tuple[Keyring, Keyring] | None = None


def _take_keys(current: bytes, previous: tuple[bytes, ...], signing: bytes) -> None:
    global _keys
    _keys = Keyring(current, previous), Keyring(signing)


def _check_here(number: int, lines: list[str]) -> _Outcome:
    assert _keys is not None, "a checking process starts with the keys"
    return _check(number, lines, *_keys)
