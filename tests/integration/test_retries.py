"""Retries through a real `taskq worker`: backoff, exhaustion into dead/, Retry,
and errors that are never retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import itasks
import itasks_delivery
import pytest
from helpers import wait_for

from taskq.app import App
from taskq.results import FAILURE, SUCCESS

MODULES = "itasks,itasks_delivery"
SLACK = 0.8  # the supervisor promotes due messages every 0.25 s; a busy machine adds more


def dead_records(broker_dir: Path, queue: str = "default") -> dict[str, dict[str, Any]]:
    folder = broker_dir / "queues" / queue / "dead"
    if not folder.is_dir():
        return {}
    return {
        name.removesuffix(".json"): json.loads((folder / name).read_text())
        for name in os.listdir(folder)
        # The record is written first, then the message is moved beside it.
        if name.endswith(".json") and (folder / name.removesuffix(".json")).is_file()
    }


def attempts(path: str) -> list[tuple[int, float]]:
    """(request.retries, time) of each attempt a task noted as "<retries> <time>"."""
    return [(int(r), float(t)) for r, t in (line.split() for line in itasks.lines(path))]


def test_task_failing_twice_then_succeeding_backs_off_within_bounds(
    start_worker, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES)
    path = str(tmp_path / "attempts")
    result = itasks.flaky.delay(path, 2)

    assert result.get(timeout=20) == 2
    assert result.status == SUCCESS
    seen = attempts(path)
    assert [retries for retries, _ in seen] == [0, 1, 2]

    options = itasks.flaky.options
    for k in range(2):
        full = min(options.retry_backoff * 2**k, options.retry_backoff_max)
        gap = seen[k + 1][1] - seen[k][1]
        # Jitter may shorten a delay, but never below half of it.
        assert full / 2 <= gap <= full + SLACK, (k, gap, full)


def test_exhausted_retries_land_once_in_dead_and_dead_retry_runs_it_again(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES)
    path = str(tmp_path / "attempts")
    result = itasks.always_fails.delay(path)

    with pytest.raises(ValueError, match="this task always fails"):
        result.get(timeout=20)
    assert result.status == FAILURE
    assert itasks.lines(path) == ["attempt"] * 3
    # The result is stored just before the message moves to dead/.
    wait_for(lambda: dead_records(broker_dir), timeout=10, what="the dead letter")
    records = dead_records(broker_dir)
    assert len(records) == 1
    ((name, record),) = records.items()
    assert (broker_dir / "queues" / "default" / "dead" / name).is_file()
    assert record["id"] == result.id
    assert record["task"] == itasks.always_fails.name
    assert record["reason"] == "max-retries"
    assert record["exc_type"] == "ValueError"
    assert "Traceback" in record["traceback"]
    assert "ValueError: this task always fails" in record["traceback"]
    assert len(record["attempts"]) == 3
    assert all(a["outcome"] == "failed" for a in record["attempts"])

    retried = subprocess.run(
        [sys.executable, "-m", "taskq", "--broker", str(broker_dir), "dead", "retry", result.id],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert retried.returncode == 0, retried.stderr
    assert "requeued 1 message" in retried.stdout

    # Attempts start over: three more, then back in dead/ once.
    wait_for(lambda: len(itasks.lines(path)) == 6, timeout=20, what="three new attempts")
    wait_for(lambda: len(dead_records(broker_dir)) == 1, timeout=20, what="the dead letter")
    (record,) = dead_records(broker_dir).values()
    assert record["id"] == result.id
    assert len(record["attempts"]) == 3


def test_retry_raised_in_a_bound_task_retries_after_its_countdown(
    start_worker, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES)
    simple = str(tmp_path / "simple")
    assert itasks.asks_retry.delay(simple).get(timeout=20) == 1
    assert itasks.lines(simple) == ["0", "1"]

    # The task's own backoff would wait 30 s: only the countdown can bring it back in ~1 s.
    path = str(tmp_path / "timed")
    assert itasks_delivery.retry_after.delay(path, 1.0).get(timeout=20) == 1
    (first, t0), (second, t1) = attempts(path)
    assert (first, second) == (0, 1)
    assert 1.0 <= t1 - t0 <= 1.0 + SLACK, t1 - t0


@pytest.mark.parametrize(
    ("task", "error"),
    [
        (itasks_delivery.fails_outside_autoretry, TypeError),
        (itasks_delivery.fails_with_excluded, LookupError),
    ],
)
def test_error_not_covered_by_autoretry_is_dead_lettered_after_one_attempt(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App, task: Any, error: type
) -> None:
    start_worker(modules=MODULES)
    path = str(tmp_path / "attempts")
    result = task.delay(path)

    with pytest.raises(error, match="never retried"):
        result.get(timeout=20)
    assert itasks.lines(path) == ["attempt"]
    wait_for(lambda: dead_records(broker_dir), timeout=10, what="the dead letter")
    (record,) = dead_records(broker_dir).values()
    assert record["id"] == result.id
    assert record["reason"] == "failed"
    assert record["exc_type"] == error.__name__
    assert len(record["attempts"]) == 1
    assert record["retries"] == 0
