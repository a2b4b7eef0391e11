"""Tests for taskq.results: AsyncResult reading what a worker stored, on a file broker."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from taskq import results as results_module
from taskq.app import App
from taskq.errors import BadSignature, ResultNotFound, TaskFailed
from taskq.keys import Keyring
from taskq.message import Message, encode, new_id, seal
from taskq.results import (
    FAILURE,
    PENDING,
    RETRY,
    STARTED,
    SUCCESS,
    AsyncResult,
    failure_record,
    success_record,
)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """An app on a fresh broker, blind to any taskq.toml or TASKQ_* of the machine."""
    for name in list(os.environ):
        if name.startswith("TASKQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return App(broker=str(tmp_path / "b"))


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a real traceback, as a worker would have caught it."""

    def resize_image() -> None:
        raise exc

    try:
        resize_image()
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


class NeedsTwoArguments(Exception):
    """Pickles fine, but cannot be rebuilt: unpickling calls it with one argument."""

    def __init__(self, path: str, code: int) -> None:
        super().__init__(f"{path} failed with {code}")
        self.path = path
        self.code = code


class _CreatesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_success_record_gives_the_value(app: App) -> None:
    task_id = new_id()
    app.broker.store_result(task_id, success_record(task_id, "t", {"size": [1, 2]}, app.key))
    result = app.AsyncResult(task_id)

    assert result.get(timeout=1) == {"size": [1, 2]}
    assert result.status == SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.result == result.info == {"size": [1, 2]}
    assert result.traceback is None
    done = result.date_done
    assert done is not None and done.tzinfo is not None
    assert abs(done.timestamp() - time.time()) < 60


def test_value_only_pickle_cannot_take_comes_back_through_dill(app: App) -> None:
    task_id = new_id()
    app.broker.store_result(task_id, success_record(task_id, "t", lambda x: x * 3, app.key))

    assert app.AsyncResult(task_id).get(timeout=1)(5) == 15


def test_get_waits_for_a_result_stored_while_it_waits(app: App) -> None:
    import threading

    task_id = new_id()
    record = success_record(task_id, "t", "late", app.key)
    timer = threading.Timer(0.2, app.broker.store_result, (task_id, record))
    timer.start()
    try:
        assert app.AsyncResult(task_id).get(timeout=5) == "late"
    finally:
        timer.join(5)


def test_failure_raises_the_original_exception_with_the_worker_traceback(app: App) -> None:
    task_id = new_id()
    exc = raised(ValueError("width must be positive"))
    app.broker.store_result(task_id, failure_record(task_id, "app.resize", exc, app.key))
    result = app.AsyncResult(task_id)

    with pytest.raises(ValueError, match="width must be positive") as caught:
        result.get(timeout=1)

    remote = caught.value.remote_traceback  # type: ignore[attr-defined]
    assert "resize_image" in remote
    assert "ValueError: width must be positive" in remote
    assert any(
        "Traceback in the worker" in n and "resize_image" in n for n in caught.value.__notes__
    )
    assert result.status == FAILURE
    assert result.ready() and not result.successful() and result.failed()
    assert "resize_image" in (result.traceback or "")
    assert isinstance(result.result, ValueError) and isinstance(result.info, ValueError)
    assert result.date_done is not None

    returned = result.get(timeout=1, propagate=False)
    assert isinstance(returned, ValueError) and "width must be positive" in str(returned)
    assert "resize_image" in returned.remote_traceback  # type: ignore[attr-defined]


def test_exception_that_cannot_be_rebuilt_becomes_task_failed_with_its_type(app: App) -> None:
    task_id = new_id()
    exc = raised(NeedsTwoArguments("cat.png", 3))
    app.broker.store_result(task_id, failure_record(task_id, "app.resize", exc, app.key))

    with pytest.raises(TaskFailed) as caught:
        app.AsyncResult(task_id).get(timeout=1)

    assert caught.value.exc_type.endswith("NeedsTwoArguments")
    assert "NeedsTwoArguments" in str(caught.value)
    assert "cat.png failed with 3" in str(caught.value)
    assert "resize_image" in caught.value.remote_traceback


def test_exception_that_cannot_be_pickled_becomes_task_failed(app: App) -> None:
    import socket

    task_id = new_id()
    with socket.socket() as sock:
        exc = raised(OSError("broken", sock))
        app.broker.store_result(task_id, failure_record(task_id, "app.send", exc, app.key))

    with pytest.raises(TaskFailed, match="OSError"):
        app.AsyncResult(task_id).get(timeout=1)


def test_get_with_nothing_stored_times_out(app: App) -> None:
    started = time.monotonic()

    with pytest.raises(TimeoutError, match="did not finish"):
        app.AsyncResult(new_id()).get(timeout=0.2)

    assert 0.2 <= time.monotonic() - started < 5


def test_get_without_a_timeout_on_an_unknown_id_raises_instead_of_waiting_forever(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_module._Unknown, "FIRST", 0.05)
    monkeypatch.setattr(results_module._Unknown, "AGAIN", 0.05)
    task_id = new_id()

    with pytest.raises(ResultNotFound, match=f"task {task_id} is unknown to broker"):
        app.AsyncResult(task_id).get()


def test_get_keeps_waiting_for_a_queued_message_nobody_runs_yet(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_module._Unknown, "FIRST", 0.05)
    monkeypatch.setattr(results_module._Unknown, "AGAIN", 0.05)
    message = Message(new_id(), "t")
    app.broker.publish(message, encode(message, b"p", app.key))

    with pytest.raises(TimeoutError, match="did not finish"):
        app.AsyncResult(message.id).get(timeout=0.5)  # known: waits its whole timeout


def test_retry_marker_is_not_a_final_result(app: App) -> None:
    task_id = new_id()
    exc = raised(ConnectionError("try later"))
    app.broker.store_result(task_id, failure_record(task_id, "t", exc, app.key, status=RETRY))
    result = app.AsyncResult(task_id)

    assert result.status == RETRY
    assert not result.ready() and not result.failed()
    assert result.result is None and result.date_done is None
    assert "try later" in (result.traceback or "")  # the last attempt's, as Celery shows it
    with pytest.raises(TimeoutError):
        result.get(timeout=0.2, propagate=False)


def test_status_is_pending_then_started_while_claimed(app: App) -> None:
    task_id = new_id()
    result = app.AsyncResult(task_id)
    assert result.status == PENDING
    assert not result.ready()

    message = Message(id=task_id, task="t", created=time.time())
    app.broker.publish(message, encode(message, b"p", app.key))
    assert result.status == PENDING
    consumer = app.broker.open_consumer(["default"], "c1")
    try:
        assert consumer.claim(timeout=1) is not None
        assert result.status == STARTED
    finally:
        consumer.close()


def test_result_with_a_bad_signature_is_refused_and_never_unpickled(
    app: App, tmp_path: Path
) -> None:
    task_id = new_id()
    marker = tmp_path / "pwned"
    header = {"id": task_id, "task": "t", "status": SUCCESS, "done": time.time()}
    evil = b"p" + pickle.dumps(_CreatesMarker(marker))
    app.broker.store_result(task_id, seal(header, evil, Keyring(b"not the key" * 3)))
    result = app.AsyncResult(task_id)

    with pytest.raises(BadSignature):
        result.get(timeout=1)
    with pytest.raises(BadSignature):
        _ = result.status
    assert not marker.exists()


def test_async_result_uses_the_default_app_when_none_is_given(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taskq.current

    monkeypatch.setattr(taskq.current, "_default", app)
    task_id = new_id()
    app.broker.store_result(task_id, success_record(task_id, "t", 7, app.key))

    assert AsyncResult(task_id).get(timeout=1) == 7
