"""Stopping a worker: warm (finish what runs), cold (give it back now), recycling, status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import itasks
import itasks_crash
import pytest
from itasks_crash import wait_until

from taskq.app import App
from taskq.message import decode
from taskq.results import PENDING, SUCCESS
from taskq.testing import WorkerProcess

MODULES = "itasks,itasks_crash"


def _starts(path: str) -> list[str]:
    return [line for line in itasks.lines(path) if line.startswith("start")]


def _queue_files(broker_dir: Path, state: str) -> list[Path]:
    folder = broker_dir / "queues" / "default" / state
    if state == "claimed":
        return [p for p in folder.glob("*/*") if p.name != ".lock"]
    return sorted(folder.iterdir())


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie waiting for init to reap it is gone too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_warm_shutdown_finishes_the_running_task(
    start_worker, broker_dir: Path, tmp_path: Path, signum: int
) -> None:
    """One SIGTERM, or one SIGINT sent to the supervisor alone, is a warm shutdown."""
    w = start_worker(modules=MODULES, concurrency=2)
    path = str(tmp_path / "runs")
    result = itasks.sleeper.delay(path, 2.0)
    wait_until(lambda: _starts(path), what="task start")

    w.signal(signum)
    assert w.wait(timeout=20) == 0
    assert result.status == SUCCESS
    assert result.get(timeout=1) == "slept"
    assert [line.split()[0] for line in itasks.lines(path)] == ["start", "end"]
    assert _queue_files(broker_dir, "claimed") == []
    assert _queue_files(broker_dir, "ready") == []
    assert "Warm shutdown" in w.log() and "Cold shutdown" not in w.log()


def test_warm_shutdown_past_its_timeout_requeues_the_task(
    start_worker, broker_dir: Path, taskq_app: App, tmp_path: Path
) -> None:
    w = start_worker("--shutdown-timeout", "0.5", modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    result = itasks_crash.sleeps_first.delay(path, 5.0)
    wait_until(lambda: _starts(path), what="task start")

    signalled = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 4.0  # it did not wait for the 5 s task
    assert itasks.lines(path)[-1].startswith("start")  # the task never ended
    [ready] = _queue_files(broker_dir, "ready")
    message, _ = decode(ready.read_bytes(), taskq_app.key)
    assert message.id == result.id
    assert message.retries == 0
    assert _queue_files(broker_dir, "claimed") == []
    assert taskq_app.broker.dead_letters() == []
    assert result.status == PENDING

    start_worker(modules=MODULES, concurrency=1)
    assert result.get(timeout=20) == "slept"
    assert [line.split()[0] for line in itasks.lines(path)] == ["start", "start", "end"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cold_shutdown_requeues_running_task_uncounted(
    start_worker, broker_dir: Path, taskq_app: App, tmp_path: Path, signum: int
) -> None:
    w = start_worker(modules=MODULES, concurrency=1)
    [child] = w.child_pids()
    path = str(tmp_path / "runs")
    result = itasks.sleeper.delay(path, 60.0)
    wait_until(lambda: _starts(path), what="task start")

    w.signal(signum)
    time.sleep(0.3)  # the second signal finds the warm shutdown under way
    w.signal(signum)
    assert w.wait(timeout=10) == 0  # not 60 s: the child was killed, not waited for
    assert _pid_gone(child)
    assert "Cold shutdown" in w.log()
    [ready] = _queue_files(broker_dir, "ready")
    message, _ = decode(ready.read_bytes(), App(broker=str(broker_dir)).key)
    assert message.id == result.id
    assert message.retries == 0  # no attempt counted
    assert message.attempts == ()
    assert _queue_files(broker_dir, "claimed") == []
    assert _queue_files(broker_dir, "scheduled") == []
    assert taskq_app.broker.dead_letters() == []
    assert result.status == PENDING
    assert [line.split()[0] for line in itasks.lines(path)] == ["start"]


def _pids_of_records(path: str) -> list[int]:
    return [int(line.split()[2]) for line in itasks.lines(path)]


def test_max_tasks_per_child_recycles_children(start_worker, tmp_path: Path) -> None:
    start_worker("--max-tasks-per-child", "2", modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    results = [itasks.record.delay(path, n) for n in range(5)]

    assert [r.get(timeout=20) for r in results] == list(range(5))
    pids = _pids_of_records(path)
    assert len(pids) == 5
    assert len(set(pids)) >= 3
    for pid in set(pids):
        assert pids.count(pid) <= 2


def test_max_memory_per_child_recycles_after_each_task(start_worker, tmp_path: Path) -> None:
    w = start_worker("--max-memory-per-child", "1", modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    results = [itasks.record.delay(path, n) for n in range(3)]

    assert [r.get(timeout=20) for r in results] == list(range(3))
    pids = _pids_of_records(path)
    assert len(set(pids)) == 3  # one task per child
    assert "max_memory_per_child" in w.log()


def _status(broker_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "--broker", str(broker_dir), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_status_shows_worker_and_running_task(
    start_worker, broker_dir: Path, tmp_path: Path
) -> None:
    w: WorkerProcess = start_worker(modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    result = itasks.sleeper.delay(path, 3.0)
    wait_until(lambda: _starts(path), what="task start")

    def report_with_task() -> str | None:
        out = _status(broker_dir)
        return out if "running itasks.sleeper" in out else None

    report = wait_until(report_with_task, timeout=10, what="status showing the running task")
    assert f"(pid {w.pid})" in report
    assert f"running itasks.sleeper[{result.id}]" in report
    assert "workers: 1 live" in report
