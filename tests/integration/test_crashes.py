"""Processes that die: a child, the whole worker, a poison task, a module that cannot load."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
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


def _starts(path: str) -> list[str]:
    return [line for line in itasks.lines(path) if line.startswith("start")]


def test_sigkilled_child_task_is_redelivered_to_a_new_child(start_worker, tmp_path: Path) -> None:
    w = start_worker(modules=MODULES, concurrency=1)
    first_child = w.child_pids()
    path = str(tmp_path / "runs")
    result = itasks.sleeper.delay(path, 1.0)

    started = wait_until(lambda: _starts(path), what="task start")
    victim = int(started[0].split()[1])
    assert victim in first_child
    os.kill(victim, signal.SIGKILL)

    assert result.get(timeout=20) == "slept"
    assert result.status == SUCCESS
    runs = itasks.lines(path)
    assert [line.split()[0] for line in runs] == ["start", "start", "end"]
    rerun_pid = int(runs[1].split()[1])
    assert rerun_pid != victim
    assert runs[2] == f"end {rerun_pid}"
    # The supervisor replaced the dead child, and the replacement ran the task.
    pids = wait_until(lambda: [p for p in w.child_pids() if p != victim], what="new child")
    assert pids == [rerun_pid]
    assert re.search(rf"pid {victim}\) died with exit code -9", w.log()), w.log()
    assert w.popen.poll() is None


def test_whole_worker_sigkilled_loses_no_message(
    start_worker, taskq_app: App, tmp_path: Path
) -> None:
    w = start_worker(modules=MODULES, concurrency=2)
    path = str(tmp_path / "runs")
    results = [itasks_crash.tracked.delay(path, 1.0) for _ in range(6)]
    ids = {r.id for r in results}

    wait_until(lambda: len(_starts(path)) >= 2, what="two tasks in flight")
    w.kill()
    counts = taskq_app.broker.counts()["default"]
    assert counts.claimed == 2  # in flight when the worker died
    assert counts.ready == 4  # never started
    assert not [line for line in itasks.lines(path) if line.startswith("end")]

    start_worker(modules=MODULES, concurrency=2)
    assert {r.get(timeout=30) for r in results} == ids
    finished = {line.split()[1] for line in itasks.lines(path) if line.startswith("end")}
    assert finished == ids
    assert all(r.status == SUCCESS for r in results)
    # Each result is stored before its message is acked: wait for the last acks.
    wait_until(
        lambda: astuple(taskq_app.broker.counts()["default"]) == (0, 0, 0, 0),
        what="queue drained",
    )


def test_task_killing_its_worker_is_dead_lettered_as_poison(
    start_worker, taskq_app: App, tmp_path: Path
) -> None:
    w = start_worker(modules=MODULES, concurrency=2)
    path = str(tmp_path / "attempts")
    result = itasks.kills_itself.delay(path)

    with pytest.raises(taskq.WorkerLost):
        result.get(timeout=20)
    attempts = itasks.lines(path)
    assert len(attempts) == 2  # max_retries=1: two attempts, then no more
    assert len({line.split()[1] for line in attempts}) == 2  # each killed its own process
    # The result is stored before the message moves to dead/: wait for the move.
    [letter] = wait_until(taskq_app.broker.dead_letters, what="dead letter")
    assert letter.id == result.id
    assert letter.record["reason"] == "poison"
    assert [a["outcome"] for a in letter.record["attempts"]] == ["killed", "killed"]
    # The pool keeps serving other tasks.
    assert itasks.add.delay(2, 3).get(timeout=10) == 5
    time.sleep(0.5)
    assert len(itasks.lines(path)) == 2
    assert w.popen.poll() is None


# A module that does not import, and the error a worker logs for it.
BROKEN_MODULES = pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1\n\ndef broken(:\n    pass\n", r"SyntaxError in .*badmod\.py, line 3"),
        (
            "x = 1\nraise RuntimeError('no config')\n",
            r"RuntimeError: no config \(.*badmod\.py, line 2\)",
        ),
    ],
    ids=["syntax-error", "raises"],
)


@BROKEN_MODULES
def test_module_failing_to_import_at_start_stops_the_worker_with_code_3(
    worker, tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "badmod.py").write_text(source)
    w = worker("badmod", concurrency=1, cwd=tmp_path, ready=False)

    assert w.popen.wait(timeout=15) == 3, w.log()
    assert re.search(expected + r".*Not starting", w.log()), w.log()


@BROKEN_MODULES
def test_module_failing_to_import_later_leaves_supervisor_up_with_backoff(
    worker, tmp_path: Path, source: str, expected: str
) -> None:
    module = tmp_path / "badmod.py"
    module.write_text("x = 1\n")
    w = worker("badmod", concurrency=1, cwd=tmp_path)
    module.write_text(source)  # a broken deploy while the worker runs
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    for pid in w.child_pids():
        os.kill(pid, signal.SIGKILL)  # its replacement imports the broken module

    wait_until(lambda: re.search(expected, w.log()), what="import error logged")
    delays = wait_until(
        lambda: (
            [float(d) for d in re.findall(r"keeps dying: respawning in ([\d.]+) s", w.log())]
            if w.log().count("keeps dying") >= 3
            else None
        ),
        what="three back-off lines",
    )
    assert delays == sorted(delays) and delays[-1] > delays[0]  # backs off, does not spin
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert w.popen.poll() is None, w.log()
        time.sleep(0.1)
    assert w.stop(timeout=15) == 0
