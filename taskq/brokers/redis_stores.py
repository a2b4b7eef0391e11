"""What the Redis broker keeps beside its queues: results, the signing keys, the
registry of live supervisors, and the thread that keeps liveness keys fresh.
The Redis counterpart of ``file_stores``; also the one place a Redis error
becomes a taskq error (``call``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from ..errors import BrokerError, BrokerUnavailable
from ..keys import Keyring
from ..message import signed_by, validate_task_id
from . import redis_scripts as lua
from .base import worker_name_taken

if TYPE_CHECKING:
    from .redis import RedisConsumer

log = logging.getLogger("taskq.redis")

_T = TypeVar("_T")
_EXPIRE_BATCH = 500  # results looked at per housekeeping step


def process_identity(pid: int) -> str:
    """Who process ``pid`` of this host is, told apart from a later process given
    the same pid: host, PID namespace, pid and start time (Linux's /proc; without
    it, "?" fields that never match, so nothing is ever found gone)."""
    return f"{socket.gethostname()} {_pid_namespace()} {pid} {_started(pid) or '?'}"


def gone_from_here(identity: str) -> bool:
    """Whether ``identity`` (a ``process_identity``) is a process of this host and
    PID namespace that is no longer running."""
    try:
        host, namespace, pid, started = identity.split(" ")
        number = int(pid)
    except ValueError:
        return False
    if "?" in (namespace, started) or (host, namespace) != (socket.gethostname(), _pid_namespace()):
        return False
    return _started(number) != started


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def _started(pid: int) -> str | None:
    """Process ``pid``'s start time (clock ticks after boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    return fields[19].decode()


class Heartbeat:
    """A thread refreshing liveness keys every third of their TTL.

    It runs in the supervisor (for its children, which run the tasks: a busy
    task cannot starve it) or in a process whose consumer nobody vouches for.
    """

    def __init__(self, broker: RedisStores) -> None:
        self._broker = broker
        # key -> its value; kept by ``keep`` (own) and ``vouch`` (children, "1")
        self._keys: dict[str, str] = {}
        self._vouched: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing = False

    def keep(self, key: str, value: str = "1") -> None:
        with self._lock:
            self._keys[key] = value
        self._start()

    def drop(self, key: str) -> bool:
        """Stop refreshing ``key``; whether it was refreshed here."""
        with self._lock:
            kept = self._keys.pop(key, None) is not None
            self._vouched.discard(key)
            return kept

    def vouch(self, keys: set[str]) -> set[str]:
        """Refresh exactly ``keys`` for the children; returns the ones dropped."""
        with self._lock:
            dropped = self._vouched - keys
            for key in dropped:
                self._keys.pop(key, None)
            self._keys.update(dict.fromkeys(keys, "1"))
            self._vouched = set(keys)
        self._start()
        return dropped

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            # A thread does not survive fork: a child that needs one starts its own.
            self._thread = threading.Thread(target=self._run, name="taskq-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        client = self._broker.fresh_client()
        ttl = self._broker.liveness_ms
        while True:
            time.sleep(ttl / 3000)
            with self._lock:
                keys = list(self._keys.items())
            if not keys:
                continue
            try:
                pipe = client.pipeline(transaction=False)
                for key, value in keys:
                    pipe.set(key, value, px=ttl)
                pipe.execute()
            except redis.RedisError as exc:
                if not self._failing:
                    log.error("Cannot refresh liveness in Redis (%s): trying again", exc)
                self._failing = True
                continue
            if self._failing:
                self._failing = False
                log.warning("Liveness refreshed in Redis again")


class RedisStores:
    """Results (each with a TTL, listed by time stored for ``expire_results``),
    the keyring in one hash, supervisors with a liveness key each."""

    # A redis.Redis without decode_responses: every reply is bytes, which its
    # type hints (bytes | str) cannot say, so it is typed loosely here.
    client: Any
    prefix: str
    where: str
    liveness_ms: int
    result_expires_ms: int
    retry_for: float
    _local: dict[str, RedisConsumer]

    def __init__(self) -> None:
        self._loaded: set[str] = set()
        self.heartbeat = Heartbeat(self)
        self._keyring: Keyring | None = None

    def key(self, kind: str, name: str = "") -> str:
        raise NotImplementedError

    def fresh_client(self) -> redis.Redis:
        raise NotImplementedError

    # -- talking to Redis -----------------------------------------------------

    def call(self, operation: Callable[[], _T], *, after_writes: bool = True) -> _T:
        """Run ``operation``, retrying a lost connection for up to ``retry_for`` s;
        then ``BrokerUnavailable`` naming the URL. Every operation given here is
        safe to repeat. ``after_writes``: first wait for the acks and results this
        process's consumer queued (read-your-writes)."""
        if after_writes:
            self._sync_local()
        deadline = time.monotonic() + self.retry_for
        pause = 0.05
        while True:
            try:
                return operation()
            except redis.exceptions.NoScriptError:
                self._loaded.clear()  # Redis restarted (or SCRIPT FLUSH): load them again
                continue
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + pause > deadline:
                    raise BrokerUnavailable(f"cannot reach Redis at {self.where}: {exc}") from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
            except redis.ResponseError as exc:
                raise BrokerUnavailable(f"Redis at {self.where} refused: {exc}") from None

    def script(self, source: str, args: list[Any]) -> Any:
        return self.script_in(self.client, source, args)

    def script_in(self, client: Any, source: str, args: list[Any]) -> Any:
        """Run a script by its SHA (loaded once per process); ``client`` may be a pipeline."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        if sha not in self._loaded:
            self.client.script_load(source)
            self._loaded.add(sha)
        return client.evalsha(sha, 0, *args)

    def _mine(self) -> list[RedisConsumer]:
        """The consumers this thread opened. Only their thread may use their
        connections: another reading one would take replies meant for it."""
        me = threading.get_ident()
        return [c for c in list(self._local.values()) if c.thread == me]

    def _one_local(self) -> RedisConsumer | None:
        """The consumer of this thread, if it has exactly one (a worker child)."""
        local = self._mine()
        return local[0] if len(local) == 1 and not local[0].closed else None

    def _sync_local(self) -> None:
        for consumer in self._mine():
            if consumer.pending:
                consumer.sync(until_done=False)  # Redis gone: the call below says so

    # -- results --------------------------------------------------------------

    def store_result(self, task_id: str, data: bytes) -> None:
        validate_task_id(task_id)
        key = self.key("result:", task_id)
        local = self._one_local()
        if local is not None:  # a worker: sent on its link, before the ack that follows
            local.write("SET", key, data, "PX", self.result_expires_ms)
            local.write("ZADD", self.key("results"), repr(time.time()), task_id)
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, data, px=self.result_expires_ms)
        pipe.zadd(self.key("results"), {task_id: time.time()})
        self.call(pipe.execute)

    def load_result(self, task_id: str) -> bytes | None:
        validate_task_id(task_id)
        data = self.call(lambda: self.client.get(self.key("result:", task_id)))
        return None if data is None else bytes(data)

    def delete_result(self, task_id: str) -> None:
        validate_task_id(task_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key("result:", task_id))
        pipe.zrem(self.key("results"), task_id)
        self.call(pipe.execute)

    def expire_results(self, older_than: float) -> int:
        return sum(self.expiry_steps(older_than))

    def expiry_steps(self, older_than: float) -> Iterator[bool]:
        """One step per batch of results stored before ``older_than``."""
        while True:
            old = self.call(
                lambda: self.client.zrangebyscore(
                    self.key("results"), "-inf", f"({older_than!r}", start=0, num=_EXPIRE_BATCH
                )
            )
            if not old:
                return
            args = [self.prefix, repr(older_than), *(i.decode() for i in old)]
            removed = self.call(partial(self.script, lua.EXPIRE_RESULTS, args))
            for index in range(len(old)):
                yield index < removed
            if len(old) < _EXPIRE_BATCH:
                return

    # -- keys -----------------------------------------------------------------

    def keys(self) -> Keyring:
        if self._keyring is None:
            source = RedisKeys(self)
            source.load()  # made first if need be, so that the stamp below is of a key
            self._keyring = Keyring.from_source(source)
        return self._keyring

    def rotate_key(self) -> None:
        self.keys()  # made if missing
        self.call(lambda: self.script(lua.ROTATE_KEY, [self.prefix, os.urandom(32).hex()]))

    def prune_keys(self) -> int:
        ring = Keyring(*RedisKeys(self).load())
        if not ring.previous:
            return 0
        current = Keyring(ring.current)
        needing = self.call(lambda: sum(not signed_by(d, current) for d in self._stored_bytes()))
        if needing:
            raise BrokerError(
                f"{needing} message(s) or result(s) in Redis at {self.where} are signed with a "
                "previous key, which they still need: run or purge them, then prune again"
            )
        self.call(lambda: self.client.hset(self.key("keys"), "previous", "[]"))
        return len(ring.previous)

    def _stored_bytes(self) -> Iterable[bytes]:
        """Every signed message and result held (the broker adds its queues)."""
        for task_id in self.client.zscan_iter(self.key("results"), count=1000):
            data = self.client.get(self.key("result:", task_id[0].decode()))
            if data is not None:
                yield bytes(data)

    def check_trust(self) -> None:
        """Nothing on disk to check: who may write to this Redis is its own
        configuration (a password or ACL user, TLS, bind); see docs/security.md."""

    # -- supervisors ----------------------------------------------------------

    def register_worker(self, name: str) -> None:
        alive, me = self.key("alive:", name), process_identity(os.getpid())
        if not self.call(lambda: self.client.set(alive, me, px=self.liveness_ms, nx=True)):
            holder: bytes = self.call(lambda: self.client.get(alive)) or b""
            dead = gone_from_here(holder.decode(errors="replace"))
            # A supervisor of this host killed (SIGKILL, the OOM killer) holds the name
            # until its key lapses: a service manager restarting it at once would be
            # refused until then. One whose process is gone is taken over at once.
            if not dead or not self._swap(alive, holder, me):
                raise BrokerError(
                    worker_name_taken(name, self.where)
                    + f" (if it was on another host and died, its name is free within "
                    f"{self.liveness_ms / 1000:g} s)"
                )
            log.warning("Took over the name %s from a supervisor of this host that died", name)
        self.call(lambda: self.client.hset(self.key("workers"), name, "{}"))
        self.heartbeat.keep(alive, me)

    def _swap(self, key: str, old: bytes, new: str) -> bool:
        """Set ``key`` to ``new`` if it still holds ``old`` (atomically)."""
        return bool(self.call(lambda: self.script(lua.SWAP, [key, old, new, self.liveness_ms])))

    def publish_worker_state(self, name: str, state: Mapping[str, Any]) -> None:
        if self.call(lambda: self.client.exists(self.key("alive:", name))):
            data = json.dumps(dict(state), default=str)
            self.call(lambda: self.client.hset(self.key("workers"), name, data))

    def unregister_worker(self, name: str) -> None:
        alive = self.key("alive:", name)
        self.heartbeat.drop(alive)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(alive)
        pipe.hdel(self.key("workers"), name)
        self.call(pipe.execute)

    def forget_dead_workers(self) -> list[str]:
        gone = self.call(lambda: self.script(lua.FORGET_DEAD_WORKERS, [self.prefix]))
        return [name.decode() for name in gone]

    def worker_states(self) -> list[dict[str, Any]]:
        held = self.call(lambda: self.client.hgetall(self.key("workers")))
        states = [json.loads(state) for _, state in sorted(held.items())]
        return [state for state in states if state]


class RedisKeys:
    """The keyring kept in Redis (``<prefix>keys``), as a ``keys.KeySource``: a
    process signing looks at it once a second, so it takes a rotation within
    a second, and puts its keys back if a restart of Redis lost them."""

    def __init__(self, stores: RedisStores) -> None:
        self._stores = stores
        self._held = ("", "[]")  # the keys last loaded (hex, previous as JSON)

    def stamp(self) -> object:
        stores = self._stores
        return stores.call(lambda: stores.client.hmget(stores.key("keys"), "current", "previous"))

    def load(self) -> tuple[bytes, tuple[bytes, ...]]:
        stores = self._stores
        args = [stores.prefix, os.urandom(32).hex(), *self._held]
        try:
            current, previous = stores.call(lambda: stores.script(lua.KEYS, args))
        except BrokerUnavailable as exc:
            if "LOSTKEY" not in str(exc):
                raise
            raise BrokerError(
                f"the signing key under {stores.key('keys')} in Redis at {stores.where} is "
                f"gone while {str(exc).rpartition('LOSTKEY ')[2]} message(s) are stored: they "
                "cannot be verified. Restore the key (or set secret_key to it), or purge "
                "the queues to start afresh"
            ) from None
        self._held = (current.decode(), previous.decode())
        return bytes.fromhex(self._held[0]), tuple(
            bytes.fromhex(k) for k in json.loads(self._held[1])
        )


class RedisSchedule:
    """The periodic schedule's lease (a key with a TTL, taken with SET-if-free in a
    script) and each periodic task's last tick (raised only, in a script)."""

    client: Any

    if TYPE_CHECKING:  # the broker's own, declared for the type checker only

        def key(self, kind: str, name: str = "") -> str: ...

        def call(self, operation: Callable[[], _T], *, after_writes: bool = True) -> _T: ...

        def script(self, source: str, args: list[Any]) -> Any: ...

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        args = [self.key("lease:", name), owner, max(1, int(ttl * 1000))]
        return bool(self.call(lambda: self.script(lua.ACQUIRE_LEASE, args)))

    def release_lease(self, name: str, owner: str) -> None:
        args = [self.key("lease:", name), owner]
        self.call(lambda: self.script(lua.RELEASE_LEASE, args))

    def last_tick(self, task: str) -> float | None:
        data = self.call(lambda: self.client.get(self.key("tick:", task)))
        try:
            return None if data is None else float(data)
        except ValueError:
            return None  # not ours: the next tick rewrites it

    def record_tick(self, task: str, tick: float) -> bool:
        args = [self.key("tick:", task), repr(tick)]
        return bool(self.call(lambda: self.script(lua.RECORD_TICK, args)))
