"""Dramatiq's worker with 2 processes and its default 8 threads each, default middleware
(no results middleware)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import PYTHON, System

THREADS = "8"
CHAOS_THREADS = "1"  # W5: one task at a time per process, as every other row runs


class DramatiqSystem(System):
    packages = ("dramatiq",)
    kind = ""
    url = ""
    worker_mode = f"`dramatiq -p 2 -t {THREADS}` (2 processes of {THREADS} threads)"

    def open(self, work: Path, token: str) -> None:
        from ..peers.dramatiq_actors import make_broker

        self.queue = f"bench-{token}"
        self.namespace = f"bench-{token}"
        self.settings = {
            "kind": self.kind,
            "url": self.url,
            "namespace": self.namespace,
            "queue": self.queue,
        }
        self.broker, self.noop, self.stamp = make_broker(**self.settings)

    def slow_sender(self, ms: float) -> Callable[[int], Any]:
        slow = self.broker.get_actor("slow")
        return lambda i: slow.send(i, ms)

    def chaos_settings(self, variant: str) -> str:
        return (
            f"`dramatiq -p 2 -t {CHAOS_THREADS}` (one task at a time per process, as in every "
            "other row); defaults otherwise: acknowledged after the task, default middleware"
        )

    def sender(self) -> Callable[[int], Any]:
        return self.noop.send

    def stamper(self) -> Callable[[int, float], Any]:
        return self.stamp.send

    def worker_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "dramatiq",
            "benchmarks.peers.dramatiq_actors",
            "--processes",
            "2",
            "--threads",
            THREADS if self.chaos_variant is None else CHAOS_THREADS,
            "--queues",
            self.queue,
        ]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DRAMATIQ": json.dumps(self.settings)}

    def close(self) -> None:
        self.broker.close()
