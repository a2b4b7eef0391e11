"""``@task(rate_limit=...)`` on the Redis broker: two workers share one rate, slots
taken on the Redis server's clock. Shorter than the file broker's minute."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from itasks_rates import PER_SECOND, limited_fast
from rate_load import assert_the_rate_holds, load_and_measure

from taskq.testing import WorkerProcess


@pytest.fixture
def broker_dir(request: pytest.FixtureRequest) -> str:
    """The workers' and ``taskq_app``'s broker: a Redis URL of this test's own prefix."""
    return str(request.getfixturevalue("redis_url"))


def test_two_redis_workers_share_one_rate_under_load_at_twice_it(
    start_worker: Callable[..., WorkerProcess], taskq_app: object, tmp_path: Path
) -> None:
    workers = [start_worker(modules="itasks,itasks_rates", concurrency=2) for _ in range(2)]
    path = str(tmp_path / "runs")

    runs = load_and_measure(limited_fast, path, PER_SECOND, 10.0)

    assert_the_rate_holds(runs, PER_SECOND, 10.0)
    assert all(w.popen.poll() is None for w in workers)
