"""taskq on its Redis broker: the default system's producer and worker, with the broker
``redis://127.0.0.1:6379/0?prefix=taskq-bench-<token>:``. Every key the broker makes
starts with that prefix, so ``close`` deletes exactly the scenario's keys."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import REDIS, REDIS_URL, redis_client, redis_delete_matching, redis_version
from .taskq_default import TaskqSystem


class TaskqRedisSystem(TaskqSystem):
    name = "taskq-redis"
    packages = ("taskq", "redis")
    servers = (("Redis", REDIS),)
    worker_mode = (
        "`taskq worker --concurrency 2` (a supervisor and 2 worker processes) with "
        "`--broker redis://127.0.0.1:6379/0?prefix=taskq-bench-<token>:`"
    )
    chaos_recovery = (
        "when its liveness key lapses (10 s by default), another supervisor takes over its claims"
    )
    chaos_recovery_s = 10.0

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("taskq.brokers.redis") is None:
            return "this taskq has no Redis broker (taskq/brokers/redis.py)"
        return super().unavailable()

    def versions(self) -> dict[str, str]:
        return {"Redis server": redis_version()}

    def broker_url(self, work: Path, token: str) -> str:
        self.prefix = f"taskq-bench-{token}:"
        return f"{REDIS_URL}?prefix={self.prefix}"

    def close(self) -> None:
        client = redis_client()
        try:
            redis_delete_matching(client, f"{self.prefix}*")
        finally:
            client.close()


SYSTEM = TaskqRedisSystem
