"""Unique tasks for the integration tests, run by real worker processes; each run
notes itself (one O_APPEND line) in a file the test names."""

from __future__ import annotations

from typing import Any

from itasks import note

from taskq import task


@task(unique_for=60)
def unique_note(path: str, n: int) -> int:
    note(path, str(n))
    return n


@task(unique_for=60, bind=True, max_retries=3)
def unique_retry_once(self: Any, path: str) -> int:
    """Fails its first attempt (asking again in 1 s), then succeeds."""
    note(path, str(self.request.retries))
    if self.request.retries == 0:
        self.retry(countdown=1.0)
    return self.request.retries


@task(unique_for=60, autoretry_for=())
def unique_fail(path: str) -> None:
    """Fails for good at once: dead-lettered on its first attempt."""
    note(path, "ran")
    raise ValueError("no luck")
