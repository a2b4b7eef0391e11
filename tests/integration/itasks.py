"""Tasks the integration tests run in real worker processes.

Each task leaves evidence a test can check from outside: a line appended
(O_APPEND, one write) to a file named by the test.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from taskq import Retry, SoftTimeLimitExceeded, task


def note(path: str, text: str) -> None:
    """Append one line atomically (a single O_APPEND write)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def record(path: str, value: object) -> object:
    note(path, f"{value} {time.time():.6f} {os.getpid()}")
    return value


@task(priority=0)
def record_low(path: str, value: object) -> None:
    note(path, str(value))


@task(priority=9)
def record_high(path: str, value: object) -> None:
    note(path, str(value))


@task(bind=True, max_retries=4, retry_backoff=0.3, retry_backoff_max=5.0)
def flaky(self, path: str, fail_times: int) -> int:  # type: ignore[no-untyped-def]
    """Fails `fail_times` times, then returns the retry count it saw."""
    note(path, f"{self.request.retries} {time.time():.6f}")
    if len(lines(path)) <= fail_times:
        raise ConnectionError(f"attempt {len(lines(path))} fails on purpose")
    return int(self.request.retries)


@task(max_retries=2, retry_backoff=0.1, retry_jitter=False)
def always_fails(path: str) -> None:
    note(path, "attempt")
    raise ValueError("this task always fails")


@task(max_retries=1, retry_backoff=0.1, retry_jitter=False)
def kills_itself(path: str) -> None:
    note(path, f"attempt {os.getpid()}")
    os.kill(os.getpid(), signal.SIGKILL)


@task(max_retries=3, retry_backoff=0.1)
def sleeper(path: str, seconds: float) -> str:
    note(path, f"start {os.getpid()}")
    time.sleep(seconds)
    note(path, f"end {os.getpid()}")
    return "slept"


@task(time_limit=1.0, max_retries=0)
def stuck(path: str) -> None:
    note(path, f"start {os.getpid()}")
    time.sleep(60)


@task(soft_time_limit=0.5)
def soft_limited(path: str) -> str:
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        note(path, "soft limit raised")
        return "caught"
    return "not raised"


@task(bind=True, max_retries=3)
def asks_retry(self, path: str) -> int:  # type: ignore[no-untyped-def]
    note(path, str(self.request.retries))
    if self.request.retries < 1:
        raise Retry(countdown=0.2)
    return int(self.request.retries)


@task
def shout(text: str) -> None:
    """Prints ``text`` to standard output, then to standard error without a newline."""
    print(text)
    print(text.upper(), end="", file=sys.stderr)
