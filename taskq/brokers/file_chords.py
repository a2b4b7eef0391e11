"""Chord state on the file broker: one folder per chord under ``chords/``.

Each member's result is a file named by its index, made by ``link(2)`` of a
fully written temporary file: the name appears whole, and a second link of
the same index fails (EEXIST), so the first result given stays. Then the
member links the chord's ``count`` file as ``n<index>`` (again once per
index): the count file's link count is how many members are in, read by one
``stat``, so an add costs the same in a chord of ten or of a million (where a
file system caps links per file, ext4 at 65,000, the folder is listed
instead). The member that finds the set complete links ``done`` holding its
index; link again decides between two members finishing at once: one wins,
the other reads the winner's index. Results and ``done`` are read with the
broker's safe reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import BrokerError, UnsafeEntry
from ..message import new_id, validate_task_id
from .fs import link_new, read_file, read_signed, write_new
from .trust import Trust, make_folder

_DONE, _COUNT = "done", "count"


class FileChords:
    """``Chords`` for ``FileBroker``: folders under ``<root>/chords``."""

    root: Path
    trust: Trust

    def _chord_dir(self, chord_id: str) -> Path:
        validate_task_id(chord_id)
        chords = self.root / "chords"
        make_folder(chords, self.trust, self.root)
        folder = chords / chord_id
        make_folder(folder, self.trust, self.root)
        return folder

    def _link_once(self, folder: Path, name: str, data: bytes) -> None:
        """Give ``name`` to a whole file holding ``data``, unless the name exists
        (the first one stays: a re-run member's result is not swapped in)."""
        target = folder / name
        if link_new(str(folder), str(target), data, mode=self.trust.file_mode):
            return  # a nameless file linked in: one directory update
        if os.path.lexists(target):
            return
        tmp = folder / f".{name}.{new_id()}.tmp"
        write_new(tmp, data, mode=self.trust.file_mode)
        try:
            os.link(tmp, folder / name)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def chord_add(self, chord_id: str, index: int, total: int, data: bytes) -> bool:
        _check_index(index, total)
        folder = self._chord_dir(chord_id)
        self._link_once(folder, f"{index:09d}", data)
        if self._count(folder, index) < total:
            return False
        self._link_once(folder, _DONE, str(index).encode())
        winner = read_file(str(folder / _DONE), limit=32)
        return winner == str(index).encode()

    def _count(self, folder: Path, index: int) -> int:
        """How many members are in, counting this one (added before it is counted)."""
        counter = folder / _COUNT
        with contextlib.suppress(FileExistsError):
            write_new(counter, b"", mode=self.trust.file_mode)
        try:
            os.link(counter, folder / f"n{index}", follow_symlinks=False)
        except FileExistsError:
            pass  # a re-run member: counted already
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            return len(_members(folder))  # more members than the file system counts
        return os.stat(counter, follow_symlinks=False).st_nlink - 1

    def chord_results(self, chord_id: str) -> list[bytes]:
        validate_task_id(chord_id)
        if not os.path.lexists(self.root / "chords" / chord_id):
            return []  # never added to, or expired: nothing to make
        folder = self._chord_dir(chord_id)  # checked as every folder of the broker
        results = []
        for name in _members(folder):
            try:
                data = read_signed(str(folder / name))
            except UnsafeEntry:
                data = b""  # not a file we wrote: read as a member whose result is unreadable
            if data is None:
                raise BrokerError(f"chord {chord_id}: member file {name} vanished while read")
            results.append(data)
        return results

    def chord_expiry_steps(self, older_than: float) -> Iterator[bool]:
        """Delete chord folders left unchanged since ``older_than``, one a step."""
        try:
            entries = list(os.scandir(self.root / "chords"))
        except FileNotFoundError:
            return
        for entry in entries:
            removed = False
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < older_than:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed = True
            yield removed


def _members(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.isdigit())


def _check_index(index: int, total: int) -> None:
    if not 0 <= index < total:
        raise BrokerError(f"chord member index {index} is outside 0..{total - 1}")
