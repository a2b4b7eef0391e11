"""Revoking tasks (``AsyncResult.revoke``, ``App.control.revoke``, ``taskq revoke``)
against real workers, on the file broker and on Redis. Whether a task ran is read
from the lines it appends to a file, not from what the broker says."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import itasks
import itasks_revoke
import pytest
from helpers import wait_for
from itasks import lines

from taskq import TaskRevokedError
from taskq.app import App
from taskq.message import new_id
from taskq.results import REVOKED, SUCCESS
from taskq.testing import WorkerProcess

MODULES = "itasks,itasks_revoke"


@pytest.fixture(params=["file", "redis"])
def broker_dir(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The broker of the workers and ``taskq_app``: a folder, or a Redis URL."""
    if request.param == "file":
        return str(tmp_path / "broker")
    return f"{request.getfixturevalue('redis_url')}&liveness_timeout=2"


@pytest.fixture
def one_child(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """A worker with one process, so that a long task holds back the rest."""
    return start_worker("--events", modules=MODULES, concurrency=1)


def started(path: Path, count: int = 1) -> Callable[[], bool]:
    return lambda: sum(line.startswith("start") for line in lines(str(path))) >= count


def test_revoke_before_start_queued_scheduled_and_later_sent_never_run(
    one_child: WorkerProcess, taskq_app: App, tmp_path: Path
) -> None:
    busy, ran = tmp_path / "busy", tmp_path / "ran"
    blocker = itasks.sleeper.delay(str(busy), 1.5)
    wait_for(started(busy), 15, "the blocking task to start")
    queued = itasks.record.delay(str(ran), "queued")
    scheduled = itasks.record.apply_async((str(ran), "scheduled"), countdown=2.0)
    later_id = new_id()

    queued.revoke()
    taskq_app.control.revoke([scheduled.id, later_id])
    later = itasks.record.apply_async((str(ran), "later"), task_id=later_id)
    other = itasks.record.delay(str(ran), "other")

    assert other.get(timeout=15) == "other"
    for revoked in (queued, later, scheduled):
        wait_for(lambda r=revoked: r.state == REVOKED, 15, f"{revoked.id} to be REVOKED")
        with pytest.raises(TaskRevokedError, match="was revoked: not started"):
            revoked.get(timeout=1)
        assert revoked.ready() and not revoked.failed() and not revoked.successful()
    assert [line.split()[0] for line in lines(str(ran))] == ["other"]
    assert blocker.get(timeout=5) == "slept"
    wait_for(lambda: _events_of(taskq_app, queued.id) == ["revoked"], 10, "events")
    counts = taskq_app.broker.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.claimed, counts.dead) == (0, 0, 0, 0)


def test_a_running_task_revoked_without_terminate_finishes_and_a_failure_is_not_retried(
    start_worker: Callable[..., WorkerProcess], taskq_app: App, tmp_path: Path
) -> None:
    start_worker(modules=MODULES, concurrency=2)
    sleeping, failing = tmp_path / "sleeping", tmp_path / "failing"
    finishes = itasks.sleeper.delay(str(sleeping), 1.5)
    fails = itasks_revoke.slow_failure.delay(str(failing), 1.5)
    wait_for(lambda: started(sleeping)() and started(failing)(), 15, "both tasks to start")

    taskq_app.control.revoke([finishes.id, fails.id])

    assert finishes.get(timeout=15) == "slept"
    assert finishes.state == SUCCESS
    wait_for(lambda: fails.state == REVOKED, 15, "the failed revoked task to be REVOKED")
    with pytest.raises(TaskRevokedError, match=r"then failed .*ConnectionError.*not retried"):
        fails.get(timeout=1)
    assert len(lines(str(failing))) == 1  # no retry ran
    assert [line.split()[0] for line in lines(str(sleeping))] == ["start", "end"]


def test_terminate_kills_the_running_task_which_is_not_run_again(
    one_child: WorkerProcess, taskq_app: App, tmp_path: Path
) -> None:
    path = tmp_path / "long"
    long = itasks.sleeper.delay(str(path), 60)
    wait_for(started(path), 15, "the long task to start")
    pid = int(lines(str(path))[0].split()[1])

    long.revoke(terminate=True)

    wait_for(lambda: long.state == REVOKED, 15, "the terminated task to be REVOKED")
    with pytest.raises(TaskRevokedError, match="revoked with terminate"):
        long.get(timeout=1)
    wait_for(lambda: not _alive(pid), 10, f"the killed process {pid} to be gone")
    # The pool goes on with a new process, and the killed task is not run again.
    assert itasks.add.delay(2, 3).get(timeout=15) == 5
    assert lines(str(path)) == [f"start {pid}"]
    counts = taskq_app.broker.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.claimed, counts.dead) == (0, 0, 0, 0)
    assert "revoked with terminate: killing worker" in one_child.log()


def test_taskq_revoke_says_where_it_found_each_task(
    one_child: WorkerProcess, taskq_app: App, tmp_path: Path, broker_dir: str
) -> None:
    busy, ran = tmp_path / "busy", tmp_path / "ran"
    running = itasks.sleeper.delay(str(busy), 1.5)
    wait_for(started(busy), 15, "the blocking task to start")
    queued = itasks.record.delay(str(ran), "queued")
    scheduled = itasks.record.apply_async((str(ran), "scheduled"), countdown=60)
    unknown = new_id()

    ids = (running.id, queued.id, scheduled.id, unknown)
    done = _taskq("revoke", *ids, "--broker", broker_dir, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{running.id}: running, finishes (no --terminate)",
        f"{queued.id}: queued, will not start",
        f"{scheduled.id}: scheduled, will not start",
        f"{unknown}: unknown, revoked in case it is sent",
    ]
    assert running.get(timeout=15) == "slept"
    wait_for(lambda: queued.state == REVOKED, 15, "the queued task to be REVOKED")
    assert lines(str(ran)) == []
    shown = _taskq("result", queued.id, "--broker", broker_dir, cwd=tmp_path)
    assert shown.returncode == 1  # it will not succeed: scripts can tell
    assert '"status": "REVOKED"' in shown.stdout
    bad = _taskq("revoke", "../etc", "--broker", broker_dir, cwd=tmp_path)
    assert bad.returncode == 1
    assert "invalid task id '../etc'" in bad.stderr


def _taskq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _events_of(app: App, task_id: str) -> list[str]:
    events, _ = app.broker.read_events()
    return [e["event"] for e in events if e["id"] == task_id]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
