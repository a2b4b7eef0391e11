"""Chord state on Redis: a hash of member results and a key naming the member
that completed it, both changed by one script (Redis runs it whole and alone)."""

from __future__ import annotations

from ..errors import BrokerError
from ..message import validate_task_id
from .redis_stores import RedisStores

# ARGV: prefix, chord id, index, total, data, ttl ms. The first data of an index
# stays (HSETNX); the member whose add completes the hash takes the done key.
# Returns 1 for that member (each time it adds again), else 0.
CHORD_ADD = """
local p, id, index, total = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local members, done = p .. 'chord:' .. id, p .. 'chord-done:' .. id
redis.call('HSETNX', members, index, ARGV[5])
redis.call('PEXPIRE', members, ARGV[6])
if redis.call('HLEN', members) < total then return 0 end
redis.call('SET', done, index, 'NX', 'PX', ARGV[6])
if redis.call('GET', done) == index then return 1 end
return 0
"""


class RedisChords(RedisStores):
    """``Chords`` for ``RedisBroker``; chords expire with results (``result_expires``)."""

    def chord_add(self, chord_id: str, index: int, total: int, data: bytes) -> bool:
        validate_task_id(chord_id)
        if not 0 <= index < total:
            raise BrokerError(f"chord member index {index} is outside 0..{total - 1}")
        args = [self.prefix, chord_id, str(index), total, data, self.result_expires_ms]
        return bool(self.call(lambda: self.script(CHORD_ADD, args)))

    def chord_results(self, chord_id: str) -> list[bytes]:
        validate_task_id(chord_id)
        held = self.call(lambda: self.client.hgetall(self.key("chord:", chord_id)))
        return [bytes(data) for _, data in sorted(held.items(), key=lambda kv: int(kv[0]))]
