"""How long the supervisor stops supervising while it deletes expired results (issue 12).

    python -m benchmarks.housekeeping [--results 90000] [--dir DIR]

Writes ``--results`` result files dated two days back into a fresh broker,
starts ``taskq worker --concurrency 1`` on it (``result_expires`` = 1 hour,
so all of them are expired) and watches ``workers/<name>.json``, which the
supervisor rewrites every second from its loop. The longest gap between two
``updated`` stamps, less the 1 s period, is how long one round was held up;
with a sweep done in one go it is about the time the whole deletion takes.
Prints that gap, the time until ``results/`` is empty, and the Python that
ran it. Run it by hand (not part of the test suite); the folder it makes
(in ``--dir``, default the system's temporary folder) is removed at the end,
and the worker is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taskq.brokers.file import FileBroker

_PERIOD = 1.0  # seconds between status updates of a supervisor that is not held up


def write_expired_results(broker: Path, count: int) -> None:
    results = FileBroker(broker).root / "results"
    two_days_ago = time.time() - 2 * 86400
    for index in range(count):
        path = results / f"expired-{index:06d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"r" * 200)
        os.close(fd)
        os.utime(path, (two_days_ago, two_days_ago))


def count_entries(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for _ in entries)


def watch(broker: Path, worker: subprocess.Popen[bytes], timeout: float) -> tuple[float, float]:
    """Poll the status file; return (longest gap between updates, time until results/ is empty)."""
    results = broker / "results"
    started = time.monotonic()
    stamps: list[float] = []
    emptied = 0.0
    next_count = 0.0
    while time.monotonic() - started < timeout and worker.poll() is None:
        for status in (broker / "workers").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                updated = json.loads(status.read_bytes())["updated"]
                if not stamps or updated != stamps[-1]:
                    stamps.append(updated)
        now = time.monotonic()
        if not emptied and now >= next_count:
            next_count = now + 0.25
            if count_entries(results) == 0:
                emptied = now - started
        if emptied and now - started > emptied + 3 * _PERIOD:
            break
        time.sleep(0.005)
    if not emptied:
        raise SystemExit(f"results/ not empty after {timeout:.0f} s")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return max(gaps, default=0.0), emptied


def stop(worker: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=90_000)
    parser.add_argument("--dir", default=None, help="where to make the broker (a local disk)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="taskq-housekeeping-", dir=args.dir))
    try:
        broker = folder / "broker"
        (folder / "bench_noop.py").write_text("")
        write_expired_results(broker, args.results)
        env = {**os.environ, "TASKQ_RESULT_EXPIRES": "3600"}
        command = [sys.executable, "-m", "taskq", "--broker", str(broker), "worker"]
        command += ["-A", "bench_noop", "--concurrency", "1"]
        with open(folder / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            gap, emptied = watch(broker, worker, args.timeout)
        finally:
            stop(worker)
        print(
            f"{args.results} expired results deleted in {emptied:.1f} s; "
            f"longest gap between status updates {gap:.2f} s "
            f"(held up {max(gap - _PERIOD, 0.0):.2f} s); Python {sys.version.split()[0]}"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
