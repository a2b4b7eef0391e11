"""Dramatiq + Redis: every key lives under the unique namespace, deleted afterwards.
An idle Redis consumer polls with a back-off up to 1 s (dramatiq's design)."""

from __future__ import annotations

from .base import REDIS, REDIS_URL, redis_client, redis_delete_matching, redis_version
from .dramatiq_common import DramatiqSystem


class DramatiqRedisSystem(DramatiqSystem):
    name = "dramatiq-redis"
    packages = ("dramatiq", "redis")
    servers = (("Redis", REDIS),)
    kind = "redis"
    url = REDIS_URL
    chaos_recovery = (
        "a dead worker process stops the whole `dramatiq` command (the driver starts it "
        "again); a dead consumer's unacknowledged messages are requeued by the broker's "
        "maintenance once its heartbeat is older than `heartbeat_timeout` (60 s), and "
        "maintenance runs on about 1 fetch in 1,000 (`maintenance_chance`)"
    )
    chaos_recovery_s = 60.0

    def versions(self) -> dict[str, str]:
        return {"Redis server": redis_version()}

    def close(self) -> None:
        super().close()
        redis_delete_matching(redis_client(), f"{self.namespace}:*")


SYSTEM = DramatiqRedisSystem
