"""Chord state on the file broker: one folder per chord under ``chords/``.

Each member's result is a file named by its index, made by ``link(2)`` of a
fully written temporary file: the name appears whole, and a second link of
the same index fails (EEXIST), so the first result given stays. The member
that finds the set complete links ``done`` holding its index; link again
decides between two members finishing at once: one wins, the other reads
the winner's index. Adding lists the folder (O(members)), fine for chords of
thousands; results and ``done`` are read with the broker's safe reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import BrokerError, UnsafeEntry
from ..message import new_id, validate_task_id
from .fs import read_file, read_signed, write_new
from .trust import Trust, make_folder

_DONE = "done"


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
        """Give ``name`` to a whole file holding ``data``, unless the name exists."""
        tmp = folder / f".{name}.{new_id()}.tmp"
        write_new(tmp, data, mode=self.trust.file_mode)
        try:
            os.link(tmp, folder / name)
        except FileExistsError:
            pass  # the first one stays: a re-run member's result is not swapped in
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def chord_add(self, chord_id: str, index: int, total: int, data: bytes) -> bool:
        _check_index(index, total)
        folder = self._chord_dir(chord_id)
        self._link_once(folder, f"{index:09d}", data)
        if len(_members(folder)) < total:
            return False
        self._link_once(folder, _DONE, str(index).encode())
        winner = read_file(str(folder / _DONE), limit=32)
        return winner == str(index).encode()

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
