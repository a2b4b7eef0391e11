"""One consumer's own connection to Redis, kept through outages.

Writes that settle a delivery (its result, its ack) are sent at once and their
replies read before the next command, so they cost no round trip of their own.
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


class RedisLink:
    def __init__(self, client: redis.Redis, where: str) -> None:
        pool = client.connection_pool
        self._make: Callable[[], Any] = lambda: pool.connection_class(**pool.connection_kwargs)
        self._where = where
        self._conn: Any = None
        self._unread: list[tuple[Any, ...]] = []  # sent, reply not read yet (or to resend)
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
            for command in self._unread:  # lost with the last connection: again
                conn.send_command(*command)
        return self._conn

    def _read_unread(self, conn: Any) -> None:
        while self._unread:
            command = self._unread[0]
            try:
                reply = conn.read_response()
            except redis.ResponseError as exc:
                # Not written (out of memory, say): kept, and sent again on a new connection.
                raise ConnectionError(f"Redis refused {command[0]}: {exc}") from exc
            self._unread.pop(0)
            if command[0] == "HDEL" and reply == 0:
                log.warning(
                    "Ack of %s found no claim: another worker recovered it meanwhile "
                    "(this worker's liveness lapsed), so it may run twice",
                    command[2],
                )

    def call(self, *command: Any) -> Any:
        """Send a command and wait for its reply (and those of the writes before it)."""
        conn = self._connection()
        self._read_unread(conn)
        conn.send_command(*command)
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
        self._read_unread(conn)
        conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def send_later(self, command: tuple[Any, ...]) -> None:
        """Send a write now; its reply is read before the next command."""
        self._unread.append(command)
        if self.broken:
            return  # sent with the others on reconnection
        try:
            self._connection().send_command(*command)
        except _LINK_ERRORS as exc:
            self._lost(exc)

    def flush(self) -> None:
        """Read the replies of every write sent so far (they are done then)."""
        if self._unread:
            self._read_unread(self._connection())

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a broken socket: nothing left to do
                conn.disconnect()
