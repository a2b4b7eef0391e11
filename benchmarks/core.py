"""The core issue's figures: enqueue and drain rate of 20,000 no-op tasks, and
enqueue-to-start latency at 200 tasks/s, on the file broker.

    python -m benchmarks.core [--tasks 20000] [--concurrency 2] [--rate 200] [--runs 1]

Like the side-by-side suite, it keeps every run's broker until the end, in block
groups of their own, and lets creates settle before each enqueue (see
``scenarios.QuietDisk``): on this project's ext4, a previous run's deletes would
otherwise slow the next run's enqueue several times over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .scenarios import QuietDisk, spread_subfolders

HERE = Path(__file__).resolve().parent


def start_worker(broker: Path, out: Path, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_OUT": str(out), "PYTHONPATH": str(HERE)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskq",
            "--broker",
            str(broker),
            "worker",
            "-A",
            "bench_tasks",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ],
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def read_ids(out: Path, kind: str) -> list[str]:
    lines: list[str] = []
    for path in out.glob(f"{kind}.*"):
        lines += path.read_text().splitlines()
    return lines


def wait_for(out: Path, kind: str, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_ids(out, kind)) >= count:
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError(f"only {len(read_ids(out, kind))} of {count} ran")


def check(ids: list[str], count: int) -> tuple[int, int]:
    seen = [int(line.split()[0]) for line in ids]
    missing = count - len(set(seen))
    duplicated = len(seen) - len(set(seen))
    return missing, duplicated


def enqueue_and_drain(parent: Path, tasks: int, concurrency: int, quiet: QuietDisk) -> None:
    import bench_tasks

    from taskq.app import App, set_default_app

    work = Path(tempfile.mkdtemp(prefix="drain-", dir=parent))
    broker, out = work / "broker", work / "out"
    out.mkdir()
    quiet.wait(parent)
    set_default_app(App(broker=str(broker)))
    t0 = time.perf_counter()
    for i in range(tasks):
        bench_tasks.noop.delay(i)
    enqueue = tasks / (time.perf_counter() - t0)
    started = time.monotonic()
    proc = start_worker(broker, out, concurrency)
    try:
        first = wait_for(out, "runs", 1, 60)
        done = wait_for(out, "runs", tasks, 600)
    finally:
        stop_worker(proc)
    missing, dup = check(read_ids(out, "runs"), tasks)
    print(f"enqueue: {tasks} tasks by one process: {enqueue:,.0f} tasks/s")
    print(
        f"drain:   {tasks} tasks, --concurrency {concurrency}: "
        f"{tasks / (done - started):,.0f} tasks/s including start-up "
        f"({tasks / (done - first):,.0f}/s after the first task; first task after "
        f"{(first - started) * 1000:.0f} ms); missing {missing}, duplicated {dup}"
    )


def latency(parent: Path, count: int, rate: float, concurrency: int) -> None:
    import bench_tasks

    from taskq.app import App, set_default_app

    work = Path(tempfile.mkdtemp(prefix="latency-", dir=parent))
    broker, out = work / "broker", work / "out"
    out.mkdir()
    set_default_app(App(broker=str(broker)))
    proc = start_worker(broker, out, concurrency)
    try:
        bench_tasks.noop.delay(-1)
        wait_for(out, "runs", 1, 60)  # workers up and idle
        time.sleep(0.5)
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(count):
            bench_tasks.stamp.delay(i, time.time())
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        wait_for(out, "latency", count, 60)
    finally:
        stop_worker(proc)
    lines = read_ids(out, "latency")
    ms = sorted(float(line.split()[1]) for line in lines)
    q = statistics.quantiles(ms, n=100)
    missing, dup = check(lines, count)
    print(
        f"latency: {count} tasks at {rate:.0f}/s, enqueue to start: p50 {q[49]:.2f} ms, "
        f"p99 {q[98]:.2f} ms, max {ms[-1]:.2f} ms; missing {missing}, duplicated {dup}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-tasks", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    parent = Path(tempfile.mkdtemp(prefix="taskq-bench-core-"))
    spread_subfolders(parent)
    quiet = QuietDisk()
    try:
        for run in range(1, args.runs + 1):
            print(f"run {run}")
            enqueue_and_drain(parent, args.tasks, args.concurrency, quiet)
            latency(parent, args.latency_tasks, args.rate, args.concurrency)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
