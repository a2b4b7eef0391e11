"""Revoke through App.join (the worker's own path) and in eager mode: what a revoked
task does to a chain, a chord, the events, and where it is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq import App, ChordFailed, TaskRevokedError, chain, chord
from taskq.brokers.memory import MemoryBroker
from taskq.errors import MessageError
from taskq.message import new_id
from taskq.results import REVOKED, SUCCESS

CALLS: list[tuple[str, Any]] = []


@pytest.fixture(params=["memory", "file"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url = f"memory://{request.node.name}" if request.param == "memory" else str(tmp_path / "b")
    app = App(broker=url)
    CALLS.clear()
    yield app
    if isinstance(app.broker, MemoryBroker):
        app.broker.reset()


def add(a: int, b: int) -> int:
    CALLS.append(("add", (a, b)))
    return a + b


def total(values: list[int]) -> int:
    CALLS.append(("total", values))
    return sum(values)


def declare(app: App, fn: Any) -> Any:
    return app.task(fn, name=f"tests.revoke.{fn.__name__}")


def run(app: App) -> None:
    app.join(fail_fast=False, run_scheduled=True)


def test_a_revoked_message_is_acked_unrun(app: App) -> None:
    t_add = declare(app, add)
    revoked, kept = t_add.delay(1, 1), t_add.delay(2, 2)
    revoked.revoke()
    run(app)

    assert CALLS == [("add", (2, 2))]
    assert (revoked.state, kept.state) == (REVOKED, SUCCESS)
    with pytest.raises(TaskRevokedError, match=r"tests.revoke.add\[.*\] was revoked"):
        revoked.get(timeout=1)
    assert isinstance(revoked.get(timeout=1, propagate=False), TaskRevokedError)
    assert app.broker.dead_letters() == []
    assert app.broker.counts()["default"].ready == 0


def test_a_revoked_chain_step_stops_the_chain_and_its_get_raises(app: App) -> None:
    t_add = declare(app, add)
    step = new_id()
    app.control.revoke(step)  # before the step is even sent
    result = chain(t_add.s(1, 1), t_add.s(10).set(task_id=step), t_add.s(100)).apply_async()
    run(app)

    assert CALLS == [("add", (1, 1))]
    assert app.AsyncResult(step).state == REVOKED
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)  # the last step carries the revoked step's outcome


def test_a_revoked_chord_member_fails_the_chord_instead_of_holding_it(app: App) -> None:
    t_add, t_total = declare(app, add), declare(app, total)
    member = new_id()
    app.control.revoke(member)
    members = [t_add.s(1, 1), t_add.s(2, 2).set(task_id=member), t_add.s(3, 3)]
    result = chord(members, t_total.s()).apply_async()
    run(app)

    with pytest.raises(ChordFailed, match=r"chord member 1 .*TaskRevokedError"):
        result.get(timeout=1)
    assert not [c for c in CALLS if c[0] == "total"]


def test_revoke_refuses_an_invalid_id_by_name_and_revokes_none(app: App) -> None:
    good = new_id()
    with pytest.raises(MessageError, match=r"invalid task id 'a/b'"):
        app.control.revoke([good, "a/b"])
    assert not app.broker.is_revoked(good)


def test_eager_mode_runs_what_is_not_revoked_and_settles_what_is(tmp_path: Path) -> None:
    app = App(broker=str(tmp_path / "never-created"), eager=True)
    t_add = declare(app, add)
    CALLS.clear()
    done = t_add.delay(1, 2)
    done.revoke()  # it ran already: its result stays
    revoked_id = new_id()
    app.control.revoke(revoked_id)

    result = t_add.apply_async((3, 4), task_id=revoked_id)

    assert done.get(timeout=0) == 3 and done.state == SUCCESS
    assert result.state == REVOKED
    assert CALLS == [("add", (1, 2))]
    assert not (tmp_path / "never-created").exists()


def fails_once(self: Any, value: int) -> int:
    CALLS.append(("fails_once", self.request.retries))
    if self.request.retries == 0:
        raise ConnectionError("first attempt fails")
    return value


def test_a_retry_waiting_for_its_backoff_is_not_started_once_revoked(app: App) -> None:
    task = app.task(fails_once, name="tests.revoke.fails_once", bind=True, retry_backoff=3600)
    result = task.delay(7)
    app.join(fail_fast=False)  # the first attempt fails: its retry waits an hour
    assert app.broker.find(result.id) == "scheduled"

    result.revoke()
    run(app)  # every scheduled message due at once

    assert result.state == REVOKED
    assert CALLS == [("fails_once", 0)]


def test_a_revoked_rate_limited_task_is_settled_unrun(app: App) -> None:
    task = app.task(add, name="tests.revoke.limited_add", rate_limit="1/h")
    result = task.delay(1, 1)
    result.revoke()
    run(app)

    assert result.state == REVOKED
    assert CALLS == []
