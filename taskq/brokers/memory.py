"""The memory broker: the broker contract kept in this process, for users' tests.

Same states and invariants as the file broker, held in dictionaries under one
lock instead of folders: a message is in exactly one state, ready messages go
out in ``Message.name`` order (priority, then enqueue time), one consumer wins
each claim, scheduled messages wait for ``promote_due``. Messages stay signed
bytes: nothing here unpickles. Claims wait on a condition variable that every
publish, promotion and requeue notifies: no polling.

``memory://`` and ``memory://<name>`` name one broker per process (see
``named``), so two Apps with the same URL share their queues.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import TaskqError
from ..message import Message, validate_queue
from .base import CLAIMED, DEAD, READY, SCHEDULED, DeadLetter, Delivery, QueueCounts, Stored
from .memory_chords import MemoryChords, _Chord
from .memory_events import MemoryEvents
from .memory_rates import MemoryRates
from .memory_revocations import MemoryRevocations
from .memory_stores import MemorySchedule, MemoryStores
from .memory_unique import MemoryUniques
from .names import eta_of, id_in_state, id_of, ready_name_of, scheduled_name


class _Queue:
    """One queue's messages, by state. Names are the file broker's names."""

    def __init__(self) -> None:
        self.ready: list[str] = []  # a heap of names: the smallest goes out first
        self.data: dict[str, bytes] = {}  # the bytes of each ready name
        self.scheduled: dict[str, bytes] = {}  # by scheduled name (the ETA first)
        self.dead: dict[str, tuple[bytes, dict[str, Any], int]] = {}  # bytes, record, order

    def make_ready(self, name: str, data: bytes) -> None:
        if name not in self.data:
            heapq.heappush(self.ready, name)
        self.data[name] = data

    def take(self) -> tuple[str, bytes] | None:
        while self.ready:
            name = heapq.heappop(self.ready)
            data = self.data.pop(name, None)
            if data is not None:
                return name, data
        return None


class MemoryConsumer:
    """A consumer of a ``MemoryBroker``: claims under the broker's lock."""

    def __init__(self, broker: MemoryBroker, queues: Sequence[str], name: str) -> None:
        self.name = name
        self.queues = tuple(queues)
        self._broker = broker
        self.woken = False

    def claim(self, timeout: float) -> Delivery | None:
        return self._broker._claim(self, timeout)

    def wake(self) -> None:
        self._broker._wake(self)

    def close(self) -> None:
        self._broker._close(self.name)


class MemoryBroker(
    MemoryEvents,
    MemoryStores,
    MemoryChords,
    MemorySchedule,
    MemoryRates,
    MemoryUniques,
    MemoryRevocations,
):
    """A broker in this process's memory; safe for many threads, invisible to
    other processes (a ``taskq worker`` cannot serve it: run tasks with ``App.join``)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._queues: dict[str, _Queue] = {}
        self._claims: dict[str, dict[tuple[str, str], bytes]] = {}  # consumer -> claims
        self._live: set[str] = set()  # consumers open; the others in _claims are dead
        self._recovering: set[str] = set()
        self._dead_order = 0
        self._chords: dict[str, _Chord] = {}
        self._uniques: dict[str, tuple[str, float]] = {}  # see memory_unique.py
        MemoryStores.__init__(self)
        MemoryEvents.__init__(self)
        MemoryRates.__init__(self)
        MemoryRevocations.__init__(self)

    def __repr__(self) -> str:
        return f"MemoryBroker({self.name!r})"

    def _queue(self, queue: str) -> _Queue:
        found = self._queues.get(queue)
        if found is None:
            found = self._queues[validate_queue(queue)] = _Queue()
        return found

    def reset(self) -> None:
        """Forget every message, consumer, result and supervisor (between tests);
        the signing keys stay, so Apps already on this broker go on working."""
        with self._lock:
            self._queues.clear()
            self._claims.clear()
            self._live.clear()
            self._recovering.clear()
            self._results.clear()
            self._workers.clear()
            self._chords.clear()
            self._uniques.clear()
            self._events.clear()
            self._next_slots.clear()
            self._revoked.clear()
            for kept in self._schedule:
                kept.clear()

    def queues(self) -> list[str]:
        with self._lock:
            return sorted(self._queues)

    # -- publishing -----------------------------------------------------------

    def publish(self, message: Message, data: bytes) -> None:
        with self._lock:
            self._place(message, bytes(data))
            self._changed.notify_all()

    def _place(self, message: Message, data: bytes) -> None:
        queue = self._queue(message.queue)
        if message.eta is not None and message.eta > time.time():
            queue.scheduled[scheduled_name(message)] = data
        else:
            queue.make_ready(message.name, data)

    def publish_many(self, items: Iterable[tuple[Message, bytes]]) -> int:
        batch = list(items)  # every message checked before any is visible
        with self._lock:
            for message, _ in batch:
                self._queue(message.queue)
            for message, data in batch:
                self._place(message, bytes(data))
            self._changed.notify_all()
        return len(batch)

    # -- consuming --------------------------------------------------------------

    def open_consumer(self, queues: Sequence[str], name: str) -> MemoryConsumer:
        with self._lock:
            if name in self._claims:
                raise FileExistsError(f"consumer {name} already exists in {self!r}")
            for queue in queues:
                self._queue(queue)
            self._claims[name] = {}
            self._live.add(name)
        return MemoryConsumer(self, queues, name)

    def _claim(self, consumer: MemoryConsumer, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            if consumer.name not in self._live:
                raise TaskqError(f"consumer {consumer.name} is closed: it cannot claim")
            while True:
                # Queues in the consumer's order: the first with a ready message wins.
                for queue in consumer.queues:
                    taken = self._queues[queue].take()
                    if taken is not None:
                        name, data = taken
                        self._claims[consumer.name][(queue, name)] = data
                        return Delivery(queue, name, data, consumer.name)
                if consumer.woken:  # wake(): hand control back to the caller now
                    consumer.woken = False
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def _wake(self, consumer: MemoryConsumer) -> None:
        with self._lock:
            consumer.woken = True
            self._changed.notify_all()

    def _close(self, name: str) -> None:
        with self._lock:
            self._live.discard(name)

    # -- settling ---------------------------------------------------------------

    def _release(self, delivery: Delivery) -> bytes:
        """Take a claim out of its consumer's hands (TaskqError if it holds none)."""
        claims = self._claims.get(delivery.consumer, {})
        try:
            return claims.pop((delivery.queue, delivery.name))
        except KeyError:
            raise TaskqError(
                f"message {delivery.name} of queue {delivery.queue} is not claimed by "
                f"consumer {delivery.consumer} (settled already?)"
            ) from None

    def ack(self, delivery: Delivery) -> None:
        with self._lock:
            self._release(delivery)

    def retry_later(self, delivery: Delivery, message: Message, data: bytes) -> None:
        # The new attempt is placed before the old claim goes, as on disk: a
        # failing ack leaves a duplicate, never a loss.
        self.publish(message, data)
        self.ack(delivery)

    def requeue(self, delivery: Delivery) -> None:
        with self._lock:
            data = self._release(delivery)
            self._queue(delivery.queue).make_ready(delivery.name, data)
            self._changed.notify_all()

    def dead_letter(self, delivery: Delivery, record: Mapping[str, Any]) -> None:
        with self._lock:
            data = self._release(delivery)
            self._dead_order += 1
            dead = self._queue(delivery.queue).dead
            dead[delivery.name] = (data, dict(record), self._dead_order)

    def promote_due(self, now: float) -> int:
        moved = 0
        with self._lock:
            for queue in self._queues.values():
                for name in sorted(queue.scheduled):
                    if eta_of(name) > now:
                        break  # names start with the ETA: the rest are later
                    queue.make_ready(ready_name_of(name), queue.scheduled.pop(name))
                    moved += 1
            if moved:
                self._changed.notify_all()
        return moved

    # -- dead consumers -------------------------------------------------------

    def vouch(self, worker: str, consumers: Collection[str]) -> None:
        """Nothing to do: a consumer lives until it is closed."""

    def has_consumer(self, consumer: str) -> bool:
        with self._lock:
            return consumer in self._live or consumer in self._claims

    def dead_consumers(self) -> list[str]:
        with self._lock:
            return sorted(set(self._claims) - self._live - self._recovering)

    def recover(self, consumer: str) -> list[Delivery] | None:
        with self._lock:
            if consumer not in self._claims or consumer in self._live | self._recovering:
                return None
            self._recovering.add(consumer)
            claims = sorted(self._claims[consumer].items())
        return [Delivery(queue, name, data, consumer) for (queue, name), data in claims]

    def abandon_recovery(self, consumer: str) -> None:
        with self._lock:
            self._recovering.discard(consumer)

    def forget_consumer(self, consumer: str) -> None:
        with self._lock:
            self._recovering.discard(consumer)
            # Claims still held stay recoverable (as on disk, where the folder stays).
            if consumer not in self._live and not self._claims.get(consumer):
                self._claims.pop(consumer, None)

    # -- inspection and clean-up ----------------------------------------------

    def counts(self) -> dict[str, QueueCounts]:
        with self._lock:
            claimed: dict[str, int] = {}
            for claims in self._claims.values():
                for queue, _ in claims:
                    claimed[queue] = claimed.get(queue, 0) + 1
            return {
                name: QueueCounts(
                    ready=len(q.data),
                    scheduled=len(q.scheduled),
                    claimed=claimed.get(name, 0),
                    dead=len(q.dead),
                )
                for name, q in sorted(self._queues.items())
            }

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        with self._lock:
            names = [queue] if queue else sorted(self._queues)
            held = [
                (order, DeadLetter(q, name, dict(record)))
                for q in names
                for name, (_, record, order) in self._queue(q).dead.items()
            ]
        return [letter for _, letter in sorted(held, key=lambda pair: pair[0])]

    def dead_message(self, letter: DeadLetter) -> bytes:
        with self._lock:
            dead = self._queue(letter.queue).dead.get(letter.name)
        if dead is None:
            raise TaskqError(f"dead message {letter.id} is gone (retried or purged meanwhile)")
        return dead[0]

    def remove_dead(self, letter: DeadLetter) -> None:
        with self._lock:
            self._queue(letter.queue).dead.pop(letter.name, None)

    def purge(self, queue: str) -> int:
        with self._lock:
            q = self._queue(validate_queue(queue))
            removed = len(q.data) + len(q.scheduled)
            q.ready, q.data, q.scheduled = [], {}, {}
        return removed

    def find(self, task_id: str) -> str | None:
        with self._lock:
            for claims in self._claims.values():
                if any(id_of(name) == task_id for _, name in claims):
                    return "claimed"
            for q in self._queues.values():
                if any(id_of(name) == task_id for name in q.data):
                    return "ready"
                if any(id_of(ready_name_of(name)) == task_id for name in q.scheduled):
                    return "scheduled"
                if any(id_of(name) == task_id for name in q.dead):
                    return "dead"
        return None

    def _stored_bytes(self) -> Iterable[bytes]:
        with self._lock:
            held = list(super()._stored_bytes())
            for q in self._queues.values():
                held += [*q.data.values(), *q.scheduled.values()]
                held += [data for data, _, _ in q.dead.values()]
            for claims in self._claims.values():
                held += claims.values()
        return held

    def housekeeping_steps(self, now: float, results_before: float) -> Iterator[bool]:
        # No writer leaves litter in memory: expiry is all there is.
        yield from self.expiry_steps(results_before)
        yield from self.chord_expiry_steps(results_before)
        yield from self.unique_expiry_steps(now)
        yield from self.revocation_steps(now)

    # -- backup, restore and migration ------------------------------------------

    def export_messages(
        self, queues: Collection[str] | None, seen: Callable[[str], bool]
    ) -> Iterator[Stored]:
        # A snapshot under the lock: references to bytes already held, not copies.
        with self._lock:
            names = sorted(self._queues) if queues is None else sorted(queues)
            held: list[Stored] = []
            for name in names:
                q = self._queue(name)
                held += [Stored(name, SCHEDULED, n, d) for n, d in q.scheduled.items()]
                held += [Stored(name, READY, n, d) for n, d in q.data.items()]
            for claims in self._claims.values():
                held += [Stored(q, CLAIMED, n, d) for (q, n), d in claims.items() if q in names]
            for name in names:
                dead = self._queue(name).dead
                held += [Stored(name, DEAD, n, d, dict(r)) for n, (d, r, _) in dead.items()]
        for stored in held:
            if not seen(id_in_state(stored.state, stored.name)):
                yield stored

    def message_ids(self) -> Iterator[str]:
        held = self.export_messages(None, lambda _: False)
        return iter([id_in_state(s.state, s.name) for s in held])

    def restore_dead(self, queue: str, name: str, data: bytes, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._dead_order += 1
            self._queue(queue).dead[name] = (bytes(data), dict(record), self._dead_order)

    def discard(self, stored: Stored) -> None:
        with self._lock:
            q = self._queue(stored.queue)
            if stored.state == READY:
                q.data.pop(stored.name, None)  # the heap skips names without data
            elif stored.state == SCHEDULED:
                q.scheduled.pop(stored.name, None)
            elif stored.state == DEAD:
                q.dead.pop(stored.name, None)
            else:
                for claims in self._claims.values():
                    claims.pop((stored.queue, stored.name), None)


_named: dict[str, MemoryBroker] = {}
_named_lock = threading.Lock()


def named(name: str = "") -> MemoryBroker:
    """The process's memory broker called ``name``, made on first use: every
    ``memory://<name>`` App of this process shares it."""
    with _named_lock:
        broker = _named.get(name)
        if broker is None:
            broker = _named[name] = MemoryBroker(name)
        return broker
