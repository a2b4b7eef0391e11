"""A call sent to a queue nothing declares is warned about once: a typo such as
``queue="defualt"`` would otherwise wait forever for a worker that never comes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskq import App
from taskq.brokers.memory import MemoryBroker
from taskq.message import new_id


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[App]:
    app = App(broker=f"memory://{request.node.name}", queues=["default", "mail"])
    yield app
    assert isinstance(app.broker, MemoryBroker)
    app.broker.reset()


def noop() -> None:
    return None


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_an_undeclared_queue_is_warned_about_once_naming_it(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    task = app.task(noop, name=f"tests.undeclared.{new_id()}")
    typo = f"defualt-{new_id()[:8]}"  # unique: the warning is once per process

    task.apply_async(queue=typo)
    task.apply_async(queue=typo)

    (warning,) = warnings_of(caplog)
    assert f"sent to queue '{typo}', which no task and no `queues` setting declares" in warning
    assert f"-Q {typo}" in warning
    assert app.broker.counts()[typo].ready == 2  # warned, still sent


def test_queues_of_the_setting_and_of_tasks_are_declared(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    own = f"reports-{new_id()[:8]}"
    task = app.task(noop, name=f"tests.undeclared.{new_id()}", queue=own)

    task.apply_async(queue="mail")
    task.apply_async(queue=own)
    task.delay()

    assert warnings_of(caplog) == []
