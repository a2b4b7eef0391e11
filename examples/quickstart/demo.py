"""The quickstart end to end: enqueue tasks, start a worker, print results, stop it.

    python examples/quickstart/demo.py        # from any directory

It uses a fresh temporary broker directory (never ./.taskq), starts
`python -m taskq --broker DIR worker -A tasks --concurrency 2` in this folder,
and removes everything when it ends. Exit code 0 means every result came back;
anything else prints what went wrong.
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
    from tasks import add, slow_square

    from taskq import AsyncResult
except ModuleNotFoundError as exc:
    sys.exit(
        f"demo failed: cannot import {exc.name!r} with {sys.executable}; install taskq "
        "(python3 -m venv .venv && .venv/bin/pip install -e .) and run .venv/bin/python"
    )

HERE = Path(__file__).resolve().parent
RESULT_TIMEOUT = 30.0  # seconds to wait for all results before giving up


Sent = dict[str, tuple[float, AsyncResult[Any]]]  # label -> (when it was sent, its result)


def enqueue() -> Sent:
    """Send the tasks: ``.delay()`` and ``.apply_async()`` return at once."""
    sent: Sent = {}

    def send(label: str, result: AsyncResult[Any]) -> None:
        sent[label] = (time.monotonic(), result)
        print(f"    {label:<42} id {result.id}")

    send("add.delay(2, 3)", add.delay(2, 3))
    for n in (1, 2, 3):
        send(f"slow_square.delay({n})", slow_square.delay(n))
    send("slow_square.apply_async((9,), priority=9)", slow_square.apply_async((9,), priority=9))
    send("add.apply_async((40, 2), countdown=3)", add.apply_async((40, 2), countdown=3))
    return sent


def wait_for_results(sent: Sent, worker: Worker) -> None:
    """Print each result as it arrives; fail if the worker dies or time runs out."""
    pending = dict(sent)
    deadline = time.monotonic() + RESULT_TIMEOUT
    while pending:
        worker.check()
        for label, (sent_at, result) in list(pending.items()):
            if result.ready():
                value = result.get()
                waited = time.monotonic() - sent_at
                print(f"==> {label:<42} = {value!r:<5} ({waited:.2f} s after it was sent)")
                del pending[label]
        if pending and time.monotonic() > deadline:
            raise DemoError(f"no result after {RESULT_TIMEOUT:.0f} s for: {', '.join(pending)}")
        time.sleep(0.02)


def run(broker: Path) -> None:
    # Producers find the broker the same way workers do: --broker, TASKQ_BROKER
    # or taskq.toml. The tasks publish through the default app, set up from it.
    os.environ["TASKQ_BROKER"] = str(broker)

    print(f"1. Enqueue tasks into {broker} (no worker is running yet)")
    sent = enqueue()
    ready = sorted(os.listdir(broker / "queues" / "default" / "ready"))
    scheduled = sorted(os.listdir(broker / "queues" / "default" / "scheduled"))
    print("\n   The queue is a folder of files named <9 - priority>-<enqueue time>-<id>,")
    print("   so a sorted listing is the delivery order (add has priority 0, slow_square 5):")
    print(indent("\n".join(f"ready/{n}" for n in ready)))
    print(indent("\n".join(f"scheduled/{n}" for n in scheduled)))

    print("\n2. Start a worker: taskq worker -A tasks --concurrency 2")
    worker = Worker(broker, "tasks", cwd=HERE)
    try:
        print("\n3. Results, as they arrive")
        wait_for_results(sent, worker)
        time.sleep(1.2)  # the supervisor refreshes what `status` shows every second
        print("\n4. taskq status")
        print(indent(taskq("status", broker=broker)))
        print("\n5. Stop the worker (SIGTERM: warm shutdown)")
    finally:
        worker.stop()
    if worker.process.returncode != 0:
        raise DemoError(f"the worker stopped with exit code {worker.process.returncode}")


if __name__ == "__main__":
    sys.exit(
        run_demo(run, "every task ran once, the worker stopped, the broker folder is removed.")
    )
