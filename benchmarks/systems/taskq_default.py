"""taskq with its default settings: the file broker, ``taskq worker --concurrency 2``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..peers import record
from .base import PYTHON, System

BATCH = 1_000  # calls per Task.map batch


class TaskqSystem(System):
    name = "taskq"
    packages = ("taskq",)
    durable = False
    monitored = False  # events and metrics on (the +monitoring variants)
    worker_mode = "`taskq worker --concurrency 2`: a supervisor and 2 worker processes"
    chaos_recovery = (
        "at once: the kernel drops a dead consumer's `flock`, the supervisor (or the next "
        "one started) takes it and settles its claims by the retry policy"
    )
    chaos_recovery_s = 0.0

    def broker_url(self, work: Path, token: str) -> str:
        """The broker of one scenario: a fresh folder in its private ``work`` folder."""
        return str(work / f"broker-{token}")

    def open(self, work: Path, token: str) -> None:
        from taskq import App

        self.broker = self.broker_url(work, token)
        self.app = App(broker=self.broker, durable=self.durable, events=self.monitored)
        self.noop = self.app.task(record.noop, name="bench.noop", ignore_result=True)
        self.stamp = self.app.task(record.stamp, name="bench.stamp", ignore_result=True)
        from ..peers.taskq_tasks import CHAOS_OPTIONS

        self.slow = self.app.task(
            record.slow, name="bench.slow", ignore_result=True, **CHAOS_OPTIONS
        )

    def sender(self) -> Callable[[int], Any]:
        return self.noop.delay

    def stamper(self) -> Callable[[int, float], Any]:
        return self.stamp.delay

    def slow_sender(self, ms: float) -> Callable[[int], Any]:
        return lambda i: self.slow.delay(i, ms)

    def chaos_settings(self, variant: str) -> str:
        from ..peers.taskq_tasks import CHAOS_OPTIONS

        options = ", ".join(f"{k}={v}" for k, v in CHAOS_OPTIONS.items())
        durable = "`App(durable=True)`, `TASKQ_DURABLE=true`" if self.durable else "not durable"
        return f"task `{options}`, ignore_result=True; {durable}; otherwise defaults"

    def dead_letters(self) -> int | None:
        """Messages the broker dead-lettered (what ``taskq dead list`` lists), through the
        broker interface, so any broker counts them the same way."""
        return len(self.app.broker.dead_letters(None))

    def batch_sender(self) -> Callable[[Sequence[int]], Any]:
        def send(ids: Sequence[int]) -> None:
            for start in range(0, len(ids), BATCH):
                self.noop.map(ids[start : start + BATCH])

        return send

    def worker_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "taskq",
            "--broker",
            self.broker,
            "worker",
            "-A",
            "benchmarks.peers.taskq_tasks",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
        ]

    def worker_env(self) -> dict[str, str]:
        env = {"TASKQ_DURABLE": "true" if self.durable else "false"}
        if self.monitored:
            env |= {"TASKQ_EVENTS": "true", "TASKQ_METRICS_PORT": str(free_port())}
        return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a worker's metrics."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SYSTEM = TaskqSystem
