"""Tasks the benchmarks run. Each run appends its integer argument (and for
latency, start minus enqueue time) to a per-process file with one O_APPEND
write, so missing and duplicated ids can be counted. No result backend."""

from __future__ import annotations

import os
import time

from taskq import task

_fds: dict[str, int] = {}


def _append(kind: str, line: str) -> None:
    path = os.path.join(os.environ["BENCH_OUT"], f"{kind}.{os.getpid()}")
    fd = _fds.get(path)
    if fd is None:
        fd = _fds[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, line.encode())


@task(ignore_result=True)
def noop(i: int) -> None:
    _append("runs", f"{i}\n")


@task(ignore_result=True)
def stamp(i: int, sent: float) -> None:
    _append("latency", f"{i} {(time.time() - sent) * 1000:.4f}\n")
