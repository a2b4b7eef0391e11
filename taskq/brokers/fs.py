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
from typing import NoReturn

from ..crashpoints import crash_point
from ..errors import BrokerError, DiskFull, UnsafeEntry
from .trust import Trust, check_folder, share

# Opening never follows a symbolic link and never blocks (a FIFO would hang a
# blocking open forever); fstat then says whether it is a regular file at all.
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_SIGNED_PREFIX = 7  # b"TQ1" + the body length (see message.py)
_SMALL = 1 << 16  # files up to this size are read with one call


def read_file(path: str, limit: int = 1 << 26) -> bytes | None:
    """The whole regular file at ``path``, or None if it is gone.

    Raises ``UnsafeEntry`` for anything else (a folder, FIFO, device, socket,
    symbolic link) and for a file over ``limit`` bytes, without reading it.
    """
    opened = _open_regular(path)
    if opened is None:
        return None
    fd, size = opened
    try:
        if size > limit:
            raise UnsafeEntry(f"{path} holds {size} bytes, more than the {limit} expected")
        return _read_upto(fd, size)
    finally:
        os.close(fd)


def read_signed(path: str) -> bytes | None:
    """A signed message or result file, reading no more than its header declares.

    Like ``read_file``; the length in the prefix bounds the read, so a file far
    longer than it claims costs nothing (``message.unseal`` then judges it).
    """
    opened = _open_regular(path)
    if opened is None:
        return None
    fd, size = opened
    try:
        if size <= _SMALL:
            return _read_upto(fd, size)
        prefix = _read_upto(fd, _SIGNED_PREFIX)
        if len(prefix) < _SIGNED_PREFIX or not prefix.startswith(b"TQ1"):
            return prefix  # not ours: the prefix is enough to say so
        declared = int.from_bytes(prefix[3:], "big") + 39  # + magic, length, HMAC
        return prefix + _read_upto(fd, min(size, declared) - _SIGNED_PREFIX)
    finally:
        os.close(fd)


def _open_regular(path: str) -> tuple[int, int] | None:
    """The file at ``path`` opened for reading, and its size; None if it is gone."""
    try:
        fd = os.open(path, _OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeEntry(f"{path} is a symbolic link: not followed") from None
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO with no writer on some systems)
            raise UnsafeEntry(f"{path} is not a regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise UnsafeEntry(f"{path} is {kind}, not a regular file: not read")
    return fd, st.st_size


def _read_upto(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes, path: str | Path) -> None:
    """Write all of ``data`` or raise: a full disk shows as a short write first,
    then ENOSPC, and a short write unchecked leaves a truncated file."""
    try:
        written = os.write(fd, data)
        if written == len(data):
            return
        view = memoryview(data)[written:]
        while view:
            written = os.write(fd, view)
            if written == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            view = view[written:]
    except OSError as exc:
        raise_disk_full(exc, path)


def raise_disk_full(exc: OSError, path: str | Path, context: str = "") -> NoReturn:
    """Raise ``DiskFull`` (saying where, and ``context``) for a full disk or quota,
    else ``exc`` itself."""
    if isinstance(exc, DiskFull) and not context:
        raise exc
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise exc
    full = DiskFull(
        f"no space left on the broker's filesystem writing {path} "
        f"({exc.strerror or 'No space left on device'}): nothing was written{context}; "
        "free some space and try again"
    )
    full.errno = exc.errno  # no strerror: str() stays the message above
    raise full from exc


def write_new(path: str | Path, data: bytes, sync: bool = False, mode: int = 0o600) -> None:
    """Create ``path`` (it must not exist) holding ``data``; fsync it if ``sync``.

    All or nothing: if the write fails (a full disk), the file is removed.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data, path)
        if sync:
            os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)


# Errors that mean "not here": the filesystem or kernel has no O_TMPFILE (EISDIR on
# kernels before 3.11), /proc is not mounted or a security module refuses the
# link, the name is taken. Others (ENOSPC, EIO)
# are the caller's, as they would be for any write.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux only
_NO_LINK = {errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EEXIST}


def link_new(folder: str, target: str, data: bytes, sync: bool = False, mode: int = 0o600) -> bool:
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
        fd = os.open(folder, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return False
        raise
    try:
        write_all(fd, data, target)  # on failure the nameless file vanishes with its fd
        if sync:
            os.fsync(fd)
        crash_point("publish.written")
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


def prepare_root(root: Path, trust: Trust) -> None:
    """Create the root (0700, or shared with ``broker_group``) and check it can be trusted."""
    try:
        made = not root.exists()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if made:
            share(root, trust)
    except FileExistsError:  # mkdir(exist_ok=True) says this when the path is a file
        raise BrokerError(f"broker path {root} is not a directory") from None
    except OSError as exc:
        raise BrokerError(f"cannot use broker directory {root}: {exc.strerror}") from exc
    check_folder(root, trust, root, follow=True)


# Liveness locks are flock(2)s, which belong to the open file: a fork shares
# them, so a task's forked grandchild that outlives its worker would keep the
# worker "alive" and its claims stuck. Every lock fd this process holds is
# closed in a forked child (at-fork hook); close-on-exec covers exec.
_held: dict[int, tuple[int, int]] = {}  # lock fd -> (device, inode) of its file


def _drop_inherited_locks() -> None:
    for fd, file in _held.items():
        # Only if the number still names that lock file: never someone else's fd.
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == file:
                os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _note_held(fd: int) -> int:
    st = os.fstat(fd)
    _held[fd] = (st.st_dev, st.st_ino)
    return fd


def lock_is_free(path: Path) -> bool:
    fd = try_lock(path)
    if fd is None:
        return False
    release_lock(fd)
    return True


def try_lock(path: Path) -> int | None:
    """Take the liveness lock at ``path`` without waiting: its fd, or None if held."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return _note_held(fd)


def hold_lock(path: Path, mode: int = 0o600) -> int:
    """Create ``path`` if needed and take its lock for as long as this process
    holds the fd (the kernel drops it when the process dies, even on SIGKILL)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return _note_held(fd)


def release_lock(fd: int) -> None:
    _held.pop(fd, None)
    os.close(fd)


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


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
