"""Tasks the workflow tests run in real workers; each leaves its evidence as lines
appended (one O_APPEND write) to a file named by the test."""

from __future__ import annotations

import os
import time

from itasks import note

from taskq import task


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def mul(x: int, y: int) -> int:
    return x * y


@task(max_retries=3, retry_backoff=0.1, retry_jitter=False)
def member(path: str, value: int, seconds: float) -> int:
    """A chord member: notes "start <value> <pid>", sleeps, notes "end <value> <pid>"."""
    note(path, f"start {value} {os.getpid()}")
    time.sleep(seconds)
    note(path, f"end {value} {os.getpid()}")
    return value


@task
def tally(values: list[int], path: str) -> int:
    """A chord callback: notes "callback <sum> <count>" each time it runs."""
    note(path, f"callback {sum(values)} {len(values)}")
    return sum(values)


@task(max_retries=0)
def fail(value: object, message: str) -> None:
    raise ValueError(message)


@task
def record(value: object, path: str) -> None:
    note(path, repr(value))


@task(max_retries=0)
def fragile(path: str, value: int, seconds: float) -> int:
    """A member with no retries: notes "start <value> <pid>", then sleeps."""
    note(path, f"start {value} {os.getpid()}")
    time.sleep(seconds)
    return value
