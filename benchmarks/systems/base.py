"""What an adapter provides: a fresh queue, a producer, a worker command, a clean-up.

The driver (``benchmarks/suite.py``) does the timing; an adapter only knows how
its system is used. Servers are fixed: Redis at 127.0.0.1:6379 and RabbitMQ at
127.0.0.1:5672 (guest/guest). Redis is shared (with CI, other runs), so adapters
never flush a database: every key they create carries a unique token, and
``close`` deletes exactly those keys.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ = ("127.0.0.1", 5672)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PYTHON = sys.executable


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class System:
    """One row of the table. Subclasses set the class attributes and the hooks."""

    name = ""
    packages: tuple[str, ...] = ()  # import names the system needs
    servers: tuple[tuple[str, tuple[str, int]], ...] = ()  # (label, (host, port))
    worker_mode = ""  # how its worker runs, for the table notes

    def unavailable(self) -> str | None:
        """Why this system cannot run here, or None."""
        for package in self.packages:
            try:
                importlib.import_module(package)
            except ImportError:
                return f"package {package!r} is not installed (pip install -e '.[bench]')"
        for label, (host, port) in self.servers:
            if not reachable(host, port):
                return f"{label} at {host}:{port} is not reachable"
        return None

    def versions(self) -> dict[str, str]:
        """Server versions worth printing beside the table (package versions are read apart)."""
        return {}

    # One scenario's life: open -> enqueue (sender / stamper / batch) -> worker -> close.

    def open(self, work: Path, token: str) -> None:
        """Make a fresh, empty queue named after ``token``; ``work`` is a private folder."""
        raise NotImplementedError

    def sender(self) -> Callable[[int], Any]:
        """The call that enqueues ``noop(i)``, as a user would write it (``noop.delay``)."""
        raise NotImplementedError

    def stamper(self) -> Callable[[int, float], Any]:
        """The call that enqueues ``stamp(i, sent)``."""
        raise NotImplementedError

    def batch_sender(self) -> Callable[[Sequence[int]], Any] | None:
        """A bulk enqueue of ``noop(i)`` for many ids, if the system has one."""
        return None

    def worker_argv(self) -> list[str]:
        """The command that starts a worker with 2 processes (or the nearest equivalent)."""
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        """Extra environment for the worker (``BENCH_OUT`` is added by the driver)."""
        return {}

    def close(self) -> None:
        """Drop connections and delete every key, queue or file this scenario made."""

    # W5 (chaos): the same life, with the task ``slow(i, ms)`` and the system's own
    # reliable settings where it offers them. ``chaos_variants`` are the rows W5 runs:
    # "" is the system's reliable settings (or its defaults when it offers none), any
    # other name a second row (say "defaults"). The scenario sets ``chaos_variant``
    # before ``open`` and clears it after ``close``; W1-W4 run with it None.

    chaos_variants: tuple[str, ...] = ("",)
    chaos_variant: str | None = None
    # How a task whose worker was SIGKILLed comes back, and after how many seconds that
    # can act at the earliest (None: never, or only past any bound of the run). The
    # final drain waits at least that long plus a margin when it is short.
    chaos_recovery = ""
    chaos_recovery_s: float | None = 0.0

    def chaos_settings(self, variant: str) -> str:
        """The settings the W5 row of ``variant`` runs with, for the report."""
        return "defaults (the system offers no acknowledgement after the task)"

    def slow_sender(self, ms: float) -> Callable[[int], Any]:
        """The call that enqueues ``slow(i, ms)``."""
        raise NotImplementedError

    def dead_letters(self) -> int | None:
        """Messages the system gave up on and kept apart (poison), or None if it keeps none
        this way."""
        return None


def redis_client() -> Any:
    import redis

    return redis.Redis(host=REDIS[0], port=REDIS[1], db=0, socket_timeout=30)


def redis_delete_matching(client: Any, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (SCAN, never KEYS/FLUSHDB); returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted


def redis_version() -> str:
    with contextlib.suppress(Exception):
        return str(redis_client().info("server")["redis_version"])
    return "unknown"


def rabbitmq_delete(queues: Sequence[str] = (), exchanges: Sequence[str] = ()) -> None:
    """Delete queues and exchanges by name on the local RabbitMQ."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        for name in queues:
            channel = connection.channel()
            with contextlib.suppress(Exception):
                channel.queue_delete(queue=name)
        for name in exchanges:
            channel = connection.channel()
            with contextlib.suppress(Exception):
                channel.exchange_delete(exchange=name)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def rabbitmq_version() -> str:
    import pika

    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            version = connection._impl.server_properties.get("version", b"unknown")
        finally:
            connection.close()
        return version.decode() if isinstance(version, bytes) else str(version)
    return "unknown"
