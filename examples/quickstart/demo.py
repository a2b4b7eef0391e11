"""The quickstart end to end: enqueue tasks, start a worker, print results, stop it.

    python examples/quickstart/demo.py        # from any directory

It uses a fresh temporary broker directory (never ./.taskq), starts
`python -m taskq --broker DIR worker -A tasks --concurrency 2` in this folder,
and removes everything when it ends. Exit code 0 means every result came back;
anything else prints what went wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    # this folder's tasks.py: the script's folder is on sys.path
    from tasks import add, slow_square

    from taskq import AsyncResult
except ModuleNotFoundError as exc:
    sys.exit(
        f"demo failed: cannot import {exc.name!r} with {sys.executable}; install taskq "
        "(python3 -m venv .venv && .venv/bin/pip install -e .) and run .venv/bin/python"
    )

HERE = Path(__file__).resolve().parent
RESULT_TIMEOUT = 30.0  # seconds to wait for all results before giving up
STOP_TIMEOUT = 15.0  # seconds a warm shutdown may take before SIGKILL


class DemoError(Exception):
    """Something went wrong; the message says what."""


class Worker:
    """`taskq worker` as a child of this demo, in its own session, stopped by PID."""

    def __init__(self, broker: Path, modules: str, concurrency: int = 2) -> None:
        self.broker = broker
        self.command = [
            *(sys.executable, "-m", "taskq", "--broker", str(broker)),
            *("worker", "-A", modules, "--concurrency", str(concurrency)),
        ]
        self.log: list[str] = []
        self.process = subprocess.Popen(
            self.command,
            cwd=HERE,  # so that `-A tasks` imports this folder's tasks.py
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only the demo, which stops the worker
        )
        self._echo = threading.Thread(target=self._echo_log, daemon=True)
        self._echo.start()

    def _echo_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line.rstrip())
            print(f"    worker | {line.rstrip()}", flush=True)

    def check(self) -> None:
        """Raise DemoError if the worker is gone or cannot import the task modules."""
        code = self.process.poll()
        if code is not None:
            raise DemoError(f"the worker exited with code {code} (its log is above)")
        if any("Cannot import the task modules" in line for line in self.log):
            raise DemoError("the worker cannot import the task modules (its log is above)")

    def child_pids(self) -> list[int]:
        """The worker processes' PIDs, as `taskq status --json` reports them."""
        report = json.loads(taskq("status", "--json", broker=self.broker))
        return [
            child["pid"]
            for state in report["workers"]
            if state["pid"] == self.process.pid
            for child in state["children"]
            if child["pid"]
        ]

    def stop(self) -> None:
        """SIGTERM (warm shutdown), a bounded wait, then SIGKILL by PID."""
        if self.process.poll() is None:
            try:
                children = self.child_pids()
            except (DemoError, ValueError):
                children = []
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"the worker did not stop in {STOP_TIMEOUT:.0f} s: killing it", flush=True)
                for pid in (self.process.pid, *children):
                    _kill(pid)
                self.process.wait(5)
        # Children outlive a killed supervisor: the session we made holds them all.
        _kill(-self.process.pid)
        self._echo.join(5)


def _kill(pid: int) -> None:
    """SIGKILL a PID (a negative one names a process group), if it still exists."""
    try:
        if pid < 0:
            os.killpg(-pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def taskq(*args: str, broker: Path) -> str:
    """Run a `taskq` command on the demo's broker and return what it printed."""
    command = [sys.executable, "-m", "taskq", "--broker", str(broker), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise DemoError(f"`taskq {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout.rstrip()


def indent(text: str) -> str:
    return "\n".join(f"    {line}".rstrip() for line in text.splitlines())


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
    worker = Worker(broker, "tasks")
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


def main() -> int:
    temp = Path(tempfile.mkdtemp(prefix="taskq-demo-"))
    try:
        run(temp / "broker")
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted; the worker was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print("\nDone: every task ran once, the worker stopped, the broker folder is removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
