"""Results: what a worker stores when a task ends, and ``AsyncResult`` to read it."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .brokers import display_url
from .brokers.base import CLAIMED
from .current import default_app
from .errors import MessageError, ResultNotFound, SerializationError, TaskFailed, safe_str
from .keys import Keyring
from .message import dump_value, load_value, seal, unseal

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")

PENDING, STARTED, RETRY, SUCCESS, FAILURE = "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE"
REVOKED = "REVOKED"
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})


def success_record(task_id: str, task: str, value: Any, key: Keyring) -> bytes:
    header = {"id": task_id, "task": task, "status": SUCCESS, "done": time.time()}
    return seal(header, dump_value(value), key)


def failure_record(
    task_id: str, task: str, exc: BaseException, key: Keyring, status: str = FAILURE
) -> bytes:
    """A failure (or a RETRY marker) with the exception and the worker's traceback."""
    header = {
        "id": task_id,
        "task": task,
        "status": status,
        "done": time.time(),
        "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exc_message": safe_str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    try:
        payload = dump_value(exc)
    except SerializationError:
        payload = b""
    return seal(header, payload, key)


class AsyncResult(Generic[R]):
    """A handle on a task's outcome: ``.status``, ``.ready()``, ``.get(timeout)``."""

    def __init__(self, task_id: str, app: App | None = None) -> None:
        self.id = task_id
        self.app = default_app() if app is None else app

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.status}>"

    def _load(self) -> tuple[dict[str, Any], bytes] | None:
        """The verified header and payload, or None; ``MessageError`` naming the
        task for a stored result that is not a whole signed file of ours."""
        try:
            data = self.app.broker.load_result(self.id)
            if data is None:
                return None
            header, payload = unseal(data, self.app.key)
            # Every reader below goes by the status: one of the wrong type is no result.
            if not isinstance(header.get("status"), str):
                raise MessageError(f"its header holds no status ({header.get('status')!r:.40})")
            return header, payload
        except MessageError as exc:
            raise type(exc)(f"stored result of task {self.id}: {exc}") from None

    @property
    def status(self) -> str:
        loaded = self._load()
        if loaded is not None:
            return str(loaded[0]["status"])
        # A consumer holds the message: the task has started (in any broker).
        return STARTED if self.app.broker.find(self.id) == CLAIMED else PENDING

    state = status

    def ready(self) -> bool:
        loaded = self._load()
        return loaded is not None and loaded[0]["status"] in READY_STATES

    def successful(self) -> bool:
        loaded = self._load()
        return loaded is not None and loaded[0]["status"] == SUCCESS

    def failed(self) -> bool:
        """Whether the task failed (FAILURE); a revoked one did not, as in Celery."""
        loaded = self._load()
        return loaded is not None and loaded[0]["status"] == FAILURE

    def revoke(self, terminate: bool = False) -> None:
        """Revoke the task (``App.control.revoke``): if it has not started, no worker
        will start it; if it runs, it finishes, unless ``terminate`` kills it."""
        self.app.control.revoke(self.id, terminate=terminate)

    @overload
    def get(
        self, timeout: float | None = None, propagate: Literal[True] = True, interval: float = 0.05
    ) -> R: ...

    @overload
    def get(
        self, timeout: float | None = None, *, propagate: bool, interval: float = 0.05
    ) -> R | BaseException: ...

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05
    ) -> R | BaseException:
        """Wait for the task: its return value, or its exception raised here
        (returned instead with ``propagate=False``, as Celery does);
        ``TaskRevokedError`` for a revoked task.

        The exception carries the worker's traceback as a note (and as
        ``remote_traceback``); ``TimeoutError`` if nothing came in ``timeout`` s;
        ``ResultNotFound`` once the broker has neither a result nor a message
        with this id (twice, a while apart), rather than waiting forever.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        unknown = _Unknown()
        while True:
            loaded = self._load()
            if loaded is not None and loaded[0]["status"] in READY_STATES:
                if propagate or loaded[0]["status"] == SUCCESS:
                    return self._outcome(*loaded)
                return _rebuild(*loaded)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} did not finish within {timeout} s")
            if loaded is None and unknown.confirmed(lambda: self.app.broker.find(self.id)):
                broker = display_url(self.app.settings.broker)
                raise ResultNotFound(
                    f"task {self.id} is unknown to broker {broker}: no "
                    "result and no message with this id (never sent here, its result "
                    "expired after result_expires, or it ran with ignore_result)"
                )
            time.sleep(pause)
            pause = min(pause * 2, interval)

    @property
    def result(self) -> Any:
        """The value (or exception) if ready, else None; never raises: a stored
        result that cannot be read or trusted gives the error saying why."""
        try:
            loaded = self._load()
            if loaded is None or loaded[0]["status"] not in READY_STATES:
                return None
            return self._outcome(*loaded)
        except Exception as exc:
            return exc

    info = result  # Celery's other name for it

    @property
    def traceback(self) -> str | None:
        """The worker's traceback text of a failure (or of a retried attempt), else None."""
        loaded = self._load()
        return None if loaded is None else loaded[0].get("traceback")

    @property
    def date_done(self) -> datetime | None:
        """When the task finished (UTC), once it has; None before."""
        loaded = self._load()
        if loaded is None or loaded[0]["status"] not in READY_STATES:
            return None
        done = loaded[0].get("done")
        return datetime.fromtimestamp(done, UTC) if isinstance(done, int | float) else None

    def _outcome(self, header: dict[str, Any], payload: bytes) -> R:
        if header["status"] == SUCCESS:
            try:
                value: R = load_value(payload)
            except Exception as exc:  # signed, yet not a value this process can load
                raise SerializationError(
                    f"stored result of task {self.id} cannot be unpickled here: "
                    f"{type(exc).__name__}: {safe_str(exc)}"
                ) from exc
            return value
        raise _rebuild(header, payload)

    def forget(self) -> None:
        """Delete the stored result now (otherwise it expires after ``result_expires``)."""
        self.app.broker.delete_result(self.id)


class _Unknown:
    """Whether a task id is unknown to the broker, asked rarely: a listing of every
    queue costs time, and one listing can miss a message being moved between
    folders, so it takes two misses a while apart."""

    FIRST, AGAIN = 1.0, 2.0  # seconds of waiting before the first look, between looks

    def __init__(self) -> None:
        self.look_at = time.monotonic() + self.FIRST
        self.misses = 0

    def confirmed(self, find: Callable[[], str | None]) -> bool:
        now = time.monotonic()
        if now < self.look_at:
            return False
        self.misses = self.misses + 1 if find() is None else 0
        self.look_at = now + self.AGAIN
        return self.misses >= 2


def _rebuild(header: dict[str, Any], payload: bytes) -> BaseException:
    remote = str(header.get("traceback", ""))
    exc: BaseException
    try:
        exc = load_value(payload) if payload else _failed(header)
        if not isinstance(exc, BaseException):
            exc = _failed(header)
    except Exception:
        exc = _failed(header)
    exc.add_note(f"\nTraceback in the worker:\n{remote}")
    exc.remote_traceback = remote  # type: ignore[attr-defined]
    return exc


def _failed(header: dict[str, Any]) -> TaskFailed:
    return TaskFailed(
        str(header.get("exc_type")), str(header.get("exc_message")), str(header.get("traceback"))
    )


def require(result: AsyncResult[Any]) -> dict[str, Any]:
    """The stored header of a result, for the CLI (raises ResultNotFound)."""
    loaded = result._load()
    if loaded is None:
        raise ResultNotFound(f"no result stored for task {result.id} (pending, or expired)")
    return loaded[0]
