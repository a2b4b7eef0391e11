"""Tasks (and one test-side helper) for the crash, time-limit and shutdown tests.

Workers import this module beside ``itasks`` (``modules="itasks,itasks_crash"``).
Like ``itasks``, every task leaves its evidence as lines appended to a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from itasks import lines, note

from taskq import task

T = TypeVar("T")


@task(bind=True, max_retries=3, retry_backoff=0.1, retry_jitter=False)
def tracked(self, path: str, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """Sleeps, noting "start <id> <pid>" and "end <id> <pid>"; returns its id."""
    note(path, f"start {self.request.id} {os.getpid()}")
    time.sleep(seconds)
    note(path, f"end {self.request.id} {os.getpid()}")
    return str(self.request.id)


@task(bind=True, time_limit=1.0, max_retries=2, retry_backoff=0.1, retry_jitter=False)
def stuck_once(self, path: str) -> str:  # type: ignore[no-untyped-def]
    """Passes its hard time limit on the first attempt only; notes "start <retries> <pid>"."""
    note(path, f"start {self.request.retries} {os.getpid()}")
    if len(lines(path)) == 1:
        time.sleep(60)
    return "second attempt"


@task(max_retries=3, retry_backoff=0.1)
def sleeps_first(path: str, seconds: float) -> str:
    """Sleeps ``seconds`` on its first run only, so a rerun is quick."""
    note(path, f"start {os.getpid()}")
    if len(lines(path)) == 1:
        time.sleep(seconds)
    note(path, f"end {os.getpid()}")
    return "slept"


def wait_until(probe: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Test-side: poll ``probe`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)
