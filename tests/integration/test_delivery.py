"""Delivery through a real `taskq worker`: exactly once under load, in order,
not before its time, never after it expired."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import itasks
import itasks_delivery
import pytest
from helpers import wait_for

from taskq.app import App
from taskq.brokers.names import eta_of, id_of
from taskq.errors import TaskExpired

HERE = Path(__file__).parent
MODULES = "itasks,itasks_delivery"

PRODUCER = """
import json, sys
from taskq.app import App, set_default_app
import itasks_delivery

broker, path, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
set_default_app(App(broker=broker))
ids = {itasks_delivery.square.delay(path, n).id: n for n in range(first, first + count)}
print(json.dumps(ids))
"""


def queue_files(broker_dir: Path, state: str, queue: str = "default") -> list[str]:
    folder = broker_dir / "queues" / queue / state
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_thousand_tasks_from_four_producers_each_run_exactly_once(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES, concurrency=2)
    path = str(tmp_path / "runs")
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(broker_dir), path, str(i * 250), "250"],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    ids: dict[str, int] = {}
    try:
        for producer in producers:
            out, err = producer.communicate(timeout=60)
            assert producer.returncode == 0, err.decode()
            ids.update(json.loads(out))
    finally:
        for producer in producers:
            if producer.poll() is None:
                producer.kill()
                producer.wait(10)
    assert sorted(ids.values()) == list(range(1000))

    for task_id, n in ids.items():
        assert taskq_app.AsyncResult(task_id).get(timeout=60) == n * n

    runs = Counter(int(line) for line in itasks.lines(path))
    assert sorted(runs) == list(range(1000))
    assert [n for n, times in runs.items() if times != 1] == []
    assert queue_files(broker_dir, "ready") == []
    assert queue_files(broker_dir, "dead") == []


def test_higher_priority_runs_first_then_enqueue_order(
    start_worker, tmp_path: Path, taskq_app: App
) -> None:
    path = str(tmp_path / "order")
    results = []
    for i in range(1, 4):
        results.append(itasks.record_low.delay(path, f"low-{i}"))
        results.append(itasks.record_high.delay(path, f"high-{i}"))
        results.append(itasks.record_low.apply_async((path, f"mid-{i}"), priority=5))
    start_worker(modules=MODULES, concurrency=1)
    for result in results:
        result.get(timeout=20)
    assert itasks.lines(path) == [
        "high-1",
        "high-2",
        "high-3",
        "mid-1",
        "mid-2",
        "mid-3",
        "low-1",
        "low-2",
        "low-3",
    ]


def test_countdown_and_eta_start_on_time_not_before(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES)
    by_countdown, by_eta = str(tmp_path / "countdown"), str(tmp_path / "eta")
    first = itasks.record.apply_async((by_countdown, "c"), countdown=1.5)
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    second = itasks.record.apply_async((by_eta, "e"), eta=at)

    # Both wait in scheduled/, named by their ETA.
    scheduled = {id_of(name): eta_of(name) for name in queue_files(broker_dir, "scheduled")}
    assert set(scheduled) == {first.id, second.id}
    assert abs(scheduled[second.id] - at.timestamp()) < 1e-5

    assert first.get(timeout=10) == "c"
    assert second.get(timeout=10) == "e"
    for path, task_id in ((by_countdown, first.id), (by_eta, second.id)):
        (line,) = itasks.lines(path)
        started = float(line.split()[1])
        eta = scheduled[task_id]
        assert eta <= started <= eta + 1.0, (eta, started)


def test_message_expired_before_a_worker_took_it_is_dropped_unrun(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    path = str(tmp_path / "runs")
    expired = itasks.record.apply_async((path, "expired"), expires=0.2)
    (name,) = queue_files(broker_dir, "ready")
    time.sleep(0.3)  # past `expires` before any worker exists

    w = start_worker(modules=MODULES)
    wait_for(
        lambda: f"[{expired.id}] expired before it could run: dropped" in w.log(),
        timeout=10,
        what="the worker's log line about the expired message",
    )
    # A task sent afterwards runs: the worker went past the expired one.
    assert itasks.add.delay(1, 2).get(timeout=10) == 3

    assert itasks.lines(path) == []
    with pytest.raises(TaskExpired, match="expired before a worker could start it"):
        expired.get(timeout=5)
    assert name not in queue_files(broker_dir, "ready")
    assert queue_files(broker_dir, "dead") == []
    assert taskq_app.broker.find(expired.id) is None


def test_batch_publishing_with_map_and_enqueue_many_runs_each_call_once(
    start_worker, tmp_path: Path, taskq_app: App
) -> None:
    path = str(tmp_path / "runs")
    mapped = itasks_delivery.square.map([(path, n) for n in range(50)])
    enqueued = taskq_app.enqueue_many(
        [(itasks_delivery.square, (path, n), {}) for n in range(50, 100)]
    )
    assert len({r.id for r in mapped + enqueued}) == 100

    start_worker(modules=MODULES)
    for n, result in enumerate(mapped + enqueued):
        assert result.get(timeout=20) == n * n
    runs = Counter(int(line) for line in itasks.lines(path))
    assert runs == Counter(range(100))
