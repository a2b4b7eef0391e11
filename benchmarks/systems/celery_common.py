"""Celery with the prefork pool of 2 processes, no result backend, no remote control,
no events (``--without-gossip --without-mingle --without-heartbeat``); otherwise defaults
(ack on receipt, prefetch multiplier 4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import PYTHON, System


class CelerySystem(System):
    packages = ("celery", "kombu")
    worker_mode = "`celery worker -P prefork -c 2` (a consumer and 2 pool processes)"
    chaos_variants = ("", "defaults")

    def chaos_settings(self, variant: str) -> str:
        from ..peers.celery_tasks import RELIABLE

        if variant == "defaults":
            return "Celery's defaults: ack on receipt, prefetch multiplier 4"
        return ", ".join(f"`{k}={v}`" for k, v in RELIABLE.items())

    def config(self, work: Path, token: str) -> dict[str, Any]:
        """``broker_url`` and ``transport_options`` for this scenario."""
        raise NotImplementedError

    def open(self, work: Path, token: str) -> None:
        from ..peers.celery_tasks import make_app

        self.queue = f"bench-{token}"
        self.settings = {"queue": self.queue, **self.config(work, token)}
        if self.chaos_variant == "":
            self.settings["reliable"] = True
        self.app = make_app(**self.settings)
        self.noop = self.app.tasks["bench.noop"]
        self.stamp = self.app.tasks["bench.stamp"]
        self.slow = self.app.tasks["bench.slow"]

    def sender(self) -> Callable[[int], Any]:
        return self.noop.delay

    def stamper(self) -> Callable[[int, float], Any]:
        return self.stamp.delay

    def slow_sender(self, ms: float) -> Callable[[int], Any]:
        return lambda i: self.slow.delay(i, ms)

    def worker_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "benchmarks.peers.celery_tasks:app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            self.queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_CELERY": json.dumps(self.settings)}

    def close(self) -> None:
        self.app.close()
