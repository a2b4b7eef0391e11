"""The broker contract: small protocols by concept, each method keeping one invariant.

The file broker implements it today; a scale-out broker (Redis) is to
implement the same methods and pass the same tests. Messages are opaque
signed bytes here: a broker never unpickles anything, it only moves bytes
between states.

States a message goes through::

    scheduled --promote_due--> ready --claim--> claimed --ack--------> (gone)
                                  ^               |-----retry_later--> scheduled
                                  |               |-----dead_letter--> dead
                                  +--requeue------+ (shutdown, dead consumer)

``Broker`` is every part together: ``Queues`` (the states above), ``Recovery``
(dead consumers), ``Inspection`` (what ``taskq`` commands read), ``ResultStore``,
``Registry`` (live supervisors), ``KeyStore``, ``Housekeeping``, ``Chords``
(the state of ``canvas.chord``) and ``Events``. Code that
needs one part names that part. What only one implementation needs (the file
broker's tmp/ litter, its recycled files) stays in that implementation.
``Schedule`` (the periodic tasks' lease and ticks) is a part too, and so are
``RateLimits`` (the slots of rate-limited tasks), ``Uniques`` (the keys of
unique tasks) and ``Revocations`` (revoked task ids).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..keys import Keyring
from ..message import Message

# The states of the diagram above, as ``Inspection.find`` names them for any broker.
READY, SCHEDULED, CLAIMED, DEAD = "ready", "scheduled", "claimed", "dead"
MESSAGE_STATES = (READY, SCHEDULED, CLAIMED, DEAD)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed message: where it is and its raw (still signed) bytes.

    ``unsafe`` says why an entry could not be read at all (a folder, FIFO,
    device or symbolic link where a message file should be): ``data`` is empty
    then, and the entry is to be quarantined, not opened. ``started`` is False
    for a recovered claim that its consumer had taken ahead (prefetched) but
    never handed to a task: it goes back uncounted.
    """

    queue: str
    name: str
    data: bytes
    consumer: str
    unsafe: str = ""
    started: bool = True


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead message and the record of why it died."""

    queue: str
    name: str
    record: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.record.get("id") or self.name)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    ready: int
    scheduled: int
    claimed: int
    dead: int


class Consumer(Protocol):
    name: str

    def claim(self, timeout: float) -> Delivery | None:
        """Take the next message in delivery order, or None after ``timeout``.

        Exactly one consumer wins each message. An idle consumer waits on a
        wake-up event, not a busy poll.
        """

    def wake(self) -> None:
        """Make a blocked ``claim`` return early (for shutdown)."""

    def close(self) -> None:
        """Release the consumer's liveness lock. Claimed messages stay claimed."""


class Queues(Protocol):
    """Moving messages between states: the hot path of every task."""

    def publish(self, message: Message, data: bytes) -> None:
        """Make a message visible whole or not at all (ready/, or scheduled/ with an ETA)."""

    def publish_many(self, items: Iterable[tuple[Message, bytes]]) -> int:
        """Publish a batch; durable brokers make the whole batch durable at once."""

    def open_consumer(self, queues: Sequence[str], name: str) -> Consumer:
        """Register a live consumer of ``queues`` (in priority order)."""

    def ack(self, delivery: Delivery) -> None:
        """The message is done: forget it."""

    def retry_later(self, delivery: Delivery, message: Message, data: bytes) -> None:
        """Write the new attempt (scheduled at ``message.eta``) BEFORE removing the old one."""

    def requeue(self, delivery: Delivery) -> None:
        """Put a claimed message back in ready/ unchanged (no attempt counted)."""

    def dead_letter(self, delivery: Delivery, record: Mapping[str, Any]) -> None:
        """Move a message to dead/ with a readable record of why."""

    def promote_due(self, now: float) -> int:
        """Move scheduled messages whose ETA has passed to ready/; return how many."""


class Recovery(Protocol):
    """Consumers' liveness, and taking over what a dead consumer held."""

    def vouch(self, worker: str, consumers: Collection[str]) -> None:
        """Supervisor ``worker`` runs the processes of exactly these ``consumers``
        now (it says so before forking one and after reaping one). A broker that
        keeps liveness itself (Redis) keeps them alive from the supervisor, which
        runs no task, and counts one left out as dead at once; one whose liveness
        is a lock the consumer's process holds (files) has nothing to do."""

    def has_consumer(self, consumer: str) -> bool:
        """Whether a consumer of this name is registered: ``open_consumer`` returned
        and it was not forgotten since (a dead one counts until it is recovered)."""

    def dead_consumers(self) -> list[str]:
        """Names of consumers whose process is gone but whose claims remain."""

    def recover(self, consumer: str) -> list[Delivery] | None:
        """Take over a dead consumer's claims (None if it is alive or taken already).

        The caller settles each delivery (requeue, retry_later, dead_letter)
        and then calls ``forget_consumer``.
        """

    def forget_consumer(self, consumer: str) -> None:
        """Remove a recovered consumer once its claims are settled."""

    def abandon_recovery(self, consumer: str) -> None:
        """Give up a recovery that failed half-way (a full disk): release the dead
        consumer, so that the next sweep takes over the claims still left."""


class Inspection(Protocol):
    """What ``taskq status`` / ``taskq dead`` and ``AsyncResult`` ask of the queues."""

    def counts(self) -> dict[str, QueueCounts]:
        """Messages per state, per queue."""

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        """Dead messages with their records, oldest first (the messages are not read)."""

    def dead_message(self, letter: DeadLetter) -> bytes:
        """The dead message's signed bytes, read only when asked (listing reads records)."""

    def remove_dead(self, letter: DeadLetter) -> None:
        """Forget one dead message (after it was retried or purged)."""

    def purge(self, queue: str) -> int:
        """Drop every ready and scheduled message of a queue; return how many."""

    def find(self, task_id: str) -> str | None:
        """The state holding ``task_id``'s message, if any: one of ``MESSAGE_STATES``.

        The names are the contract's, not a layout's: "claimed" means a consumer
        holds it (the task has started), whatever the broker keeps it in.
        """


class ResultStore(Protocol):
    """Signed results, kept until read, deleted or expired."""

    def store_result(self, task_id: str, data: bytes) -> None:
        """Store a signed result atomically (readers see all of it or nothing)."""

    def load_result(self, task_id: str) -> bytes | None:
        """The stored result bytes, or None."""

    def delete_result(self, task_id: str) -> None:
        """Forget a stored result (its task will run again, or the user asked)."""

    def expire_results(self, older_than: float) -> int:
        """Delete results stored before ``older_than`` (a timestamp); return how many."""


def worker_name_taken(name: str, where: object) -> str:
    """The error of ``Registry.register_worker`` for a name a live worker holds."""
    return (
        f"a live worker named {name!r} is registered on broker {where}: give this one "
        "another name (-n/--hostname)"
    )


class Registry(Protocol):
    """The live supervisors and the state each publishes for ``taskq status``."""

    def register_worker(self, name: str) -> None:
        """Announce a live supervisor (its liveness is kept like a consumer's).
        ``BrokerError`` (``worker_name_taken``) if a live one has the name."""

    def publish_worker_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Replace what ``taskq status`` shows for a live supervisor."""

    def unregister_worker(self, name: str) -> None:
        """Remove a supervisor that is stopping."""

    def forget_dead_workers(self) -> list[str]:
        """Remove what supervisors that died without unregistering left (their lock
        is free), never one being registered; return their names."""

    def worker_states(self) -> list[dict[str, Any]]:
        """The last published state of every live supervisor."""


class KeyStore(Protocol):
    """The signing keys kept with the broker, and whether it is still safe to use."""

    def keys(self) -> Keyring:
        """The signing keys kept with the broker; a key is made only while no message
        is stored (else BrokerError: a lost key)."""

    def rotate_key(self) -> None:
        """Make a new signing key; the previous ones still verify until pruned."""

    def prune_keys(self) -> int:
        """Drop the previous keys if no stored message or result needs them; how many
        (BrokerError naming how many still need them otherwise)."""

    def check_trust(self) -> None:
        """Raise BrokerError if the broker's folders or key are no longer safe to
        use (owned or writable by users not trusted, replaced by links)."""


class Housekeeping(Protocol):
    """The supervisor's periodic clean-up, whatever a broker needs cleaned."""

    def housekeeping_steps(self, now: float, results_before: float) -> Iterator[bool]:
        """Expire results stored before ``results_before`` and whatever else this
        broker leaves behind (crashed writers' litter), as one walk the caller
        drives a step (one deletion) at a time; each step says whether it deleted
        something. A walk dropped half-way loses nothing: the next one finds what
        is left. A broker with nothing to do yields no steps."""


class Schedule(Protocol):
    """Owning the periodic schedule (one publisher among all workers of a broker),
    and the last tick published for each periodic task."""

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lease ``name`` for ``owner``, or keep it (renew) if ``owner`` holds
        it; False while someone else holds it. It lapses when its holder's process
        dies (file broker: a flock the kernel drops) or ``ttl`` seconds after the last
        acquire (memory, Redis: a key with a TTL), so another owner can take it."""

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it (else nothing)."""

    def last_tick(self, task: str) -> float | None:
        """The last tick recorded for periodic ``task`` (a timestamp), or None."""

    def record_tick(self, task: str, tick: float) -> bool:
        """Record ``tick`` as ``task``'s last one unless a later or equal one is
        recorded (atomically on a shared broker); whether it was recorded."""


class Chords(Protocol):
    """The state of chords (``taskq.canvas.chord``): each member's result and who
    completed the set, kept in the broker so that no worker's memory holds it."""

    def chord_add(self, chord_id: str, index: int, total: int, data: bytes) -> bool:
        """Keep ``data`` (a signed result record) as member ``index`` of ``total``;
        the first data given for an index stays. True for exactly one member index:
        the one whose add completed the set, atomically even when members finish
        at once, and again each time that same index is added (a re-run of the
        completing member must publish the callback its crash may have lost)."""

    def chord_results(self, chord_id: str) -> list[bytes]:
        """Every member's data, in index order (call once ``chord_add`` said True)."""


# -- backup, restore and migration (taskq export / import / migrate) ----------------


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as a broker holds it, for export: its queue, state (one of
    ``MESSAGE_STATES``), its name in that state, its signed bytes and, for a
    dead letter, the record of why it died."""

    queue: str
    state: str
    name: str
    data: bytes
    record: Mapping[str, Any] | None = None


class Transfer(Protocol):
    """Reading every message out and putting messages back, for backups and moves."""

    def export_messages(
        self, queues: Collection[str] | None, seen: Callable[[str], bool]
    ) -> Iterator[Stored]:
        """Every ready, scheduled, claimed and dead message of ``queues`` (all if None),
        streamed: memory does not grow with the queue. ``seen(id)`` is asked before
        a message's bytes are read; True skips it (the caller remembers the ids it
        took). Safe while workers run: see docs/production.md for what a broker
        walking its states (files) or copying them at once (Redis, memory) promises."""

    def message_ids(self) -> Iterator[str]:
        """The id of every message held, in any state (read from names, not bytes)."""

    def restore_dead(self, queue: str, name: str, data: bytes, record: Mapping[str, Any]) -> None:
        """Put a dead message back in dead/ under ``name``, with its record."""

    def discard(self, stored: Stored) -> None:
        """Remove one exported message from its state (``taskq migrate``, once the
        destination holds it); one gone meanwhile is not an error."""


def parse_events(line: bytes) -> list[dict[str, Any]]:
    """The events one stored line holds, as readers see them: none for a line that
    is no JSON object (cut short by a crash, or written by someone else: readers
    skip it), two for a run the recorder wrote on one line (``started_us``: its
    ``started``, then its ``succeeded``), else the one object.

    The recorder stores its times as whole microseconds (``ts_us``, ``runtime_us``,
    ``started_us``): a number far cheaper to write than a float's shortest form.
    Readers see seconds, as ``ts`` and ``runtime``, ``event`` and ``ts`` first."""
    try:
        stored = json.loads(line)
    except ValueError:
        return []
    if not isinstance(stored, dict):
        return []
    ts, started = stored.get("ts_us"), stored.get("started_us")
    if type(ts) is not int:
        return [stored]  # as written: not the recorder's compact form
    rest = {k: v for k, v in stored.items() if k not in _COMPACT}
    event = {"event": stored.get("event"), "ts": ts / 1e6}
    runtime = stored.get("runtime_us")
    if type(runtime) is int:
        event["runtime"] = runtime / 1e6
    if type(started) is not int:
        return [event | rest]
    limit = rest.pop("time_limit", None)
    return [{"event": "started", "ts": started / 1e6, "time_limit": limit} | rest, event | rest]


_COMPACT = frozenset({"event", "ts_us", "runtime_us", "started_us"})


class Events(Protocol):
    """The event log (``taskq events``, metrics): what happened to messages, as JSON
    objects, oldest first, capped in size (the oldest go first). Best effort: an
    event is never worth failing or slowing down a task."""

    def append_events(self, events: Sequence[str]) -> None:
        """Append a batch of events, each a JSON object encoded on one line (the
        recorder encodes them: a broker stores text); readers see whole events."""

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        """Up to ``limit`` events appended after the cursor ``after`` ("": from the oldest
        kept), and the cursor to read on from. A cursor whose events were dropped
        (rotated, trimmed) reads on from the oldest kept. The events of one stored
        line (``parse_events``) are never split: a page holds them whole, one more
        than ``limit`` when the first line of a page of one holds two."""


class RateLimits(Protocol):
    """Rate limits shared by every worker of the broker (``@task(rate_limit=...)``)."""

    def take_slot(self, key: str, interval: float, burst: int) -> float:
        """Reserve the next free slot of the rate named ``key`` (one start every
        ``interval`` seconds, up to ``burst`` at once after a quiet spell) and return
        the seconds until it (0: start now). Atomic over every process and host of
        the broker, on the broker's one clock: each take gets a slot of its own, so
        N takes at once get N slots, ``interval`` apart past the burst. A slot
        reserved and never used is lost (the rate dips), never given twice."""


class Uniques(Protocol):
    """Unique tasks' keys (``@task(unique_for=...)``): a key is held by the id of the
    one message it let through, until that message is settled for good or the
    key's lifetime passes (the backstop when a release is lost)."""

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        """Hold ``key`` for ``task_id`` for ``ttl`` seconds, unless a holder whose
        lifetime has not passed has it: the holder's id (``task_id`` when this call
        won). Atomic: of many callers at once, exactly one wins a free key."""

    def release_unique(self, key: str, task_id: str) -> None:
        """Let ``key`` go if ``task_id`` still holds it (else nothing: a later holder
        keeps it)."""


class Revocations(Protocol):
    """Revoked task ids (``AsyncResult.revoke``): a worker settles a message under a
    revoked id as revoked instead of running it, and a supervisor kills the process
    running one revoked with ``terminate``. An id may be revoked before any message
    carries it. Each revocation is kept until its ``expires_at``."""

    def revoke(self, task_ids: Collection[str], terminate: bool, expires_at: float) -> None:
        """Record ``task_ids`` as revoked until ``expires_at`` (a timestamp); revoking
        an id again extends it, and ``terminate`` once given stays."""

    def is_revoked(self, task_id: str) -> bool:
        """Whether ``task_id`` is revoked. Asked for every message a worker opens, so
        it costs no round trip of its own: answered from a copy kept in this process
        and reloaded when the broker's change marker moves (files: one ``stat``;
        Redis: looked at once a second at most, so a revocation reaches a worker
        within about a second)."""

    def terminations(self) -> set[str]:
        """The ids revoked with ``terminate``, as fresh as ``is_revoked`` sees them."""

    def revocation_steps(self, now: float) -> Iterator[bool]:
        """Forget the revocations whose ``expires_at`` is before ``now``, one a step
        (part of ``housekeeping_steps``)."""


class Broker(
    Queues,
    Recovery,
    Inspection,
    ResultStore,
    Registry,
    KeyStore,
    Housekeeping,
    Chords,
    Transfer,
    Events,
    Schedule,
    RateLimits,
    Uniques,
    Revocations,
    Protocol,
):
    """Everything taskq asks of a broker: each part above, in one object."""
