"""A worker process's standard output and error, as log records naming the task.

What a task prints would otherwise land in the worker's output unmarked, mixed
with the log, and outside a ``--logfile`` or ``--log-format json`` log. So a
worker process replaces ``sys.stdout`` and ``sys.stderr`` with these streams,
as Celery does: each line becomes a record of logger ``taskq.task.stdout`` (at
INFO) or ``taskq.task.stderr`` (at WARNING), naming the task that wrote it and
carrying its task fields.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from .message import Message
from .worker import task_fields


class TaskOutput(io.TextIOBase):
    def __init__(self, name: str, level: int, running: Callable[[], Message | None]) -> None:
        self.name = name
        self._log = logging.getLogger(f"taskq.task.{name}")
        self._level = level
        self._running = running
        self._partial = ""  # the start of a line not ended yet
        self._emitting = False  # a handler writing to sys.stderr must not loop back

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._emit(line)

    def _emit(self, line: str) -> None:
        if self._emitting:
            return
        self._emitting = True
        try:
            message = self._running()
            if message is None:
                self._log.log(self._level, "%s", line)
            else:
                self._log.log(
                    self._level,
                    "Task %s[%s] %s: %s",
                    message.task,
                    message.id,
                    self.name,
                    line,
                    extra=task_fields(message),
                )
        finally:
            self._emitting = False
