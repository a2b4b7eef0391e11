"""The Redis limit row: what one connection to the local Redis allows per message, with
no client library and no task message, as the file ``limit`` row is for the disk.

One plain socket, each command's RESP bytes written by hand and its reply read before
the next command (one round trip each, as a producer's ``.delay()`` or a consumer's
claim waits for its reply): ``LPUSH`` of a 300-byte value (W1 column), then a claim and
an ack per message, ``LMOVE ready claimed RIGHT LEFT`` + ``LREM claimed 1 <value>`` (W2
column, two round trips). Every value carries its id and is checked on the way out.
The two keys carry a unique token and are deleted afterwards.
"""

from __future__ import annotations

import socket
import time
import uuid

from .scenarios import Options, Outcome
from .systems.base import REDIS

# Bytes per value, as the file limit row writes: a little more than taskq's Redis
# broker stores for noop(i) (175 bytes of message, a 52-byte name).
SIZE = 300


def command(*parts: bytes) -> bytes:
    """One RESP request: an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class Connection:
    """One socket to Redis; ``call`` sends a request and returns its reply."""

    def __init__(self) -> None:
        self.sock = socket.create_connection(REDIS, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def call(self, request: bytes) -> int | bytes | None:
        """An integer reply as int, a bulk string as bytes (None for a nil one)."""
        self.sock.sendall(request)
        line = self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        raise RuntimeError(f"Redis replied {line!r} to {request[:60]!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def value(i: int) -> bytes:
    return f"{i:012d}".encode().ljust(SIZE, b"x")


def limit(options: Options, outcome: Outcome) -> None:
    """``--tasks`` LPUSHes, then as many LMOVE + LREM pairs, on one connection."""
    n = options.tasks
    prefix = f"taskq-bench-limit-{uuid.uuid4().hex[:12]}:"
    ready, claimed = (f"{prefix}{name}".encode() for name in ("ready", "claimed"))
    redis = Connection()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            redis.call(command(b"LPUSH", ready, value(i)))
        outcome.metrics["W1_per_s"] = n / (time.perf_counter() - t0)
        seen: set[bytes] = set()
        taken = 0
        move = command(b"LMOVE", ready, claimed, b"RIGHT", b"LEFT")
        t0 = time.perf_counter()
        while (got := redis.call(move)) is not None:
            assert isinstance(got, bytes)
            redis.call(command(b"LREM", claimed, b"1", got))
            taken += 1
            seen.add(got)
        outcome.metrics["W2_per_s"] = taken / (time.perf_counter() - t0)
        good = len(seen & {value(i) for i in range(n)})
        outcome.expected, outcome.ran = n, good
        outcome.missing, outcome.duplicated = n - good, taken - len(seen)
    finally:
        redis.close()
        cleaner = Connection()  # a fresh one: the first may have failed mid-reply
        try:
            cleaner.call(command(b"DEL", ready, claimed))
        finally:
            cleaner.close()
