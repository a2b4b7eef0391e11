"""The periodic tasks' integration tests again, with the workers on Redis (a key
prefix of the test's own; skipped, saying why, when Redis does not answer)."""

from __future__ import annotations

import pytest
from test_periodic import (
    runs_dir,
    start,
    test_missed_ticks_run_once_late_or_are_skipped_as_each_task_says,
    test_the_schedule_goes_on_when_its_owning_worker_is_sigkilled,
    test_two_workers_on_one_broker_run_an_every_second_task_once_per_tick,
)

__all__ = [  # the fixtures and tests of test_periodic, collected here with this broker_dir
    "runs_dir",
    "start",
    "test_missed_ticks_run_once_late_or_are_skipped_as_each_task_says",
    "test_the_schedule_goes_on_when_its_owning_worker_is_sigkilled",
    "test_two_workers_on_one_broker_run_an_every_second_task_once_per_tick",
]


@pytest.fixture
def broker_dir(request: pytest.FixtureRequest) -> str:
    """The workers' and ``taskq_app``'s broker: this test's Redis prefix, not a folder."""
    url: str = request.getfixturevalue("redis_url")
    return f"{url}&liveness_timeout=2"
