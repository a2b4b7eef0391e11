"""``@task``: declare a function as a task; ``.delay()`` sends a call to the broker.

The broker is resolved at the first publish, not at import, so importing a
tasks module never touches the disk or the network.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar, overload

from .current import default_app
from .errors import Retry, TaskqError
from .message import Batch, Message, dump_call, new_id, validate_queue, validate_task_id
from .rates import check_rate
from .unique import (
    DEFAULT_UNIQUE_FOR,
    call_signature,
    check_unique_for,
    derived_key,
    explicit_key,
    send_unique,
)

if TYPE_CHECKING:
    from .app import App
    from .canvas import Signature
    from .results import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, Task[Any, Any]] = {}


log = logging.getLogger("taskq")
_queues_seen: set[str] = set()  # queues this process has sent to (and warned about)


def registry() -> Mapping[str, Task[Any, Any]]:
    """Every task declared in this process, by name."""
    return _registry


@dataclass(frozen=True, slots=True)
class TaskOptions:
    queue: str = "default"
    priority: int = 0
    max_retries: int = 3
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    autoretry_for: tuple[type[BaseException], ...] = (Exception,)
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | None = None
    ignore_result: bool = False
    bind: bool = False
    rate_limit: str | float | None = None
    unique_for: float | None = None  # seconds a call's key is held at most (taskq.unique)

    def __post_init__(self) -> None:
        validate_queue(self.queue)
        check_unique_for(self.unique_for)
        _check_priority(self.priority)
        object.__setattr__(self, "rate_limit", check_rate(self.rate_limit))
        if self.max_retries < 0:
            raise TaskqError(f"max_retries must be >= 0, got {self.max_retries}")

    def policy(self) -> dict[str, Any]:
        """The fields a message carries for its worker: retries, limits, results."""
        return {
            "max_retries": self.max_retries,
            "retry_backoff": self.retry_backoff,
            "retry_backoff_max": self.retry_backoff_max,
            "retry_jitter": self.retry_jitter,
            "time_limit": self.time_limit,
            "soft_time_limit": self.soft_time_limit,
            "ignore_result": self.ignore_result,
            "rate_limit": self.rate_limit,
        }

    def retries_on(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` gets another attempt."""
        return isinstance(exc, self.autoretry_for) and not isinstance(exc, self.dont_autoretry_for)


@dataclass(slots=True)
class Request:
    """What a bound task sees as ``self.request`` while it runs."""

    id: str = ""
    retries: int = 0
    eta: float | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


class Task(Generic[P, R]):
    """A function that can also run later, in a worker: ``f.delay(...)``."""

    def __init__(
        self, fn: Callable[..., R], app: App | None, name: str, options: TaskOptions
    ) -> None:
        self.fn = fn
        self._app = app
        self.name = name
        self.options = options
        self._policy = options.policy()  # options are frozen: made once, sent with each call
        self._local = threading.local()
        self._signature: inspect.Signature | None = None  # for unique keys, made when needed
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @property
    def app(self) -> App:
        """The app this task publishes through: its own, or the default app at call time."""
        return self._app if self._app is not None else default_app()

    @property
    def request(self) -> Request:
        request: Request | None = getattr(self._local, "request", None)
        return request if request is not None else Request()

    @request.setter
    def request(self, value: Request | None) -> None:
        self._local.request = value

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task inline, in this process."""
        if self.options.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send a call to the broker; returns at once."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        priority: int | None = None,
        queue: str | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
        unique_key: str | None = None,
    ) -> AsyncResult[R]:
        """Send a call with options: ``countdown`` seconds or an ``eta`` to run
        at, a ``priority`` 0-9 (9 first), another ``queue``, ``expires`` (seconds
        from now or a datetime), a chosen ``task_id``, ``headers`` (JSON values
        the task reads as ``self.request.headers``); ``link``: signatures called
        with its result, ``link_error``: with its id if it fails for good;
        ``unique_key``: not enqueued while a call given the same key is queued or
        running, the handle of that call returned instead (see ``taskq.unique``)."""
        unique = ""
        if unique_key is not None or self.options.unique_for is not None:
            unique = self.unique_key(args, kwargs or {}, unique_key)
        if link is not None or link_error is not None:  # a workflow: see canvas.py
            if unique:
                raise TaskqError(
                    f"task {self.name}: a unique call cannot take link or link_error "
                    "(workflows are not deduplicated)"
                )
            options = {
                "countdown": countdown,
                "eta": eta,
                "priority": priority,
                "queue": queue,
                "expires": expires,
                "task_id": task_id,
                "headers": headers,
            }
            sig = self.s(*args, **(kwargs or {})).set(
                **{k: v for k, v in options.items() if v is not None}
            )
            return sig.apply_async(link=link, link_error=link_error)
        message = self.message(
            args,
            kwargs or {},
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            expires=expires,
            task_id=task_id,
            headers=headers,
            unique=unique,
        )
        app = self.app
        payload = dump_call(self.name, args, kwargs or {})
        if unique:
            (holder,) = send_unique(app, [(message, payload, self._ttl)])
            return app.AsyncResult(holder)
        app.publish(message, payload)
        return app.AsyncResult(message.id)

    def unique_key(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], unique_key: str | None = None
    ) -> str:
        """The broker key of a call: from ``unique_key`` if given, else from this
        task's name and the call's arguments; "" for a task that is not unique."""
        if unique_key is not None:
            return explicit_key(unique_key)
        if self.options.unique_for is None:
            return ""
        if self._signature is None:
            self._signature = call_signature(self.fn, self.options.bind)
        return derived_key(self.name, self._signature, args, kwargs)

    @property
    def _ttl(self) -> float:
        """How long a unique call's key is held at most."""
        return self.options.unique_for or DEFAULT_UNIQUE_FOR

    def unique_call(
        self, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Message, bytes, float]:
        """A call's message (with its unique key, if the task is unique), its pickled
        call, and how long its key is held: an item for ``send_unique``."""
        message = self.message(args, kwargs, unique=self.unique_key(args, kwargs))
        return message, dump_call(self.name, args, kwargs), self._ttl

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this call, for workflows (``chain``, ``group``, ``chord``, links)."""
        from .canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a chain or link does not pass it the parent's result."""
        from .canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    def map(self, calls: Iterable[Sequence[Any] | Any]) -> list[AsyncResult[R]]:
        """Enqueue one call per item (a tuple of positional arguments, or a single
        argument) in one batch: with ``durable = true`` the whole batch costs one
        flush to disk instead of one per message. A unique task's calls are each
        checked (and sent) as ``delay`` would, in one batch."""
        app = self.app
        if self.options.unique_for is not None:
            items = [self.unique_call(_map_args(item), {}) for item in calls]
            return [app.AsyncResult(i) for i in send_unique(app, items)]
        stamp = Batch(self.message((), {}), app.key)
        batch = []
        for item in calls:
            message = stamp.message()
            batch.append((message, stamp.seal(message, dump_call(self.name, _map_args(item), {}))))
        app.publish_sealed(batch)
        return [app.AsyncResult(m.id) for m, _ in batch]

    def _declared(self, queue: str) -> str:
        """``queue``, after a warning (once per queue and process) if nothing
        declares it: neither the ``queues`` setting nor a task's ``queue``. A
        typo such as ``queue="defualt"`` would otherwise wait for a worker forever."""
        if queue not in _queues_seen:
            _queues_seen.add(queue)
            declared = {*self.app.settings.queues, *(t.options.queue for t in _registry.values())}
            if queue not in declared:
                log.warning(
                    "Task %s sent to queue %r, which no task and no `queues` setting "
                    "declares (%s): only a worker started with -Q %s will run it",
                    self.name,
                    queue,
                    ", ".join(sorted(declared)),
                    queue,
                )
        return queue

    def message(self, args: Sequence[Any], kwargs: Mapping[str, Any], **options: Any) -> Message:
        """The envelope a call would be sent in (nothing is written)."""
        o = self.options
        now = time.time()
        # The task's own queue and priority were checked when it was declared.
        priority, queue = options.get("priority"), options.get("queue")
        return Message(
            id=validate_task_id(options["task_id"]) if options.get("task_id") else new_id(),
            task=self.name,
            queue=o.queue if queue is None else self._declared(validate_queue(queue)),
            priority=o.priority if priority is None else _check_priority(priority),
            created=now,
            eta=_eta(now, options.get("countdown"), options.get("eta")),
            expires=_when(now, o.expires if options.get("expires") is None else options["expires"]),
            headers=_check_headers(options["headers"]) if options.get("headers") else {},
            unique=options.get("unique", ""),
            **self._policy,
        )

    def retry(self, countdown: float | None = None, exc: BaseException | None = None) -> NoReturn:
        """Ask for another attempt (from inside a bound task)."""
        raise Retry(countdown=countdown, exc=exc)


def _map_args(item: Sequence[Any] | Any) -> tuple[Any, ...]:
    """A ``Task.map`` item as positional arguments: a tuple or list of them, or one."""
    return tuple(item) if isinstance(item, tuple | list) else (item,)


def _check_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers travel in the message's JSON envelope: a JSON object, checked here
    so that a wrong value fails in the caller, not as a dead letter later."""
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
        raise TaskqError(f"headers must be a mapping with string keys, got {headers!r:.80}")
    try:
        json.dumps(dict(headers), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskqError(f"headers must hold JSON values only: {exc}") from None
    return dict(headers)


def _check_priority(priority: int) -> int:
    if not isinstance(priority, int) or not 0 <= priority <= 9:
        raise TaskqError(f"priority must be an integer from 0 to 9, got {priority!r}")
    return priority


def _when(now: float, value: datetime | float | None) -> float | None:
    """A datetime is a moment; a number is seconds from now."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return now + float(value)


def _eta(now: float, countdown: float | None, eta: datetime | float | None) -> float | None:
    if countdown is not None and eta is not None:
        raise TaskqError("give either countdown or eta, not both")
    if countdown is not None:
        return now + float(countdown)
    if isinstance(eta, datetime):
        return eta.timestamp()
    return float(eta) if eta is not None else None


_SEND_OPTIONS = frozenset(
    {"countdown", "eta", "priority", "queue", "expires", "task_id", "headers"}
)


def send_by_name(
    app: App, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any]
) -> AsyncResult[Any]:
    """``app.send_task``: a call of the task ``name``, whose code this process may
    not have. A task declared here is sent with its own options; another one with
    the defaults, marked so that the worker, which has its code, applies its own
    retry policy, limits and ``ignore_result`` (``own_policy``)."""
    unknown = set(options) - _SEND_OPTIONS
    if unknown:
        raise TaskqError(
            f"send_task({name!r}): unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_SEND_OPTIONS))}"
        )
    declared = _registry.get(name)
    if declared is not None:
        message = declared.message(args, kwargs, **options)
    else:
        stand_in: Task[Any, Any] = Task(_runs_in_a_worker, app, name, TaskOptions())
        message = stand_in.message(args, kwargs, **options).replace(by_name=True)
    app.publish(message, dump_call(name, args, kwargs))
    return app.AsyncResult(message.id)


def _runs_in_a_worker(*args: Any, **kwargs: Any) -> NoReturn:
    raise TaskqError("a task sent by name runs in a worker that has its code")


def own_policy(message: Message) -> Message:
    """A message sent by name, with its task's own retry policy, time limits and
    ``ignore_result`` (a task this process does not have keeps the defaults)."""
    task = _registry.get(message.task)
    if not message.by_name or task is None:
        return message
    return message.replace(by_name=False, **task.options.policy())


def make_task(
    fn: Callable[..., Any], app: App | None, name: str | None, **options: Any
) -> Task[Any, Any]:
    name = name or f"{fn.__module__}.{fn.__qualname__}"
    if "autoretry_for" in options:
        options["autoretry_for"] = tuple(options["autoretry_for"])
    if "dont_autoretry_for" in options:
        options["dont_autoretry_for"] = tuple(options["dont_autoretry_for"])
    try:
        task_options = TaskOptions(**options)
    except TypeError as exc:
        raise TaskqError(f"@task on {name}: {exc}") from None
    declared: Task[Any, Any] = Task(fn, app, name, task_options)
    _registry[name] = declared
    return declared


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(*, name: str | None = None, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
) -> Any:
    """Declare a task on the default app (configured from taskq.toml / TASKQ_*).

    ``@task`` or ``@task(max_retries=5, retry_backoff=2.0, queue="images", ...)``.
    """
    if fn is not None:
        return make_task(fn, None, name, **options)
    return lambda f: make_task(f, None, name, **options)
