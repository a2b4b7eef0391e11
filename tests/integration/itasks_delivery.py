"""Tasks for the delivery, retry, bad-input and CLI integration tests.

Like ``itasks``, each task leaves evidence outside the worker: one line
appended (one O_APPEND write) to a file the test names.
"""

from __future__ import annotations

import os
import time

from itasks import note

from taskq import Retry, task


@task
def square(path: str, n: int) -> int:
    """Record that ``n`` ran, return its square."""
    note(path, str(n))
    return n * n


@task(bind=True, max_retries=3, retry_backoff=30.0, retry_jitter=False)
def retry_after(self, path: str, countdown: float) -> int:  # type: ignore[no-untyped-def]
    """Asks for one retry after ``countdown`` s; its own backoff (30 s) would be far later."""
    note(path, f"{self.request.retries} {time.time():.6f}")
    if self.request.retries == 0:
        raise Retry(countdown=countdown)
    return int(self.request.retries)


@task(autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.1)
def fails_outside_autoretry(path: str) -> None:
    note(path, "attempt")
    raise TypeError("not a ConnectionError: never retried")


@task(dont_autoretry_for=(LookupError,), max_retries=3, retry_backoff=0.1)
def fails_with_excluded(path: str) -> None:
    note(path, "attempt")
    raise LookupError("listed in dont_autoretry_for: never retried")


@task(max_retries=0)
def fails_unless(path: str, flag: str) -> str:
    """Fails (straight to dead/) until the file ``flag`` exists."""
    note(path, "attempt")
    if not os.path.exists(flag):
        raise RuntimeError(f"flag {flag} missing")
    return "ok"
