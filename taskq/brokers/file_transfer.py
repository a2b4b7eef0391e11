"""The file broker's part of backups and moves: walking its folders for export.

A walk of folders is not a snapshot: workers rename files between them while
it runs. The walk goes the way messages flow (scheduled, ready, claimed, dead),
so a message moving forward (promoted, claimed, dead-lettered) is met again
further on, and the caller's ``seen`` drops the second sighting. A message
moving back (requeued, or retried into scheduled/) can slip behind the walk:
a catch-up walk of scheduled/, ready/ and claimed/ then reads only ids not
seen yet, which costs a listing, not a second read of every file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import TaskqError
from .base import CLAIMED, DEAD, READY, SCHEDULED, Stored
from .fs import read_signed, write_new
from .names import id_in_state, id_of

_LOCK = ".lock"


class FileTransfer:
    """Export, restore and discard over the layout ``FileBroker`` keeps."""

    queue_dir: Callable[[str], Path]
    queues: Callable[[], list[str]]
    _mode: int
    durable: bool

    def export_messages(
        self, queues: Collection[str] | None, seen: Callable[[str], bool]
    ) -> Iterator[Stored]:
        names = self.queues() if queues is None else sorted(queues)
        for catch_up in (False, True):
            for queue in names:
                qdir = self.queue_dir(queue)
                yield from self._walk(queue, qdir / SCHEDULED, SCHEDULED, seen)
                yield from self._walk(queue, qdir / READY, READY, seen)
                with contextlib.suppress(FileNotFoundError), os.scandir(qdir / CLAIMED) as dirs:
                    for entry in dirs:
                        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                            yield from self._walk(queue, Path(entry.path), CLAIMED, seen)
                if not catch_up:  # nothing moves out of dead/ but by an operator's hand
                    yield from self._walk_dead(queue, qdir / DEAD, seen)

    def _walk(
        self, queue: str, folder: Path, state: str, seen: Callable[[str], bool]
    ) -> Iterator[Stored]:
        # scandir reads the folder a block at a time: memory stays flat however deep.
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or seen(id_in_state(state, name)):
                    continue
                data = read_signed(entry.path)
                if data is not None:  # None: moved on since listed (met again further on)
                    yield Stored(queue, state, name, data)

    def _walk_dead(self, queue: str, folder: Path, seen: Callable[[str], bool]) -> Iterator[Stored]:
        from .file_admin import _read_record

        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.endswith(".json"):
                    continue
                name = entry.name.removesuffix(".json")
                if seen(id_of(name)):
                    continue
                try:
                    data = read_signed(str(folder / name))
                except TaskqError:
                    continue  # a quarantined folder or link: no message to back up
                if data is not None:
                    yield Stored(queue, DEAD, name, data, _read_record(Path(entry.path)))

    def message_ids(self) -> Iterator[str]:
        for queue in self.queues():
            qdir = self.queue_dir(queue)
            folders = [(qdir / s, s) for s in (SCHEDULED, READY, DEAD)]
            with contextlib.suppress(FileNotFoundError), os.scandir(qdir / CLAIMED) as dirs:
                folders += [(Path(e.path), CLAIMED) for e in dirs if e.is_dir()]
            for folder, state in folders:
                with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
                    for entry in entries:
                        if not entry.name.startswith(".") and not entry.name.endswith(".json"):
                            yield id_in_state(state, entry.name)

    def restore_dead(self, queue: str, name: str, data: bytes, record: Mapping[str, Any]) -> None:
        import json

        dead = self.queue_dir(queue) / DEAD
        tmp = self.queue_dir(queue) / "tmp"
        # The record first, then the message: a record alone is a message on its way
        # (dead_letters lists a letter only once both are there).
        record_tmp = tmp / f"{name}.record"
        write_new(
            record_tmp,
            json.dumps(dict(record), indent=2, default=str).encode(),
            self.durable,
            self._mode,
        )
        os.rename(record_tmp, dead / f"{name}.json")
        message_tmp = tmp / f"{name}.dead"
        write_new(message_tmp, data, self.durable, self._mode)
        os.rename(message_tmp, dead / name)

    def discard(self, stored: Stored) -> None:
        qdir = self.queue_dir(stored.queue)
        if stored.state == CLAIMED:
            paths = [p / stored.name for p in (qdir / CLAIMED).iterdir() if p.is_dir()]
        elif stored.state == DEAD:
            paths = [qdir / DEAD / stored.name, qdir / DEAD / f"{stored.name}.json"]
        else:
            paths = [qdir / stored.state / stored.name]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
