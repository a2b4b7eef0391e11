"""Save-to-new-code latency of ``taskq worker --reload`` (issue 3): p50/p99 over 20 edits.

    python -m benchmarks.reload [--edits 20] [--concurrency 2] [--debounce 0.25]

A package written to a temporary folder has one task returning a number.
Each edit saves a new number; the latency is the time from the write to the
first task that returns it, with calls sent back to back (each one as soon as
the previous result is in). The figure includes the debounce (250 ms by
default), the throwaway import check and the new pool's start-up. After each
edit the benchmark waits for the old pool to exit (the "Reloaded after" log
line) before the next one. Nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from taskq.app import App
from taskq.brokers.file import FileBroker
from taskq.message import Message, dump_call, new_id

TASKS = """\
from taskq import task

VALUE = {value}


@task
def value():
    return VALUE
"""
SWAP = re.compile(r"Reloaded after changes to .*: swap took (\d+) ms")


def save(proj: Path, value: int) -> None:
    (proj / "app" / "tasks.py").write_text(TASKS.format(value=value))


def start_worker(
    proj: Path, broker: Path, log: Path, concurrency: int, debounce: float
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "taskq", "--broker", str(broker), "worker"]
    command += ["-A", "app.tasks", "--concurrency", str(concurrency), "--reload"]
    env = {**os.environ, "TASKQ_RELOAD_DEBOUNCE": str(debounce)}
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=proj,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def child_pids(broker: Path, pid: int) -> list[int]:
    for state in FileBroker(broker).worker_states():
        if state["pid"] == pid:
            return [c["pid"] for c in state["children"] if c["pid"]]
    return []


def stop_worker(proc: subprocess.Popen[bytes], broker: Path) -> None:
    """SIGTERM, then SIGKILL the supervisor and its children by PID."""
    children = child_pids(broker, proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
        return
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)


def call_value(app: App, timeout: float) -> object:
    message = Message(id=new_id(), task="app.tasks.value", created=time.time())
    app.publish(message, dump_call(message.task, (), {}))
    return app.AsyncResult(message.id).get(timeout=timeout, interval=0.002)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.01)


def measure(edits: int, concurrency: int, debounce: float) -> tuple[list[float], list[float]]:
    """Save-to-new-code latencies and swap times (ms), one of each per edit."""
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-reload-"))
    proj, broker, log = work / "proj", work / "broker", work / "worker.log"
    (proj / "app").mkdir(parents=True)
    (proj / "app" / "__init__.py").write_text("")
    save(proj, 0)
    proc = start_worker(proj, broker, log, concurrency, debounce)
    try:
        app = App(broker=str(broker))
        assert call_value(app, timeout=30) == 0  # the pool is up
        latencies = []
        for edit in range(1, edits + 1):
            time.sleep(0.5)  # an idle pool, as between two saves by hand
            saved = time.perf_counter()
            save(proj, edit)
            deadline = time.monotonic() + 30
            while call_value(app, timeout=max(0.1, deadline - time.monotonic())) != edit:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"edit {edit}: the new code never served")
            latencies.append((time.perf_counter() - saved) * 1000)
            wait_for(
                "reload line", lambda n=edit: len(SWAP.findall(log.read_text())) >= n, timeout=30
            )
        swaps = [float(ms) for ms in SWAP.findall(log.read_text())]
        return latencies, swaps
    finally:
        stop_worker(proc, broker)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--debounce", type=float, default=0.25, help="reload_debounce, seconds")
    args = parser.parse_args()
    ms, swaps = measure(args.edits, args.concurrency, args.debounce)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    print(
        f"reload: {len(ms)} edits, --concurrency {args.concurrency}, save to first task on "
        f"the new code: p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms, max {max(ms):.0f} ms "
        f"(debounce {args.debounce * 1000:.0f} ms included; old pool gone p50 "
        f"{statistics.median(swaps):.0f} ms after the swap began)"
    )


if __name__ == "__main__":
    main()
