"""The supervisor's weak spots: hanging tasks with no time limit, what a killed
supervisor leaves in workers/, results expired by a worker that lives briefly."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import itasks
import itasks_faults
import pytest
from helpers import wait_for

import taskq
from taskq.app import App
from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
Start = Callable[..., WorkerProcess]


def test_hanging_task_without_time_limit_is_killed_at_default_time_limit_and_dead_lettered(
    worker: Start, taskq_app: App, tmp_path: Path
) -> None:
    w = worker("itasks_faults", concurrency=1, cwd=HERE, env={"TASKQ_DEFAULT_TIME_LIMIT": "0.5"})
    path = str(tmp_path / "starts")
    result = itasks_faults.hangs.delay(path)

    with pytest.raises(taskq.TimeLimitExceeded):
        result.get(timeout=20)
    assert len(itasks.lines(path)) == 2  # max_retries=1: killed twice
    [letter] = wait_for_value(taskq_app.broker.dead_letters, "the dead letter")
    assert letter.id == result.id
    assert letter.record["reason"] == "time-limit"
    assert "passed its time limit" in w.log()


def test_task_with_time_limit_zero_runs_past_the_default_time_limit(
    worker: Start, taskq_app: App
) -> None:
    worker("itasks_faults", concurrency=1, cwd=HERE, env={"TASKQ_DEFAULT_TIME_LIMIT": "0.3"})
    assert itasks_faults.sleeps_without_limit.delay(1.0).get(timeout=20) == "woke"


def test_files_of_a_sigkilled_supervisor_are_removed_by_the_next_one(
    start_worker: Start, broker_dir: Path
) -> None:
    first = start_worker(concurrency=1)
    name = first.state()["name"]  # type: ignore[index]
    workers = broker_dir / "workers"
    assert {f"{name}.json", f"{name}.lock"} <= set(os.listdir(workers))
    children = first.child_pids()
    first.signal(signal.SIGKILL)  # the supervisor alone: its child exits by PDEATHSIG
    first.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in children), 10, "the orphaned child to exit")
    assert {f"{name}.json", f"{name}.lock"} <= set(os.listdir(workers))

    second = start_worker(concurrency=1)
    own = second.state()["name"]  # type: ignore[index]
    wait_for(
        lambda: sorted(os.listdir(workers)) == [f"{own}.json", f"{own}.lock"],
        10,
        "only the live supervisor's files",
    )


def test_short_lived_worker_expires_old_results_at_start(
    start_worker: Start, taskq_app: App, broker_dir: Path
) -> None:
    results = broker_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    two_days_ago = time.time() - 2 * 86400
    for index in range(300):
        (results / f"old-{index}").write_bytes(b"x")
        os.utime(results / f"old-{index}", (two_days_ago, two_days_ago))
    kept = itasks.add.delay(1, 2)

    w = start_worker(concurrency=1)
    assert kept.get(timeout=10) == 3
    wait_for(lambda: os.listdir(results) == [kept.id], 10, "the old results to go")
    assert w.stop() == 0


def wait_for_value(check: Callable[[], list[object]], what: str) -> list[object]:
    wait_for(check, 10, what)
    return check()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is gone
    except FileNotFoundError:
        return False
