"""Rate-limited tasks the integration tests run in real workers: each run appends
its start time and pid to a file named by the test."""

from __future__ import annotations

import os
import time

from itasks import note

from taskq import task

PER_MINUTE = 120  # limited's rate: one start every half second
PER_SECOND = 5  # limited_fast's rate: one start every fifth of a second


@task(rate_limit=f"{PER_MINUTE}/m", ignore_result=True)
def limited(path: str, n: int) -> None:
    note(path, f"{n} {time.time():.6f} {os.getpid()}")


@task(rate_limit=PER_SECOND, ignore_result=True)
def limited_fast(path: str, n: int) -> None:
    note(path, f"{n} {time.time():.6f} {os.getpid()}")


def starts(path: str) -> list[float]:
    """The start times the runs recorded, in order."""
    try:
        with open(path) as f:
            return sorted(float(line.split()[1]) for line in f.read().splitlines())
    except FileNotFoundError:
        return []
