"""The cost of one rate-limit slot (``RateLimits.take_slot``) on each broker, in µs.

    python -m benchmarks.rate_slots [--takes 20000] [--no-redis]

One process takes slots of one rate as fast as it can (a rate so fast that no
take waits), then four processes at once on the same rate (file, Redis: the
lock or the server is shared; the figure is the wall time per take of all four
together). Redis is 127.0.0.1:6379 (skipped if it does not answer), under a
prefix of its own deleted afterwards. A worker takes one slot per run of a
rate-limited task; a task without ``rate_limit`` takes none.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from taskq.brokers.file import FileBroker
from taskq.brokers.memory import MemoryBroker
from taskq.message import new_id

REDIS = "redis://127.0.0.1:6379/0"
INTERVAL = 1e-9  # seconds between slots: every take is due at once
PROCESSES = 4


def per_take(broker: Any, takes: int) -> float:
    """Microseconds per take in this process."""
    key = f"bench.{new_id()[:8]}"
    broker.take_slot(key, INTERVAL, 1)  # opened or loaded first
    started = time.perf_counter()
    for _ in range(takes):
        broker.take_slot(key, INTERVAL, 1)
    return (time.perf_counter() - started) / takes * 1e6


def per_take_racing(make: Any, takes: int) -> float:
    """Microseconds of wall time per take, PROCESSES forked processes taking at once."""
    key = f"bench.{new_id()[:8]}"
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(PROCESSES):
        pid = os.fork()
        if pid == 0:
            try:
                broker = make()
                broker.take_slot(key, INTERVAL, 1)
                os.read(go_r, 1)
                for _ in range(takes // PROCESSES):
                    broker.take_slot(key, INTERVAL, 1)
            finally:
                os._exit(0)
        pids.append(pid)
    time.sleep(0.5)  # every child ready at its read
    started = time.perf_counter()
    os.write(go_w, b"x" * PROCESSES)
    for pid in pids:
        os.waitpid(pid, 0)
    return (time.perf_counter() - started) / (takes // PROCESSES * PROCESSES) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=20000)
    parser.add_argument("--no-redis", action="store_true")
    options = parser.parse_args()
    takes = options.takes
    print(f"{'broker':<8} {'one process':>12} {f'{PROCESSES} processes':>14}")
    print(f"{'memory':<8} {per_take(MemoryBroker('bench'), takes):>10.1f}µs {'-':>14}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "broker"
        one = per_take(FileBroker(root), takes)
        racing = per_take_racing(lambda: FileBroker(root), takes)
        print(f"{'file':<8} {one:>10.1f}µs {racing:>12.1f}µs")
    if not options.no_redis:
        redis_row(takes // 4)


def redis_row(takes: int) -> None:
    import redis

    from taskq.brokers.redis import RedisBroker

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        print(f"redis    skipped: {exc}")
        return
    prefix = f"bench-rates-{new_id()[:8]}:"
    try:
        one = per_take(RedisBroker(REDIS, prefix=prefix), takes)
        racing = per_take_racing(lambda: RedisBroker(REDIS, prefix=prefix), takes)
        print(f"{'redis':<8} {one:>10.1f}µs {racing:>12.1f}µs")
    finally:
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


if __name__ == "__main__":
    main()
