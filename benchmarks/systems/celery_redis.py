"""Celery + Redis. Every key lives under a unique ``global_keyprefix``, deleted afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import REDIS, REDIS_URL, redis_client, redis_delete_matching, redis_version
from .celery_common import CelerySystem


class CeleryRedisSystem(CelerySystem):
    name = "celery-redis"
    packages = ("celery", "kombu", "redis")
    servers = (("Redis", REDIS),)
    chaos_recovery = (
        "a pool process's death: requeued at once with `task_reject_on_worker_lost`; the "
        "consumer's death: its unacknowledged messages come back only after the Redis "
        "transport's `visibility_timeout` (default 1 hour), so they count as missing here; "
        "with Celery's defaults a message is acknowledged on receipt and a kill loses it"
    )
    chaos_recovery_s = None

    def config(self, work: Path, token: str) -> dict[str, Any]:
        self.prefix = f"bench-{token}:"
        return {"broker_url": REDIS_URL, "transport_options": {"global_keyprefix": self.prefix}}

    def versions(self) -> dict[str, str]:
        return {"Redis server": redis_version()}

    def close(self) -> None:
        super().close()
        redis_delete_matching(redis_client(), self.prefix + "*")


SYSTEM = CeleryRedisSystem
