"""``App``: settings, a broker and a signing key, resolved on first use."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .brokers import display_url, open_broker
from .config import Settings, load_settings
from .control import Control

# Re-exported where users (and tests) know them from; they live in current.py.
from .current import default_app as default_app
from .current import set_default_app as set_default_app
from .events import Recorder
from .keys import Keyring, keyring_for
from .message import Message, dump_call, encode
from .results import AsyncResult
from .task import make_task

if TYPE_CHECKING:
    from .brokers.base import Broker
    from .task import Task


class App:
    """An explicit application: ``app = App(broker="./.taskq")``, then ``@app.task``.

    Keyword settings override the configuration file and ``TASKQ_*`` variables.
    The bare ``@task`` decorator uses a default ``App()``.
    """

    def __init__(
        self,
        broker: str | os.PathLike[str] | None = None,
        *,
        config_file: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        self._overrides = {"broker": os.fspath(broker) if broker else None, **settings}
        self._config_file = config_file
        self._settings: Settings | None = None
        self._broker: Broker | None = None
        self._key: Keyring | None = None
        self._lock = threading.Lock()
        self._events: Recorder | None = None

    @classmethod
    def from_settings(cls, settings: Settings, key: Keyring | None = None) -> App:
        """An App of these settings; ``key`` signs, if given, instead of looking
        the key up (a worker child uses its supervisor's)."""
        app = cls()
        app._settings = settings
        app._key = key
        return app

    def __repr__(self) -> str:
        return f"App(broker={display_url(self.settings.broker)!r})"

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self._config_file, self._overrides)
        return self._settings

    @property
    def broker(self) -> Broker:
        with self._lock:
            if self._broker is None:
                settings = self.settings
                if settings.eager:  # never the configured broker: a test's tasks stay here
                    settings = settings.replace(broker=f"memory://eager-{id(self):x}")
                self._broker = open_broker(settings)
            return self._broker

    @property
    def key(self) -> Keyring:
        if self._key is None:
            # A configured key needs no broker opened to sign with it.
            broker = None if self.settings.secret_key else self.broker
            self._key = keyring_for(self.settings, broker)
        return self._key

    @property
    def events(self) -> Recorder | None:
        """This process's event recorder, if events are on."""
        if self._events is None and self.settings.events:
            broker = self.broker  # takes the lock itself
            with self._lock:
                if self._events is None:
                    self._events = Recorder(broker, timer=True)
        return self._events

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        """Decorator declaring a task on this app (see ``taskq.task``)."""
        if fn is not None:
            return make_task(fn, self, name, **options)
        return lambda f: make_task(f, self, name, **options)

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str | None = None,
        missed: str = "run_once",
        name: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Task[..., Any]]:
        """Decorator declaring a periodic task on this app (see ``taskq.periodic``)."""
        from .periodic import make_periodic

        def declare(fn: Callable[..., Any]) -> Task[..., Any]:
            return make_periodic(
                fn, self, name, cron=cron, every=every, tz=tz, missed=missed, options=options
            )

        return declare

    def send_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a call of the task ``name`` without importing its code, as Celery's
        ``send_task``; ``options`` are ``apply_async``'s (countdown, eta, priority,
        queue, expires, task_id, headers). The worker applies the task's own retry
        policy and limits."""
        from .task import send_by_name

        return send_by_name(self, name, args, kwargs or {}, options)

    def publish(self, message: Message, payload: bytes) -> None:
        self.broker.publish(message, encode(message, payload, self.key))
        self._sent((message,))

    def publish_many(self, batch: Iterable[tuple[Message, bytes]]) -> int:
        key = self.key
        return self.publish_sealed([(m, encode(m, p, key)) for m, p in batch])

    def publish_sealed(self, batch: Sequence[tuple[Message, bytes]]) -> int:
        """Publish messages already encoded with this app's key, as one batch."""
        published = self.broker.publish_many(batch)
        self._sent([m for m, _ in batch])
        return published

    def _sent(self, messages: Sequence[Message]) -> None:
        """After a publish: the ``published`` events, and in eager mode the run of
        what was just sent, here and now, through the worker's own path (``join``):
        countdowns and retry backoffs are not waited for, a failure is stored as the
        result (``.get()`` raises it), as in Celery."""
        if (events := self.events) is not None:
            for message in messages:
                # At its creation: a worker may start it before publish returns.
                events.record("published", message, ts=message.created)
        if self.settings.eager:
            from .joining import join

            for queue in sorted({m.queue for m in messages}):
                join(self, queue, fail_fast=False, timeout=math.inf, run_scheduled=True)

    def enqueue_many(
        self, calls: Iterable[tuple[Task[Any, Any], Sequence[Any], dict[str, Any]]]
    ) -> list[AsyncResult[Any]]:
        """Enqueue many ``(task, args, kwargs)`` calls as one batch (one flush when durable);
        unique tasks' calls are each checked as ``delay`` would."""
        calls = list(calls)
        if any(task.options.unique_for is not None for task, _, _ in calls):
            from .unique import send_unique

            ids = send_unique(self, [task.unique_call(args, kw) for task, args, kw in calls])
            return [self.AsyncResult(i) for i in ids]
        batch = [
            (task.message(args, kwargs), dump_call(task.name, args, kwargs))
            for task, args, kwargs in calls
        ]
        self.publish_many(batch)
        return [self.AsyncResult(m.id) for m, _ in batch]

    def join(
        self,
        queue: str = "default",
        *,
        fail_fast: bool = True,
        timeout: float = 10.0,
        run_scheduled: bool = False,
    ) -> int:
        """Run what ``queue`` holds in this process, as a worker would; for tests
        (see ``taskq.joining.join``). Returns how many messages ran."""
        from .joining import join

        return join(self, queue, fail_fast=fail_fast, timeout=timeout, run_scheduled=run_scheduled)

    @property
    def control(self) -> Control:
        """Celery's ``app.control``: ``app.control.revoke(task_id, terminate=False)``."""
        return Control(self)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self)
