"""pytest plugin: a temporary broker and real worker processes, stopped by PID.

Installed with taskq (entry point ``pytest11``), so a project's tests can use:

- ``broker_dir``: a fresh broker directory for the test.
- ``taskq_app``: an ``App`` on that directory, made the default app for the
  test, so ``mytask.delay()`` publishes there.
- ``worker``: a factory starting ``taskq worker`` on that directory; every
  worker it started is stopped when the test ends, with bounded waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .app import App
from .brokers import open_broker
from .brokers.base import Broker
from .config import Settings
from .current import default_app, set_default_app


class WorkerProcess:
    """A running ``taskq worker`` (supervisor and children) started by a test."""

    def __init__(self, popen: subprocess.Popen[bytes], broker_dir: Path, log_path: Path) -> None:
        self.popen = popen
        self.broker_dir = broker_dir
        self.log_path = log_path
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker:
        """The worker's broker, seen through the contract (any implementation)."""
        if self._broker is None:
            self._broker = open_broker(Settings(broker=str(self.broker_dir)))
        return self._broker

    @property
    def pid(self) -> int:
        return self.popen.pid

    def state(self) -> dict[str, Any] | None:
        for state in self.broker.worker_states():
            if state["pid"] == self.pid:
                return state
        return None

    def child_pids(self) -> list[int]:
        state = self.state()
        return [c["pid"] for c in state["children"] if c["pid"]] if state else []

    def wait_ready(self, timeout: float = 20.0) -> WorkerProcess:
        """Wait until every child has opened its consumer (imported the task modules)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"worker exited with {self.popen.returncode}:\n{self.log()}")
            state = self.state()
            if state and all(self.broker.has_consumer(c["consumer"]) for c in state["children"]):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """Warm shutdown, then SIGKILL (supervisor and children by PID) if it hangs."""
        if self.popen.poll() is None:
            children = self.child_pids()
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(children)
        return self.popen.returncode

    def kill(self, children: Sequence[int] | None = None) -> None:
        """SIGKILL the supervisor and its children, as a crash would."""
        children = self.child_pids() if children is None else children
        for pid in [self.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped by init) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


@pytest.fixture
def broker_dir(tmp_path: Path) -> Path:
    return tmp_path / "broker"


@pytest.fixture
def taskq_app(broker_dir: Path) -> Iterator[App]:
    previous = default_app()
    app = App(broker=str(broker_dir))
    set_default_app(app)
    yield app
    set_default_app(previous)


@pytest.fixture
def worker(broker_dir: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(
        modules: str,
        *args: str,
        concurrency: int = 2,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        command = [
            sys.executable,
            "-m",
            "taskq",
            "--broker",
            str(broker_dir),
            "worker",
            "-A",
            modules,
            "--concurrency",
            str(concurrency),
            *args,
        ]
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                command,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = WorkerProcess(popen, broker_dir, log_path)
        started.append(process)
        return process.wait_ready() if ready else process

    yield start
    for process in started:
        process.stop(timeout=15)
