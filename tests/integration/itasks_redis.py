"""Tasks for the Redis broker's integration tests, run by real worker processes.

Each run leaves its evidence outside the worker: the call's number, one line
appended (one O_APPEND write) to a file named after the process that ran it,
in a folder the test names. The test counts the runs of every call from these
files, across workers, kills and lost connections.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from itasks import note

from taskq import task


@task(max_retries=3, retry_backoff=0.1, retry_jitter=False)
def tally(folder: str, n: int, seconds: float = 0.0) -> int:
    """Note call ``n`` as started in ``<folder>/<pid>``, then sleep ``seconds``.

    Noted first, so a run cut short by a kill still counts: a redelivery of it
    shows as a second run. Retries (of a run killed with its worker) come back
    after 0.1 s, well within a test's wait.
    """
    note(os.path.join(folder, str(os.getpid())), str(n))
    if seconds:
        time.sleep(seconds)
    return n


def runs(folder: Path) -> dict[int, list[int]]:
    """Test-side: call number -> the pids of the processes that ran it, one per run."""
    ran: dict[int, list[int]] = defaultdict(list)
    if not folder.exists():
        return ran
    for path in folder.iterdir():
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].split():  # complete lines only
            ran[int(line)].append(int(path.name))
    return ran
