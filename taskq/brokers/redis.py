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
    rate:<task>             STR   when a rate-limited task's next slot starts (redis_rates)
    unique:<key>            STR   a unique task's key: its holder's id (PX its lifetime)

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

from ..errors import ConsumerLost, TaskqError
from ..message import Message, validate_queue
from . import display_url
from . import redis_scripts as lua
from .base import DeadLetter, Delivery, QueueCounts
from .names import id_of, scheduled_name
from .redis_chords import RedisChords
from .redis_events import RedisEvents
from .redis_link import RedisLink, bulk, pack, pack_head
from .redis_rates import RedisRates
from .redis_revocations import RedisRevocations
from .redis_stores import RedisSchedule, RedisStores
from .redis_transfer import RedisTransfer
from .redis_unique import RedisUniques

log = logging.getLogger("taskq.redis")

_PROMOTE_MOST = 1000  # scheduled messages promoted per queue per call
_BATCH = 1000  # messages per ZADD in publish_many
_ZERO = bulk(0)  # the score of every ready message, packed
_BLOCK_MOST = 5.0  # seconds one BLPOP may block (a stop or a lost link ends it sooner)


class RedisConsumer:
    """A consumer of a ``RedisBroker``: claims by script, waits in BLPOP.

    It keeps one connection of its own. When the queue is deep, one claim takes
    a few messages ahead (``prefetch``; at most a 32nd of what is ready), handed
    out one by one; the one handed out is marked as started, so that recovery
    gives the others back uncounted. Acks and results of its deliveries are sent
    without waiting for the reply (read before the next command), so a task
    costs no round trip of its own. A write whose reply was lost with the
    connection is sent again: each is idempotent. A blocked claim sends BLPOP
    and the claim script in one write: Redis runs the script as soon as BLPOP
    returns, so a wake-up costs no extra round trip.
    """

    def __init__(
        self, broker: RedisBroker, queues: Sequence[str], name: str, prefetch: int = 16
    ) -> None:
        self.name = name
        self.queues = tuple(queues)
        self._broker = broker
        self._link = RedisLink(broker.client, broker.where)
        self.thread = threading.get_ident()  # the one thread that uses the link
        self._wake_key = broker.key("wake-consumer:", name)
        self._running_key = broker.key("running:", name)
        self._block_keys = [self._wake_key, *(broker.key("wake:", q) for q in self.queues)]
        self._claim_args = [broker.prefix, name, prefetch, *self.queues]
        self._ahead: list[Delivery] = []  # claimed ahead, not handed out yet
        self.held: set[str] = set()  # "<q>/<name>" of deliveries handed out, not settled
        self.closed = False

    def claim(self, timeout: float) -> Delivery | None:
        if self.closed:
            raise TaskqError(f"consumer {self.name} is closed: it cannot claim")
        if not self._ahead:
            self._fetch(timeout)
        if not self._ahead:
            return None
        delivery = self._ahead.pop(0)
        field = f"{delivery.queue}/{delivery.name}"
        self.held.add(field)
        self._link.send_later(("SET", self._running_key, field))
        self._link.push()  # with the last delivery's result and ack, in one write
        return delivery

    def _fetch(self, timeout: float) -> None:
        """Claim into ``_ahead``, waiting up to ``timeout`` s for a message."""
        deadline = time.monotonic() + timeout
        if self._link.attempt(self._take) or self._ahead:
            return
        while (remaining := deadline - time.monotonic()) > 0:
            woken = self._link.attempt(partial(self._wait_then_take, min(remaining, _BLOCK_MOST)))
            if self._ahead or woken:
                return

    def _take(self) -> bool:
        """Claim now; whether a claim the link lost came back instead."""
        if self._link.resync and self._orphans():
            return True
        try:
            taken = self._link.script(lua.CLAIM, self._claim_args)
        except redis.ResponseError as exc:
            taken = exc
        self._taken(taken)
        return False

    def _wait_then_take(self, seconds: float) -> bool:
        """Block for a wake-up token, then claim; whether ``wake`` woke us."""
        if self._link.resync and self._orphans():
            return False
        claim = (*self._link.script_command(lua.CLAIM), *self._claim_args)
        popped, taken = self._link.pipeline([("BLPOP", *self._block_keys, seconds), claim])
        self._taken(taken)
        return bool(popped) and popped[0].decode() == self._wake_key

    def _taken(self, taken: Any) -> None:
        if isinstance(taken, redis.exceptions.NoScriptError):
            self._link.forget_scripts()  # Redis restarted: claimed nothing, load it again
            return
        if isinstance(taken, redis.ResponseError):
            if str(taken).startswith("GONE"):
                raise ConsumerLost(
                    f"consumer {self.name} lost its claims to recovery: its liveness "
                    f"lapsed ({taken}); restart it"
                )
            # Out of memory, say: backed off and tried again, like a lost connection.
            raise ConnectionError(f"Redis refused the claim: {taken}")
        if taken:
            queue = taken[0].decode()
            for name, data in zip(taken[1::2], taken[2::2], strict=True):
                self._ahead.append(Delivery(queue, name.decode(), bytes(data), self.name))

    def _orphans(self) -> bool:
        """After a lost connection: claims the script made whose reply never came,
        taken ahead now. Whether there were any."""
        self._link.resync = False
        known = self.held | {f"{d.queue}/{d.name}" for d in self._ahead}
        claims = self._link.call("HGETALL", self._broker.key("claims:", self.name))
        for field, data in sorted(claims.items()):
            key = field.decode()
            if key not in known:
                queue, _, name = key.partition("/")
                log.warning("Claim of %s kept through a lost connection: delivered now", name)
                self._ahead.append(Delivery(queue, name, bytes(data), self.name))
        return bool(self._ahead)

    @property
    def pending(self) -> bool:
        """Whether writes of this consumer may not be done yet."""
        return self._link.pending

    def settled(self, delivery: Delivery) -> None:
        self.held.discard(f"{delivery.queue}/{delivery.name}")

    def write(self, *command: Any) -> None:
        """Send a write on this consumer's connection; its reply is read later."""
        self._link.send_later(command)

    def sync(self, *, until_done: bool = True) -> None:
        """Wait until every write sent so far is done."""
        self._link.attempt(self._link.flush, until_done=until_done)

    def wake(self) -> None:
        # May run in a signal handler while this process is in BLPOP: a connection
        # of its own, not the pool's (whose lock the interrupted code may hold).
        self._broker.fresh_client().lpush(self._wake_key, "1")

    def close(self) -> None:
        if self.closed:
            return
        ahead, self._ahead = self._ahead, []
        try:
            for delivery in ahead:  # taken ahead, never started: back, uncounted
                self._broker.requeue(delivery)
            self.sync(until_done=False)
        except OSError as exc:  # Redis is gone: recovery gives them back, uncounted
            log.warning("Cannot give back %d message(s) taken ahead: %s", len(ahead), exc)
        finally:
            self.closed = True
            self._link.close()
            self._broker.consumer_closed(self)


class _Wire(threading.local):
    """A thread's own connection for publishing, remade after a fork."""

    conn: Any = None
    pid = 0


class RedisBroker(
    RedisEvents,
    RedisChords,
    RedisUniques,
    RedisStores,
    RedisTransfer,
    RedisSchedule,
    RedisRates,
    RedisRevocations,
):
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
        self.where = display_url(url)
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
        self._known_queues: set[str] = set()  # in the queues set already
        self._packed_for: dict[str, tuple[bytes, bytes]] = {}  # see _ready_commands
        self._wire = _Wire()
        super().__init__()

    def __repr__(self) -> str:
        return f"RedisBroker({self.where!r}, prefix={self.prefix!r})"

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}{name}"

    def new_connection(self) -> Any:
        """A connection of the caller's own, outside the pool."""
        pool = self.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def fresh_client(self) -> redis.Redis:
        """A client with a pool of its own (for a signal handler, or a thread)."""
        return redis.Redis.from_url(self.url, **self._options)

    # -- publishing -----------------------------------------------------------

    def publish(self, message: Message, data: bytes) -> None:
        # One ZADD makes the message visible whole: no script needed, and sending
        # it again after a lost reply changes nothing (same member, same score).
        # Packed by hand: this is the whole cost of a ``.delay()`` beyond the round trip.
        key, score, member = self._placed(message, data)
        if score:
            packed, replies = pack("ZADD", key, score, member), 1
        else:  # with a wake-up token; what does not change is packed once per queue
            head, wake = self._ready_commands(message.queue)
            packed, replies = head + bulk(member) + wake, 2
        # A task publishing another needs no ordering with its own ack: no wait for it.
        self.call(partial(self.send_for_counts, packed, replies), after_writes=False)

    def _ready_commands(self, queue: str) -> tuple[bytes, bytes]:
        """``ZADD ready:<queue> 0`` packed without its member, and ``RPUSH wake:<queue> 1``."""
        commands = self._packed_for.get(queue)
        if commands is None:
            commands = (
                pack_head(4, "ZADD", self.key("ready:", queue), 0),
                pack("RPUSH", self.key("wake:", queue), "1"),
            )
            self._packed_for[queue] = commands
        return commands

    def publish_many(self, items: Iterable[tuple[Message, bytes]]) -> int:
        placed: dict[str, list[bytes]] = {}  # key -> score, member, score, member... packed
        woken: dict[str, int] = {}
        for message, data in items:
            key, score, member = self._placed(message, data)
            placed.setdefault(key, []).extend((_ZERO if not score else bulk(score), bulk(member)))
            if not score:
                woken[message.queue] = woken.get(message.queue, 0) + 1
        if not placed:
            return 0
        packed = [pack("MULTI")]  # visible all at once, or none
        for key, pairs in placed.items():
            for start in range(0, len(pairs), 2 * _BATCH):
                chunk = pairs[start : start + 2 * _BATCH]
                packed += (pack_head(2 + len(chunk), "ZADD", key), *chunk)
        packed.append(pack("EXEC"))
        wakes = [c for queue, count in woken.items() for c in self._wake_commands(queue, count)]
        packed += (pack(*c) for c in wakes)
        replies = 2 + sum(-(-len(pairs) // (2 * _BATCH)) for pairs in placed.values())
        self.call(partial(self.send_packed, [b"".join(packed)], replies + len(wakes)))
        return sum(len(pairs) for pairs in placed.values()) // 2

    def _placed(self, message: Message, data: bytes) -> tuple[str, float, bytes]:
        """Where a message goes: (key, score, member); the member is its name, a NUL
        and its bytes, so ready messages sort by name (all score 0)."""
        queue = message.queue
        if queue not in self._known_queues:
            self.call(lambda: self.client.sadd(self.key("queues"), validate_queue(queue)))
            self._known_queues.add(queue)
        if message.eta is not None and message.eta > time.time():
            return (
                self.key("scheduled:", queue),
                message.eta,
                _member(scheduled_name(message), data),
            )
        return self.key("ready:", queue), 0, _member(message.name, data)

    def _wake_commands(self, queue: str, count: int) -> list[tuple[Any, ...]]:
        """Wake-up tokens for blocked claims, one per message up to a few (a claim
        trims the list, so tokens of a queue nobody consumes stay few)."""
        return [("RPUSH", self.key("wake:", queue), *("1" * min(count, lua.WAKE_TOKENS)))]

    def send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write on this thread's own connection; their replies."""
        conn = self._connection()
        return self.send_packed(conn.pack_commands(commands), len(commands))

    def send_packed(self, packed: bytes | list[bytes], replies: int) -> list[Any]:
        """Send packed commands on this thread's own connection (no pool, no
        per-command machinery: the hot path of ``.delay()``); their replies."""
        conn = self._connection()
        try:
            conn.send_packed_command(packed if isinstance(packed, list) else [packed])
            read = [conn.read_response() for _ in range(replies)]
        except BaseException:
            self._wire.conn = None  # a half-read reply makes the connection useless
            conn.disconnect()
            raise
        for reply in read:
            for item in reply if isinstance(reply, list) else (reply,):
                if isinstance(item, redis.ResponseError):  # inside a transaction's EXEC
                    raise item
        return read

    def send_for_counts(self, packed: bytes, replies: int) -> list[int]:
        """``send_packed`` for commands whose replies are integers (ZADD, RPUSH),
        read straight off the socket: the parser costs a ``.delay()`` more than
        the rest of its Python."""
        conn = self._connection()
        sock = getattr(conn, "_sock", None)
        if sock is None:  # not connected yet, or a redis-py that keeps it elsewhere
            return self.send_packed(packed, replies)
        try:
            sock.sendall(packed)
            lines = _read_lines(sock, replies)
        except OSError as exc:
            self._wire.conn = None
            conn.disconnect()
            raise redis.ConnectionError(f"{exc}") from exc
        counts = []
        for line in lines:
            if line[:1] == b"-":  # an error reply: the command was not run
                raise redis.ResponseError(line[1:].decode(errors="replace"))
            counts.append(int(line[1:]))
        return counts

    def _connection(self) -> Any:
        wire = self._wire
        if wire.conn is None or wire.pid != os.getpid():
            wire.conn, wire.pid = self.new_connection(), os.getpid()
        return wire.conn

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
            self.forget_consumer(consumer.name)  # gone at once if it holds no claim

    def _settle(self, delivery: Delivery, script: str, *extra: Any) -> int:
        local = self._local.get(delivery.consumer)
        if local is not None:
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
        # leaves a duplicate, never a loss. The RETRY result queued before it is
        # written first, so the new attempt's own result cannot be overwritten by it.
        self._sync_local()
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
        found = self.call(lambda: self.script(lua.RECOVER, [self.prefix, consumer, lease]))
        if not found:
            return None
        running, flat = found[0].decode(), found[1:]
        deliveries = []
        for field, data in sorted(zip(flat[::2], flat[1::2], strict=True)):
            key = field.decode()
            queue, _, name = key.partition("/")
            deliveries.append(Delivery(queue, name, bytes(data), consumer, started=key == running))
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
        ready, scheduled = self.key("ready:", validate_queue(queue)), self.key("scheduled:", queue)
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(ready)
        pipe.zcard(scheduled)
        pipe.unlink(ready, scheduled)
        removed_ready, removed_scheduled, _ = self.call(pipe.execute)
        return int(removed_ready) + int(removed_scheduled)

    def find(self, task_id: str) -> str | None:
        def look() -> str | None:
            # SCAN, not a script: a deep queue must not hold Redis up for others.
            for field in self._claimed_fields():
                if id_of(field.partition("/")[2]) == task_id:
                    return "claimed"
            for q in self.queues():
                for state, pattern in (
                    ("ready", f"*-{task_id}\0*"),
                    ("scheduled", f"*-{task_id}\0*"),
                    ("dead", f"*-{task_id}"),
                ):
                    key = self.key(f"{state}:", q)
                    for _ in self.client.zscan_iter(key, match=pattern, count=1000):
                        return state
            return None

        return self.call(look)

    def _stored_bytes(self) -> Iterator[bytes]:
        yield from super()._stored_bytes()
        for q in self.queues():
            for state in ("ready:", "scheduled:"):
                for member, _ in self.client.zscan_iter(self.key(state, q), count=1000):
                    yield _split(member)[1]
            for _, data in self.client.hscan_iter(self.key("dead-data:", q), count=1000):
                yield bytes(data)
        for consumer in self.client.hkeys(self.key("consumers")):
            for _, data in self.client.hscan_iter(self.key("claims:", consumer.decode())):
                yield bytes(data)

    def housekeeping_steps(self, now: float, results_before: float) -> Iterator[bool]:
        # Redis leaves no litter: expiry is all there is (results also carry a TTL).
        yield from self.expiry_steps(results_before)
        yield from self.revocation_steps(now)


def _read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` one-line replies (integers or errors) off ``sock``."""
    buffer = b""
    while buffer.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("Redis closed the connection")
        buffer += chunk
    lines = buffer.split(b"\r\n")
    if len(lines) != count + 1 or lines[-1]:
        raise ConnectionError(f"unexpected reply from Redis: {buffer[:80]!r}")
    return lines[:count]


def _member(name: str, data: bytes) -> bytes:
    return name.encode() + b"\0" + data


def _split(member: bytes) -> tuple[str, bytes]:
    name, _, data = member.partition(b"\0")
    return name.decode(), data
