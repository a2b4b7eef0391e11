"""Huey's consumer with 2 worker processes (``-w 2 -k process``), no periodic tasks,
``results=False``. Storages that poll (SQLite, file) poll every 10 ms (huey's default
starts at 100 ms and backs off to 10 s); the Redis storage blocks on BRPOP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import PYTHON, System

POLL = "0.01"


class HueySystem(System):
    packages = ("huey",)
    storage = ""
    worker_mode = "`huey_consumer -w 2 -k process -n` (a consumer and 2 worker processes)"

    def location(self, work: Path, token: str) -> str:
        raise NotImplementedError

    def open(self, work: Path, token: str) -> None:
        from ..peers.huey_tasks import make_huey

        self.hname = f"bench_{token}"
        self.settings = {
            "storage": self.storage,
            "name": self.hname,
            "location": self.location(work, token),
        }
        self.huey, self.noop, self.stamp, self.slow = make_huey(**self.settings)

    chaos_recovery = (
        "none: the consumer removes a task from the queue when it dequeues it and "
        "acknowledges nothing afterwards; a task whose worker was killed is lost"
    )
    chaos_recovery_s = None

    def slow_sender(self, ms: float) -> Callable[[int], Any]:
        return lambda i: self.slow(i, ms)

    def sender(self) -> Callable[[int], Any]:
        return self.noop

    def stamper(self) -> Callable[[int, float], Any]:
        return self.stamp

    def worker_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "huey.bin.huey_consumer",
            "benchmarks.peers.huey_tasks.huey",
            "-w",
            "2",
            "-k",
            "process",
            "-n",
            "-q",
            "-d",
            POLL,
            "-m",
            POLL,
        ]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_HUEY": json.dumps(self.settings)}
