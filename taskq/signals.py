"""Hooks around each task a worker process runs, for metrics and tracing: the
Celery signals people reach for, with the same names.

    from taskq import signals

    @signals.task_prerun.connect
    def opened(sender, task_id, args, kwargs, **_):
        span = tracer.start_span(sender.name)

Receivers run in the worker process that runs the task, in the order they were
connected, and take keyword arguments (accept ``**_`` for the ones added later).
A receiver that raises is logged and skipped: it never fails the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("taskq.signals")

_F = TypeVar("_F", bound=Callable[..., Any])


class Signal:
    """A list of receivers called with keyword arguments."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: list[Callable[..., Any]] = []

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"

    def connect(self, receiver: _F) -> _F:
        """Call ``receiver`` on every send (usable as a decorator)."""
        self.receivers.append(receiver)
        return receiver

    def disconnect(self, receiver: Callable[..., Any]) -> None:
        if receiver in self.receivers:
            self.receivers.remove(receiver)

    def send(self, **fields: Any) -> None:
        for receiver in list(self.receivers):
            try:
                receiver(signal=self, **fields)
            except Exception:
                log.exception("Receiver %r of %s failed (the task goes on)", receiver, self.name)


# sender: the task; task_id, args, kwargs; attempt (1 for the first run).
task_prerun = Signal("task_prerun")
# The same, plus retval (the return value or the exception) and outcome.
task_postrun = Signal("task_postrun")
# After the outcome is stored: sender, task_id, result.
task_success = Signal("task_success")
# An attempt failed and another is scheduled: sender, task_id, exception, delay (s), attempt.
task_retry = Signal("task_retry")
# Failed for good (dead-lettered): sender (None for an unknown task), task_id, exception, reason.
task_failure = Signal("task_failure")
