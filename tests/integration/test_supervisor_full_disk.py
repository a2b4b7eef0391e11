"""A full disk under a running worker: the supervisor logs each failing chore
once, goes on supervising, and catches up when space returns.

The broker lives on a 2 MB tmpfs mounted for the test (root only), filled to
the last byte by a filler file; deleting the filler gives the space back.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import itasks
import itasks_faults
import pytest
from helpers import fill_disk, wait_for

from taskq.app import App
from taskq.results import SUCCESS
from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
Start = Callable[..., WorkerProcess]
STATUS_FAILS = "Cannot publish the status into workers/"
SETTLING_FAILS = "Cannot settle the messages of dead workers"


@pytest.fixture
def broker_dir(small_disk: Path) -> Path:
    """The broker on a small tmpfs of its own (overrides the plugin's fixture)."""
    return small_disk / "broker"


def children_of(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def count(w: WorkerProcess, text: str) -> int:
    return w.log().count(text)


def test_supervisor_survives_full_disk_keeps_respawning_and_catches_up(
    start_worker: Start, broker_dir: Path
) -> None:
    w = start_worker(concurrency=1)
    [child] = w.child_pids()
    filler = fill_disk(broker_dir.parent)

    wait_for(lambda: count(w, STATUS_FAILS), 5, "the failing status to be logged")
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: children_of(w.pid) - {child}, 10, "a new child")
    respawned = children_of(w.pid) - {child}
    wait_for(lambda: "Cannot publish" in w.log() and "died with exit code -9" in w.log(), 5, "log")
    assert w.popen.poll() is None
    assert count(w, STATUS_FAILS) == 1  # once, though it failed every second

    filler.unlink()
    wait_for(lambda: "Can publish the status into workers/ again" in w.log(), 5, "recovery line")
    wait_for(lambda: set(w.child_pids()) == respawned, 5, "the status to show the new child")
    assert w.stop() == 0


def test_recovery_blocked_by_full_disk_loses_nothing_and_finishes_when_space_returns(
    start_worker: Start, taskq_app: App, broker_dir: Path, tmp_path: Path
) -> None:
    w = start_worker(modules="itasks,itasks_faults", concurrency=1)
    runs = str(tmp_path / "runs")  # off the full disk
    result = itasks_faults.hangs_first_time.delay(runs)
    wait_for(lambda: itasks.lines(runs), 10, "the first attempt to start")
    [victim] = w.child_pids()
    filler = fill_disk(broker_dir.parent)

    os.kill(victim, signal.SIGKILL)  # its settling must store a RETRY result: no space
    wait_for(lambda: count(w, SETTLING_FAILS), 5, "the failing settling to be logged")
    # The message stays claimed by the dead consumer while sweeps fail every second.
    wait_for(lambda: count(w, STATUS_FAILS), 5, "a failing sweep round")
    claimed = [p for p in (broker_dir / "queues" / "default" / "claimed").glob("*/*")]
    assert [p.name for p in claimed if p.name != ".lock"] != []
    assert count(w, SETTLING_FAILS) == 1
    assert w.popen.poll() is None

    filler.unlink()
    assert result.get(timeout=20) == 1  # the second attempt, counted once
    assert result.status == SUCCESS
    assert [line.split()[1] for line in itasks.lines(runs)] == ["0", "1"]
    assert "Can settle the messages of dead workers again" in w.log()
    assert w.stop() == 0
