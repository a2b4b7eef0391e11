"""Retries and dead letters end to end: a flaky task recovers, a broken one ends in dead/.

    python examples/retries/demo.py        # from any directory

It uses a fresh temporary broker directory, starts
`python -m taskq --broker DIR worker -A tasks --concurrency 2` in this folder,
shows the worker's retry log lines, waits for the failing task to be
dead-lettered, prints `taskq dead list` and `taskq dead show ID`, then stops
the worker and removes everything. Exit code 0 means it all went as described.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))  # demo_worker.py
try:
    # this folder's tasks.py: the script's folder is on sys.path
    from demo_worker import DemoError, Worker, indent, run_demo, taskq
    from tasks import always_fails, flaky

    from taskq import AsyncResult
except ModuleNotFoundError as exc:
    sys.exit(
        f"demo failed: cannot import {exc.name!r} with {sys.executable}; install taskq "
        "(python3 -m venv .venv && .venv/bin/pip install -e .) and run .venv/bin/python"
    )

HERE = Path(__file__).resolve().parent
RESULT_TIMEOUT = 30.0  # seconds to wait for each outcome before giving up


def wait_until_ready(result: AsyncResult[Any], worker: Worker) -> None:
    """Wait for a final outcome (SUCCESS or FAILURE); fail if the worker dies or time runs out."""
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not result.ready():
        worker.check()
        if time.monotonic() > deadline:
            raise DemoError(f"task {result.id} not done after {RESULT_TIMEOUT:.0f} s")
        time.sleep(0.05)


def wait_until_dead(task_id: str, worker: Worker) -> str:
    """Wait until `taskq dead list` shows the message; return what it printed."""
    deadline = time.monotonic() + RESULT_TIMEOUT
    while True:
        listing = taskq("dead", "list", broker=worker.broker)
        if task_id in listing:
            return listing
        worker.check()
        if time.monotonic() > deadline:
            raise DemoError(f"task {task_id} is not in dead/ after {RESULT_TIMEOUT:.0f} s")
        time.sleep(0.1)


def run(broker: Path) -> None:
    # Producers find the broker the same way workers do: --broker, TASKQ_BROKER
    # or taskq.toml. The tasks publish through the default app, set up from it.
    os.environ["TASKQ_BROKER"] = str(broker)

    print("1. Start a worker: taskq worker -A tasks --concurrency 2")
    worker = Worker(broker, "tasks", cwd=HERE)
    try:
        print("\n2. Enqueue flaky() (fails twice, then succeeds) and always_fails(1042)")
        print("   Watch the worker's log: one line per attempt, with the retry delay.")
        good = flaky.delay()
        bad = always_fails.delay(1042)
        print(f"    flaky()            id {good.id}")
        print(f"    always_fails(1042) id {bad.id}")

        wait_until_ready(good, worker)
        value = good.get()
        print(f"==> flaky() = {value!r} (status {good.status})")
        if value != "succeeded on attempt 3":
            raise DemoError(f"flaky() should succeed on its third attempt, got {value!r}")

        wait_until_ready(bad, worker)
        try:
            bad.get()
        except ValueError as exc:
            print(
                f"==> always_fails(1042) raised {type(exc).__name__}: {exc} (status {bad.status})"
            )
        else:
            raise DemoError("always_fails(1042) should have raised ValueError")

        print("\n3. taskq dead list")
        print(indent(wait_until_dead(bad.id, worker)))
        print(f"\n4. taskq dead show {bad.id}")
        print(indent(taskq("dead", "show", bad.id, broker=broker)))
        print(
            f"\n   (`taskq dead retry {bad.id}` would send it back to ready/ for 3 new attempts.)"
        )
        print("\n5. Stop the worker (SIGTERM: warm shutdown)")
    finally:
        worker.stop()
    if worker.process.returncode != 0:
        raise DemoError(f"the worker stopped with exit code {worker.process.returncode}")


if __name__ == "__main__":
    sys.exit(
        run_demo(run, "one task recovered by retrying, one was dead-lettered with its record.")
    )
