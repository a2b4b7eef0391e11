"""What both demos share: a `taskq worker` child process, stopped by PID, and
`taskq` commands run against the demo's broker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

STOP_TIMEOUT = 15.0  # seconds a warm shutdown may take before SIGKILL


class DemoError(Exception):
    """Something went wrong; the message says what."""


class Worker:
    """`taskq worker` as a child of this demo, in its own session, stopped by PID."""

    def __init__(self, broker: Path, modules: str, cwd: Path, concurrency: int = 2) -> None:
        self.broker = broker
        self.command = [
            *(sys.executable, "-m", "taskq", "--broker", str(broker)),
            *("worker", "-A", modules, "--concurrency", str(concurrency)),
        ]
        self.log: list[str] = []
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,  # so that `-A tasks` imports the example's tasks.py
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


def run_demo(run: Callable[[Path], None], done: str) -> int:
    """Run a demo on a fresh temporary broker; 0 on success, 1 with the reason on failure."""
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
    print(f"\nDone: {done}")
    return 0
