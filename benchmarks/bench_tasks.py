"""Tasks the benchmarks run. Each run appends its integer argument (and for
latency, start minus enqueue time) to a per-process file with one O_APPEND
write, so missing and duplicated ids can be counted. No result backend."""

from __future__ import annotations

import time

from peers.record import record

from taskq import task


@task(ignore_result=True)
def noop(i: int) -> None:
    record("runs", f"{i}\n")


@task(ignore_result=True)
def stamp(i: int, sent: float) -> None:
    record("latency", f"{i} {(time.time() - sent) * 1000:.4f}\n")
