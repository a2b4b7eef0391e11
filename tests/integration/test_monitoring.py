"""Seeing a worker live: ``taskq events``, ``taskq inspect``, Prometheus metrics,
against real worker processes on a real broker."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import itasks
import pytest
from helpers import wait_for

from taskq.testing import WorkerProcess

HERE = Path(__file__).parent


def taskq(broker_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "--broker", str(broker_dir), *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done


def events_of(broker_dir: Path, *args: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in taskq(broker_dir, "events", *args).stdout.splitlines()]


def kinds(events: list[dict[str, object]], task_id: str) -> list[tuple[object, object]]:
    return [(e["event"], e["attempt"]) for e in events if e["id"] == task_id]


@pytest.fixture
def events_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events on for this test's producer (the default app) and workers."""
    monkeypatch.setenv("TASKQ_EVENTS", "true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_events_of_a_success_and_of_a_retried_then_dead_task_come_in_order(
    events_on: None, start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    start_worker()
    ok = itasks.add.delay(2, 3)
    doomed = itasks.always_fails.delay(str(tmp_path / "attempts"))  # 3 attempts, then dead
    assert ok.get(timeout=20) == 5

    wait_for(
        lambda: ("dead-lettered", 3) in kinds(events_of(broker_dir), doomed.id),
        20,
        "the dead-lettered event",
    )
    events = events_of(broker_dir)

    assert kinds(events, ok.id) == [("published", 1), ("started", 1), ("succeeded", 1)]
    assert kinds(events, doomed.id) == [
        ("published", 1),
        ("started", 1),
        ("retried", 1),
        ("started", 2),
        ("retried", 2),
        ("started", 3),
        ("failed", 3),
        ("dead-lettered", 3),
    ]
    succeeded = next(e for e in events if e["id"] == ok.id and e["event"] == "succeeded")
    assert succeeded["task"] == "itasks.add" and succeeded["queue"] == "default"
    assert isinstance(succeeded["runtime"], float) and succeeded["worker"]
    failed = next(e for e in events if e["event"] == "failed")
    assert "ValueError" in str(failed["error"]) or "Error" in str(failed["error"])
    assert {e["task"] for e in events_of(broker_dir, "--task", "itasks.add")} == {"itasks.add"}
    assert events_of(broker_dir, "--queue", "elsewhere") == []


def test_events_follow_prints_a_new_event_and_stops_on_sigterm(
    events_on: None, start_worker: Callable[..., WorkerProcess], broker_dir: Path
) -> None:
    worker = start_worker()
    follower = subprocess.Popen(
        [sys.executable, "-m", "taskq", "--broker", str(broker_dir), "events", "--follow"],
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # let it reach the end of the (empty) log: what follows is new
        result = itasks.add.delay(1, 1)
        seen: list[dict[str, object]] = []
        pending = b""
        deadline = time.monotonic() + 20
        assert follower.stdout is not None
        while not any(e["id"] == result.id and e["event"] == "succeeded" for e in seen):
            assert time.monotonic() < deadline, f"follow printed only {seen}; log:\n{worker.log()}"
            ready, _, _ = select.select([follower.stdout], [], [], 1.0)
            if ready:  # read the pipe itself: a buffered readline would hide lines from select
                pending += os.read(follower.stdout.fileno(), 65536)
                *lines, pending = pending.split(b"\n")
                seen += [json.loads(line) for line in lines]

        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
        assert follower.stdout is not None
        follower.stdout.close()
    assert [e["event"] for e in seen if e["id"] == result.id] == [
        "published",
        "started",
        "succeeded",
    ]


def test_a_task_that_kills_its_process_is_recovered_in_the_events_and_the_metrics(
    events_on: None, start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    start_worker("--metrics-port", str(port))
    poison = itasks.kills_itself.delay(str(tmp_path / "attempts"))  # 2 attempts, then dead

    wait_for(
        lambda: ("dead-lettered", 2) in kinds(events_of(broker_dir), poison.id),
        30,
        "the poison message dead-lettered",
    )

    # A process killed mid-task loses what it had not written yet: its "started".
    written = [k for k in kinds(events_of(broker_dir), poison.id) if k[0] != "started"]
    assert written == [
        ("published", 1),
        ("recovered", 1),
        ("retried", 1),
        ("recovered", 2),
        ("failed", 2),
        ("dead-lettered", 2),
    ]
    wait_for(
        lambda: 'taskq_recoveries_total{task="itasks.kills_itself"} 2.0' in scrape(port),
        10,
        "two recoveries counted",
    )
    text = scrape(port)
    assert 'taskq_dead_letters_total{reason="poison",task="itasks.kills_itself"} 1.0' in text


def test_metrics_count_the_tasks_a_real_worker_ran(
    start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    start_worker("--metrics-port", str(port))
    results = [itasks.add.delay(n, n) for n in range(3)]
    itasks.always_fails.delay(str(tmp_path / "attempts"))
    assert [r.get(timeout=20) for r in results] == [0, 2, 4]

    wait_for(lambda: "taskq_dead_letters_total{" in scrape(port), 20, "the dead letter counted")
    text = scrape(port)

    assert 'taskq_tasks_total{outcome="succeeded",task="itasks.add"} 3.0' in text
    assert 'taskq_tasks_total{outcome="retried",task="itasks.always_fails"} 2.0' in text
    assert 'taskq_tasks_total{outcome="failed",task="itasks.always_fails"} 1.0' in text
    assert 'taskq_retries_total{task="itasks.always_fails"} 2.0' in text
    assert 'taskq_dead_letters_total{reason="max-retries",task="itasks.always_fails"} 1.0' in text
    assert 'taskq_task_runtime_seconds_count{task="itasks.add"} 3.0' in text
    assert "taskq_worker_processes 2.0" in text
    wait_for(
        lambda: 'taskq_queue_messages{queue="default",state="dead"} 1.0' in scrape(port),
        10,
        "the dead letter in the queue depths",
    )


def test_metrics_keep_the_counts_of_worker_processes_that_were_replaced(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    start_worker("--metrics-port", str(port), "--max-tasks-per-child", "1", concurrency=1)

    results = [itasks.add.delay(n, 1) for n in range(3)]  # each by a new process
    assert [r.get(timeout=30) for r in results] == [1, 2, 3]

    wait_for(
        lambda: 'taskq_tasks_total{outcome="succeeded",task="itasks.add"} 3.0' in scrape(port),
        20,
        "three tasks counted over three processes",
    )


def test_inspect_shows_a_running_task_with_its_attempt_and_time_limit(
    start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    worker = start_worker()
    notes = tmp_path / "notes"
    itasks.sleeper.delay(str(notes), 30)
    wait_for(lambda: itasks.lines(str(notes)), 20, "the task to start")

    def running() -> list[dict[str, object]]:
        processes = json.loads(taskq(broker_dir, "inspect", "--json").stdout)
        return [p for p in processes if p.get("task") == "itasks.sleeper"]

    wait_for(running, 10, "inspect to show the task")
    [process] = running()
    text = taskq(broker_dir, "inspect").stdout
    status = taskq(broker_dir, "status", "--active").stdout
    worker.kill()

    assert process["attempt"] == 1 and process["time_limit"] == 3600
    assert process["pid"] in worker.child_pids() or isinstance(process["pid"], int)
    assert "itasks.sleeper[" in text and "attempt 1, time limit 3600 s" in text
    assert "attempt 1, time limit 3600 s" in status


@pytest.mark.parametrize("command", ["events", "inspect"])
def test_help_of_the_monitoring_commands_creates_no_broker(tmp_path: Path, command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskq", command, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: python -m taskq {command}")
    assert list(tmp_path.iterdir()) == []


def test_a_metrics_port_in_use_stops_the_worker_with_one_clear_line(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_worker("--metrics-port", str(port), ready=False)
        code = worker.wait(30)

    assert code == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in worker.log()
