"""``@task(rate_limit=...)`` in real workers: one rate shared by every worker of a
file broker (Celery's limit is each worker's own; two workers there would run
twice the rate). Runs are counted from the file the task appends to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from itasks_rates import PER_MINUTE, limited
from rate_load import assert_the_rate_holds, load_and_measure

from taskq.testing import WorkerProcess


def test_two_workers_share_one_rate_over_a_minute_of_load_at_twice_it(
    start_worker: Callable[..., WorkerProcess], taskq_app: object, tmp_path: Path
) -> None:
    workers = [start_worker(modules="itasks,itasks_rates", concurrency=2) for _ in range(2)]
    path = str(tmp_path / "runs")

    runs = load_and_measure(limited, path, PER_MINUTE / 60, 60.0)

    assert_the_rate_holds(runs, PER_MINUTE / 60, 60.0)
    assert all(w.popen.poll() is None for w in workers)
