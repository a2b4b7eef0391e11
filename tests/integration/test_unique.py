"""Unique tasks through real `taskq worker` processes, on the file broker and on
Redis: a second identical call while the first is queued, waiting for a retry
or running is not enqueued and gets the first call's handle; once the first is
settled for good, the next call is enqueued."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for
from itasks import lines
from itasks_unique import unique_fail, unique_note, unique_retry_once

from taskq.app import App
from taskq.results import FAILURE, RETRY, SUCCESS
from taskq.testing import WorkerProcess

MODULES = "itasks,itasks_unique"


@pytest.fixture(params=["file", "redis"])
def broker_dir(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """The file broker's folder, or a Redis URL with a prefix of this test's own
    (``taskq.testing``'s ``worker`` and ``taskq_app`` pass it on as the broker)."""
    if request.param == "file":
        return tmp_path / "broker"
    return f"{request.getfixturevalue('redis_url')}&liveness_timeout=2"


@pytest.fixture
def start(start_worker: Callable[..., WorkerProcess]) -> Callable[[], WorkerProcess]:
    return lambda: start_worker(modules=MODULES)


def test_a_second_identical_call_while_the_first_is_queued_runs_once(
    taskq_app: App, start: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    path = str(tmp_path / "runs")

    first = unique_note.delay(path, 1)
    second = unique_note.delay(path, 1)
    other = unique_note.delay(path, 2)  # another argument: another key

    assert second.id == first.id and other.id != first.id
    start()
    assert (first.get(timeout=15), second.get(timeout=15), other.get(timeout=15)) == (1, 1, 2)
    assert sorted(lines(path)) == ["1", "2"]

    after = unique_note.delay(path, 1)  # the first is done: this one is enqueued
    assert after.id != first.id
    assert after.get(timeout=15) == 1
    assert sorted(lines(path)) == ["1", "1", "2"]


def test_an_explicit_unique_key_dedupes_calls_with_other_arguments(
    taskq_app: App, start: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    path = str(tmp_path / "runs")

    first = unique_note.apply_async((path, 1), unique_key="nightly-report")
    second = unique_note.apply_async((path, 2), unique_key="nightly-report")

    assert second.id == first.id
    start()
    assert second.get(timeout=15) == 1
    assert lines(path) == ["1"]


def test_a_retried_task_holds_its_key_until_it_finishes_for_good(
    taskq_app: App, start: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    path = str(tmp_path / "attempts")
    start()

    first = unique_retry_once.delay(path)
    wait_for(lambda: first.status == RETRY, 15, "the first attempt to ask for a retry")
    during = unique_retry_once.delay(path)  # its retry waits 1 s in scheduled/

    assert during.id == first.id
    assert during.get(timeout=15) == 1 and first.status == SUCCESS
    assert lines(path) == ["0", "1"]
    assert unique_retry_once.delay(path).id != first.id


def test_a_task_dead_lettered_for_good_lets_its_key_go(
    taskq_app: App, start: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    path = str(tmp_path / "runs")
    start()

    first = unique_fail.delay(path)
    with pytest.raises(ValueError, match="no luck"):
        first.get(timeout=15)
    assert first.status == FAILURE

    wait_for(lambda: unique_fail.delay(path).id != first.id, 15, "the key to be let go")
    wait_for(lambda: len(lines(path)) == 2, 15, "the second call to run")
