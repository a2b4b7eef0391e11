"""Wake a waiting consumer when names arrive in a folder, without busy polling.

On Linux this is raw inotify through ctypes (a wake-up costs ~50 µs, and each
event carries the new file's name, so a consumer can add it to its cached
listing instead of listing the folder again). Elsewhere it is watchdog, whose
observer thread writes to a pipe. Both expose one file descriptor to wait on.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")

Arrivals = list[tuple[str, str]] | None
"""(folder, name) pairs that arrived; None means events were lost: list again."""


class Watcher:
    """Reports names renamed into a set of folders."""

    def fileno(self) -> int:
        raise NotImplementedError

    def read(self) -> Arrivals:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class InotifyWatcher(Watcher):
    def __init__(self, folders: Sequence[str]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._folders: dict[int, str] = {}
        for folder in folders:
            # Names arrive by rename (IN_MOVED_TO) or by linking a nameless file (IN_CREATE).
            wd = libc.inotify_add_watch(self._fd, os.fsencode(folder), _IN_MOVED_TO | _IN_CREATE)
            if wd < 0:
                os.close(self._fd)
                raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
            self._folders[wd] = folder

    def fileno(self) -> int:
        return self._fd

    def read(self) -> Arrivals:
        arrivals: list[tuple[str, str]] = []
        while True:
            try:
                buf = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return arrivals
            offset = 0
            while offset < len(buf):
                wd, mask, _cookie, size = _EVENT.unpack_from(buf, offset)
                offset += _EVENT.size
                if mask & _IN_Q_OVERFLOW:
                    return None
                name = buf[offset : offset + size].rstrip(b"\0")
                offset += size
                if wd in self._folders and name:
                    arrivals.append((self._folders[wd], os.fsdecode(name)))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class WatchdogWatcher(Watcher):
    """Portable fallback: watchdog's observer thread signals through a pipe."""

    def __init__(self, folders: Sequence[str]) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._arrivals: deque[tuple[str, str]] = deque()
        self._lock = threading.Lock()
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_moved(self, event: Any) -> None:
                watcher._arrived(os.fsdecode(event.dest_path))

            def on_created(self, event: Any) -> None:
                watcher._arrived(os.fsdecode(event.src_path))

        self._observer = Observer()
        for folder in folders:
            self._observer.schedule(Handler(), folder, recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def _arrived(self, path: str) -> None:
        self._arrivals.append(os.path.split(path))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wfd, b"x")

    def fileno(self) -> int:
        return self._rfd

    def read(self) -> Arrivals:
        with contextlib.suppress(BlockingIOError):
            os.read(self._rfd, 1 << 16)
        arrivals = []
        while self._arrivals:
            arrivals.append(self._arrivals.popleft())
        return arrivals

    def close(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=2)
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def watch(folders: Sequence[str], prefer: str = "auto") -> Watcher | None:
    """The best watcher this platform has, or None (then callers poll slowly)."""
    if prefer in ("auto", "inotify") and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            return InotifyWatcher(folders)
    if prefer in ("auto", "watchdog"):
        with contextlib.suppress(Exception):
            return WatchdogWatcher(folders)
    return None


class Waiter:
    """Blocks until a watcher has events, a ``wake()`` call, or a timeout."""

    def __init__(self, watcher: Watcher | None) -> None:
        self.watcher = watcher
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self.woken = False  # set when a wait ended because of wake()
        self._poll = select.poll()
        self._poll.register(self._rfd, select.POLLIN)
        if watcher is not None:
            self._poll.register(watcher.fileno(), select.POLLIN)

    def wait(self, timeout: float) -> bool:
        """True if something happened before ``timeout`` seconds passed."""
        ready = self._poll.poll(max(0.0, timeout) * 1000)
        for fd, _ in ready:
            if fd == self._rfd:
                self.woken = True
                with contextlib.suppress(BlockingIOError):
                    os.read(self._rfd, 1 << 10)
        return bool(ready)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wfd, b"w")

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)
