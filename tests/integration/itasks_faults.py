"""Tasks for the supervisor's fault tests: ones that hang, and one that hangs
only on its first attempt. Each notes its start in a file named by the test."""

from __future__ import annotations

import os
import time

from itasks import note

from taskq import task


@task(max_retries=1, retry_backoff=0.1, retry_jitter=False)
def hangs(path: str) -> None:
    """No time_limit of its own: only the worker's default_time_limit stops it."""
    note(path, f"start {os.getpid()}")
    time.sleep(3600)


@task(time_limit=0)
def sleeps_without_limit(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(bind=True, max_retries=2, retry_backoff=0.1, retry_jitter=False)
def hangs_first_time(self, path: str) -> int:  # type: ignore[no-untyped-def]
    note(path, f"start {self.request.retries} {os.getpid()}")
    if self.request.retries == 0:
        time.sleep(3600)
    return int(self.request.retries)
