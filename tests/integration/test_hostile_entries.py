"""Real workers against what a broker may hold besides messages, and tasks that
misbehave in ways that used to take their worker process down."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import itasks_faults
import pytest
from helpers import wait_for
from itasks import lines

from taskq.app import App
from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
INTRUDERS = {
    "folder": lambda p: p.mkdir(),
    "fifo": os.mkfifo,
    "zero": lambda p: os.symlink("/dev/zero", p),
}


def plant(folder: Path, where: str) -> list[str]:
    """A folder, a FIFO and a link to /dev/zero under message-like names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n, (kind, make) in enumerate(INTRUDERS.items()):
        names.append(f"0-0000000000000000{n}-{where}-{kind}")
        make(folder / names[-1])
    return names


def test_non_files_in_ready_and_in_a_dead_consumers_claims_are_quarantined(
    taskq_app: App, start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    assert taskq_app.key  # made while the broker is empty
    queue = taskq_app.broker.queue_dir("default")
    dead_consumer = queue / "claimed" / "gone-1-0-abcdef"
    planted = plant(queue / "ready", "ready") + plant(dead_consumer, "claimed")
    (dead_consumer / ".lock").touch()  # nobody holds it: its worker is gone
    log = tmp_path / "ran"
    after = itasks_faults.note_padded.delay(str(log), 1, "")

    worker = start_worker(modules="itasks_faults")  # recovers the dead consumer at start
    wait_for(lambda: lines(str(log)) == ["1"], timeout=20, what="the task behind the intruders")
    wait_for(
        lambda: len(taskq_app.broker.dead_letters()) == len(planted),
        timeout=20,
        what="every intruder in dead/",
    )

    letters = taskq_app.broker.dead_letters()
    assert {letter.record["reason"] for letter in letters} == {"unsafe-entry"}
    assert sorted(letter.name for letter in letters) == sorted(planted)
    assert worker.popen.poll() is None
    assert after.id  # it ran (the log), and nothing of the intruders was read
    # A second worker starts on this broker (it used to exit 1 until someone cleaned up).
    second = start_worker(modules="itasks_faults")
    assert second.popen.poll() is None
    # `taskq dead purge` clears them, the folder too.
    purged = subprocess.run(
        [sys.executable, "-m", "taskq", "--broker", str(broker_dir), "dead", "purge", "--yes"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert purged.returncode == 0, purged.stderr
    assert taskq_app.broker.dead_letters() == []
    assert os.listdir(queue / "dead") == []


def test_an_exception_whose_str_raises_is_reported_as_the_users_error(
    taskq_app: App, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    worker = start_worker(modules="itasks_faults", concurrency=1)
    children = worker.child_pids()

    result = itasks_faults.raise_unprintable.delay(str(log))

    with pytest.raises(itasks_faults.UnprintableError):
        result.get(timeout=20)
    wait_for(lambda: taskq_app.broker.dead_letters(), timeout=10, what="the dead letter")
    [letter] = taskq_app.broker.dead_letters()
    assert letter.record["reason"] == "max-retries"  # not poison: the child did not die
    assert letter.record["exc_type"] == "UnprintableError"
    assert "str() of the exception raised RuntimeError" in letter.record["exc_message"]
    assert lines(str(log)) == ["ran"]
    assert worker.child_pids() == children


def test_a_forked_grandchild_does_not_keep_its_dead_workers_claim(
    taskq_app: App, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    log, pidfile = tmp_path / "ran", tmp_path / "grandchild"
    start_worker(modules="itasks_faults", concurrency=1)
    try:
        result = itasks_faults.fork_then_die.delay(str(log), str(pidfile))

        # The first attempt's worker died with its grandchild alive: the claim is
        # recovered (the lock went with the worker) and the retry runs at once.
        assert result.get(timeout=20) == "second attempt"
        [grandchild] = (int(pid) for pid in lines(str(pidfile)))
        os.kill(grandchild, 0)  # still alive all along
        assert lines(str(log)) == ["attempt", "attempt"]
    finally:
        for pid in lines(str(pidfile)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
