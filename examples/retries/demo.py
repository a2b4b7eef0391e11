"""Retries and dead letters end to end: a flaky task recovers, a broken one ends in dead/.

    python examples/retries/demo.py        # from any directory

It uses a fresh temporary broker directory, starts
`python -m taskq --broker DIR worker -A tasks --concurrency 2` in this folder,
shows the worker's retry log lines, waits for the failing task to be
dead-lettered, prints `taskq dead list` and `taskq dead show ID`, then stops
the worker and removes everything. Exit code 0 means it all went as described.
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
    from tasks import always_fails, flaky

    from taskq import AsyncResult
except ModuleNotFoundError as exc:
    sys.exit(
        f"demo failed: cannot import {exc.name!r} with {sys.executable}; install taskq "
        "(python3 -m venv .venv && .venv/bin/pip install -e .) and run .venv/bin/python"
    )

HERE = Path(__file__).resolve().parent
RESULT_TIMEOUT = 30.0  # seconds to wait for each outcome before giving up
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
    worker = Worker(broker, "tasks")
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
    print("\nDone: one task recovered by retrying, one was dead-lettered with its record.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
