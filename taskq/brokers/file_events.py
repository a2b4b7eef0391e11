"""The file broker's event log: ``events/events.jsonl``, one JSON object a line
(an event, or a run's two: ``base.parse_events``).

Each process appends a batch with one ``write(2)`` on an ``O_APPEND`` descriptor,
so batches of several processes never interleave inside a line. Past
``rotate_bytes`` the log is renamed to ``events.1.jsonl`` (replacing the one
before), under a lock so that one writer rotates it once. A cursor is the
file's inode and a byte offset: it follows the log across one rotation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BrokerError
from .base import parse_events
from .fs import write_all
from .trust import Trust, make_folder

ROTATE_BYTES = 32 << 20  # two files kept: up to 64 MB, some 200,000 events
_CURRENT, _PREVIOUS, _LOCK = "events.jsonl", "events.1.jsonl", ".rotate.lock"
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20  # bytes read at a time


class FileEvents:
    """``Events`` for the file broker."""

    root: Path
    trust: Trust
    rotate_bytes: int = ROTATE_BYTES
    _events_dir: Path | None = None

    def _events_folder(self) -> Path:
        if self._events_dir is None:
            folder = self.root / "events"
            make_folder(folder, self.trust, self.root)
            self._events_dir = folder
        return self._events_dir

    def append_events(self, events: Sequence[str]) -> None:
        if not events:
            return
        if "\n" in "".join(events):  # it would split an event in two
            raise ValueError("an event must be JSON on one line")
        data = ("\n".join(events) + "\n").encode()
        path = self._events_folder() / _CURRENT
        fd = os.open(path, _APPEND, self.trust.file_mode)
        try:
            st = self._checked(fd, path)
            write_all(fd, data, path)
            if st.st_size + len(data) > self.rotate_bytes:
                self._rotate(path, st.st_ino)
        finally:
            os.close(fd)

    def _checked(self, fd: int, path: Path) -> os.stat_result:
        """The log's status, if it is a regular file of a trusted owner."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in self.trust.uids:
            raise BrokerError(
                f"event log {path} is not a regular file of a trusted user: remove it "
                "(taskq makes it again)"
            )
        return st

    def _rotate(self, path: Path, inode: int) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        lock = os.open(path.parent / _LOCK, flags, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == inode:  # not rotated by another writer meanwhile
                    os.rename(path, path.parent / _PREVIOUS)
        finally:
            os.close(lock)

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        folder = self.root / "events"
        previous, current = self._open(folder / _PREVIOUS), self._open(folder / _CURRENT)
        try:
            inode, offset = _cursor(after)
            plan: list[tuple[tuple[int, os.stat_result] | None, int]]
            if current is not None and current[1].st_ino == inode:
                plan = [(current, offset)]
            elif previous is not None and previous[1].st_ino == inode:
                plan = [(previous, offset), (current, 0)]
            else:  # from the oldest kept
                plan = [(previous, 0), (current, 0)]
            events: list[dict[str, Any]] = []
            for opened, start in plan:
                if opened is None:
                    continue
                fd, st = opened
                end, full = _read_lines(fd, start if start <= st.st_size else 0, limit, events)
                after = f"{st.st_ino}:{end}"
                if full:
                    break
            return events, after
        finally:
            for opened in (previous, current):
                if opened is not None:
                    os.close(opened[0])

    def _open(self, path: Path) -> tuple[int, os.stat_result] | None:
        try:
            fd = os.open(path, _READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BrokerError(f"event log {path} is a symbolic link: remove it") from None
            raise
        try:
            return fd, self._checked(fd, path)
        except BaseException:
            os.close(fd)
            raise


def _cursor(cursor: str) -> tuple[int, int]:
    inode, _, offset = cursor.partition(":")
    if not (inode.isdigit() and offset.isdigit()):
        return -1, 0  # none, or not one of ours: from the oldest kept
    return int(inode), int(offset)


def _read_lines(fd: int, offset: int, limit: int, into: list[dict[str, Any]]) -> tuple[int, bool]:
    """Append the events of the whole lines from ``offset`` while ``into`` holds
    fewer than ``limit`` (a line's events are not split: a line that would pass
    ``limit`` waits for the next read, unless ``into`` is empty); return the offset
    after the last line read, and whether the page is full. A line not yet ended
    (being written) is left for the next read; one that is no JSON object is skipped."""
    while len(into) < limit:
        chunk = os.pread(fd, _CHUNK, offset)
        lines = chunk.split(b"\n")[:-1]  # the last part has no newline yet
        if not lines and len(chunk) == _CHUNK:  # no event is this long: skip the garbage
            offset += _CHUNK
            continue
        if not lines:
            return offset, False
        for line in lines:
            found = parse_events(line)
            if into and len(into) + len(found) > limit:
                return offset, True
            offset += len(line) + 1
            into += found
            if len(into) >= limit:
                break
    return offset, True
