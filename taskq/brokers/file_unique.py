"""The file broker's part of ``Uniques``: a key is a small file ``unique/<key>``
holding its holder's id and the time its lifetime ends.

Every look at a key file is made under an exclusive ``flock`` on it, so two
claimers of one key take turns: the first writes its id, the second reads it.
A release unlinks the file while it holds the lock; a claimer that was waiting
on that lock then holds a file nobody can see any more, so after locking it
checks that the name still leads to the inode it holds, and opens it again if
not. A holder whose lifetime has passed is replaced under the same lock. The
kernel drops a lock when its process dies (even on SIGKILL): a claimer killed
half-way blocks nobody.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import BrokerError
from ..message import validate_unique_key
from .trust import Trust, make_folder

# O_NONBLOCK: a FIFO planted where a key file should be must not hang the open.
_OPEN = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_RECORD = 160  # bytes a key file holds: an id (128 at most), a space, a time, padding


class FileUniques:
    root: Path
    trust: Trust

    def _unique_dir(self) -> str:
        folder: str | None = self.__dict__.get("_unique_folder")
        if folder is None:
            path = self.root / "unique"
            make_folder(path, self.trust, self.root)
            folder = self.__dict__["_unique_folder"] = str(path)
        return folder

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        path = f"{self._unique_dir()}/{validate_unique_key(key)}"
        fd = _locked(path, create=True, mode=self.trust.file_mode)
        assert fd is not None, "a key file opened with O_CREAT is there"
        try:
            now = time.time()
            holder = _live_holder(fd, now)
            if holder is not None:
                return holder
            # Padded to one size, so it always covers the record it replaces: no
            # truncate needed (a reader splits on whitespace).
            record = f"{task_id} {now + ttl!r}".ljust(_RECORD).encode()
            if os.pwrite(fd, record, 0) != len(record):
                raise OSError(f"short write to {path}")
            return task_id
        finally:
            os.close(fd)

    def release_unique(self, key: str, task_id: str) -> None:
        path = f"{self._unique_dir()}/{validate_unique_key(key)}"
        fd = _locked(path, create=False, mode=self.trust.file_mode)
        if fd is None:
            return
        try:
            held = _read_holder(fd)
            if held is not None and held[0] == task_id:
                os.unlink(path)  # under the lock: a waiting claimer sees it went
        finally:
            os.close(fd)

    def unique_expiry_steps(self, now: float) -> Iterator[bool]:
        """Delete the key files whose lifetime has passed (holders that were never
        released: a lost release, a producer killed before it published), one
        entry a step."""
        folder = self._unique_dir()
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                yield _drop_if_lapsed(entry.path, now, self.trust.file_mode)


def _locked(path: str, *, create: bool, mode: int) -> int | None:
    """An fd of the key file at ``path``, exclusively locked and still the one the
    name leads to; None if there is none (and ``create`` is False)."""
    while True:
        try:
            fd = os.open(path, _OPEN | (os.O_CREAT if create else 0), mode)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                msg = f"{path} is a symbolic link: a unique key is not kept there"
                raise BrokerError(msg) from None
            raise
        try:
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode):
                raise BrokerError(f"{path} is not a regular file: a unique key cannot be kept")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                named = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                named = None
        except BaseException:
            os.close(fd)
            raise
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # released (unlinked) while we waited for the lock: open it again


def _read_holder(fd: int) -> tuple[str, float] | None:
    """(holder id, end of its lifetime) from a locked key file; None if it holds
    neither (new, or torn by a crash mid-write: free to take)."""
    parts = os.pread(fd, _RECORD, 0).split()
    if len(parts) != 2:
        return None
    try:
        return parts[0].decode("ascii"), float(parts[1])
    except ValueError:
        return None


def _live_holder(fd: int, now: float) -> str | None:
    held = _read_holder(fd)
    return held[0] if held is not None and held[1] > now else None


def _drop_if_lapsed(path: str, now: float, mode: int) -> bool:
    try:
        fd = _locked(path, create=False, mode=mode)
    except (BrokerError, OSError):
        return False  # not a key file of ours: left for a person to look at
    if fd is None:
        return False
    try:
        if _live_holder(fd, now) is not None:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)
