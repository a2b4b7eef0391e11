"""What a chord costs: the broker's ``chord_add`` per member, and a chord against a
plain group of the same tasks on a real worker.

    python -m benchmarks.chords [--members 1000] [--redis redis://127.0.0.1:6379/0]

1. ``chord_add`` of every member of chords of 100, 1,000 and 10,000 members, one
   process, on the memory and file brokers (and Redis with ``--redis``): the mean
   cost per member, which must not grow with the chord's size.
2. ``taskq worker --concurrency 2`` on a fresh file broker: a group of
   ``--members`` ``echo(i)`` calls, waited for with ``.get()``, then a chord of
   the same members with a callback summing them. Prints both times.

Run it by hand (not part of the test suite). Its folders are in the system's
temporary folder and removed at the end; its Redis keys (a prefix of its own)
are deleted; the worker is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taskq import App, chord, group
from taskq.brokers.file import FileBroker
from taskq.brokers.memory import MemoryBroker
from taskq.current import set_default_app
from taskq.message import new_id

SIZES = (100, 1000, 10_000)
RECORD = b"TQ1" + b"r" * 200  # about a signed result record of a small value


def per_member(broker: Any, size: int) -> float:
    """Mean seconds per ``chord_add`` over one chord of ``size`` members."""
    chord_id = new_id()
    started = time.perf_counter()
    for index in range(size):
        broker.chord_add(chord_id, index, size, RECORD)
    return (time.perf_counter() - started) / size


def brokers(folder: Path, redis_url: str | None) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = [
        ("memory", MemoryBroker("bench")),
        ("file", FileBroker(folder / "adds")),
    ]
    if redis_url:
        from taskq.brokers.redis import RedisBroker

        found.append(("redis", RedisBroker(redis_url, prefix=f"taskq-bench-chords-{os.getpid()}:")))
    return found


def drop_redis_keys(broker: Any) -> None:
    keys = list(broker.client.scan_iter(match=f"{broker.prefix}*", count=1000))
    if keys:
        broker.client.delete(*keys)


def on_a_worker(folder: Path, members: int) -> tuple[float, float]:
    """Seconds for a group of ``members`` echo calls, then for a chord of them."""
    broker = folder / "worker-broker"
    app = App(broker=str(broker))
    set_default_app(app)
    from benchmarks import chord_tasks

    command = [sys.executable, "-m", "taskq", "--broker", str(broker), "worker"]
    command += ["-A", "benchmarks.chord_tasks", "--concurrency", "2"]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        chord_tasks.echo.delay(0).get(timeout=60)  # the worker is up
        started = time.perf_counter()
        assert group(chord_tasks.echo.s(i) for i in range(members)).delay().get(timeout=600)
        grouped = time.perf_counter() - started
        started = time.perf_counter()
        body = chord_tasks.total.s()
        result = chord([chord_tasks.echo.s(i) for i in range(members)], body).delay()
        assert result.get(timeout=600) == sum(range(members))
        return grouped, time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--redis", default=None, help="a Redis URL to measure chord_add on")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskq-bench-chords-") as tmp:
        folder = Path(tmp)
        for name, broker in brokers(folder, options.redis):
            try:
                costs = ", ".join(
                    f"{size}: {per_member(broker, size) * 1e6:.0f} µs" for size in SIZES
                )
                print(f"chord_add per member, {name}: {costs}")
            finally:
                if name == "redis":
                    drop_redis_keys(broker)
        grouped, chorded = on_a_worker(folder, options.members)
        print(
            f"worker, file broker, {options.members} members: group {grouped:.2f} s, "
            f"chord {chorded:.2f} s (+{(chorded / grouped - 1) * 100:.0f}%)"
        )
        with contextlib.suppress(Exception):
            set_default_app(App())


if __name__ == "__main__":
    main()
