"""File-system primitives the file broker is built from: whole-file reads and
writes, liveness locks, flushes, and the safety checks on the broker root."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import BrokerError


def read_file(path: str) -> bytes | None:
    """The whole file, or None if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new(path: str | Path, data: bytes, sync: bool = False) -> None:
    """Create ``path`` (it must not exist) holding ``data``; fsync it if ``sync``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


# Errors that mean "not here": the filesystem or kernel has no O_TMPFILE (EISDIR on
# kernels before 3.11), /proc is not mounted or a security module refuses the
# link, the name is taken. Others (ENOSPC, EIO)
# are the caller's, as they would be for any write.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux only
_NO_LINK = {errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EEXIST}


def link_new(folder: str, target: str, data: bytes, sync: bool = False) -> bool:
    """Write ``data`` into a new nameless file in ``folder`` and give it the name
    ``target`` (in that folder) in one step: O_TMPFILE, then linkat(2). The name
    appears with the whole file behind it, like a rename from tmp/, for one
    directory update instead of three, and a writer that dies first leaves
    nothing behind. False, leaving nothing behind, where the filesystem or kernel
    cannot (no O_TMPFILE, no /proc) or ``target`` exists: write in tmp/ then.
    """
    if not _O_TMPFILE:
        return False
    try:
        fd = os.open(folder, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return False
        raise
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the open file. os.link
        # passes that flag only when given a directory fd, which an absolute
        # source path makes the kernel ignore: hence src_dir_fd.
        try:
            os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=fd, follow_symlinks=True)
        except OSError as exc:
            if exc.errno in _NO_LINK:
                return False
            raise
    finally:
        os.close(fd)
    return True


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return syncfs


_syncfs = _load_syncfs()


def prepare_root(root: Path) -> None:
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = root.stat().st_mode
    except FileExistsError:  # mkdir(exist_ok=True) says this when the path is a file
        raise BrokerError(f"broker path {root} is not a directory") from None
    except OSError as exc:
        raise BrokerError(f"cannot use broker directory {root}: {exc.strerror}") from exc
    if not stat.S_ISDIR(mode):
        raise BrokerError(f"broker path {root} is not a directory")
    if mode & stat.S_IWOTH:
        raise BrokerError(
            f"broker directory {root} is world-writable (mode {stat.S_IMODE(mode):o}): anyone "
            f"could inject code to run; fix it with: chmod 700 {root}"
        )


def lock_is_free(path: Path) -> bool:
    fd = try_lock(path)
    if fd is None:
        return False
    os.close(fd)
    return True


def try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_files(root: Path, paths: list[str]) -> None:
    """Make the data of ``paths`` durable: one syncfs(2) of the broker's
    filesystem on Linux, else one fsync per file."""
    if _syncfs is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_older(folder: Path, older_than: float, only_prefix: str = "") -> int:
    return sum(removal_steps(folder, older_than, only_prefix))


def removal_steps(
    folder: Path, older_than: float, only_prefix: str = "", keep: int | None = None
) -> Iterator[bool]:
    """Delete the files of ``folder`` last written before ``older_than`` (and, with
    ``keep``, every one listed after the first ``keep``), one entry a step: each
    step says whether it deleted one. The caller drives it a few milliseconds at a
    time, so a folder of 100,000 expired files never blocks it for seconds; a walk
    dropped half-way leaves only files that the next one finds again."""
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return
    with entries:
        for count, entry in enumerate(entries):
            removed = False
            if entry.name.startswith(only_prefix):
                with contextlib.suppress(FileNotFoundError):
                    if (keep is not None and count >= keep) or entry.stat().st_mtime < older_than:
                        os.unlink(entry.path)
                        removed = True
            yield removed
