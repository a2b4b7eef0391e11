"""Errors raised by taskq, and the control-flow exceptions tasks may raise.

    TaskqError                  anything taskq itself reports
    ├── ConfigError             a bad key, type or file in the configuration
    ├── BrokerError             the broker cannot be used (unsafe root, bad queue name)
    │   ├── DiskFull            no space left to write a message or result: nothing was written
    │   ├── BrokerUnavailable   the broker server (Redis) did not answer or refused the write
    │   └── ConsumerLost        a consumer was declared dead and its claims taken over
    ├── SerializationError      arguments or a result that cannot be serialized
    ├── MessageError            a message that cannot be trusted or decoded
    │   ├── BadSignature        HMAC check failed: the payload is never unpickled
    │   └── UnsafeEntry         not a regular file (folder, FIFO, device, symlink): never opened
    ├── TaskNotFound            a message names a task no loaded module declares
    ├── ResultNotFound          no result is stored (or it expired)
    ├── TaskFailed              a task failed and its exception could not be rebuilt
    ├── TaskExpired             the task's ``expires`` passed before it started
    ├── WorkerLost              the worker process died while running the task
    ├── TimeLimitExceeded       the task passed its hard time limit and was killed
    └── TaskRevokedError        the task was revoked: never started, or killed (terminate)

Control flow, not errors (a task raises them on purpose):

    Retry                       ask for another attempt, optionally after `countdown`
    SoftTimeLimitExceeded       raised inside a task when its soft time limit passes
"""

from __future__ import annotations


class TaskqError(Exception):
    """Base class for every error taskq reports."""


class ConfigError(TaskqError):
    """The configuration names an unknown key, holds a wrong type, or cannot be read."""


class BrokerError(TaskqError):
    """The broker cannot be used as configured."""


class DiskFull(BrokerError, OSError):
    """The broker's filesystem has no space (or quota) left: the write did not happen.

    Raised by ``.delay()`` and friends: the message was not enqueued, and
    nothing partial of it is visible to a worker. Also an ``OSError`` (with the
    ``errno``), so code that handles I/O errors handles it too.
    """


class SerializationError(TaskqError):
    """A value cannot be serialized into a message or a result."""


class MessageError(TaskqError):
    """A message file cannot be decoded."""


class BadSignature(MessageError):
    """A message or result failed its HMAC check; it was not unpickled."""


class UnsafeEntry(MessageError):
    """A broker entry that is not a regular file: a folder, FIFO, device, socket
    or symbolic link. It is never followed, opened blocking or read."""


class TaskNotFound(TaskqError):
    """A message names a task that no imported module declares."""


class ResultNotFound(TaskqError):
    """No result is stored for a task id."""


class TaskFailed(TaskqError):
    """A task failed with an exception that could not be rebuilt in this process."""

    def __init__(self, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = traceback


class TaskExpired(TaskqError):
    """A task's ``expires`` passed before a worker could start it; it never ran."""


class BrokerUnavailable(BrokerError, OSError):
    """The broker's server (Redis) did not answer within the bounded retry, or
    refused the write (out of memory): the operation did not happen. An
    ``OSError`` too, so a worker settling a task keeps trying, as on a full disk."""


class ConsumerLost(BrokerError):
    """This consumer's liveness lapsed and another supervisor took its claims
    over: it must stop (its process is replaced by a fresh one)."""


class WorkerLost(TaskqError):
    """The process running a task died (SIGKILL, out of memory, a crash)."""


class ChordFailed(TaskqError):
    """A member of a chord failed for good: its callback is dead-lettered, not run."""


class TimeLimitExceeded(TaskqError):
    """A task ran past its hard ``time_limit``; its process was killed."""


class TaskRevokedError(TaskqError):
    """The task was revoked (``AsyncResult.revoke``): a worker did not start it, or
    killed it with ``terminate=True``. Celery's name for it."""


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for logs and records, even when ``__str__`` raises."""
    return f"{type(exc).__name__}: {safe_str(exc)}"


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's ``__str__`` raises
    (a user's exception must not take the worker down)."""
    try:
        return str(exc)
    except Exception as broken:
        return f"<str() of the exception raised {type(broken).__name__}>"


class Retry(Exception):
    """Raise inside a task to ask for another attempt.

    ``countdown`` overrides the backoff delay; ``exc`` is the error recorded
    for this attempt.
    """

    def __init__(self, countdown: float | None = None, exc: BaseException | None = None) -> None:
        super().__init__(f"retry requested (countdown={countdown})")
        self.countdown = countdown
        self.exc = exc


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task when its ``soft_time_limit`` passes."""
