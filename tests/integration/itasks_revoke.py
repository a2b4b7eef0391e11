"""Tasks for the revoke tests, run by real worker processes; each notes its runs."""

from __future__ import annotations

import os
import time

from itasks import note

from taskq import task


@task(max_retries=3, retry_backoff=0.1, retry_jitter=False)
def slow_failure(path: str, seconds: float) -> None:
    """Notes its start, sleeps, then fails (with retries left)."""
    note(path, f"start {os.getpid()}")
    time.sleep(seconds)
    raise ConnectionError("fails after its sleep, on purpose")
