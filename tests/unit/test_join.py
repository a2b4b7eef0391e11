"""App.join: a queue run in this process through the worker's own path, on the
memory broker and on the file broker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq import App
from taskq.brokers.memory import MemoryBroker
from taskq.errors import SerializationError, TaskqError
from taskq.message import new_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "testing"


@pytest.fixture(params=["memory", "file"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url = f"memory://{request.node.name}" if request.param == "memory" else str(tmp_path / "b")
    app = App(broker=url)
    yield app
    if isinstance(app.broker, MemoryBroker):
        app.broker.reset()


def declare(app: App, fn: Any, **options: Any) -> Any:
    """Declare ``fn`` as a task of ``app`` under a name of its own (the registry is global)."""
    return app.task(fn, name=f"tests.join.{fn.__name__}", **options)


def add(a: int, b: int) -> int:
    return a + b


def charge(order_id: str) -> None:
    raise KeyError(order_id)


def flaky(self: Any, fail_times: int) -> int:
    if self.request.retries < fail_times:
        raise ConnectionError(f"attempt {self.request.retries + 1}")
    return int(self.request.retries)


def test_join_runs_the_queue_and_stores_each_result(app: App) -> None:
    task = declare(app, add)
    results = [task.delay(i, 1) for i in range(3)]

    assert app.join() == 3
    assert [r.get(timeout=1) for r in results] == [1, 2, 3]
    assert app.broker.counts()["default"].ready == 0


def test_join_reraises_the_tasks_own_exception_and_leaves_the_rest_queued(app: App) -> None:
    failing = declare(app, charge, max_retries=0)
    task = declare(app, add)
    failing.apply_async(("order-7",), priority=9)  # runs first
    later = task.delay(1, 1)

    with pytest.raises(KeyError, match="order-7") as raised:
        app.join()

    assert any(frame.name == "charge" for frame in raised.traceback)
    assert [letter.record["reason"] for letter in app.broker.dead_letters()] == ["max-retries"]
    assert app.broker.find(later.id) == "ready"


def test_join_without_fail_fast_runs_everything_and_keeps_the_failure_in_the_result(
    app: App,
) -> None:
    failing = declare(app, charge, max_retries=0)
    result = failing.delay("order-8")

    assert app.join(fail_fast=False) == 1
    with pytest.raises(KeyError, match="order-8"):
        result.get(timeout=1)


def test_join_with_run_scheduled_runs_the_retries_without_their_backoff(app: App) -> None:
    task = declare(app, flaky, bind=True, max_retries=3, retry_backoff=60.0)
    result = task.delay(fail_times=2)

    assert app.join(run_scheduled=True) == 3
    assert result.get(timeout=1) == 2


def test_join_raises_the_error_of_a_retry_left_waiting_for_its_backoff(app: App) -> None:
    task = declare(app, flaky, bind=True, max_retries=3, retry_backoff=60.0)
    result = task.delay(fail_times=1)

    with pytest.raises(ConnectionError, match="attempt 1"):
        app.join()

    assert app.broker.find(result.id) == "scheduled"


def test_join_leaves_a_countdown_not_yet_due_unless_asked(app: App) -> None:
    task = declare(app, add)
    result = task.apply_async((2, 2), countdown=60)

    assert app.join() == 0
    assert app.broker.find(result.id) == "scheduled"
    assert app.join(run_scheduled=True) == 1
    assert result.get(timeout=1) == 4


def test_an_unpicklable_argument_fails_at_delay_and_nothing_is_queued(app: App) -> None:
    task = declare(app, add)

    with pytest.raises(SerializationError):
        task.delay(1, _Unpicklable())

    assert app.join() == 0


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle this")


def test_join_leaves_no_consumer_behind(app: App) -> None:
    declare(app, add).delay(1, 2)
    app.join()

    assert app.broker.dead_consumers() == []


def test_two_apps_on_one_memory_url_share_the_broker() -> None:
    url = "memory://shared-by-two-apps"
    producer, runner = App(broker=url), App(broker=url)
    task = declare(producer, add)
    result = task.delay(20, 22)

    assert runner.join() == 1
    assert runner.AsyncResult(result.id).get(timeout=1) == 42
    assert App(broker="memory://another").broker is not producer.broker


def test_the_testing_example_passes_and_the_docs_show_it_as_it_is() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    doc = (ROOT / "docs" / "testing.md").read_text()
    for name in ("tasks.py", "test_tasks.py"):
        assert (EXAMPLE / name).read_text() in doc, f"docs/testing.md does not show {name}"


def traced(self: Any) -> dict[str, Any]:
    if self.request.retries == 0:
        self.retry(countdown=60)
    return {"retries": self.request.retries, **self.request.headers}


def test_headers_given_to_apply_async_reach_the_task_and_survive_a_retry(app: App) -> None:
    task = declare(app, traced, bind=True)
    result = task.apply_async(headers={"trace_id": "abc-123", "hops": [1, 2]})
    assert app.join(run_scheduled=True) == 2
    assert result.get(timeout=1) == {"retries": 1, "trace_id": "abc-123", "hops": [1, 2]}


def test_headers_that_are_not_json_are_refused_in_the_caller(app: App) -> None:
    task = declare(app, traced, bind=True)
    with pytest.raises(TaskqError, match="headers must hold JSON values only"):
        task.apply_async(headers={"when": object()})
    with pytest.raises(TaskqError, match="string keys"):
        task.apply_async(headers={1: "x"})
    assert app.join() == 0  # nothing was sent


def test_send_task_runs_a_declared_task_by_its_name(app: App) -> None:
    declare(app, add)
    result = app.send_task("tests.join.add", (2, 3), countdown=0, headers={"via": "name"})
    assert app.join() == 1
    assert result.get(timeout=1) == 5


def test_a_task_sent_by_name_gets_its_own_policy_from_the_worker(app: App) -> None:
    name = f"tests.join.unknown_here_{new_id()[:8]}"
    result = app.send_task(name, ("o-9",))  # not declared yet: sent with the defaults
    runs: list[str] = []

    def refuse(order: str) -> None:
        runs.append(order)
        raise KeyError(order)

    app.task(refuse, name=name, max_retries=0)  # the worker's code says: no retry
    assert app.join(fail_fast=False, run_scheduled=True) == 1
    assert runs == ["o-9"]  # once: with the defaults it would have run 4 times
    with pytest.raises(KeyError, match="o-9"):
        result.get(timeout=1)


def test_send_task_refuses_an_option_it_does_not_know(app: App) -> None:
    with pytest.raises(TaskqError, match=r"unknown option.*countdwn"):
        app.send_task("tests.join.add", (1, 2), countdwn=5)
    assert app.join() == 0


def test_signals_follow_each_task_and_a_failing_receiver_is_only_logged(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    from taskq import signals

    seen: list[tuple[str, Any]] = []

    def record(signal: signals.Signal, sender: Any, task_id: str, **fields: Any) -> None:
        detail = fields.get("outcome") or fields.get("reason") or fields.get("result")
        seen.append((signal.name, sender.name if sender else None, detail))

    def broken(**_: Any) -> None:
        raise RuntimeError("receiver bug")

    hooked = [signals.task_prerun, signals.task_postrun, signals.task_success]
    hooked += [signals.task_retry, signals.task_failure]
    for signal in hooked:
        signal.connect(record)
    signals.task_prerun.connect(broken)
    try:
        ok = declare(app, add).delay(2, 3)
        declare(app, flaky, bind=True, max_retries=3).delay(1)
        declare(app, charge, max_retries=0).delay("o-1")
        app.join(fail_fast=False, run_scheduled=True)
    finally:
        for signal in hooked:
            signal.disconnect(record)
        signals.task_prerun.disconnect(broken)

    assert ok.get(timeout=1) == 5  # the broken receiver failed nothing
    assert seen == [
        ("task_prerun", "tests.join.add", None),
        ("task_postrun", "tests.join.add", "succeeded"),
        ("task_success", "tests.join.add", 5),
        ("task_prerun", "tests.join.flaky", None),
        ("task_postrun", "tests.join.flaky", "failed"),
        ("task_retry", "tests.join.flaky", None),
        ("task_prerun", "tests.join.flaky", None),
        ("task_postrun", "tests.join.flaky", "succeeded"),
        ("task_success", "tests.join.flaky", 1),
        ("task_prerun", "tests.join.charge", None),
        ("task_postrun", "tests.join.charge", "failed"),
        ("task_failure", "tests.join.charge", "max-retries"),
    ]
    assert caplog.text.count("of task_prerun failed (the task goes on)") == 4  # 4 runs
