"""The Redis broker's event log: a stream of batches, one entry per batch a
process appends (its events, one JSON object a line), capped near ``KEEP``
events; a cursor is a stream id, with how many events of that entry were read.

One entry per batch rather than per event: a worker's batch costs Redis one
XADD, where an entry per event cost it one each and slowed a drain by a fifth
on two cores (the server shares them with the workers)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .base import parse_events

KEEP = 100_000  # events kept, about (at most about twice as many, see append_events)

_T = TypeVar("_T")
_CURSOR = re.compile(r"([0-9]{1,20}-[0-9]{1,20})(?:/([0-9]{1,9}))?")


class RedisEvents:
    """``Events`` for the Redis broker."""

    client: Any

    if TYPE_CHECKING:  # the broker's own, declared for the type checker only

        def key(self, kind: str, name: str = "") -> str: ...

        def call(self, operation: Callable[[], _T], *, after_writes: bool = True) -> _T: ...

    def append_events(self, events: Sequence[str]) -> None:
        if not events:
            return
        stream, batch = self.key("events"), "\n".join(events)
        # Trimmed to the entries that hold about KEEP events of this batch's size:
        # a big batch trims the stream short, a small one lets it grow; whatever
        # their mix, about 2 * KEEP events at most stay.
        keep = max(1, KEEP // len(events))
        self.call(
            lambda: self.client.xadd(stream, {"e": batch}, maxlen=keep, approximate=True),
            after_writes=False,
        )

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        # A cursor that is not one of ours reads from the oldest kept.
        parsed = _CURSOR.fullmatch(after)
        entry, skip = (parsed.group(1), int(parsed.group(2) or 0)) if parsed else ("", 0)
        # An entry read in part is read again from its start, its read events skipped.
        start = (entry if skip else f"({entry}") if entry else "-"
        stream = self.key("events")
        events: list[dict[str, Any]] = []
        cursor = after
        while len(events) < limit:
            entries = self._entries(stream, start)
            if not entries:
                break
            for raw_id, fields in entries:
                entry_id = raw_id.decode()
                lines = fields.get(b"e", b"").split(b"\n")
                read = _take(lines, skip if entry_id == entry else 0, limit, events)
                if read == 0:  # the page is full: on from the entry before
                    return events, cursor
                cursor = entry_id if read >= len(lines) else f"{entry_id}/{read}"
                if read < len(lines):  # the page is full
                    return events, cursor
            start = f"({entries[-1][0].decode()}"
        return events, cursor

    def _entries(self, stream: str, start: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The next entries of the stream from ``start``, a page at a time."""
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.call(
            lambda: self.client.xrange(stream, start, "+", count=100), after_writes=False
        )
        return entries


def _take(lines: list[bytes], read: int, limit: int, into: list[dict[str, Any]]) -> int:
    """Append the events of ``lines`` from index ``read`` while ``into`` holds fewer
    than ``limit`` (a line's events are not split: a line that would pass ``limit``
    waits for the next page, unless ``into`` is empty); the index of the first line
    not read."""
    while read < len(lines) and len(into) < limit:
        found = parse_events(lines[read])
        if into and len(into) + len(found) > limit:
            break
        into += found
        read += 1
    return read
