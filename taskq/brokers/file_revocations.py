"""Revocations on the file broker: one empty file per revoked id in ``revoked/``.

A file is named by the id (``<id>@terminate`` when revoked with ``terminate``;
``@`` is never in an id) and its mtime is when the revocation expires, so a
listing tells everything and housekeeping deletes by mtime, as it does results.
Nothing in the folder is ever read or unpickled: a file planted there can only
revoke an id. Workers keep a copy of the listing and take it again when the
folder's mtime moves: one ``stat`` per message they open.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from ..message import new_id, validate_task_id
from .fs import removal_steps, write_new
from .revoked_copy import RevokedCopy
from .trust import Trust, make_folder

_TERMINATE = "@terminate"
# A folder's mtime ticks coarsely (a few ms): a listing taken in the tick of a later
# change would miss it for good. Until the mtime is this old, list at each look.
_SETTLED_AFTER = 0.1


class FileRevocations:
    """``Revocations`` for ``FileBroker``."""

    root: Path
    trust: Trust
    _revoked_copy: RevokedCopy | None = None
    _revoked_path = ""  # the folder's path as a str, made once: stat'ed per message

    @property
    def _revoked_dir(self) -> Path:
        return self.root / "revoked"

    def revoke(self, task_ids: Collection[str], terminate: bool, expires_at: float) -> None:
        folder = self._revoked_dir
        make_folder(folder, self.trust, self.root)
        for task_id in task_ids:
            name = validate_task_id(task_id) + (_TERMINATE if terminate else "")
            # Written whole under a dotted name, dated, then renamed over any older one.
            tmp = folder / f".{name}.{new_id()}.tmp"
            write_new(tmp, b"", mode=self.trust.file_mode)
            try:
                os.utime(tmp, (expires_at, expires_at))
                os.rename(tmp, folder / name)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def _copy(self) -> RevokedCopy:
        if self._revoked_copy is None:
            self._revoked_copy = RevokedCopy(self._revoked_marker, self._list_revoked)
        return self._revoked_copy

    def _revoked_marker(self) -> object:
        if not self._revoked_path:
            self._revoked_path = str(self._revoked_dir)
        try:
            st = os.stat(self._revoked_path)
        except FileNotFoundError:
            return None
        if st.st_mtime > time.time() - _SETTLED_AFTER:
            return object()  # equal to nothing: listed again
        return (st.st_ino, st.st_mtime_ns)

    def _list_revoked(self) -> dict[str, bool]:
        ids: dict[str, bool] = {}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self._revoked_dir):
                if name.startswith("."):
                    continue
                task_id, _, flag = name.partition("@")
                ids[task_id] = ids.get(task_id, False) or flag == _TERMINATE[1:]
        return ids

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self._copy().ids()

    def terminations(self) -> set[str]:
        return {task_id for task_id, kill in self._copy().ids().items() if kill}

    def revocation_steps(self, now: float) -> Iterator[bool]:
        return removal_steps(self._revoked_dir, now)
