"""The Redis broker's event log: one stream capped near ``KEEP`` entries
(``XADD MAXLEN ~``), each entry one JSON event; a cursor is a stream id."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import redis_scripts as lua

KEEP = 100_000  # events kept, about: Redis trims whole nodes of the stream

_T = TypeVar("_T")
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


class RedisEvents:
    """``Events`` for the Redis broker."""

    client: Any

    if TYPE_CHECKING:  # the broker's own, declared for the type checker only

        def key(self, kind: str, name: str = "") -> str: ...

        def call(self, operation: Callable[[], _T], *, after_writes: bool = True) -> _T: ...

        def script(self, source: str, args: Sequence[Any]) -> Any: ...

    def append_events(self, events: Sequence[str]) -> None:
        if not events:
            return
        args = [self.key("events"), KEEP, *events]
        # One script call: events of other processes never interleave inside it,
        # and each event stays one entry (a cursor can stop after any of them).
        self.call(lambda: self.script(lua.APPEND_EVENTS, args), after_writes=False)

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        # A cursor that is no stream id (not one of ours) reads from the oldest kept.
        start = f"({after}" if _STREAM_ID.fullmatch(after) else "-"
        stream = self.key("events")
        entries = self.call(
            lambda: self.client.xrange(stream, start, "+", count=limit), after_writes=False
        )
        events = []
        for _id, fields in entries:
            event = _parse(fields.get(b"e", b""))
            if event is not None:
                events.append(event)
        cursor = entries[-1][0].decode() if entries else after
        return events, cursor


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
