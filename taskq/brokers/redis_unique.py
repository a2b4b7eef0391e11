"""Unique keys on Redis: ``unique:<key>`` holds its holder's id with a TTL (SET NX
PX), and is deleted only by a script that finds the same id in it, so a release
that comes after the key lapsed and was taken again leaves the new holder be."""

from __future__ import annotations

from ..message import validate_unique_key
from .redis_stores import RedisStores

# ARGV: prefix, key, task id, ttl ms. Returns the holder's id: the given one if
# it took the key. One script: between a SET that fails and the GET, the key
# cannot lapse (nothing else runs), so a holder is always there to name.
CLAIM_UNIQUE = """
local k = ARGV[1] .. 'unique:' .. ARGV[2]
if redis.call('SET', k, ARGV[3], 'NX', 'PX', ARGV[4]) then return ARGV[3] end
return redis.call('GET', k)
"""

# ARGV: prefix, key, task id. 1 if it held the key (deleted now), else 0.
RELEASE_UNIQUE = """
local k = ARGV[1] .. 'unique:' .. ARGV[2]
if redis.call('GET', k) == ARGV[3] then return redis.call('DEL', k) end
return 0
"""


class RedisUniques(RedisStores):
    """``Uniques`` for ``RedisBroker``; Redis expires a key that was never released."""

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        args = [self.prefix, validate_unique_key(key), task_id, max(int(ttl * 1000), 1)]
        return bytes(self.call(lambda: self.script(CLAIM_UNIQUE, args))).decode()

    def release_unique(self, key: str, task_id: str) -> None:
        args = [self.prefix, validate_unique_key(key), task_id]
        local = self._one_local()
        if local is not None:  # a worker: sent after the ack, its reply read later
            local.write("EVAL", RELEASE_UNIQUE, 0, *args)
            return
        self.call(lambda: self.script(RELEASE_UNIQUE, args))
