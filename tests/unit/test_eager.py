"""Eager mode (``App(eager=True)``, ``TASKQ_EAGER=1``): ``.delay()`` runs the
task in the caller, through the same serialization round trip as a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskq import App
from taskq.errors import SerializationError
from taskq.results import FAILURE, SUCCESS


def declare(app: App, fn: Any, **options: Any) -> Any:
    return app.task(fn, name=f"tests.eager.{fn.__name__}", **options)


def add(a: int, b: int) -> int:
    return a + b


def refuse(order: str) -> None:
    raise KeyError(order)


def flaky(self: Any) -> int:
    if self.request.retries < 2:
        self.retry(countdown=3600)
    return self.request.retries


def fan_out(n: int) -> list[int]:
    return [add_task.delay(i, i).get(timeout=1) for i in range(n)]


add_task: Any = None


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not today")


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(broker=str(tmp_path / "never-created"), eager=True)


def test_delay_runs_the_task_at_once_and_never_touches_the_configured_broker(
    app: App, tmp_path: Path
) -> None:
    task = declare(app, add)
    result = task.delay(2, 3)
    assert result.status == SUCCESS and result.get(timeout=0) == 5
    assert [r.get(timeout=0) for r in task.map([(1, 1), (2, 2)])] == [2, 4]
    assert not (tmp_path / "never-created").exists()


def test_an_argument_that_cannot_be_serialized_fails_in_the_caller(app: App) -> None:
    task = declare(app, add)
    with pytest.raises(SerializationError, match=r"tests\.eager\.add"):
        task.delay(_Unpicklable(), 1)


def test_a_failure_is_stored_and_raised_by_get_and_retries_run_without_their_backoff(
    app: App,
) -> None:
    failed = declare(app, refuse, max_retries=0).delay("o-17")
    assert failed.status == FAILURE
    with pytest.raises(KeyError, match="o-17"):
        failed.get(timeout=0)
    assert declare(app, flaky, bind=True, max_retries=3).delay().get(timeout=0) == 2


def test_a_task_that_sends_tasks_runs_them_too(app: App) -> None:
    global add_task
    add_task = declare(app, add)
    assert declare(app, fan_out).delay(3).get(timeout=1) == [0, 2, 4]


def test_taskq_eager_in_the_environment_turns_it_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKQ_EAGER", "1")
    app = App(broker=str(tmp_path / "never-created"))
    assert declare(app, add).delay(20, 22).get(timeout=0) == 42
    assert not (tmp_path / "never-created").exists()
