"""The Redis broker's ``RateLimits``: one key per rate holding the time its next
slot starts, read and moved on by one script on the server's clock (``TIME``),
so hosts whose clocks disagree still share one rate. The key expires once its
slots are past: an idle rate leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

_T = TypeVar("_T")

# ARGV: key, interval (s), burst. Returns the seconds until the slot taken, as text
# (a Lua number would come back cut to an integer).
TAKE_SLOT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local start = tonumber(redis.call('GET', ARGV[1])) or now
if start < now then start = now end
local following = start + interval
local keep = math.ceil((following - now) * 1000) + 1000
redis.call('SET', ARGV[1], string.format('%.6f', following), 'PX', keep)
local wait = start - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
return string.format('%.6f', wait)
"""


class RedisRates:
    """``RateLimits`` for ``RedisBroker``: keys ``<prefix>rate:<task>``."""

    if TYPE_CHECKING:  # the broker's own, declared for the type checker only

        def key(self, kind: str, name: str = "") -> str: ...

        def call(self, operation: Callable[[], _T], *, after_writes: bool = True) -> _T: ...

        def script(self, source: str, args: list[Any]) -> Any: ...

    def take_slot(self, key: str, interval: float, burst: int) -> float:
        args = [self.key("rate:", key), repr(interval), burst]
        # Not after this process's own acks: a slot does not depend on them.
        return float(self.call(lambda: self.script(TAKE_SLOT, args), after_writes=False))
