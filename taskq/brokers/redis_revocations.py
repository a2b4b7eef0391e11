"""Revocations on Redis: ``revoked`` (HASH id -> "1" if revoked with terminate,
else "0"), ``revoked-expiry`` (ZSET id -> when it expires) and ``revoked-seq`` (a
counter moved by every change). A process keeps a copy of the hash and looks at
the counter once a second at most, so a worker asks Redis nothing per message."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..message import validate_task_id
from .revoked_copy import RevokedCopy

_T = TypeVar("_T")
_REFRESH = 1.0  # seconds between looks at the change counter
_EXPIRE_BATCH = 500  # revocations looked at per housekeeping step

# ARGV: prefix, expires at, "1" for terminate else "0", then the ids. Terminate once
# given stays; the later expiry wins (ZADD GT).
REVOKE = """
local p, expires, terminate = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local id = ARGV[i]
  if terminate == '1' or redis.call('HGET', p .. 'revoked', id) ~= '1' then
    redis.call('HSET', p .. 'revoked', id, terminate)
  end
  redis.call('ZADD', p .. 'revoked-expiry', 'GT', expires, id)
end
return redis.call('INCR', p .. 'revoked-seq')
"""

# ARGV: prefix, now, most. Forgets up to ``most`` revocations expired before ``now``;
# returns how many.
EXPIRE_REVOKED = """
local p, now, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local old = redis.call('ZRANGEBYSCORE', p .. 'revoked-expiry', '-inf', '(' .. now, 'LIMIT', 0, most)
for _, id in ipairs(old) do
  redis.call('ZREM', p .. 'revoked-expiry', id)
  redis.call('HDEL', p .. 'revoked', id)
end
if #old > 0 then redis.call('INCR', p .. 'revoked-seq') end
return #old
"""


class RedisRevocations:
    """``Revocations`` for ``RedisBroker``."""

    client: Any
    prefix: str
    _revoked_copy: RevokedCopy | None = None

    if TYPE_CHECKING:  # the broker's own, declared for the type checker only

        def key(self, kind: str, name: str = "") -> str: ...

        def call(self, operation: Callable[[], _T], *, after_writes: bool = True) -> _T: ...

        def script(self, source: str, args: list[Any]) -> Any: ...

    def revoke(self, task_ids: Collection[str], terminate: bool, expires_at: float) -> None:
        ids = [validate_task_id(task_id) for task_id in task_ids]
        if ids:
            args = [self.prefix, repr(expires_at), "1" if terminate else "0", *ids]
            self.call(lambda: self.script(REVOKE, args))
            self._revoked_copy = None  # this process sees its own revocation at once

    def _copy(self) -> RevokedCopy:
        if self._revoked_copy is None:
            self._revoked_copy = RevokedCopy(self._revoked_marker, self._load_revoked, _REFRESH)
        return self._revoked_copy

    def _revoked_marker(self) -> object:
        # Not after this process's pending acks (after_writes): no wait on the hot path.
        return self.call(lambda: self.client.get(self.key("revoked-seq")), after_writes=False)

    def _load_revoked(self) -> dict[str, bool]:
        held = self.call(lambda: self.client.hgetall(self.key("revoked")), after_writes=False)
        return {task_id.decode(): flag == b"1" for task_id, flag in held.items()}

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self._copy().ids()

    def terminations(self) -> set[str]:
        return {task_id for task_id, kill in self._copy().ids().items() if kill}

    def revocation_steps(self, now: float) -> Iterator[bool]:
        args = [self.prefix, repr(now), _EXPIRE_BATCH]
        while True:
            removed = int(self.call(lambda: self.script(EXPIRE_REVOKED, args)))
            yield from (True for _ in range(removed))
            if removed < _EXPIRE_BATCH:
                return
