"""One consumer's own connection to Redis, kept through outages.

Writes that settle a delivery (its result, its ack) are queued and go out in
the same write as the next command (the next claim, or the mark of the next
delivery handed out), their replies read after it: they cost no round trip,
and hardly a system call, of their own.
A write stays queued until its reply is read: when the connection drops, the
link reconnects with back-off (one log line when it breaks, one when it
works again) and sends the queued writes again, each idempotent. A claim whose
reply was lost is found again in the consumer's claims (``resync``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

log = logging.getLogger("taskq.redis")

_T = TypeVar("_T")
_PAUSE, _PAUSE_MAX = 0.05, 2.0  # seconds between reconnection tries, doubling
_LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


def pack(*args: Any) -> bytes:
    """One command in Redis's protocol (RESP), packed by hand: the consumer's hot path."""
    return pack_head(len(args), *args)


def pack_head(total: int, *args: Any) -> bytes:
    """The start of a command of ``total`` arguments, ``args`` being its first:
    the rest follow as ``bulk`` strings."""
    return b"*%d\r\n" % total + b"".join(map(bulk, args))


def bulk(arg: Any) -> bytes:
    """One argument of a command, packed."""
    if isinstance(arg, str):
        arg = arg.encode()
    elif not isinstance(arg, bytes):
        arg = repr(arg).encode()  # int or float
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


class RedisLink:
    def __init__(self, client: redis.Redis, where: str) -> None:
        pool = client.connection_pool
        self._make: Callable[[], Any] = lambda: pool.connection_class(**pool.connection_kwargs)
        self._where = where
        self._conn: Any = None
        self._unread: list[tuple[Any, ...]] = []  # reply not read yet (sent or in the outbox)
        self._outbox: list[bytes] = []  # the last of them, packed, not sent yet
        self._resent = 0  # how many of the first unread were sent again on a new connection
        self._loaded: set[str] = set()  # scripts known to this Redis
        self._pause = _PAUSE
        self.broken = False
        self.resync = False  # a claim's reply may have been lost: look at our claims

    def attempt(self, step: Callable[[], _T], *, until_done: bool = False) -> _T | None:
        """Run ``step``; on a lost connection, back off and return None (or try again
        until it works, ``until_done``)."""
        while True:
            try:
                result = step()
            except _LINK_ERRORS as exc:
                self._lost(exc)
                time.sleep(self._pause)
                self._pause = min(self._pause * 2, _PAUSE_MAX)
                if until_done:
                    continue
                return None
            if self.broken:
                self.broken = False
                self._pause = _PAUSE
                log.warning("Reconnected to Redis at %s", self._where)
            return result

    def _lost(self, exc: BaseException) -> None:
        if not self.broken:
            log.error(
                "Lost the connection to Redis at %s (%s): reconnecting; tasks in flight "
                "go on and their outcomes are written once it is back",
                self._where,
                exc,
            )
        self.broken = True
        self.resync = True
        self.close()

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._make()
            conn.connect()
            self._conn = conn
            self._outbox = [pack(*c) for c in self._unread]  # lost with the last one: again
            self._resent = len(self._unread)
        return self._conn

    def _send(self, conn: Any, *packed: bytes) -> None:
        """The outbox, then ``packed``, in one write."""
        data = b"".join((*self._outbox, *packed))
        self._outbox.clear()
        if data:
            conn.send_packed_command([data], check_health=False)

    def _read_unread(self, conn: Any) -> None:
        while self._unread:
            command = self._unread[0]
            try:
                reply = conn.read_response()
            except redis.ResponseError as exc:
                # Not written (out of memory, say): kept, and sent again on a new connection.
                raise ConnectionError(f"Redis refused {command[0]}: {exc}") from exc
            self._unread.pop(0)
            resent, self._resent = self._resent > 0, max(self._resent - 1, 0)
            # An ack sent again after a lost connection may have been done the
            # first time; one sent once that finds no claim was recovered meanwhile.
            if command[0] == "HDEL" and reply == 0 and not resent:
                log.warning(
                    "Ack of %s found no claim: another worker recovered it meanwhile "
                    "(this worker's liveness lapsed), so it may run twice",
                    command[2],
                )

    def call(self, *command: Any) -> Any:
        """Send a command and wait for its reply (and those of the writes before it)."""
        conn = self._connection()
        self._send(conn, pack(*command))
        self._read_unread(conn)
        return conn.read_response()

    def script(self, source: str, args: Sequence[Any]) -> Any:
        try:
            return self.call(*self.script_command(source), *args)
        except redis.exceptions.NoScriptError:  # Redis restarted since: load it again
            self._loaded.clear()
            return self.call(*self.script_command(source), *args)

    def script_command(self, source: str) -> tuple[Any, ...]:
        """The start of an EVALSHA of ``source`` (loaded into Redis first if need be)."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        if sha not in self._loaded:
            self.call("SCRIPT", "LOAD", source)
            self._loaded.add(sha)
        return ("EVALSHA", sha, 0)

    def forget_scripts(self) -> None:
        """Redis lost its scripts (a restart): load them again on next use."""
        self._loaded.clear()

    def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write; their replies, an error reply as its exception."""
        conn = self._connection()
        self._send(conn, *(pack(*c) for c in commands))
        self._read_unread(conn)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def send_later(self, command: tuple[Any, ...]) -> None:
        """Queue a write: it goes with the next command sent (or ``push``), and its
        reply is read after that."""
        self._unread.append(command)
        self._outbox.append(pack(*command))

    @property
    def pending(self) -> bool:
        return bool(self._unread)

    def push(self) -> None:
        """Send the queued writes now, without waiting for their replies."""
        if self._outbox and not self.broken:
            try:
                self._send(self._connection())
            except _LINK_ERRORS as exc:
                self._lost(exc)  # sent with the others on reconnection

    def flush(self) -> None:
        """Send the queued writes and read every reply: they are done then."""
        if self._unread:
            conn = self._connection()
            self._send(conn)
            self._read_unread(conn)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a broken socket: nothing left to do
                conn.disconnect()
