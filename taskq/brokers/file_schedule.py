"""The file broker's part of ``Schedule``: the schedule's lease is a flock on a
file in ``schedule/``, and each periodic task's last tick a small file beside it.

A flock needs no clock: the kernel drops it when the holding process dies,
even on SIGKILL, so another worker takes the schedule over on its next try
(``ttl`` is not needed here). Only the lease holder writes ticks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from urllib.parse import quote

from ..message import new_id
from .fs import _note_held, read_file, release_lock, write_new
from .trust import Trust, make_folder


class FileSchedule:
    root: Path
    trust: Trust

    @property
    def _leases(self) -> dict[str, tuple[str, int]]:
        """Leases this broker object holds: name -> (owner, locked fd)."""
        held: dict[str, tuple[str, int]] = self.__dict__.setdefault("_held_leases", {})
        return held

    def _schedule_path(self, name: str, suffix: str) -> Path:
        folder = self.root / "schedule"
        make_folder(folder, self.trust, self.root)
        return folder / f"{quote(name, safe='')}{suffix}"

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        held = self._leases.get(name)
        if held is not None:
            return held[0] == owner
        path = self._schedule_path(name, ".lease")
        # O_NOFOLLOW: a link planted in schedule/ is refused, never followed.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(path, flags, self.trust.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._leases[name] = (owner, _note_held(fd))
        with contextlib.suppress(OSError):  # who holds it, for a person looking
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode(), 0)
        return True

    def release_lease(self, name: str, owner: str) -> None:
        held = self._leases.get(name)
        if held is not None and held[0] == owner:
            del self._leases[name]
            release_lock(held[1])

    def last_tick(self, task: str) -> float | None:
        data = read_file(str(self._schedule_path(task, ".tick")), limit=64)
        if not data:
            return None
        try:
            return float(data)
        except ValueError:
            return None  # torn or foreign: the next tick rewrites it

    def record_tick(self, task: str, tick: float) -> bool:
        last = self.last_tick(task)
        if last is not None and last >= tick:
            return False
        path = self._schedule_path(task, ".tick")
        tmp = path.with_name(f".{path.name}.{new_id()}.tmp")
        write_new(tmp, repr(tick).encode(), mode=self.trust.file_mode)
        try:
            os.rename(tmp, path)  # readers see the old tick or the new one, never half
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return True
