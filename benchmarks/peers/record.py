"""What every benchmark task does: append one line to a per-process file.

One ``os.write`` on a descriptor opened with ``O_APPEND``: lines from several
processes never interleave, and the driver counts missing and duplicated ids
from them. No result backend is involved anywhere.
"""

from __future__ import annotations

import os
import time

_fds: dict[str, int] = {}


def record(kind: str, line: str) -> None:
    path = os.path.join(os.environ["BENCH_OUT"], f"{kind}.{os.getpid()}")
    fd = _fds.get(path)
    if fd is None:
        fd = _fds[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, line.encode())


def noop(i: int) -> None:
    """Record that call ``i`` ran."""
    record("runs", f"{i}\n")


def slow(i: int, ms: float) -> None:
    """W5's task: work for ``ms`` milliseconds, then record that call ``i`` ran. A run
    recorded twice was killed after its record and before its acknowledgement (or was
    delivered twice)."""
    time.sleep(ms / 1000)
    record("runs", f"{i}\n")


def stamp(i: int, sent: float) -> None:
    """Record that call ``i`` ran, and how long after ``sent`` (a ``time.time()``) it started."""
    record("latency", f"{i} {(time.time() - sent) * 1000:.4f}\n")
