"""Hard time limits (the supervisor kills the child) and soft ones (raised in the task)."""

from __future__ import annotations

import signal
from dataclasses import astuple
from pathlib import Path

import itasks
import itasks_crash
import pytest
from itasks_crash import wait_until

import taskq
from taskq.app import App
from taskq.results import SUCCESS

MODULES = "itasks,itasks_crash"


def test_hard_time_limit_kills_child_and_dead_letters(
    start_worker, taskq_app: App, tmp_path: Path
) -> None:
    w = start_worker(modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    result = itasks.stuck.delay(path)

    with pytest.raises(taskq.TimeLimitExceeded):
        result.get(timeout=20)
    [start] = itasks.lines(path)  # max_retries=0: one attempt only
    stuck_pid = int(start.split()[1])
    # The result is stored before the message moves to dead/: wait for the move.
    [letter] = wait_until(taskq_app.broker.dead_letters, what="dead letter")
    assert letter.id == result.id
    assert letter.record["reason"] == "time-limit"
    assert [a["outcome"] for a in letter.record["attempts"]] == ["time-limit"]
    assert "passed its time limit" in w.log()
    # The pool keeps working, in a new child.
    assert itasks.add.delay(20, 22).get(timeout=10) == 42
    new_pids = wait_until(lambda: [p for p in w.child_pids() if p != stuck_pid], what="new child")
    assert stuck_pid not in new_pids
    assert w.popen.poll() is None


def test_hard_time_limit_with_retries_left_follows_retry_policy(
    start_worker, taskq_app: App, tmp_path: Path
) -> None:
    w = start_worker(modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    result = itasks_crash.stuck_once.delay(path)

    assert result.get(timeout=20) == "second attempt"
    assert result.status == SUCCESS
    first, second = (line.split() for line in itasks.lines(path))
    assert (first[1], second[1]) == ("0", "1")  # the killed attempt counted as a retry
    assert first[2] != second[2]  # and the next attempt ran in a fresh child
    assert "TimeLimitExceeded" in w.log() and "retry in" in w.log()
    # The result is stored before the message is acked: wait for the ack.
    wait_until(
        lambda: astuple(taskq_app.broker.counts()["default"]) == (0, 0, 0, 0),
        what="queue drained",
    )


def test_soft_time_limit_raises_inside_the_task(start_worker, tmp_path: Path) -> None:
    start_worker(modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")

    assert itasks.soft_limited.delay(path).get(timeout=10) == "caught"
    assert itasks.lines(path) == ["soft limit raised"]


def test_hard_time_limit_is_enforced_during_warm_shutdown(
    start_worker, taskq_app: App, tmp_path: Path
) -> None:
    """A warm shutdown waits for tasks in flight, but not past their hard time limit."""
    w = start_worker("--shutdown-timeout", "20", modules=MODULES, concurrency=1)
    path = str(tmp_path / "runs")
    result = itasks.stuck.delay(path)
    wait_until(lambda: itasks.lines(path), what="task start")

    w.signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    with pytest.raises(taskq.TimeLimitExceeded):
        result.get(timeout=1)
    [letter] = taskq_app.broker.dead_letters()
    assert letter.record["reason"] == "time-limit"
    counts = taskq_app.broker.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.claimed) == (0, 0, 0)
