"""Periodic tasks by hand: how late ticks start, and how long the schedule stops
when the worker publishing it is SIGKILLed.

    python -m benchmarks.periodic [--redis redis://127.0.0.1:6379/0] [--kills 3]

Two ``taskq worker -c 1`` processes run ``benchmarks.periodic_tasks.beat``
(``every=1``) on a temporary broker directory (and, with ``--redis``, then on a
Redis key prefix of its own, deleted at the end). Each round SIGKILLs the
worker that holds the schedule (supervisor, worker process and scheduler, by
pid), measures the time from the kill to the first tick the other worker runs
and the ticks that never ran, then starts a replacement. Lateness is a run's
start minus its tick, over every run. No tick may run twice.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from taskq.testing import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent


def start(broker: str, runs: Path, logs: Path, index: int) -> WorkerProcess:
    log = logs / f"worker-{index}.log"
    command = [sys.executable, "-m", "taskq", "--broker", broker, "worker"]
    command += ["-A", "benchmarks.periodic_tasks", "--concurrency", "1"]
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PERIODIC_RUNS": str(runs)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    # str(broker_dir) is all WorkerProcess does with it: a URL passes through whole.
    return WorkerProcess(popen, broker, log).wait_ready()  # type: ignore[arg-type]


def ran(runs: Path) -> list[tuple[float, float]]:
    """(tick, start) of every run."""
    found = []
    for path in runs.iterdir():
        tick, _, started = path.name.split(".", 2)
        found.append((int(tick) / 1000, float(started)))
    return found


def wait(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s")
        time.sleep(0.01)


def holder(workers: list[WorkerProcess]) -> WorkerProcess:
    """The live worker whose scheduler said last that it runs the schedule."""
    live = [w for w in workers if w.popen.poll() is None and "now runs the schedule" in w.log()]
    return max(live, key=lambda w: w.log().rindex("now runs the schedule"))


def kill(worker: WorkerProcess) -> None:
    state = worker.state() or {}
    worker.kill([*worker.child_pids(), *([state["scheduler"]] if state.get("scheduler") else [])])


def measure(broker: str, kills: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs, logs = Path(tmp, "runs"), Path(tmp)
        runs.mkdir()
        workers = [start(broker, runs, logs, 0)]
        wait(lambda: ran(runs), 20)
        workers.append(start(broker, runs, logs, 1))
        gaps, missed = [], []
        try:
            for round_ in range(kills):
                time.sleep(3)
                owner = holder(workers)
                before = max(t for t, _ in ran(runs))
                killed = time.time()
                kill(owner)
                wait(lambda k=killed: any(s > k for _, s in ran(runs)), 30)  # type: ignore[misc]
                after = min((t, s) for t, s in ran(runs) if s > killed)
                gaps.append(after[1] - killed)
                missed.append(max(0, round(after[0] - before) - 1))
                workers.append(start(broker, runs, logs, round_ + 2))
            time.sleep(2)
        finally:
            for worker in workers:
                worker.stop(timeout=15)
        every = ran(runs)
        late = sorted(s - t for t, s in every)
        doubled = sum(n - 1 for n in Counter(t for t, _ in every).values())
        print(
            f"{broker.split('?')[0] if '://' in broker else 'directory'}: {len(every)} runs, "
            f"{doubled} doubled; start after tick p50 {statistics.median(late) * 1000:.0f} ms, "
            f"max {late[-1] * 1000:.0f} ms; after SIGKILL of the holder, next run in "
            + ", ".join(f"{g:.2f} s" for g in gaps)
            + f"; ticks missed {missed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="also measure on this Redis (a prefix of its own)")
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(str(Path(tmp, "broker")), args.kills)
    if args.redis:
        import redis

        prefix = f"taskq-bench-periodic-{os.getpid()}:"
        try:
            measure(f"{args.redis}?prefix={prefix}&liveness_timeout=2", args.kills)
        finally:
            client = redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        main()
