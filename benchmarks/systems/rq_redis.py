"""RQ in its fastest mode for short jobs: ``rq worker-pool -n 2 -w rq.worker.SimpleWorker``
(2 worker processes that run jobs in-process; RQ's default ``Worker`` forks a work horse
per job). Jobs are enqueued with ``result_ttl=0``: no result is kept.

RQ has no key prefix: the queue is named after the token, its registries carry the
name, and the workers' hashes are found by the queue they served. RQ's own maintenance
lock ``rq:clean_groups`` (global, with a TTL) is left to expire.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..peers import record
from .base import (
    PYTHON,
    REDIS,
    REDIS_URL,
    System,
    redis_client,
    redis_delete_matching,
    redis_version,
)

WORKER_CLASS = os.environ.get("BENCH_RQ_WORKER_CLASS", "rq.worker.SimpleWorker")
CHAOS_RETRIES = 10  # W5: RQ retries an abandoned job that has retries left


class RqSystem(System):
    name = "rq"
    packages = ("rq", "redis")
    servers = (("Redis", REDIS),)
    worker_mode = f"`rq worker-pool -n 2 -w {WORKER_CLASS}` (2 processes, no fork per job)"
    chaos_recovery = (
        "a job whose worker died stays in the StartedJobRegistry until its heartbeat expires "
        "(job monitoring interval 30 s + 60 s); the next maintenance pass then retries it "
        "(`Retry`) or fails it, and a worker runs that pass when it starts and every 10 "
        "minutes. In the chaos, restarted workers run it; in the final drain no worker starts, "
        "so a job abandoned in the last 90 s of the chaos counts as missing"
    )
    chaos_recovery_s = None

    def open(self, work: Path, token: str) -> None:
        from rq import Queue

        self.redis = redis_client()
        self.queue = Queue(f"bench-{token}", connection=self.redis)

    def sender(self) -> Callable[[int], Any]:
        return functools.partial(self.queue.enqueue, record.noop, result_ttl=0)

    def stamper(self) -> Callable[[int, float], Any]:
        return functools.partial(self.queue.enqueue, record.stamp, result_ttl=0)

    def slow_sender(self, ms: float) -> Callable[[int], Any]:
        from rq import Retry

        retry = Retry(max=CHAOS_RETRIES)
        return lambda i: self.queue.enqueue(record.slow, i, ms, result_ttl=0, retry=retry)

    def dead_letters(self) -> int | None:
        """Jobs in the queue's FailedJobRegistry (an abandoned job without retries left)."""
        from rq.registry import FailedJobRegistry

        return len(FailedJobRegistry(queue=self.queue))

    def chaos_settings(self, variant: str) -> str:
        return f"`enqueue(..., retry=Retry(max={CHAOS_RETRIES}), result_ttl=0)`, defaults otherwise"

    def worker_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "rq.cli",
            "worker-pool",
            "--url",
            REDIS_URL,
            "-n",
            "2",
            "-w",
            WORKER_CLASS,
            "--quiet",
            self.queue.name,
        ]

    def versions(self) -> dict[str, str]:
        return {"Redis server": redis_version()}

    def close(self) -> None:
        self.queue.delete(delete_jobs=True)
        redis_delete_matching(self.redis, f"rq:*{self.queue.name}*")
        name = self.queue.name.encode()
        # A job in flight when its worker was stopped is in no queue any more, and a
        # stopped (or killed) worker leaves its hash (with a TTL): find ours by their
        # queue, and the records of their executions by the job's or worker's key.
        for key in self.redis.scan_iter(match="rq:job:*", count=1000):
            if self._hash_field(key, "origin") == name:
                job_id = key.decode().split(":", 2)[2]
                self.redis.delete(key, f"rq:executions:{job_id}")
                redis_delete_matching(self.redis, f"rq:execution:{job_id}:*")
        for key in self.redis.scan_iter(match="rq:worker:*", count=1000):
            if self._hash_field(key, "queues") == name:
                self.redis.srem("rq:workers", key)
                self.redis.delete(key, key + b":executions")
        self.redis.close()

    def _hash_field(self, key: bytes, name: str) -> bytes | None:
        """A field of ``key`` if it is a hash (RQ keeps sets and sorted sets under the
        same prefixes), else None."""
        if self.redis.type(key) != b"hash":
            return None
        value: bytes | None = self.redis.hget(key, name)
        return value


SYSTEM = RqSystem
