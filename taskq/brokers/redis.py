"""The Redis broker: the broker contract kept in one Redis, for workers on many hosts.

The same states as the file broker's folders, as Redis keys under a prefix
(``taskq:`` unless the URL says ``?prefix=``)::

    queues                  SET   every queue name seen
    ready:<q>               ZSET  ready names, all scored 0: ZPOPMIN gives the
                                  smallest name, i.e. priority then enqueue time
    scheduled:<q>           ZSET  scheduled names scored by their ETA
    data:<q>                HASH  ready or scheduled name -> signed bytes
    claims:<consumer>       HASH  "<q>/<name>" -> signed bytes: what it holds
    dead:<q>                ZSET  dead names in order of death (dead-seq)
    dead-data:<q>, dead-record:<q>  HASH  name -> signed bytes / JSON record
    consumers               HASH  consumer -> JSON (host, pid, queues)
    live:<consumer>         STR   exists while the consumer is alive (PX TTL)
    recovering:<consumer>   STR   held by the supervisor recovering its claims
    wake:<q>, wake-consumer:<consumer>  LIST  tokens a blocked claim waits on
    result:<id>             STR   signed result (PX result_expires)
    results                 ZSET  id -> time stored, for expiry
    workers                 HASH  supervisor -> its published state (JSON)
    alive:<supervisor>      STR   exists while the supervisor is alive (PX TTL)
    keys                    HASH  the signing keyring

Every move between states is one Lua script (``redis_scripts``), so a message
is in one state at any time and one consumer wins each claim. A blocked claim
waits in BLPOP on wake-up tokens that every publish pushes: no polling.

Liveness: a consumer is alive while its ``live:`` key exists. A supervisor
vouches for its children (``vouch``): a thread in the supervisor, which runs no
task, refreshes their keys, so a CPU-bound task cannot starve them; a consumer
nobody vouches for (a script, a test) refreshes its own from a thread. When the
key lapses (``liveness_timeout``, 10 s unless the URL says), whichever live
supervisor sweeps first takes the claims over, once (``recovering:`` is SET NX).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import TaskqError
from ..message import Message, validate_queue
from . import redis_scripts as lua
from .base import DeadLetter, Delivery, QueueCounts
from .names import id_of, scheduled_name
from .redis_link import RedisLink
from .redis_stores import RedisStores

log = logging.getLogger("taskq.redis")

_PROMOTE_MOST = 1000  # scheduled messages promoted per queue per call
_BATCH = 1000  # messages per script call in publish_many
_BLOCK_MOST = 5.0  # seconds one BLPOP may block (a stop or a lost link ends it sooner)


class RedisConsumer:
    """A consumer of a ``RedisBroker``: claims by script, waits in BLPOP.

    It keeps one connection of its own. Acks and results of this consumer's
    deliveries are written on it without waiting for the reply (read before the
    next command), so a task costs one round trip: its claim. A write whose
    reply was lost with the connection is sent again: each is idempotent.
    """

    def __init__(self, broker: RedisBroker, queues: Sequence[str], name: str) -> None:
        self.name = name
        self.queues = tuple(queues)
        self._broker = broker
        self._link = RedisLink(broker.client, broker.where)
        self._wake_key = broker.key("wake-consumer:", name)
        self._block_keys = [self._wake_key, *(broker.key("wake:", q) for q in self.queues)]
        self._claim_args = [broker.prefix, name, *self.queues]
        self.held: set[str] = set()  # "<q>/<name>" of deliveries handed out, not settled
        self.closed = False

    def claim(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            delivery = self._link.attempt(self._take_one)
            if delivery is not None:
                return delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._link.broken:  # waiting to reconnect: attempt() slept already
                continue
            popped = self._link.attempt(partial(self._wait, min(remaining, _BLOCK_MOST)))
            if popped and popped[0].decode() == self._wake_key:
                return None  # wake(): give control back to the caller
        raise TaskqError(f"consumer {self.name} is closed: it cannot claim")

    def _wait(self, seconds: float) -> Any:
        """Block until a wake-up token comes (a publish, or ``wake``): [key, token] or None."""
        return self._link.call("BLPOP", *self._block_keys, seconds)

    def _take_one(self) -> Delivery | None:
        """One claim: a claim the link lost first (held here, unknown to the caller),
        else the script's; None when nothing is ready."""
        if self._link.resync:
            orphan = self._orphan()
            if orphan is not None:
                return orphan
        try:
            taken = self._link.script(lua.CLAIM, self._claim_args)
        except redis.ResponseError as exc:
            if str(exc).startswith("GONE"):
                raise TaskqError(
                    f"consumer {self.name} lost its claims to recovery: its liveness "
                    f"lapsed ({exc}); restart it"
                ) from None
            raise
        if not taken:
            return None
        queue, name, data = taken[0].decode(), taken[1].decode(), bytes(taken[2])
        self.held.add(f"{queue}/{name}")
        return Delivery(queue, name, data, self.name)

    def _orphan(self) -> Delivery | None:
        """After a lost connection: a claim the script made whose reply never came."""
        self._link.resync = False
        claims = self._link.call("HGETALL", self._broker.key("claims:", self.name))
        for field, data in sorted(claims.items()):
            key = field.decode()
            if key not in self.held:
                queue, _, name = key.partition("/")
                self.held.add(key)
                log.warning("Claim of %s kept through a lost connection: delivered now", name)
                return Delivery(queue, name, bytes(data), self.name)
        return None

    def settled(self, delivery: Delivery) -> None:
        self.held.discard(f"{delivery.queue}/{delivery.name}")

    def write(self, *command: Any) -> None:
        """Send a write on this consumer's connection; its reply is read later."""
        self._link.send_later(command)

    def sync(self) -> None:
        """Wait until every write sent so far is done."""
        self._link.attempt(self._link.flush, until_done=True)

    def wake(self) -> None:
        # May run in a signal handler while this process is in BLPOP: a connection
        # of its own, not the pool's (whose lock the interrupted code may hold).
        self._broker.fresh_client().lpush(self._wake_key, "1")

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.sync()
        finally:
            self.closed = True
            self._link.close()
            self._broker.consumer_closed(self)


class RedisBroker(RedisStores):
    """The broker contract on one Redis (any version from 6.2), shared by every
    producer and worker that names the same URL and prefix."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "taskq:",
        liveness_timeout: float = 10.0,
        result_expires: float = 86400.0,
        connect_timeout: float = 2.0,
        retry_for: float = 3.0,
    ) -> None:
        self.url = url
        self.where = _redact(url)
        self.prefix = prefix
        self.liveness_ms = int(liveness_timeout * 1000)
        self.result_expires_ms = max(int(result_expires * 1000), 1)
        self.retry_for = retry_for
        self._options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": _BLOCK_MOST + liveness_timeout,
            "retry": Retry(NoBackoff(), 0),  # retried here, knowing what is safe to repeat
            "client_name": f"taskq-{socket.gethostname()}-{os.getpid()}",
        }
        self.client: Any = redis.Redis.from_url(url, **self._options)
        self._local: dict[str, RedisConsumer] = {}
        self._local_lock = threading.Lock()
        super().__init__()

    def __repr__(self) -> str:
        return f"RedisBroker({self.where!r}, prefix={self.prefix!r})"

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}{name}"

    def fresh_client(self) -> redis.Redis:
        """A client with a pool of its own (for a signal handler, or a thread)."""
        return redis.Redis.from_url(self.url, **self._options)

    # -- publishing -----------------------------------------------------------

    def publish(self, message: Message, data: bytes) -> None:
        args = [self.prefix, *_placed(message, data)]
        self.call(lambda: self.script(lua.PUBLISH, args))

    def publish_many(self, items: Iterable[tuple[Message, bytes]]) -> int:
        batch = [_placed(message, data) for message, data in items]
        if not batch:
            return 0

        def send() -> None:
            # One transaction: every chunk's script runs before any client sees one.
            pipe = self.client.pipeline(transaction=True)
            for start in range(0, len(batch), _BATCH):
                args = [a for placed in batch[start : start + _BATCH] for a in placed]
                self.script_in(pipe, lua.PUBLISH, [self.prefix, *args])
            pipe.execute()

        self.call(send)
        return len(batch)

    # -- consuming --------------------------------------------------------------

    def open_consumer(self, queues: Sequence[str], name: str) -> RedisConsumer:
        for queue in queues:
            validate_queue(queue)
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "queues": queues})
        args = [self.prefix, name, info, self.liveness_ms]
        vouched = self.call(lambda: self.script(lua.OPEN_CONSUMER, args))
        if vouched == -1:
            raise FileExistsError(f"consumer {name} already exists in {self!r}")
        consumer = RedisConsumer(self, queues, name)
        with self._local_lock:
            self._local[name] = consumer
        if not vouched:
            self.heartbeat.keep(self.key("live:", name))
        return consumer

    def consumer_closed(self, consumer: RedisConsumer) -> None:
        with self._local_lock:
            self._local.pop(consumer.name, None)
        live = self.key("live:", consumer.name)
        if self.heartbeat.drop(live):  # kept alive by us: dead from now
            self.call(lambda: self.client.delete(live))

    def _settle(self, delivery: Delivery, script: str, *extra: Any) -> int:
        local = self._local.get(delivery.consumer)
        if local is not None:
            local.sync()  # its acks and results first, in order
            local.settled(delivery)
        args = [self.prefix, delivery.consumer, delivery.queue, delivery.name, *extra]
        return int(self.call(lambda: self.script(script, args)))

    def ack(self, delivery: Delivery) -> None:
        claims = self.key("claims:", delivery.consumer)
        field = f"{delivery.queue}/{delivery.name}"
        local = self._local.get(delivery.consumer)
        if local is not None and not local.closed:
            local.settled(delivery)
            local.write("HDEL", claims, field)
            return
        if not self.call(lambda: self.client.hdel(claims, field)):
            raise TaskqError(
                f"message {delivery.name} of queue {delivery.queue} is not claimed by "
                f"consumer {delivery.consumer} (settled already?)"
            )

    def retry_later(self, delivery: Delivery, message: Message, data: bytes) -> None:
        # The new attempt is written before the old claim goes: a failing ack
        # leaves a duplicate, never a loss.
        self.publish(message, data)
        self.ack(delivery)

    def requeue(self, delivery: Delivery) -> None:
        self._settle(delivery, lua.REQUEUE)

    def dead_letter(self, delivery: Delivery, record: Mapping[str, Any]) -> None:
        self._settle(delivery, lua.DEAD_LETTER, json.dumps(dict(record), default=str))

    def promote_due(self, now: float) -> int:
        return int(
            self.call(lambda: self.script(lua.PROMOTE, [self.prefix, repr(now), _PROMOTE_MOST]))
        )

    # -- dead consumers -------------------------------------------------------

    def vouch(self, worker: str, consumers: Collection[str]) -> None:
        """Keep ``consumers`` (the children of supervisor ``worker``) alive from this
        process; one dropped from the set is dead at once, its claims recoverable."""
        keys = {self.key("live:", c) for c in consumers}
        dropped = self.heartbeat.vouch(keys)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, "1", px=self.liveness_ms)
        if dropped:
            pipe.delete(*dropped)
        self.call(pipe.execute)

    def has_consumer(self, consumer: str) -> bool:
        return bool(self.call(lambda: self.client.hexists(self.key("consumers"), consumer)))

    def dead_consumers(self) -> list[str]:
        def read() -> list[str]:
            names = sorted(n.decode() for n in self.client.hkeys(self.key("consumers")))
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(self.key("live:", name), self.key("recovering:", name))
            return [n for n, alive in zip(names, pipe.execute(), strict=True) if not alive]

        return self.call(read)

    def recover(self, consumer: str) -> list[Delivery] | None:
        lease = self.liveness_ms * 6  # a recovery that dies half-way is taken over after this
        flat = self.call(lambda: self.script(lua.RECOVER, [self.prefix, consumer, lease]))
        if not flat:
            return None if flat is None or flat is False else []
        deliveries = []
        for field, data in sorted(zip(flat[::2], flat[1::2], strict=True)):
            queue, _, name = field.decode().partition("/")
            deliveries.append(Delivery(queue, name, bytes(data), consumer))
        return deliveries

    def forget_consumer(self, consumer: str) -> None:
        self.call(lambda: self.script(lua.FORGET_CONSUMER, [self.prefix, consumer]))

    def abandon_recovery(self, consumer: str) -> None:
        self.call(lambda: self.client.delete(self.key("recovering:", consumer)))

    # -- inspection and clean-up ----------------------------------------------

    def queues(self) -> list[str]:
        names = self.call(lambda: self.client.smembers(self.key("queues")))
        return sorted(q.decode() for q in names)

    def counts(self) -> dict[str, QueueCounts]:
        def read() -> dict[str, QueueCounts]:
            names = self.queues()
            pipe = self.client.pipeline(transaction=False)
            for q in names:
                pipe.zcard(self.key("ready:", q))
                pipe.zcard(self.key("scheduled:", q))
                pipe.zcard(self.key("dead:", q))
            sizes = pipe.execute()
            claimed = dict.fromkeys(names, 0)
            for field in self._claimed_fields():
                queue = field.partition("/")[0]
                claimed[queue] = claimed.get(queue, 0) + 1
            return {
                q: QueueCounts(sizes[3 * i], sizes[3 * i + 1], claimed.get(q, 0), sizes[3 * i + 2])
                for i, q in enumerate(names)
            }

        return self.call(read)

    def _claimed_fields(self) -> list[str]:
        consumers = [c.decode() for c in self.client.hkeys(self.key("consumers"))]
        pipe = self.client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.hkeys(self.key("claims:", consumer))
        return [field.decode() for fields in pipe.execute() for field in fields]

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        def read() -> list[DeadLetter]:
            held: list[tuple[float, DeadLetter]] = []
            for q in [validate_queue(queue)] if queue else self.queues():
                ranked = self.client.zrange(self.key("dead:", q), 0, -1, withscores=True)
                if not ranked:
                    continue
                names = [name.decode() for name, _ in ranked]
                records = self.client.hmget(self.key("dead-record:", q), names)
                for (_, order), name, record in zip(ranked, names, records, strict=True):
                    letter = DeadLetter(q, name, json.loads(record) if record else {})
                    held.append((order, letter))
            return [letter for _, letter in sorted(held, key=lambda pair: pair[0])]

        return self.call(read)

    def dead_message(self, letter: DeadLetter) -> bytes:
        key = self.key("dead-data:", letter.queue)
        data = self.call(lambda: self.client.hget(key, letter.name))
        if data is None:
            raise TaskqError(f"dead message {letter.id} is gone (retried or purged meanwhile)")
        return bytes(data)

    def remove_dead(self, letter: DeadLetter) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.key("dead:", letter.queue), letter.name)
        pipe.hdel(self.key("dead-data:", letter.queue), letter.name)
        pipe.hdel(self.key("dead-record:", letter.queue), letter.name)
        self.call(pipe.execute)

    def purge(self, queue: str) -> int:
        validate_queue(queue)
        pipe = self.client.pipeline(transaction=True)
        pipe.hlen(self.key("data:", queue))
        pipe.unlink(self.key("ready:", queue), self.key("scheduled:", queue))
        pipe.unlink(self.key("data:", queue))
        removed, _, _ = self.call(pipe.execute)
        return int(removed)

    def find(self, task_id: str) -> str | None:
        def look() -> str | None:
            # SCAN, not a script: a deep queue must not hold Redis up for others.
            pattern = f"*-{task_id}"
            for field in self._claimed_fields():
                if id_of(field.partition("/")[2]) == task_id:
                    return "claimed"
            for q in self.queues():
                for state, key in (
                    ("ready", "ready:"),
                    ("scheduled", "scheduled:"),
                    ("dead", "dead:"),
                ):
                    for _ in self.client.zscan_iter(self.key(key, q), match=pattern, count=1000):
                        return state
            return None

        return self.call(look)

    def _stored_bytes(self) -> Iterator[bytes]:
        yield from super()._stored_bytes()
        for q in self.queues():
            for kind in ("data:", "dead-data:"):
                for _, data in self.client.hscan_iter(self.key(kind, q), count=1000):
                    yield bytes(data)
        for consumer in self.client.hkeys(self.key("consumers")):
            for _, data in self.client.hscan_iter(self.key("claims:", consumer.decode())):
                yield bytes(data)

    def housekeeping_steps(self, now: float, results_before: float) -> Iterator[bool]:
        # Redis leaves no litter: expiry is all there is (results also carry a TTL).
        return self.expiry_steps(results_before)


def _placed(message: Message, data: bytes) -> tuple[str, str, bytes, str]:
    """The PUBLISH script's arguments for one message: (queue, name, data, eta)."""
    validate_queue(message.queue)
    if message.eta is not None and message.eta > time.time():
        return message.queue, scheduled_name(message), data, repr(message.eta)
    return message.queue, message.name, data, ""


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}"
