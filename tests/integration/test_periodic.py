"""Periodic tasks run by real `taskq worker` processes: each tick once with two
workers on one broker, the schedule passing on when its owner is SIGKILLed,
missed ticks by policy, ``taskq schedule`` and ``--no-schedule``.

Runs are counted from marker files the task writes (``itasks_periodic``), one
per run, named after the tick's message id: a tick run twice shows as two files.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for

from taskq.app import App
from taskq.scheduler import tick_id
from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


@pytest.fixture
def start(worker: StartWorker, runs_dir: Path, taskq_app: App) -> StartWorker:
    """Start a worker on the test's broker; its tasks mark their runs in ``runs_dir``."""

    def start_(*args: str, modules: str = "itasks_periodic", ready: bool = True) -> WorkerProcess:
        env = {"PERIODIC_RUNS": str(runs_dir)}
        return worker(modules, *args, concurrency=1, cwd=HERE, env=env, ready=ready)

    return start_


def runs(folder: Path) -> list[tuple[str, int]]:
    """(tick message id, pid of the process that ran it), one per run."""
    found = []
    for path in folder.iterdir():
        task_id, pid, _ = path.name.split(".")
        found.append((task_id, int(pid)))
    return found


def tick_of(task_id: str) -> float:
    return int(task_id.rsplit("-", 1)[1]) / 1000


def doubled(ran: list[tuple[str, int]]) -> dict[str, int]:
    return {t: n for t, n in Counter(t for t, _ in ran).items() if n > 1}


def test_two_workers_on_one_broker_run_an_every_second_task_once_per_tick(
    start: StartWorker, runs_dir: Path
) -> None:
    start()
    start()
    wait_for(lambda: runs(runs_dir), 20, "the first run")
    begin = math.ceil(time.time()) + 1
    end = begin + 10  # ten seconds of ticks, with both workers live throughout
    wait_for(lambda: any(tick_of(t) >= end + 1 for t, _ in runs(runs_dir)), 30, "ten seconds")
    ran = runs(runs_dir)
    window = [t for t, _ in ran if begin <= tick_of(t) < end]
    assert 9 <= len(window) <= 11, sorted(window)
    assert doubled(ran) == {}


def test_the_schedule_goes_on_when_its_owning_worker_is_sigkilled(
    start: StartWorker, runs_dir: Path
) -> None:
    owner = start()
    wait_for(lambda: runs(runs_dir), 20, "the first run, by the only worker")
    heir = start()
    wait_for(lambda: (owner.state() or {}).get("scheduler"), 10, "the owner's scheduler pid")
    state = owner.state()
    assert state is not None
    owner.kill([*owner.child_pids(), state["scheduler"]])  # every process of it, by pid
    assert owner.popen.returncode is not None
    killed_at = time.time()
    wait_for(
        lambda: len([t for t, _ in runs(runs_dir) if tick_of(t) > killed_at]) >= 3,
        20,
        "three ticks after the kill",
    )
    ran = runs(runs_dir)
    after = {pid for t, pid in ran if tick_of(t) > killed_at}
    assert after <= set(heir.child_pids())
    assert doubled(ran) == {}
    assert "now runs the schedule" in heir.log()


def hour_ago_ticks(app: App, tasks: list[str]) -> float:
    """Record, for each task, a tick three hours before the latest hourly one; return it."""
    if time.time() % 3600 < 5:  # just at the hour, the latest tick is on time, not missed
        time.sleep(5)
    latest = math.floor(time.time() / 3600) * 3600
    for task in tasks:
        assert app.broker.record_tick(task, latest - 3 * 3600)
    return latest


def test_missed_ticks_run_once_late_or_are_skipped_as_each_task_says(
    start: StartWorker, runs_dir: Path, taskq_app: App
) -> None:
    once, skip = "itasks_missed.hourly_once", "itasks_missed.hourly_skip"
    latest = hour_ago_ticks(taskq_app, [once, skip])
    worker = start(modules="itasks_missed")
    broker = taskq_app.broker
    wait_for(lambda: runs(runs_dir), 20, "the run of the missed tick")
    wait_for(lambda: "skipped (missed='skip')" in worker.log(), 20, "the skip to be logged")
    assert [t for t, _ in runs(runs_dir)] == [tick_id(once, latest)]
    assert broker.last_tick(once) == latest
    assert broker.last_tick(skip) == latest - 3 * 3600  # its last run: the skip ran nothing
    assert broker.find(tick_id(skip, latest)) is None
    log = worker.log()
    assert f"{once} missed 3 tick(s)" in log and "running it once now" in log
    assert f"{skip} missed 3 tick(s)" in log and "skipped (missed='skip')" in log


def taskq(broker: object, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskq", "--broker", str(broker), *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PERIODIC_RUNS": "unused"},
    )


def test_taskq_schedule_lists_next_and_last_runs_from_the_broker(
    taskq_app: App, broker_dir: Path
) -> None:
    once, skip = "itasks_missed.hourly_once", "itasks_missed.hourly_skip"
    taskq_app.broker.record_tick(once, 7200.0)  # 1970-01-01T02:00:00Z
    listed = taskq(broker_dir, "schedule", "-A", "itasks_missed", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["task"]: row for row in json.loads(listed.stdout)}
    assert rows[once]["last_run"] == "1970-01-01T02:00:00+00:00"
    assert rows[skip]["last_run"] is None and rows[skip]["missed"] == "skip"
    next_hour = (math.floor(time.time() / 3600) + 1) * 3600
    assert rows[once]["next_run"] in {
        time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
        for t in (next_hour, next_hour + 3600)  # the hour may turn meanwhile
    }
    text = taskq(broker_dir, "schedule", "-A", "itasks_missed")
    assert "every 3600s" in text.stdout and "1970-01-01T02:00:00+00:00" in text.stdout
    bad = taskq(broker_dir, "schedule", "-A", "no_such_module")
    assert bad.returncode == 1 and "no_such_module" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_worker_with_no_schedule_runs_no_scheduler(
    start: StartWorker, runs_dir: Path, taskq_app: App
) -> None:
    worker = start("--no-schedule")
    first = worker.state()
    assert first is not None
    # Two more states published (a second apart): a scheduler would have started
    # and run its every-second task by then.
    wait_for(lambda: (worker.state() or first)["updated"] > first["updated"] + 1.5, 10, "states")
    state = worker.state()
    assert state is not None and state["scheduler"] is None
    assert "Schedule:" not in worker.log()
    assert list(runs_dir.iterdir()) == []
    assert taskq_app.broker.last_tick("itasks_periodic.beat") is None


SCHEDULED_SOURCE = """
import os

from taskq import periodic


@periodic(every=1, bind=True, max_retries=0, name="proj.{name}")
def {name}(self):
    folder = os.environ["PERIODIC_RUNS"]
    path = os.path.join(folder, f"{{self.request.id}}.{{os.getpid()}}.{{os.urandom(4).hex()}}")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
"""


def test_a_reload_makes_the_schedule_follow_the_new_code(
    worker: StartWorker, runs_dir: Path, taskq_app: App, tmp_path: Path
) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    module = proj / "sched.py"
    module.write_text(SCHEDULED_SOURCE.format(name="old_beat"))
    env = {"PERIODIC_RUNS": str(runs_dir)}
    started = worker("sched", "--reload", concurrency=1, cwd=proj, env=env)
    old, new = tick_id("proj.old_beat", 0)[:21], tick_id("proj.new_beat", 0)[:21]
    wait_for(lambda: any(t.startswith(old) for t, _ in runs(runs_dir)), 20, "old_beat's run")
    module.write_text(SCHEDULED_SOURCE.format(name="new_beat"))
    wait_for(lambda: any(t.startswith(new) for t, _ in runs(runs_dir)), 30, "new_beat's run")
    first_new = min(tick_of(t) for t, _ in runs(runs_dir) if t.startswith(new))
    wait_for(
        lambda: any(tick_of(t) >= first_new + 2 for t, _ in runs(runs_dir)), 20, "two more ticks"
    )
    assert not [t for t, _ in runs(runs_dir) if t.startswith(old) and tick_of(t) > first_new]
    assert doubled(runs(runs_dir)) == {}
    assert "Reloaded after changes to" in started.log()
