"""The Redis broker's part of backups and moves.

An export reads a copy of the queues taken in one script (``SNAPSHOT``): one
instant of the broker, so a message is in exactly one state of it whatever
workers do meanwhile. The copy costs Redis the memory of the exported queues
until the export ends (or its TTL lapses, if the export dies); the exporting
process reads it a page at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import Any

from ..message import new_id
from . import redis_scripts as lua
from .base import CLAIMED, DEAD, READY, SCHEDULED, Stored
from .names import id_in_state

_PAGE = 1000  # members read per round trip
_SNAPSHOT_TTL_MS = 6 * 3600 * 1000  # an export that died leaves its copy this long


class RedisTransfer:
    """Export, restore and discard over the keys ``RedisBroker`` keeps."""

    client: Any
    prefix: str
    call: Callable[..., Any]
    script: Callable[[str, list[Any]], Any]
    key: Callable[..., str]
    queues: Callable[[], list[str]]

    def export_messages(
        self, queues: Collection[str] | None, seen: Callable[[str], bool]
    ) -> Iterator[Stored]:
        names = self.queues() if queues is None else sorted(queues)
        snap = self.key(f"export:{new_id()}:")
        args = [self.prefix, snap, _SNAPSHOT_TTL_MS, *names]
        consumers = [c.decode() for c in self.call(lambda: self.script(lua.SNAPSHOT, args))]
        try:
            for queue in names:
                for state in (SCHEDULED, READY):
                    for page in self._pages(f"{snap}{state}:{queue}"):
                        for member in page:
                            name, _, data = member.partition(b"\0")
                            if not seen(id_in_state(state, name.decode())):
                                yield Stored(queue, state, name.decode(), bytes(data))
            wanted = set(names)
            for consumer in consumers:
                claims = self.call(lambda c=consumer: self.client.hgetall(f"{snap}claims:{c}"))
                for field, data in sorted(claims.items()):
                    queue, _, name = field.decode().partition("/")
                    if queue in wanted and not seen(id_in_state(CLAIMED, name)):
                        yield Stored(queue, CLAIMED, name, bytes(data))
            for queue in names:
                yield from self._dead(snap, queue, seen)
        finally:
            self.call(lambda: self._drop_snapshot(snap, names, consumers))

    def _pages(self, key: str) -> Iterator[list[bytes]]:
        """The members of a (snapshot, unchanging) sorted set, a page at a time."""
        start = 0
        while page := self.call(partial(self.client.zrange, key, start, start + _PAGE - 1)):
            yield page
            start += len(page)

    def _dead(self, snap: str, queue: str, seen: Callable[[str], bool]) -> Iterator[Stored]:
        for names in self._pages(f"{snap}dead:{queue}"):
            data = self.call(lambda n=names: self.client.hmget(f"{snap}dead-data:{queue}", n))
            records = self.call(lambda n=names: self.client.hmget(f"{snap}dead-record:{queue}", n))
            for name, blob, record in zip(names, data, records, strict=True):
                if blob is not None and not seen(id_in_state(DEAD, name.decode())):
                    held = json.loads(record) if record else {}
                    yield Stored(queue, DEAD, name.decode(), bytes(blob), held)

    def _drop_snapshot(self, snap: str, queues: list[str], consumers: list[str]) -> None:
        kinds = ("ready:", "scheduled:", "dead:", "dead-data:", "dead-record:")
        keys = [f"{snap}{kind}{q}" for q in queues for kind in kinds]
        keys += [f"{snap}claims:{c}" for c in consumers]
        for start in range(0, len(keys), 500):
            self.client.unlink(*keys[start : start + 500])

    def message_ids(self) -> Iterator[str]:
        for queue in self.queues():
            for state in (SCHEDULED, READY, DEAD):
                key = self.key(f"{state}:", queue)
                for member, _ in self.client.zscan_iter(key, count=_PAGE):
                    yield id_in_state(state, member.partition(b"\0")[0].decode())
        for consumer in self.client.hkeys(self.key("consumers")):
            for field in self.client.hkeys(self.key("claims:", consumer.decode())):
                yield id_in_state(CLAIMED, field.decode().partition("/")[2])

    def restore_dead(self, queue: str, name: str, data: bytes, record: Mapping[str, Any]) -> None:
        text = json.dumps(dict(record), default=str)
        self.call(lambda: self.script(lua.RESTORE_DEAD, [self.prefix, queue, name, data, text]))

    def discard(self, stored: Stored) -> None:
        q, name = stored.queue, stored.name
        pipe = self.client.pipeline(transaction=True)
        if stored.state in (READY, SCHEDULED):
            pipe.zrem(self.key(f"{stored.state}:", q), name.encode() + b"\0" + stored.data)
        elif stored.state == DEAD:
            pipe.zrem(self.key("dead:", q), name)
            pipe.hdel(self.key("dead-data:", q), name)
            pipe.hdel(self.key("dead-record:", q), name)
        else:
            for consumer in self.call(lambda: self.client.hkeys(self.key("consumers"))):
                pipe.hdel(self.key("claims:", consumer.decode()), f"{q}/{name}")
        self.call(pipe.execute)
