"""Tasks for the fault tests: a full disk, hostile entries, forking, odd exceptions,
and tasks that hang (for the supervisor's time limits).

Each leaves evidence outside the worker (one line appended to a file the test
names).
"""

from __future__ import annotations

import os
import signal
import time

from itasks import note

from taskq import task


@task(ignore_result=True)
def note_padded(path: str, n: int, pad: str) -> None:
    """Record that ``n`` ran; ``pad`` only makes the message big."""
    note(path, str(n))


class UnprintableError(Exception):
    """An exception whose ``__str__`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@task(max_retries=0)
def raise_unprintable(path: str) -> None:
    note(path, "ran")
    raise UnprintableError("boom")


@task(max_retries=2, retry_backoff=0.1, retry_jitter=False)
def fork_then_die(path: str, pidfile: str) -> str:
    """First attempt: leave a long-lived forked grandchild, then die as by SIGKILL.
    The next attempt succeeds."""
    note(path, "attempt")
    if os.path.exists(pidfile):
        return "second attempt"
    pid = os.fork()
    if pid == 0:  # the grandchild: outlives its parent by a minute, doing nothing
        time.sleep(60)
        os._exit(0)
    note(pidfile, str(pid))
    os.kill(os.getpid(), signal.SIGKILL)
    return "never"


@task
def note_and_return(path: str, n: int) -> int:
    """Record that ``n`` ran; its result is stored."""
    note(path, str(n))
    return n


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
