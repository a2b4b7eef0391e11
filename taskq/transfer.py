"""Backup, restore and move queues: ``taskq export``, ``import`` and ``migrate``.

Everything goes through the broker contract (``brokers.base.Transfer`` and
``Queues``), so it works alike on every broker. Memory stays flat: messages
stream through one at a time, and the ids already seen or already held are
kept in a temporary SQLite file, not in a Python set.

``transfer_commands`` opens the brokers and files the commands name.

Import checks the whole file before it changes anything: every line must
verify (see ``backup_lines``), or nothing is imported and the first bad line
is named. The first pass (``transfer_check``) keeps what it verified in a
temporary file (``Verified``), and the second publishes from there.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .backup_lines import restored_state, to_line
from .brokers.base import DEAD, MESSAGE_STATES, Broker, Stored
from .errors import MessageError, TaskqError
from .idset import IdSet
from .keys import Keyring
from .message import Message, check_envelope, encode, envelope_from, unseal
from .transfer_check import Verified, verify

Tick = Callable[[int], object]
_BATCH = 500  # messages published (and, when migrating, removed) per step


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


def check(
    broker: Broker,
    key: Keyring,
    source: IO[str],
    *,
    source_key: Keyring | None = None,
    where: str = "<stdin>",
    tick: Tick = lambda n: None,
) -> Verified:
    """The first pass of an import into ``broker``: every line of ``source`` verified
    with ``source_key`` (the exporting broker's key; ``key`` if None) and signed with
    ``key``, but for ids ``broker`` holds already, in any state, or met earlier in
    the file (counted as ``skipped``): importing twice adds nothing."""
    with IdSet() as held:
        held.update(broker.message_ids())
        return verify(source, source_key or key, key, where, tick, skip=held)


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

    Every line is checked (``check``) before anything is imported; ``source`` may be
    what ``check`` made of it already for this broker.
    """
    with contextlib.ExitStack() as stack:
        if not isinstance(source, Verified):
            source = check(broker, key, source, source_key=source_key, where=where)
        stack.enter_context(source)
        summary = Summary(skipped=source.skipped)
        place = stack.enter_context(_Placer(broker))
        for message, data, state, record in source:
            place(message, data, state, record)
            summary.states[state] += 1
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
