"""Unique tasks in one process (taskq/unique.py): which calls share a key, what
the caller gets back, bad options, batches, eager mode, and the file broker's
key files. Real workers on file and Redis: tests/integration/test_unique.py."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from taskq import App
from taskq.brokers.file import FileBroker
from taskq.errors import DiskFull, TaskqError
from taskq.message import decode, envelope, new_id
from taskq.results import SUCCESS

runs: list[tuple[Any, ...]] = []


def add(x: int, y: int = 1) -> int:
    runs.append((x, y))
    return x + y


def bound(self: Any, x: int) -> int:
    runs.append((x,))
    return x


@pytest.fixture
def app() -> App:
    runs.clear()
    return App(broker=f"memory://unique-{new_id()}")


def declare(app: App, fn: Any = add, **options: Any) -> Any:
    options.setdefault("unique_for", 60)
    return app.task(fn, name=f"tests.unique.{fn.__name__}", **options)


def queued(app: App) -> int:
    return app.broker.counts().get("default", None).ready  # type: ignore[union-attr]


def test_calls_with_the_same_arguments_however_passed_share_one_message(app: App) -> None:
    task = declare(app)

    first = task.delay(1)
    same = [task.delay(1, 1), task.delay(x=1), task.delay(y=1, x=1), task.apply_async((1,))]

    assert {r.id for r in same} == {first.id}
    assert queued(app) == 1
    assert app.join() == 1 and runs == [(1, 1)]
    assert [r.get(timeout=1) for r in (first, *same)] == [2] * 5


def test_other_arguments_or_another_task_make_another_key(app: App) -> None:
    task = declare(app)
    other = app.task(lambda x, y=1: x, name="tests.unique.other", unique_for=60)

    ids = {task.delay(1).id, task.delay(2).id, task.delay(1, 2).id, task.delay(1.5).id}
    ids.add(other.delay(1).id)

    assert len(ids) == 5 and queued(app) == 5


def test_the_message_carries_its_key_in_the_signed_envelope(app: App) -> None:
    task = declare(app)
    plain = app.task(add, name="tests.unique.plain")

    task.delay(1)
    plain.delay(1)

    consumer = app.broker.open_consumer(["default"], "c")
    headers = []
    while (delivery := consumer.claim(timeout=0.1)) is not None:
        message, _ = decode(delivery.data, app.key)
        headers.append(envelope(message))
    keyed = [h for h in headers if h["task"] == task.name]
    assert keyed[0]["unique"] == task.unique_key((1,), {})
    assert "unique" not in next(h for h in headers if h["task"] == plain.name)


def test_the_next_call_is_enqueued_once_the_first_is_settled(app: App) -> None:
    task = declare(app)
    first = task.delay(1)
    app.join()

    again = task.delay(1)

    assert again.id != first.id and queued(app) == 1


def test_a_key_whose_message_is_nowhere_blocks_its_calls_until_it_lapses(app: App) -> None:
    """A producer killed between claiming the key and publishing leaves a holder
    that never runs: its calls get a handle on that id until unique_for passes."""
    task = declare(app, unique_for=0.3)
    app.broker.claim_unique(task.unique_key((1,), {}), "ghost", 0.3)

    blocked = task.delay(1)
    assert blocked.id == "ghost" and blocked.status == "PENDING"
    assert app.broker.counts() == {}

    time.sleep(0.35)
    after = task.delay(1)
    assert after.id != "ghost" and queued(app) == 1


def test_an_expired_call_lets_its_key_go_when_a_worker_drops_it(app: App) -> None:
    task = declare(app)
    first = task.apply_async((1,), expires=0.05)
    time.sleep(0.1)
    assert task.delay(1).id == first.id  # expired, yet still queued: still held

    app.join(fail_fast=False)

    assert runs == [] and task.delay(1).id != first.id


def test_an_explicit_key_spans_arguments_and_tasks_and_works_without_unique_for(
    app: App,
) -> None:
    plain = app.task(add, name="tests.unique.plain")
    other = app.task(bound, name="tests.unique.bound", bind=True)

    first = plain.apply_async((1,), unique_key="report:42")
    ids = {plain.apply_async((7,), unique_key="report:42").id}
    ids.add(other.apply_async((3,), unique_key="report:42").id)
    ids.add(plain.apply_async((1,), unique_key="report:43").id)

    assert ids - {first.id} and first.id in ids and len(ids) == 2
    assert queued(app) == 2


def test_a_bound_task_keys_its_arguments_without_itself(app: App) -> None:
    task = declare(app, bound, bind=True)

    assert task.delay(3).id == task.delay(x=3).id
    assert app.join() == 1 and runs == [(3,)]


@pytest.mark.parametrize(
    ("value", "says"),
    [(0, "more than 0"), (-1, "more than 0"), (float("nan"), "more than 0"), ("60", "number")],
)
def test_a_bad_unique_for_is_refused_where_the_task_is_declared(
    app: App, value: Any, says: str
) -> None:
    with pytest.raises(TaskqError, match=f"unique_for.*{says}"):
        declare(app, unique_for=value)


def test_bad_calls_say_what_cannot_make_a_key(app: App) -> None:
    task = declare(app)
    plain = app.task(add, name="tests.unique.plain")

    with pytest.raises(TaskqError, match=r"argument 'x' \(object\).*unique_key"):
        task.delay(object())
    with pytest.raises(TaskqError, match="too many positional arguments"):
        task.delay(1, 2, 3)
    with pytest.raises(TaskqError, match="unique_key must be a non-empty string"):
        plain.apply_async((1,), unique_key="")
    with pytest.raises(TaskqError, match="cannot take link"):
        task.apply_async((1,), link=plain.s())
    assert app.broker.counts() == {} or queued(app) == 0


def test_map_checks_each_item_and_repeats_in_one_batch_share_a_handle(app: App) -> None:
    task = declare(app)
    held = task.delay(5)

    handles = task.map([1, 2, 1, 5, (2, 1)])

    assert handles[0].id == handles[2].id
    assert handles[1].id == handles[4].id
    assert handles[3].id == held.id
    assert queued(app) == 3
    app.join()
    assert [h.get(timeout=1) for h in handles] == [2, 3, 2, 6, 3]


def test_enqueue_many_checks_unique_tasks_and_sends_the_others_as_they_are(app: App) -> None:
    task = declare(app)
    plain = app.task(add, name="tests.unique.plain")

    handles = app.enqueue_many(
        [(task, (1,), {}), (plain, (1,), {}), (task, (1,), {}), (plain, (1,), {})]
    )

    assert handles[0].id == handles[2].id
    assert len({h.id for h in handles}) == 3 and queued(app) == 3


def test_in_eager_mode_each_call_runs_since_the_one_before_has_finished(tmp_path: Path) -> None:
    runs.clear()
    app = App(broker=str(tmp_path / "never-created"), eager=True)
    task = declare(app)

    first, second = task.delay(1), task.delay(1)

    assert first.id != second.id and runs == [(1, 1), (1, 1)]
    assert first.status == SUCCESS and second.get(timeout=0) == 2
    assert not (tmp_path / "never-created").exists()


def test_a_failed_publish_gives_the_key_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App(broker=str(tmp_path / "b"))
    task = declare(app)

    def full(*args: Any) -> int:
        raise DiskFull("no space left")

    monkeypatch.setattr(app.broker, "publish", full)
    monkeypatch.setattr(app.broker, "publish_many", full)
    with pytest.raises(DiskFull):
        task.delay(1)
    with pytest.raises(DiskFull):
        task.map([1, 2])
    monkeypatch.undo()

    retried = task.delay(1)
    assert app.broker.find(retried.id) == "ready"
    assert app.broker.find(task.delay(2).id) == "ready"  # the failed map's key too
    assert task.delay(1).id == retried.id


# -- the file broker's key files ------------------------------------------------


def test_housekeeping_deletes_lapsed_key_files_and_keeps_held_ones(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "b")
    broker.claim_unique("lapsing", new_id(), 0.05)
    broker.claim_unique("held", new_id(), 60)
    time.sleep(0.1)

    deleted = sum(broker.housekeeping_steps(time.time(), 0.0))

    assert deleted == 1
    assert sorted(os.listdir(tmp_path / "b" / "unique")) == ["held"]


def test_a_claimer_that_waited_on_a_key_being_released_holds_a_key_others_see(
    tmp_path: Path,
) -> None:
    """Released while the claimer waited for its lock: the claimer must not write
    its id into the unlinked file, where nobody else would find it."""
    import fcntl

    broker = FileBroker(tmp_path / "b")
    holder, waiter = new_id(), new_id()
    broker.claim_unique("k", holder, 60)
    path = tmp_path / "b" / "unique" / "k"
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the releaser's lock, taken first
    won: list[str] = []
    claimer = threading.Thread(target=lambda: won.append(broker.claim_unique("k", waiter, 60)))
    claimer.start()
    time.sleep(0.2)  # the claimer opened the file and waits for the lock
    os.unlink(path)
    os.close(fd)
    claimer.join(10)

    assert won == [waiter]
    assert broker.claim_unique("k", new_id(), 60) == waiter
    assert path.read_bytes().split()[0].decode() == waiter


def test_a_foreign_entry_where_a_key_file_should_be_is_refused(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "b")
    broker.claim_unique("k", new_id(), 60)
    folder = tmp_path / "b" / "unique"
    os.mkfifo(folder / "fifo")
    (folder / "link").symlink_to(folder / "k")

    with pytest.raises(TaskqError, match="not a regular file"):
        broker.claim_unique("fifo", new_id(), 60)
    with pytest.raises(TaskqError, match="symbolic link"):
        broker.claim_unique("link", new_id(), 60)


# -- the supervisor's side: a killed worker's unique message --------------------


@pytest.mark.parametrize(("max_retries", "released"), [(1, False), (0, True)])
def test_a_recovered_unique_message_keeps_its_key_for_a_retry_and_lets_it_go_when_dead(
    tmp_path: Path, max_retries: int, released: bool
) -> None:
    from taskq.errors import WorkerLost
    from taskq.policy import Outcome
    from taskq.recovery import recover_consumer

    app = App(broker=str(tmp_path / "b"))
    task = declare(app, max_retries=max_retries)
    first = task.delay(1)
    consumer = app.broker.open_consumer(["default"], "c1")
    assert consumer.claim(timeout=1.0) is not None
    consumer.close()  # its process "died" mid-task: the lock is free

    assert recover_consumer(app.broker, app.key, "c1", Outcome.KILLED, WorkerLost, "test") == 1

    assert app.broker.find(first.id) == ("dead" if released else "scheduled")
    assert (task.delay(1).id != first.id) is released
