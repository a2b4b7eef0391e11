"""The workloads, each one scenario on a fresh queue: W1+W2 (``burst``), W1 by a bulk
API (``batch``), W3 (``latency``), W4 (``depth``), and the raw file-operation ``limit``.
W5 (``chaos``) is in ``chaos.py``, the Redis limit row in ``limit_redis.py``.

Every scenario is bounded: each phase (enqueue, start-up, drain) ends by
``max_seconds``, and a drain that makes no progress for ``stall_seconds`` ends
as "stalled" (lost messages look like that).
"""

from __future__ import annotations

import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs
from .systems.base import System
from .tally import Tally

POLL = 0.005  # seconds between reads of the record files while waiting


class QuietDisk:
    """Waits, before an enqueue phase, until creating files is as fast as it gets.

    On ext4 without a journal (this project's development machine), the inode
    allocator skips inodes of its block group freed in the last 60 s (6 minutes
    while their inode table block is dirty, which creating files nearby makes
    it), scanning past each of them on every create: after 20,000 deletes
    (kombu's and Huey's file acks, the limit row's unlinks, a folder removed),
    creates run 5-20x slower for minutes, whichever system enqueues next.
    The suite keeps its deletes away from the next scenario's creates (one block
    group per scenario, nothing removed until the end: ``suite.run``); this gate
    catches what is left. It creates ``PROBE`` files in a fresh folder and passes
    once that costs at most ``SLACK`` times the cheapest probe of the suite (the
    first gate takes two probes), probing every ``PAUSE`` seconds for at most
    ``most`` seconds. ``last_us`` is the cost of a create in the passing probe.
    """

    PROBE, SLACK, PAUSE = 300, 1.5, 5.0

    def __init__(self, most: float = 120.0) -> None:
        self.most = most
        self.best = float("inf")
        self.probes = 0
        self.last_us = 0.0

    def __repr__(self) -> str:  # how the plan in latest.json shows the gate
        return (
            f"QuietDisk(probe {self.PROBE} creates, pass at {self.SLACK}x the best probe, "
            f"every {self.PAUSE:g} s, at most {self.most:g} s)"
        )

    def wait(self, workdir: Path) -> float:
        """Seconds waited before creates were quick (or ``most`` ran out)."""
        os.sync()  # written back, the freed inodes' blocks are clean: the 60 s window
        t0 = time.monotonic()
        while True:
            cost = self._probe(workdir)
            self.last_us = cost * 1e6
            first = self.probes == 1
            self.best = min(self.best, cost)
            waited = time.monotonic() - t0
            if (not first and cost <= self.SLACK * self.best) or waited > self.most:
                return waited
            time.sleep(self.PAUSE)

    def _probe(self, workdir: Path) -> float:
        self.probes += 1
        folder = Path(tempfile.mkdtemp(prefix="probe-", dir=workdir))
        payload = b"x" * 300
        t0 = time.perf_counter()
        for i in range(self.PROBE):
            fd = os.open(folder / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, payload)
            os.close(fd)
        return (time.perf_counter() - t0) / self.PROBE


_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread_subfolders(folder: Path) -> bool:
    """Mark ``folder`` as the top of a directory hierarchy (``chattr +T``): ext2/3/4
    then place each folder made directly in it in a block group of its own, so
    files one scenario frees are not in the groups where the next one creates.
    False where the filesystem or platform has no such flag."""
    if not sys.platform.startswith("linux"):
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        wanted = int.from_bytes(flags, sys.byteorder) | _FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, bytearray(wanted.to_bytes(4, sys.byteorder)))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Options:
    tasks: int = 20_000
    depth: int = 200_000
    latency_tasks: int = 1_000
    interval: float = 0.005
    max_seconds: float = 600.0
    stall_seconds: float = 120.0
    workdir: Path = Path(tempfile.gettempdir())
    # W5 (chaos, ``benchmarks/chaos.py``)
    chaos_tasks: int = 3_000
    chaos_task_ms: float = 5.0
    chaos_seed: int = 12
    chaos_max_seconds: float = 100.0
    chaos_stall_seconds: float = 15.0
    chaos_drain_seconds: float = 30.0
    quiet: QuietDisk = field(default_factory=QuietDisk, compare=False, repr=False)


@dataclass
class Outcome:
    """One scenario of one system in one run."""

    system: str
    scenario: str
    run: int
    status: str = "ok"  # ok | timeout | stalled | error
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    expected: int = 0
    ran: int = 0
    missing: int = 0
    duplicated: int = 0
    seconds: float = 0.0

    def counted(self, tally: Tally) -> None:
        self.expected, self.ran = tally.expected, tally.distinct
        self.missing, self.duplicated = tally.missing, tally.duplicated


class PhaseEnded(Exception):
    """A phase ended without finishing: status "timeout", "stalled" or "error"."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class Scenario:
    """A private folder, a fresh queue on ``system``, and at most one worker process.
    The folder stays: the suite deletes every scenario's folder when it ends."""

    def __init__(self, system: System, options: Options) -> None:
        self.system, self.options = system, options
        self.work = Path(tempfile.mkdtemp(prefix="taskq-bench-", dir=options.workdir))
        self.out = self.work / "out"
        self.out.mkdir()
        self.log = self.work / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = uuid.uuid4().hex[:12]

    def __enter__(self) -> Scenario:
        self.system.open(self.work, self.token)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_worker()
        finally:
            self.system.close()

    def start_worker(self) -> None:
        env = {"BENCH_OUT": str(self.out), **self.system.worker_env()}
        self.proc = procs.start(self.system.worker_argv(), env, self.work, self.log)

    def stop_worker(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def wait(self, tally: Tally, done: Callable[[], bool], phase: str) -> float:
        """Poll ``tally`` until ``done()``; returns the ``time.monotonic()`` it became true."""
        deadline = time.monotonic() + self.options.max_seconds
        while True:
            tally.poll()
            now = time.monotonic()
            if done():
                return now
            self._check(tally, now, deadline, phase)
            time.sleep(POLL)

    def _check(self, tally: Tally, now: float, deadline: float, phase: str) -> None:
        seen = f"{tally.distinct:,} of {tally.expected:,} ran"
        if self.proc is not None and self.proc.poll() is not None:
            tail = procs.log_tail(self.log, lines=1)
            raise PhaseEnded("error", f"{phase}: worker exited ({self.proc.returncode}); {tail}")
        if now > deadline:
            raise PhaseEnded(
                "timeout", f"{phase}: timeout after {self.options.max_seconds:.0f} s, {seen}"
            )
        if tally.first_at is not None and now - tally.last_progress > self.options.stall_seconds:
            raise PhaseEnded(
                "stalled", f"{phase}: no progress for {self.options.stall_seconds:.0f} s, {seen}"
            )

    def enqueue(self, send: Callable[[int], Any], n: int, phase: str) -> list[float]:
        """Call ``send(i)`` for i in 0..n-1; returns the seconds each 1,000 calls took."""
        deadline = time.monotonic() + self.options.max_seconds
        laps = []
        for start in range(0, n, 1_000):
            t0 = time.perf_counter()
            for i in range(start, min(start + 1_000, n)):
                send(i)
            laps.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                raise PhaseEnded(
                    "timeout", f"{phase}: timeout after enqueueing {start + 1_000:,} of {n:,}"
                )
        return laps


SEGMENT = 20_000  # calls in the first and last stretch of a deep enqueue


def enqueue_metrics(name: str, n: int, laps: list[float]) -> dict[str, float]:
    """Tasks/s over the whole enqueue and, when it is deep enough, over its first and
    last ``SEGMENT`` calls: the queue's depth is the only difference between those two,
    where comparing two scenarios also compares the disk's state at two moments."""
    metrics = {f"{name}_per_s": n / sum(laps)}
    k = SEGMENT // 1_000
    if n >= 2 * SEGMENT and len(laps) >= 2 * k:
        metrics[f"{name}_first_per_s"] = SEGMENT / sum(laps[:k])
        metrics[f"{name}_last_per_s"] = SEGMENT / sum(laps[-k:])
    return metrics


def burst(
    system: System, options: Options, outcome: Outcome, n: int, names: tuple[str, str]
) -> None:
    """Enqueue ``n`` noop(i) with no worker (``names[0]``), then drain them with a fresh
    2-process worker (``names[1]``): tasks/s from start-up to the last, and time to first."""
    enqueue_name, drain_name = names
    with Scenario(system, options) as scenario:
        tally = Tally(scenario.out, "runs", n)
        outcome.metrics["disk_wait_s"] = options.quiet.wait(options.workdir)
        outcome.metrics["probe_create_us"] = options.quiet.last_us
        started = time.monotonic()
        try:
            if enqueue_name.endswith("batch"):
                send_batch = system.batch_sender()
                assert send_batch is not None
                t0 = time.perf_counter()
                send_batch(range(n))
                outcome.metrics[f"{enqueue_name}_per_s"] = n / (time.perf_counter() - t0)
            else:
                laps = scenario.enqueue(system.sender(), n, enqueue_name)
                outcome.metrics.update(enqueue_metrics(enqueue_name, n, laps))
            started = time.monotonic()
            scenario.start_worker()
            finished = scenario.wait(tally, lambda: tally.distinct >= n, drain_name)
            outcome.metrics[f"{drain_name}_per_s"] = n / (finished - started)
            outcome.metrics[f"{drain_name}_first_ms"] = (
                (tally.first_at or finished) - started
            ) * 1000
            time.sleep(0.2)  # let a late redelivery show up as a duplicate
        except PhaseEnded as ended:
            outcome.status, outcome.detail = ended.status, ended.detail
            if tally.distinct and ended.status == "timeout":
                outcome.metrics[f"{drain_name}_partial_per_s"] = tally.distinct / (
                    time.monotonic() - started
                )
        finally:
            scenario.stop_worker()
            tally.poll()
            tally.close()
            outcome.counted(tally)


def latency(system: System, options: Options, outcome: Outcome) -> None:
    """An idle running worker; one stamp(i, time.time()) every ``interval`` seconds."""
    n = options.latency_tasks
    with Scenario(system, options) as scenario:
        warm = Tally(scenario.out, "runs", 0)
        tally = Tally(scenario.out, "latency", n)
        try:
            send, stamp = system.sender(), system.stamper()
            scenario.start_worker()
            send(-1)
            scenario.wait(warm, lambda: warm.foreign >= 1, "W3 start-up")
            time.sleep(1.0)  # idle: the worker waits for work the way it normally does
            outcome.metrics["idle_rss_mb"] = procs.rss_mb(scenario.proc.pid) if scenario.proc else 0
            next_at = time.perf_counter()
            for i in range(n):
                stamp(i, time.time())
                next_at += options.interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
            scenario.wait(tally, lambda: tally.distinct >= n, "W3")
            time.sleep(0.2)
        except PhaseEnded as ended:
            outcome.status, outcome.detail = ended.status, ended.detail
        finally:
            scenario.stop_worker()
            tally.poll()
            tally.close()
            warm.close()
            outcome.counted(tally)
        if tally.latencies_ms and outcome.status == "ok":
            ms = sorted(tally.latencies_ms)
            centiles = statistics.quantiles(ms, n=100, method="inclusive")
            outcome.metrics.update(W3_p50_ms=centiles[49], W3_p99_ms=centiles[98], W3_max_ms=ms[-1])


def limit(options: Options, outcome: Outcome) -> None:
    """The raw file operations a file broker needs, in one process, on the work folder's
    filesystem: create + write 300 bytes + close + rename into ready/; then rename into
    claimed/ + read + unlink. Every file is checked on the way out."""
    n = options.tasks
    outcome.metrics["disk_wait_s"] = options.quiet.wait(options.workdir)
    outcome.metrics["probe_create_us"] = options.quiet.last_us
    work = Path(tempfile.mkdtemp(prefix="limit-", dir=options.workdir))
    tmp, ready, claimed = (str(work / d) for d in ("tmp", "ready", "claimed"))
    for d in (tmp, ready, claimed):
        os.mkdir(d)
    payload = b"x" * 300
    names = [f"{i:012d}" for i in range(n)]
    t0 = time.perf_counter()
    for name in names:
        fd = os.open(f"{tmp}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.close(fd)
        os.rename(f"{tmp}/{name}", f"{ready}/{name}")
    outcome.metrics["W1_per_s"] = n / (time.perf_counter() - t0)
    listed = sorted(os.listdir(ready))
    good = 0
    t0 = time.perf_counter()
    for name in listed:
        os.rename(f"{ready}/{name}", f"{claimed}/{name}")
        fd = os.open(f"{claimed}/{name}", os.O_RDONLY)
        good += os.read(fd, 4096) == payload
        os.close(fd)
        os.unlink(f"{claimed}/{name}")
    outcome.metrics["W2_per_s"] = n / (time.perf_counter() - t0)
    outcome.expected, outcome.ran = n, good
    outcome.missing, outcome.duplicated = n - good, max(0, len(listed) - n)
