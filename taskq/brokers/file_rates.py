"""The file broker's ``RateLimits``: one small file per rate under ``rates/``,
holding the time its next slot starts (8 bytes), read and moved on under an
exclusive ``flock``.

A take is flock, pread, pwrite, unlock on a descriptor each process opens once
per rate file: four system calls, no file created or renamed. A process killed
holding the lock loses it to the kernel; a write lost with the machine's power
loses the slots reserved since (a short burst after a reboot, at most). The
clock is this host's (the file broker serves one host).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import stat
import struct
import threading
import time
from pathlib import Path
from urllib.parse import quote

from ..errors import BrokerError
from .trust import Trust, make_folder

_NEXT = struct.Struct("<d")  # the time the next slot starts, in seconds since the epoch
_NAME_MOST = 200  # bytes of a rate's file name before it is named by its hash instead


class FileRates:
    """``RateLimits`` for ``FileBroker``."""

    root: Path
    trust: Trust

    def take_slot(self, key: str, interval: float, burst: int) -> float:
        with _lock:
            fd = self._rate_file(key)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                held = os.pread(fd, _NEXT.size, 0)
                now = time.time()
                following = _NEXT.unpack(held)[0] if len(held) == _NEXT.size else now
                if not math.isfinite(following):
                    following = now  # torn or not ours: start afresh
                start = max(following, now)
                os.pwrite(fd, _NEXT.pack(start + interval), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return max(start - (burst - 1) * interval - now, 0.0)

    def _rate_file(self, key: str) -> int:
        global _opened_by
        if _opened_by != os.getpid():  # a forked child: the parent's files are not its own
            _opened_by = os.getpid()
            _files.clear()
        name = quote(key, safe="")
        if name.startswith("."):  # never ".", ".." nor a hidden name
            name = "%2E" + name[1:]
        if len(name) > _NAME_MOST:
            name = hashlib.sha256(key.encode()).hexdigest()
        path = str(self.root / "rates" / name)
        fd = _files.get(path)
        if fd is None:
            make_folder(self.root / "rates", self.trust, self.root)
            # O_NOFOLLOW: a link planted in rates/ is refused, never followed.
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            fd = os.open(path, flags, self.trust.file_mode)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise BrokerError(f"{path} is not a regular file: remove it")
            _files[path] = fd
        return fd


# The rate files this process opened (path -> fd), whichever broker object asks.
# A forked child opens its own: sharing the parent's open file would share its
# flock, which is one lock. Threads take turns (a flock does not tell them apart).
_files: dict[str, int] = {}
_opened_by = 0
_lock = threading.Lock()
