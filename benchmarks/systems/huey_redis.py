"""Huey + Redis (``RedisHuey``): its keys end in the unique huey name and are deleted afterwards."""

from __future__ import annotations

from pathlib import Path

from .base import REDIS, REDIS_URL, redis_client, redis_delete_matching, redis_version
from .huey_common import HueySystem


class HueyRedisSystem(HueySystem):
    name = "huey-redis"
    packages = ("huey", "redis")
    servers = (("Redis", REDIS),)
    storage = "redis"
    worker_mode = HueySystem.worker_mode + ", BRPOP (no polling)"

    def location(self, work: Path, token: str) -> str:
        return REDIS_URL

    def versions(self) -> dict[str, str]:
        return {"Redis server": redis_version()}

    def close(self) -> None:
        self.huey.storage.conn.close()
        redis_delete_matching(redis_client(), f"huey.*.{self.hname}*")


SYSTEM = HueyRedisSystem
